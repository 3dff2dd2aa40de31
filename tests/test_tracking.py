"""Experiment tracking through real parts: the smoke loop on the local Ray cluster, MLflow's embedded
SQLite store, and (slow) the MLflow UI on loopback in headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest

from lema.config import config_hash, load_config
from lema.storage import Storage
from pipelines.lema import main_pipeline
from pipelines.tracking import Tracker

mlflow = pytest.importorskip("mlflow")

SMOKE = ["sample.generators.0.engine.backend=scripted", "sample.generators.0.sampling.max_tokens=256",
         "problems.count=12", "evaluate.datasets.0.count=4", "train.max_steps=4"]


def smoke(out, *overrides: str):
    return load_config("configs/smoke.yaml", [f"output_dir={out}", *SMOKE, *overrides])


def runs(out, name: str):
    """The MLflow runs named `name` in the embedded store under `out`, as the outside check reads them."""
    mlflow.set_tracking_uri(f"sqlite:///{out}/mlflow.db")
    try:
        df = mlflow.search_runs(search_all_experiments=True)
    finally:
        mlflow.set_tracking_uri(None)  # it sets $MLFLOW_TRACKING_URI, which the loop would follow
    return df[df["tags.mlflow.runName"] == name]


def client(out):
    return mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")


def tracking_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "MLflow tracking is off" in str(w.message)]


@pytest.fixture(scope="module", autouse=True)
def default_store():
    """The loop's default: no $MLFLOW_TRACKING_URI, the store under output_dir."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@pytest.fixture(scope="module")
def smoke_run(ray_cluster, tmp_path_factory):
    """One smoke run of the loop, tracked in the default store under its output_dir."""
    out = tmp_path_factory.mktemp("tracked")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main_pipeline(smoke(out))
    assert tracking_warnings(caught) == []
    return out


def test_a_run_is_an_mlflow_run(smoke_run):
    found = runs(smoke_run, "smoke")
    assert len(found) == 1
    row = found.iloc[0]
    store = client(smoke_run)
    run = store.get_run(row["run_id"])
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["train.max_steps"] == "4" and params["problems.count"] == "12"
    assert len(store.search_runs([row["experiment_id"]], "params.train.max_steps = '4'")) >= 1
    loss = store.get_metric_history(row["run_id"], "train/train_loss")
    assert [m.step for m in loss] == [1, 2, 3, 4]
    assert len(store.get_metric_history(row["run_id"], "train/lr")) == 4
    passes = [k for k in metrics if "pass" in k]
    assert "evaluate/synthetic-test/tuned/pass_at_1" in passes
    assert "evaluate/synthetic-test/base/pass_at_1_lema_compat_ci95_high" in passes
    assert metrics["sample/paths"] > 0 and "correct/verified" in metrics and "correct/cost" in metrics
    assert {f"lema.hash.{s}" for s in ("problems", "train", "evaluate")} <= set(tags)
    assert tags["lema.adapter"].endswith("train/adapter")
    assert len(tags.get("mlflow.source.git.commit", "")) == 40
    artifacts = {a.path for a in store.list_artifacts(row["run_id"], "report")}
    assert {"report/report.md", "report/training_loss.png"} <= artifacts
    assert (smoke_run / "mlartifacts").is_dir()  # artifacts beside the store, not in the working dir


def test_resume_continues_the_same_run(smoke_run):
    main_pipeline(smoke(smoke_run))  # everything complete: a resume that skips every stage
    found = runs(smoke_run, "smoke")
    assert len(found) == 1
    store = client(smoke_run)
    run = store.get_run(found.iloc[0]["run_id"])
    assert run.info.status == "FINISHED"
    assert "resumed" in run.data.tags["mlflow.note.content"]
    assert len(store.get_metric_history(run.info.run_id, "train/train_loss")) == 4  # not logged twice


@pytest.mark.slow  # the evaluate stage again: make slow_test
def test_from_logs_the_redone_stages_again_with_a_note(smoke_run):
    main_pipeline(smoke(smoke_run), from_stage="evaluate")
    found = runs(smoke_run, "smoke")
    assert len(found) == 1
    store = client(smoke_run)
    run = store.get_run(found.iloc[0]["run_id"])
    assert "--from evaluate" in run.data.tags["mlflow.note.content"]
    assert run.data.tags["lema.stage.evaluate"] == "redone (--from)"
    assert len(store.get_metric_history(run.info.run_id, "evaluate/synthetic-test/tuned/pass_at_1")) == 2
    assert len(store.get_metric_history(run.info.run_id, "train/train_loss")) == 4  # train was not redone


