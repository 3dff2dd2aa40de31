"""Scale from zero on a fake autoscaling cluster: GPU worker nodes come for a GPU actor pool, and
for the service's GPU Corrector replicas under load, and go after the idle timeout.

The cluster is a head without CPUs (as cluster.yaml's) and one worker type advertising a fake
`GPU: 1` with `min_workers: 0`; the sample stage's pool actors and the Corrector replicas ask for
`num_gpus=1` each and run the tiny transformers model on CPU inside. Marked `cluster`: `make test`
runs it in a pytest run of its own, after the rest, since it starts a Ray head of its own beside
the test suite's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from ray import serve

from lema.config import load_config
from lema.synthetic import generate_problems
from pipelines.sample import run_sample
from pipelines.stage_io import RunContext, StageDir
from services.config import load_service_config
from services.loopback import serve_on_loopback
from tests.fakes.autoscaling_cluster import FakeAutoscalingCluster

pytestmark = pytest.mark.cluster

GPU_NODES = 2  # the pool's size, the Corrector's max_replicas and the worker type's max_workers (2 cores here)
IDLE_TIMEOUT_S = 6.0
SERVE_ENV = {  # Serve's autoscaling metrics reach its controller every second instead of every 10 s
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
}


@pytest.fixture(scope="module")
def fake_cluster():
    import ray

    if ray.is_initialized():  # the suite's shared local cluster is up in this process
        pytest.skip("run the cluster tests in a pytest run of their own: pytest -m cluster")
    cluster = FakeAutoscalingCluster.with_gpu_workers(GPU_NODES, idle_timeout_s=IDLE_TIMEOUT_S, env=SERVE_ENV)
    cluster.start()
    try:
        cluster.connect()
        yield cluster
    finally:
        ray.shutdown()
        left = cluster.stop()
    assert not left, f"processes of the fake cluster outlived stop(): {left}"


def test_sample_stage_scales_gpu_workers_from_zero_and_back(fake_cluster, tiny_model, tmp_path, capsys):
    # a fixed-size pool (min = max): every actor is demand at once (configs/gsm8k_*.yaml say why)
    cfg = load_config(None, [
        f"sample.generators=[{{engine: {{model: {tiny_model}, name: tiny, device: cpu}},"
        " sampling: {n: 2, temperature: 1.0, max_tokens: 16}}]",
        f"sample.pool={{min_actors: {GPU_NODES}, max_actors: {GPU_NODES}, num_cpus: 1, num_gpus: 1, batch_size: 2}}",
    ])
    problems = generate_problems(24, [2, 3], seed=7)
    stage = StageDir(tmp_path, "sample")
    ctx = RunContext.from_rows(cfg, tmp_path, problems=[p.to_dict() for p in problems])

    timeline, stop_watching = fake_cluster.watch()
    try:
        assert timeline.wait_until(lambda: timeline.samples, 10)
        assert timeline.samples[0]["gpu_nodes"] == 0  # head only
        manifest = run_sample(ctx, stage, "h")
        done_at = timeline.elapsed()
        gone = timeline.wait_until(lambda: timeline.last("gpu_nodes") == 0, fake_cluster.idle_wait_s)
    finally:
        stop_watching.set()

    plot = timeline.plot(tmp_path / "sample_stage_gpu_nodes.png",
                         f"sample stage, fixed pool of {GPU_NODES} GPU actors, idle timeout {IDLE_TIMEOUT_S:g} s",
                         marks={"stage done": done_at})
    with capsys.disabled():
        print(f"\nGPU worker nodes over time (sample stage, pool of {GPU_NODES} x num_gpus=1):\n"
              f"{timeline.table()}\nplot: {plot}")

    rows = stage.read_rows()
    assert len({r["path_id"] for r in rows}) == len(rows) == 24 * 2  # nothing lost, nothing twice
    assert manifest["paths"] == 48 and stage.is_complete("h")
    assert timeline.max("gpu_nodes") >= GPU_NODES  # 0 -> n: a node per pending GPU actor (rarely one more, briefly)
    assert timeline.max("gpus_used") == GPU_NODES  # every actor got its GPU and worked
    assert gone, f"GPU workers still up long after the stage ended:\n{timeline.table()}"


# ---------------------------------------------------------------- the service's Corrector
APP = "lema"
CLIENTS = 8  # requests in flight at once: 4 replicas' worth at target_ongoing_requests 2, so Serve asks for max
HOLD_S = 5.0  # load kept on after the Corrector reached max_replicas
REQUEST = {"question": "Ann has 3 boxes with 4 pens each. How many pens does she have?", "answer": "12",
           "solution": "Step 1: 3 * 4 = 11.\nThe answer is 11."}


def _corrector_replicas() -> dict[str, float]:
    """The Corrector's replicas running, and starting (those wait for a GPU node)."""
    app = serve.status().applications.get(APP)
    states = app.deployments["Corrector"].replica_states if app and "Corrector" in app.deployments else {}
    return {"corrector_replicas": states.get("RUNNING", 0), "replicas_starting": states.get("STARTING", 0)}


