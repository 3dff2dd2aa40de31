"""The sample stage on real Ray: two generators, n>1, a malformed problem, a killed actor."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil

from lema.config import load_config
from lema.records import Problem
from lema.synthetic import generate_problems
from pipelines.sample import run_sample
from pipelines.stage_io import RunContext, StageDir
from tests.fakes import FakeBehaviour, FakeOpenAIServer


def _kill_one_actor_when(stage: StageDir, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL one SampleStage actor of this test's own Ray cluster (its processes descend from
    this one: the local cluster's raylet is our child) once the first part has landed."""
    while not stop.is_set():
        if stage.done_parts():
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "SampleStage" in " ".join(proc.cmdline()):
                        os.kill(proc.pid, signal.SIGKILL)
                        killed.append(proc.pid)
                        return
                except psutil.NoSuchProcess:
                    continue
        time.sleep(0.05)


def test_sample_stage_end_to_end(ray_cluster, tiny_model, tmp_path):
    cfg = load_config(None, [
        "sample.generators=[{engine: {model: tiny, name: tiny-a}, sampling: {n: 2, temperature: 1.0, max_tokens: 16}},"
        " {engine: {model: tiny, name: tiny-b}, sampling: {n: 3, temperature: 0.7, max_tokens: 16}}]",
        "sample.pool.batch_size=2",
    ])
    problems = generate_problems(10, [2, 3], seed=3)
    problems.append(Problem(id="bad-1", dataset="synthetic", split="train", question="", answer="3"))
    stage = StageDir(tmp_path, "sample")

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one_actor_when, args=(stage, stop, killed), daemon=True)
    killer.start()
    ctx = RunContext.from_rows(cfg, tmp_path, problems=[p.to_dict() for p in problems])
    manifest = run_sample(ctx, stage, "h")
    stop.set()

    assert killed, "no actor was killed: the test did not exercise a restart"
    rows = stage.read_rows()
    assert len({r["path_id"] for r in rows}) == len(rows) == 10 * 2 + 10 * 3  # none lost, none twice
    assert {(r["generator"], r["sample_index"]) for r in rows} == {
        ("tiny-a", 0), ("tiny-a", 1), ("tiny-b", 0), ("tiny-b", 1), ("tiny-b", 2)}
    assert manifest["paths"] == 50
    assert manifest["correct"] + manifest["inaccurate"] + manifest["failed"] == 50
    assert manifest["reject_reasons"] == {"missing question (the question text)": 1}
    assert set(manifest["per_generator"]) == {"tiny-a", "tiny-b"}
    assert all(r["predicted_answer"] is None or isinstance(r["predicted_answer"], str) for r in rows)
    assert stage.is_complete("h")


def _api_sample(srv, tmp_path, problems, *overrides):
    cfg = load_config(None, [
        "sample.generators=[{engine: {backend: openai, model: fake}, sampling: {n: 1, max_tokens: 20}}]",
        f"sample.generators.0.engine.openai.base_url={srv.base_url}", *overrides])
    ctx = RunContext.from_rows(cfg, tmp_path, problems=[p.to_dict() for p in problems])
    return run_sample(ctx, StageDir(tmp_path, "sample"), "h")


def test_api_generators_share_one_budget(ray_cluster, tmp_path):
    """Two pool actors draw from one budget: 2 requests in flight and the tokens per minute
    hold for the stage (with a budget per actor each would get the whole allowance)."""
    problems = generate_problems(12, [2], seed=5)
    with FakeOpenAIServer(FakeBehaviour(latency_s=0.3)) as srv:
        manifest = _api_sample(srv, tmp_path, problems, "sample.pool.min_actors=2", "sample.pool.max_actors=2",
                               "sample.pool.batch_size=2", "sample.generators.0.engine.openai.max_concurrency=2",
                               "sample.generators.0.engine.openai.tokens_per_minute=14400")  # 240 tokens/s
        used = [len(r["messages"][0]["content"].split()) + 20 for r in srv.requests]  # fake tokens, at most
        elapsed = srv.arrivals[-1] - srv.arrivals[0]
        assert srv.max_in_flight == 2 and srv.calls == 12
    assert manifest["paths"] == 12 and manifest["failed"] == 0
    # the first second's allowance (240) is free; the rest comes at 240 tokens/s for the stage
    assert elapsed >= (sum(used) - 2 * 240) / 240 * 0.9, (elapsed, sum(used))


def test_rechunked_rerun_is_served_from_the_response_cache(ray_cluster, tmp_path):
    problems = generate_problems(6, [2], seed=6)
    cache = f"sample.generators.0.engine.openai.cache_dir={tmp_path / 'cache'}"
    with FakeOpenAIServer() as srv:
        _api_sample(srv, tmp_path / "a", problems[:5], cache, "sample.pool.batch_size=2")
        assert srv.calls == 5
        manifest = _api_sample(srv, tmp_path / "b", problems, cache, "sample.pool.batch_size=4")
        assert srv.calls == 6  # only the new problem reached the API
    assert manifest["paths"] == 6