def test_reused_stages_are_tagged_and_runs_nest(smoke_run):
    cfg = smoke(smoke_run, "run=smoke-parent")
    with Tracker(cfg, Storage(smoke_run).join("smoke-parent")) as parent:
        main_pipeline(smoke(smoke_run, "run=smoke-reuse", "reuse=[smoke]", f"tracking.parent_run={parent.run_id}"))
    run = client(smoke_run).get_run(runs(smoke_run, "smoke-reuse").iloc[0]["run_id"])
    tags = run.data.tags
    assert tags["lema.reuse"] == "smoke"
    assert tags["lema.stage.sample"] == f"taken over from {smoke_run / 'smoke' / 'sample'}"
    assert tags["mlflow.parentRunId"] == parent.run_id
    assert "evaluate/synthetic-test/tuned/pass_at_1" in run.data.metrics


def test_a_dead_tracker_warns_once_and_never_slows_the_run(smoke_run, monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)  # MLflow's default: minutes of retries
    cfg = smoke(smoke_run, "run=smoke-dead", "reuse=[smoke]", "tracking.uri=http://127.0.0.1:9")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = main_pipeline(cfg)
    assert time.perf_counter() - t0 < 60
    assert len(tracking_warnings(caught)) == 1 and "127.0.0.1:9" in tracking_warnings(caught)[0]
    assert Storage(report).is_file()
    assert not (smoke_run / "smoke-dead" / "mlflow_run.json").exists()


def test_a_tracker_failing_midway_warns_once_and_stops_trying(smoke_run):
    cfg = smoke(smoke_run, "run=smoke-failing")
    tracker = Tracker(cfg, Storage(smoke_run).join("smoke-failing"))
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise OSError("disk full")

    tracker.client.log_batch = broken
    manifest = Storage(smoke_run).join("smoke", "train", "manifest.json").read_json()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_stage("train", "h1", manifest)
        tracker.log_stage("evaluate", "h2", {"results": [], "wall_s": 1.0})
        tracker.log_metrics({"a": 1})
        with tracker:
            pass
    assert len(calls) == 1 and len(tracking_warnings(caught)) == 1 and "disk full" in tracking_warnings(caught)[0]


def test_tracking_stays_out_of_stage_hashes_and_can_be_off(tmp_path):
    a = smoke(tmp_path)
    b = smoke(tmp_path, "tracking.uri=http://mlflow:5000", "tracking.experiment=x", "tracking.log_adapter=true")
    assert config_hash(a) == config_hash(b)
    off = Tracker(smoke(tmp_path, "tracking.enabled=false"), Storage(tmp_path).join("off"))
    assert off.run_id is None and off.off
    off.log_metrics({"a": 1})
    assert not (tmp_path / "mlflow.db").exists()


def test_a_remote_output_dir_without_a_uri_turns_tracking_off(tmp_path, s3_server):
    cfg = smoke(s3_server("tracked"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = Tracker(cfg, Storage(tmp_path).join("remote"))
    assert tracker.off and "tracking.uri" in tracking_warnings(caught)[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_run(smoke_run, tmp_path):
    """The MLflow server on loopback over the run's store; headless Chromium loads the run's page."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")
    run_id = runs(smoke_run, "smoke").iloc[0]["run_id"]
    experiment_id = runs(smoke_run, "smoke").iloc[0]["experiment_id"]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{smoke_run}/mlflow.db", "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        page = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"  # the overview: description, metrics
        shot = tmp_path / "run_page.png"
        common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                  "--window-size=1400,1000"]
        dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
        subprocess.run([*common, f"--screenshot={shot}", page], capture_output=True, timeout=120)
        assert all(text in dom for text in ("smoke", "train/train_loss", "evaluate/synthetic-test/tuned/pass_at_1"))
        assert shot.stat().st_size > 10_000
        shutil.copy(shot, "/tmp/mlflow_run_page.png")
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        server.wait(timeout=30)
