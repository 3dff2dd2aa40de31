"""The whole loop end to end on tiny settings: records, manifests, report, resume under the same
and a changed config, a dead engine, output on a local S3-compatible server with two training
workers and a model without a chat template."""

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
from lema.storage import Storage
from pipelines.lema import STAGE_NAMES, main, main_pipeline

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
    cfg = load_config(SMOKE, [f"output_dir=file://{out}", *TINY])  # a URI: the storage layer's path
    report = main_pipeline(cfg)
    return out / "smoke", report


def test_end_to_end(clean_run):
    run_dir, report = clean_run
    for stage in STAGE_NAMES:
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
    assert train["adapter_dir"].startswith("file://")  # as output_dir names it: every node reads it
    assert train["steps"] == 2 and Storage(train["adapter_dir"]).join("adapter_config.json").is_file()
    ev = json.loads((run_dir / "evaluate" / "manifest.json").read_text())
    assert {r["variant"] for r in ev["results"]} == {"base", "tuned"}
    assert all(0 <= r["pass_at_1_lema_compat"] <= 1 for r in ev["results"])
    text = Storage(report).read_text()
    assert "Base, start and tuned model" in text and (run_dir / "counts.png").is_file()


def test_rerun_skips_complete_stages(clean_run, capsys):
    run_dir, _ = clean_run
    before = {s: (run_dir / s / "manifest.json").read_text() for s in STAGE_NAMES}
    cfg = load_config(SMOKE, [f"output_dir={run_dir.parent}", *TINY, "sample.pool.max_actors=2",
                              "evaluate.pool.batch_size=1"])  # re-scaled: the same results
    main_pipeline(cfg)
    out = capsys.readouterr().out
    assert out.count("complete for this config, skipped") == len(STAGE_NAMES)
    assert before == {s: (run_dir / s / "manifest.json").read_text() for s in STAGE_NAMES}


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


@pytest.mark.parametrize("where", [pytest.param("boundary", marks=pytest.mark.slow), "mid-stage"])
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


def _paths(run_dir: Path) -> list[dict]:
    return sorted(_records(run_dir, "sample"), key=lambda r: r["path_id"])


def test_stage_begun_under_another_config_starts_over(clean_run, tmp_path):
    """A sample stage killed mid-way (parts, no manifest) is not resumed under a changed
    sampling config: every part is redone, none of the old config survives."""
    out = tmp_path / "runs"
    args = [str(SMOKE), f"output_dir={out}", *TINY, "--until", "sample"]
    assert main(args) == 0
    (out / "smoke" / "sample" / "manifest.json").unlink()  # as after a kill
    hot = "sample.generators.0.sampling.temperature=0.5"
    assert main([*args, hot]) == 0
    fresh = tmp_path / "fresh"
    assert main([str(SMOKE), f"output_dir={fresh}", *TINY, hot, "--until", "sample"]) == 0
    assert _paths(out / "smoke") == _paths(fresh / "smoke") != _paths(clean_run[0])
    assert not (out / "smoke" / "correct").exists()  # --until stopped the loop there


