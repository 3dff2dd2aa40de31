"""Scale from zero on a fake autoscaling cluster: GPU worker nodes come for a GPU actor pool and
go after the idle timeout.

The cluster is a head without CPUs (as cluster.yaml's) and one worker type advertising a fake
`GPU: 1` with `min_workers: 0`; the sample stage's pool asks for `num_gpus=1` per actor and runs
the tiny transformers model on CPU inside. Marked `cluster`: `make test` runs it in a pytest run
of its own, after the rest, since it starts a Ray head of its own beside the test suite's.
"""

from __future__ import annotations

import time

import pytest

from lema.config import load_config
from lema.synthetic import generate_problems
from pipelines.sample import run_sample
from pipelines.stage_io import RunContext, StageDir
from tests.fakes.autoscaling_cluster import FakeAutoscalingCluster

pytestmark = pytest.mark.cluster

GPU_NODES = 2  # the pool's size and the worker type's max_workers (2 cores here: more only queue)
IDLE_TIMEOUT_S = 6.0


@pytest.fixture(scope="module")
def fake_cluster():
    import ray

    if ray.is_initialized():  # the suite's shared local cluster is up in this process
        pytest.skip("run the cluster tests in a pytest run of their own: pytest -m cluster")
    cluster = FakeAutoscalingCluster(
        head_resources={"CPU": 0},
        worker_types={"gpu_1x": {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": 200 * 1024**2},
                                 "min_workers": 0, "max_workers": GPU_NODES}},
        idle_timeout_s=IDLE_TIMEOUT_S,
    )
    cluster.start()
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield cluster
    finally:
        ray.shutdown()
        left = cluster.stop()
    assert not left, f"processes of the fake cluster outlived stop(): {left}"


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


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
        assert _wait_for(lambda: timeline.samples, 10)
        assert timeline.samples[0]["gpu_nodes"] == 0  # head only
        manifest = run_sample(ctx, stage, "h")
        done_at = timeline.elapsed()
        gone = _wait_for(lambda: timeline.last("gpu_nodes") == 0, 60 + 10 * IDLE_TIMEOUT_S)
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
