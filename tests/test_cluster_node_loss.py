"""A worker node lost mid-stage on a fake multi-node cluster: the sample stage still writes every
item exactly once and completes.

100K synthetic problems (ten input parts of 10K) go through the sample stage with the null
engine (`backend: scripted`) on a fake autoscaling cluster: a head without CPUs (as
cluster.yaml's) and three worker nodes of 2 CPUs each, kept at three by `min_workers`. The pool
is three actors of 1 CPU (`part_chunks` cuts the input parts into chunks in tasks that hold no
CPU).
Once a fifth of the chunks' parts are written, a thread SIGKILLs every process of the worker
node holding the most pool actors (raylet, object store, agents, Ray workers), as a machine
that goes away. Ray Data restarts the lost actor on a surviving node and retries its chunks,
and Ray rebuilds the lost objects (chunks cut on that node) from their tasks. The autoscaler
does not replace the node (Ray's v1 autoscaler keeps listing the fake provider's dead node as
pending, "uninitialized", so min_workers stays met): the stage ends on two nodes.

Checked: the manifest is complete, every problem is in the parts as often as in the input
(exactly once), and so are the side files' items. Marked `cluster` (a pytest run
of its own: it starts a Ray head beside the suite's) and `slow`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any

import pytest

from lema.config import load_config
from lema.synthetic import iter_problems
from pipelines.sample import run_sample
from pipelines.stage_io import RunContext, StageDir
from tests.fakes.autoscaling_cluster import FakeAutoscalingCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NODES = 3  # worker nodes of NODE_CPUS each, and the pool's actors (1 CPU each)
NODE_CPUS = 2
PROBLEMS = 100_000
PER_PART = 10_000  # input parts: chunking runs in ten tasks
BATCH = 1_500  # problems per chunk: 7 chunks per input part, 70 in all
CHUNKS = math.ceil(PROBLEMS / PER_PART) * math.ceil(PER_PART / BATCH)
KILL_AT = 0.2  # share of the chunks written when the node is killed
ACTOR = "SampleStage"  # in the pool actors' process titles


@pytest.fixture(scope="module")
def fake_cluster():
    import ray

    if ray.is_initialized():  # the suite's shared local cluster is up in this process
        pytest.skip("run the cluster tests in a pytest run of their own: pytest -m cluster")
    cluster = FakeAutoscalingCluster.with_cpu_workers(NODES, cpus=NODE_CPUS, object_store_mb=150)
    cluster.start()
    try:
        cluster.connect()
        yield cluster
    finally:
        ray.shutdown()
        left = cluster.stop()
    assert not left, f"processes of the fake cluster outlived stop(): {left}"


def alive_workers() -> list[str]:
    """The ids of the live worker nodes (the head left out)."""
    import ray

    return [n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"]]


def wait_until(predicate: Any, timeout_s: float) -> bool:
    """Poll `predicate()` every half second until it holds or `timeout_s` passed; whether it held."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return bool(predicate())


def actors_per_node(cluster: FakeAutoscalingCluster) -> dict[str, int]:
    """Worker node id -> the pool actors' processes on it."""
    import psutil

    out = {}
    for node, pids in cluster.node_processes().items():
        count = 0
        for pid in pids:
            try:
                count += ACTOR in " ".join(psutil.Process(pid).cmdline())
            except psutil.NoSuchProcess:
                continue
        out[node] = count
    return out


class NodeKiller(threading.Thread):
    """Kills the worker node with the most pool actors once `at_parts` parts are written, then
    watches `ray.nodes()` until Ray marks that node dead."""

    def __init__(self, cluster: FakeAutoscalingCluster, stage: StageDir, at_parts: int, t0: float):
        super().__init__(daemon=True)
        self.cluster, self.stage, self.at_parts, self.t0 = cluster, stage, at_parts, t0
        self.stop = threading.Event()
        self.node: str | None = None
        self.killed_at = self.dead_at = None  # seconds since t0
        self.parts_at_kill = 0
        self.actors_on_node = 0
        self.pids: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        import ray

        try:
            while not self.stop.is_set():
                parts = len(self.stage.done_parts())
                if parts >= self.at_parts:
                    break
                self.stop.wait(0.2)
            else:
                return
            actors = actors_per_node(self.cluster)
            self.node = max(actors, key=actors.get)
            self.actors_on_node, self.parts_at_kill = actors[self.node], parts
            self.pids = self.cluster.kill_node(self.node)
            self.killed_at = round(time.time() - self.t0, 1)
            while not self.stop.is_set():
                if any(n["NodeID"] == self.node and not n["Alive"] for n in ray.nodes()):
                    self.dead_at = round(time.time() - self.t0, 1)
                    return
                self.stop.wait(0.2)
        except BaseException as e:  # noqa: BLE001 (reported by the test)
            self.error = e


def write_problems(ctx: RunContext) -> Counter[str]:
    """PROBLEMS synthetic problems as input parts of PER_PART, and the problems stage's manifest;
    returns how often each problem id occurs."""
    problems, ids = ctx.dir("problems"), Counter()
    rows: list[dict[str, Any]] = []
    for p in iter_problems(PROBLEMS, [2, 3, 4], seed=0):
        rows.append(p.to_dict())
        ids[p.id] += 1
        if len(rows) == PER_PART:
            problems.write_part(f"{len(problems.done_parts()):05d}", rows)
            rows = []
    assert not rows
    problems.write_manifest("given", problems=PROBLEMS, rows=PROBLEMS)
    return ids