def test_dead_generator_stops_the_run(ray_cluster, tmp_path, capsys):
    rc = main([str(SMOKE), f"output_dir={tmp_path}", *TINY, "sample.generators.0.engine.backend=openai",
               "sample.generators.0.engine.openai.base_url=http://127.0.0.1:9/v1",
               "sample.generators.0.engine.openai.max_retries=0"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "sample stage stopped: engine 'tiny' failed" in err and "first error:" in err
    assert "Connection" in err  # the engine's own error text
    assert not (tmp_path / "smoke" / "sample" / "manifest.json").exists()
    assert not (tmp_path / "smoke" / "evaluate").exists()


def test_smoke_loop_on_s3_with_two_workers_and_a_base_model(ray_cluster, s3_server, tiny_plain_model):
    """output_dir on a local S3-compatible server; LoRA on 2 data-parallel workers; a model
    whose tokenizer has no chat template (plain-text prompts for sampling, training, eval)."""
    root = Storage(s3_server("lema-runs"))
    cfg = load_config(SMOKE, [f"output_dir={root.uri}", *TINY, "train.num_workers=2", "train.torch_threads=1",
                              f"sample.generators.0.engine.model={tiny_plain_model}"])
    report = main_pipeline(cfg)
    run = root.join("smoke")
    assert report == run.join("report.md").uri and "Base, start and tuned model" in run.join("report.md").read_text()
    assert run.join("evaluation.png").is_file() and run.join("data", "train.jsonl").is_file()
    manifests = {s: run.join(s, "manifest.json").read_json() for s in STAGE_NAMES}
    assert all(m["complete"] for m in manifests.values())
    adapter = Storage(manifests["train"]["adapter_dir"])
    assert adapter.uri.startswith("s3://lema-runs/smoke/train/adapter?endpoint_override=")  # every node reads it
    assert adapter.join("adapter_config.json").is_file()
    assert manifests["train"]["checkpoint_adapter_dir"].startswith("s3://lema-runs/smoke/train/ray_train/checkpoint_")
    assert manifests["train"]["steps"] == 2
    assert {r["variant"] for r in manifests["evaluate"]["results"]} == {"base", "tuned"}
    assert manifests["sample"]["failed"] == 0 and manifests["sample"]["paths"] == 12


def test_reuse_takes_over_the_stages_an_ablation_shares(clean_run, capsys):
    """Another run on the same samples: its problems, sample and correct stages (and the evolve
    stages, off in both) are copied from the finished run they match (the hashes say so), only
    data onwards runs."""
    out = clean_run[0].parent
    args = [str(SMOKE), f"output_dir={out}", *TINY, "run=ablation", "reuse=[smoke]", "data.include_corrections=false"]
    assert main([*args, "--until", "data"]) == 0
    log = capsys.readouterr().out
    assert log.count("taken over from") == 6 and "data: running" in log
    assert _paths(out / "ablation") == _paths(clean_run[0])
    sample = json.loads((out / "ablation" / "sample" / "manifest.json").read_text())
    assert sample["taken_over_from"].endswith("/smoke/sample")
    assert json.loads((out / "ablation" / "data" / "manifest.json").read_text())["correction"] == 0


def test_stage_hash_follows_the_adapter_it_starts_from(tmp_path):
    """Re-training a start adapter under the same URI redoes the stages that start from it."""
    from pipelines.lema import STAGES, stage_hash
    from pipelines.stage_io import RunContext

    adapter = tmp_path / "start" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"v1")
    cfg = load_config(SMOKE, [f"train.init_adapter={adapter}", f"sample.generators.0.engine.adapter={adapter}"])
    ctx = RunContext.from_rows(cfg, tmp_path)
    ctx.hashes = {s.name: "upstream" for s in STAGES}
    sample, train = (next(s for s in STAGES if s.name == n) for n in ("sample", "train"))
    before = stage_hash(ctx, sample), stage_hash(ctx, train)
    assert before == (stage_hash(ctx, sample), stage_hash(ctx, train))
    (adapter / "adapter_model.safetensors").write_bytes(b"v2, retrained")
    after = stage_hash(ctx, sample), stage_hash(ctx, train)
    assert after[0] != before[0] and after[1] != before[1]


def test_relative_local_paths_become_absolute(tmp_path, monkeypatch):
    """Ray Train workers run in their trial directory: a relative adapter path must not reach them."""
    from pipelines.lema import absolute_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "start" / "adapter").mkdir(parents=True)
    cfg = absolute_paths(load_config(SMOKE, ["train.init_adapter=runs/start/adapter", "output_dir=runs",
                                             "sample.generators.0.engine.model=org/hub-model"]))
    assert cfg.train.init_adapter == str(tmp_path / "runs" / "start" / "adapter")
    assert cfg.output_dir == str(tmp_path / "runs")
    assert cfg.sample.generators[0].engine.model == "org/hub-model"  # not a local path: a hub id stays


@pytest.mark.slow  # a smoke run (about 2.5 min): make slow_test
def test_full_fine_tuning_with_checkpoint_selection_end_to_end(ray_cluster, tmp_path):
    """`train.method=full train.checkpoints=2` on the smoke config: the tuned model directory is
    evaluated, both snapshots are scored on the test set and on the dev split of held-out training
    problems, and results.json holds the dev-selected and the paper-protocol figures side by side."""
    cfg = load_config(SMOKE, [f"output_dir={tmp_path}", "train.method=full", "train.checkpoints=2"])
    main_pipeline(cfg)
    run = tmp_path / "smoke"
    train = json.loads((run / "train" / "manifest.json").read_text())
    assert train["method"] == "full" and (Path(train["model_dir"]) / "config.json").is_file()
    assert [s["step"] for s in train["snapshots"]] == [2, 4]
    results = json.loads((run / "evaluate" / "results.json").read_text())
    rows = {(r["dataset"], r["variant"]) for r in results["results"]}
    assert rows == {("synthetic-test", "base"), ("synthetic-test", "tuned"), ("synthetic-test", "step_000002"),
                    ("dev", "tuned"), ("dev", "step_000002")}
    (sel,) = results["selection"]
    assert sel["steps"] == [2, 4] and {"dev_selected", "paper_best_on_test", "paper_top3_mean_on_test"} <= set(sel)
    tuned = next(r for r in results["results"] if r["variant"] == "tuned" and r["dataset"] != "dev")
    assert tuned["model"] == train["model_dir"] and tuned["adapter"] is None
