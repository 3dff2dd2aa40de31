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
from pipelines.stage_io import StageDir


def _kill_one_actor_when(stage: StageDir, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL one SampleStage actor process once the first part has landed."""
    while not stop.is_set():
        if stage.done_parts():
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if "SampleStage" in " ".join(proc.info["cmdline"] or []):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(proc.info["pid"])
                    return
        time.sleep(0.05)


def test_sample_stage_end_to_end(ray_cluster, tiny_model, tmp_path):
    cfg = load_config(None, [
        "sample.generators=[{engine: {model: tiny, name: tiny-a}, sampling: {n: 2, temperature: 1.0, max_tokens: 16}},"
        " {engine: {model: tiny, name: tiny-b}, sampling: {n: 3, temperature: 0.7, max_tokens: 16}}]",
        "sample.pool.batch_size=2",
    ])
    problems = generate_problems(10, [2, 3], seed=3)
    problems.append(Problem(id="bad-1", dataset="synthetic", split="train", question="", answer="3"))
    stage = StageDir(str(tmp_path), "t", "sample")

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one_actor_when, args=(stage, stop, killed), daemon=True)
    killer.start()
    manifest = run_sample(cfg, problems, stage, "h")
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
