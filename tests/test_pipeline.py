"""The whole loop end to end on tiny settings: records, manifests, report, resume, ray job submit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lema.config import load_config
from pipelines.lema import STAGES, main, main_pipeline

ROOT = Path(__file__).parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"
TINY = ["train.max_steps=2", "evaluate.datasets.0.count=2", "problems.count=6"]


def _records(run_dir: Path, stage: str) -> list[dict]:
    rows = []
    for f in sorted((run_dir / stage).glob("part-*.parquet")):
        t = pq.read_table(f)
        if "_empty" not in t.column_names:
            rows.extend(t.to_pylist())
    return rows


def _key(stage: str):
    return {"problems": "id", "sample": "path_id", "correct": "path_id"}[stage]


@pytest.fixture(scope="module")
def clean_run(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    cfg = load_config(SMOKE, [f"output_dir={out}", *TINY])
    report = main_pipeline(cfg)
    return out / "smoke", report


def test_end_to_end(clean_run):
    run_dir, report = clean_run
    for stage in STAGES:
        m = json.loads((run_dir / stage / "manifest.json").read_text())
        assert m["complete"], stage
    sample = json.loads((run_dir / "sample" / "manifest.json").read_text())
    assert sample["paths"] == 6 * 2 == sample["correct"] + sample["inaccurate"] + sample["failed"]
    corr = json.loads((run_dir / "correct" / "manifest.json").read_text())
    assert corr["attempted"] == sample["inaccurate"]
    assert sum(corr["status"].values()) == corr["attempted"]
    assert corr["verified"] > 0  # the reference corrector's fixes verify against gold
    assert (run_dir / "data" / "train.jsonl").is_file()
    train = json.loads((run_dir / "train" / "manifest.json").read_text())
    assert train["steps"] == 2 and Path(train["adapter_dir"], "adapter_config.json").is_file()
    ev = json.loads((run_dir / "evaluate" / "manifest.json").read_text())
    assert {r["variant"] for r in ev["results"]} == {"base", "adapter"}
    text = Path(report).read_text()
    assert "Base vs adapter" in text and (run_dir / "counts.png").is_file()


def test_rerun_skips_complete_stages(clean_run, capsys):
    run_dir, _ = clean_run
    before = {s: (run_dir / s / "manifest.json").read_text() for s in STAGES}
    cfg = load_config(SMOKE, [f"output_dir={run_dir.parent}", *TINY])
    main_pipeline(cfg)
    out = capsys.readouterr().out
    assert out.count("complete for this config, skipped") == len(STAGES)
    assert before == {s: (run_dir / s / "manifest.json").read_text() for s in STAGES}


def test_config_errors_before_any_work(tmp_path, capsys):
    rc = main([str(SMOKE), f"output_dir={tmp_path}", "sample.pool.max_actor=2", "train.lr=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "sample.pool.max_actor: unknown key" in err and "train.lr" in err
    assert not any(tmp_path.iterdir())


def _run_and_kill(out: Path, when) -> None:
    """Start the pipeline in a subprocess and SIGKILL it once `when(run_dir)` is true."""
    cmd = [sys.executable, "-m", "pipelines.lema", str(SMOKE), f"output_dir={out}", *TINY]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None and not when(out / "smoke"):
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("where", ["boundary", "mid-stage"])
def test_killed_run_resumes_to_the_same_records(clean_run, tmp_path, where):
    clean_dir, _ = clean_run
    if where == "boundary":
        when = lambda d: (d / "sample" / "manifest.json").is_file()  # noqa: E731
    else:
        when = lambda d: len(list((d / "sample").glob("part-*.parquet"))) >= 1  # noqa: E731
    _run_and_kill(tmp_path, when)
    assert not (tmp_path / "smoke" / "evaluate" / "manifest.json").exists()
    cfg = load_config(SMOKE, [f"output_dir={tmp_path}", *TINY])
    main_pipeline(cfg)
    for stage in ("problems", "sample", "correct"):
        a = sorted(_records(clean_dir, stage), key=lambda r: r[_key(stage)])
        b = sorted(_records(tmp_path / "smoke", stage), key=lambda r: r[_key(stage)])
        assert a == b, stage
    for f in ("train.jsonl", "held_out.jsonl"):
        assert (clean_dir / "data" / f).read_text() == (tmp_path / "smoke" / "data" / f).read_text()