async def _drive_load(url: str, until: Callable[[], bool], hold_s: float, deadline_s: float) -> Counter[int]:
    """CLIENTS closed-loop clients POST /v1/correct until `until()` has held for `hold_s` seconds
    (or the deadline passed); in-flight requests finish. Returns the responses' status counts."""
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            statuses[(await http.post("/v1/correct", json=REQUEST)).status_code] += 1

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        clients = [asyncio.create_task(client(http)) for _ in range(CLIENTS)]
        deadline, held_since = time.time() + deadline_s, None
        while time.time() < deadline and not (held_since and time.time() - held_since >= hold_s):
            held_since = (held_since or time.time()) if until() else None
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*clients)
    return statuses


def test_service_corrector_scales_gpu_workers_from_zero_and_back(fake_cluster, tiny_model, tmp_path, capsys):
    # min_replicas 0: Serve 2.60 scales a deployment up from zero (a request queued at a handle
    # with no replica pushes its metrics at once, and 0 -> 1 skips upscale_delay_s), so the GPU
    # nodes can go too. Delays are short here: the defaults wait minutes before scaling down.
    scaling = {"min_replicas": 0, "max_replicas": GPU_NODES, "target_ongoing_requests": 2, "upscale_delay_s": 0,
               "downscale_delay_s": 2, "downscale_to_zero_delay_s": 2,
               "look_back_period_s": 11}  # over Serve's 10 s metrics interval (shorter warns)
    cfg = load_service_config(None, [
        "ingress.num_cpus=0", "grader.deployment.num_cpus=0",  # on the head, beside Serve's controller and proxy
        f"corrector.engine.model={tiny_model}", "corrector.engine.device=cpu", "corrector.sampling.max_tokens=8",
        "corrector.deployment.num_cpus=1", "corrector.deployment.num_gpus=1",
        *(f"corrector.deployment.autoscaling_config.{key}={value}" for key, value in scaling.items()),
        "corrector.timeout_s=60", "request_timeout_s=90",  # the first requests wait for a GPU node and a replica
    ])
    with serve_on_loopback({APP: cfg}) as base_url:
        timeline, stop_watching = fake_cluster.watch(extra=_corrector_replicas)
        try:
            assert timeline.wait_until(lambda: timeline.samples, 10)
            statuses = asyncio.run(_drive_load(
                f"{base_url}/{APP}", hold_s=HOLD_S, deadline_s=120,
                until=lambda: timeline.last("corrector_replicas") == timeline.last("gpu_nodes") == GPU_NODES))
            load_stopped_at = timeline.elapsed()
            back = timeline.wait_until(lambda: timeline.last("corrector_replicas") == timeline.last("gpu_nodes") == 0,
                                       fake_cluster.idle_wait_s)
        finally:
            stop_watching.set()

    plot = timeline.plot(tmp_path / "service_corrector_gpu_nodes.png",
                         f"Corrector (num_gpus=1, replicas 0..{GPU_NODES}) under {CLIENTS} clients, "
                         f"idle timeout {IDLE_TIMEOUT_S:g} s", marks={"load stopped": load_stopped_at})
    with capsys.disabled():
        print(f"\nGPU worker nodes and Corrector replicas over time ({CLIENTS} clients, then none):\n"
              f"{timeline.table()}\nresponses: {dict(statuses)}\nplot: {plot}")

    first = timeline.samples[0]
    assert first["gpu_nodes"] == first["corrector_replicas"] == 0  # head only, no replica before the load
    assert set(statuses) == {200} and statuses[200] > CLIENTS  # every request answered, cold start included
    assert timeline.max("corrector_replicas") == GPU_NODES  # 0 -> max_replicas under load
    assert timeline.max("gpu_nodes") >= GPU_NODES  # a GPU node per replica (rarely one more, briefly)
    assert back, f"replicas or GPU workers still up long after the load stopped:\n{timeline.table()}"