def timeline_rows(samples: list[dict[str, float]], every_s: float = 10.0, marks: tuple[float, ...] = ()) -> str:
    """Worker nodes, CPUs in use and parts written over time: a line every `every_s` seconds, at
    each change of the node count, and at each mark."""
    lines, last_t, last_nodes = ["    t/s  worker nodes  CPUs in use  parts"], -every_s, None
    pending = sorted(marks)
    for s in samples:
        due = bool(pending and s["t"] >= pending[0])
        while pending and s["t"] >= pending[0]:
            pending.pop(0)
        if s["t"] - last_t >= every_s or s["worker_nodes"] != last_nodes or due:
            lines.append(f"  {s['t']:5.1f}  {s['worker_nodes']:12.0f}  {s['cpus_used']:11.1f}  {s['parts']:5.0f}")
            last_t, last_nodes = s["t"], s["worker_nodes"]
    return "\n".join(lines)


@pytest.mark.timeout(900)
def test_sample_stage_survives_a_worker_node_killed_mid_stage(fake_cluster, tmp_path, capsys):
    import ray

    # the default max_restarts (3): chunks sent to the lost actor are retried without a limit
    # (pipelines/pool.py), as Ray spends a retry every ~2 s until the GCS marks the node dead
    cfg = load_config(None, [
        "sample.generators=[{engine: {backend: scripted, name: scripted},"
        " sampling: {n: 1, temperature: 1.0, max_tokens: 64, seed: 0}}]",
        f"sample.pool={{min_actors: {NODES}, max_actors: {NODES}, num_cpus: 1, batch_size: {BATCH}}}",
    ])
    ctx = RunContext(cfg, tmp_path)  # the problems stage written here, in parts
    t = time.time()
    given = write_problems(ctx)
    problems_s = time.time() - t
    stage = StageDir(tmp_path, "sample")

    assert fake_cluster.wait_for_workers(NODES), "the worker nodes did not come up (or kept changing)"

    def counts() -> dict[str, float]:
        total, free = ray.cluster_resources().get("CPU", 0), ray.available_resources().get("CPU", 0)
        return {"cpus_used": total - free, "parts": len(stage.done_parts())}

    timeline, stop_watching = fake_cluster.watch(every_s=1.0, extra=counts)
    killer = NodeKiller(fake_cluster, stage, at_parts=int(KILL_AT * CHUNKS), t0=timeline.t0)
    killer.start()
    try:
        start = timeline.elapsed()
        manifest = run_sample(ctx, stage, "h")
        done_at = timeline.elapsed()
        wait_until(lambda: killer.dead_at is not None, 60)  # Ray marks the node dead (~15 s after the kill)
    finally:
        killer.stop.set()
        killer.join(10)
        stop_watching.set()

    ids: Counter[str] = Counter()
    parts = sorted(stage.done_parts())
    for part in parts:
        ids.update(r["problem_id"] for r in stage.read_part(part))
    items: Counter[str] = Counter()
    for part in parts:
        items.update(stage.file(f"chunk-{part}.json").read_json()["items"])

    marks = tuple(x for x in (killer.killed_at, killer.dead_at, done_at) if x is not None)
    with capsys.disabled():
        print(f"\nsample stage, {PROBLEMS:,} problems, {CHUNKS} chunks of {BATCH}, pool of {NODES} actors on "
              f"{NODES} fake worker nodes of {NODE_CPUS} CPUs (problems written in {problems_s:.1f} s):\n"
              f"  stage wall {done_at - start:.1f} s (manifest wall_s {manifest.get('wall_s')}), parts {len(parts)}\n"
              f"  killed node {killer.node} ({killer.actors_on_node} pool actors, {len(killer.pids)} processes) "
              f"at t={killer.killed_at} s with {killer.parts_at_kill}/{CHUNKS} parts written; "
              f"ray.nodes() dead at t={killer.dead_at} s; stage done at t={done_at} s\n"
              f"  worker nodes alive at the end: {len(alive_workers())}\n"
              f"{timeline_rows(timeline.samples, marks=marks)}")

    assert killer.error is None, f"the node killer failed: {killer.error!r}"
    assert killer.node is not None and killer.actors_on_node >= 1, "no node with a pool actor was killed"
    assert killer.parts_at_kill < CHUNKS and killer.killed_at < done_at, "the kill came after the stage's work"
    assert killer.dead_at is not None, f"Ray never marked node {killer.node} dead"
    assert manifest["complete"] and stage.is_complete("h")
    assert manifest["problems"] == manifest["paths"] == PROBLEMS
    assert len(parts) == CHUNKS  # every chunk once (a retried chunk keeps its name)
    # every problem exactly once: each id as often as the input holds it (a shared id twice)
    missing, extra = given - ids, ids - given
    assert not missing and not extra, (
        f"{sum(missing.values())} problems missing ({list(missing)[:5]}), "
        f"{sum(extra.values())} written more often than given ({list(extra)[:5]})")
    assert items == given  # the side files, what a resume reads, name the same items as often
