"""Every run of the loop as an MLflow run, so runs can be found and compared side by side.

    with Tracker(cfg, run_dir, from_stage) as tracker:
        ...                                          # each stage, then:
        tracker.log_stage(name, digest, manifest, redone)
        tracker.log_report(report_uri)

Params: the resolved config, flattened (`train.learning_rate`), values cut to MLflow's limits.
Tags: each stage's config hash and how it came to be (ran, taken over with `reuse`, redone with
`--from`), the code's git commit, the adapter's URI. Metrics, when a stage finishes: its manifest's
figures as `<stage>/<key>`; the train stage's per-step history (`train/train_loss`, `train/lr`,
`train/eval_loss` by step, read from its manifest on the driver: the Ray Train workers never talk
to MLflow); pass@1 per dataset and variant under both grading modes with 95% Wilson bounds.
Artifacts: `report/report.md` and its plots; the adapter's weights only with `tracking.log_adapter`.

Where: `tracking.uri`, else $MLFLOW_TRACKING_URI, else the embedded store beside the runs
(`sqlite:///<output_dir>/mlflow.db`, artifacts in `<output_dir>/mlartifacts`). The run's id is kept
in `<run>/mlflow_run.json`: a resumed run continues its MLflow run and logs only the stages not yet
logged there. A tracker that fails or cannot be reached never fails or slows the job: the first
failure gives one warning and turns tracking off for the run; the manifests keep every figure.
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lema.config import LemaConfig
from lema.metrics import wilson_interval
from lema.storage import Storage

STATE_FILE = "mlflow_run.json"  # in the run's directory: {tracking_uri, run_id, logged: {stage: hash}}
HISTORY_KEYS = ("train_loss", "eval_loss", "lr", "step_time_s")  # per-step figures of the train stage
# An unreachable server must cost seconds, not MLflow's default 7 retries with backoff (minutes);
# set these variables yourself to change them.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI


def tracking_uri(cfg: LemaConfig) -> str | None:
    """Where the runs go: tracking.uri, $MLFLOW_TRACKING_URI, or the embedded store under a local
    output_dir (None for a remote output_dir: a SQLite file cannot live in an object store)."""
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    out = Storage(cfg.output_dir)
    return f"sqlite:///{out.path}/mlflow.db" if out.local else None


def flat_params(tree: Any, prefix: str = "") -> dict[str, str]:
    """A config as dotted keys -> strings (lists kept whole, as YAML would show them)."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in flat_params(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): str(tree)}


def flat_metrics(tree: Any, prefix: str) -> dict[str, float]:
    """The numbers in a manifest or summary as `prefix/key/sub` (booleans, strings and lists left out,
    except a 95% interval `ci95: [low, high]`, which gives `ci95_low` and `ci95_high`)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flat_metrics(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
        elif str(key).endswith("ci95") and isinstance(value, (list, tuple)) and len(value) == 2:
            out[f"{name}_low"], out[f"{name}_high"] = float(value[0]), float(value[1])
    return out


def stage_metrics(stage: str, manifest: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(name, value, step) for one finished stage: its figures at step 0, the train stage's history by
    step, and each evaluation result's pass@1 (both grading modes) with 95% Wilson bounds."""
    points = [(k, v, 0) for k, v in flat_metrics(manifest, stage).items()]
    for h in manifest.get("history") or []:
        points += [(f"{stage}/{k}", float(h[k]), int(h["step"])) for k in HISTORY_KEYS if h.get(k) is not None]
    for r in manifest.get("results") or []:
        # the row's ci95 and step: pass_at_1_ci95 below, and no figure (base and start have no step)
        figures = {k: v for k, v in r.items() if k not in ("dataset", "variant", "ci95", "step")}
        n = int(r.get("problems") or 0)
        for mode in ("pass_at_1", "pass_at_1_lema_compat"):  # on problems: pass@1 rounded to whole ones
            if r.get(mode) is not None:
                figures[f"{mode}_ci95"] = wilson_interval(round(r[mode] * n), n)
        points += [(k, v, 0) for k, v in flat_metrics(figures, f"{stage}/{r['dataset']}/{r['variant']}").items()]
    return points


def metric_name(name: str) -> str:
    """A name MLflow accepts: its characters only, no empty or dot segments, at most 250 long."""
    name = re.sub(r"[^/\w.\- ]", "_", name)
    return "/".join(s if s.strip(".") else "_" for s in name.split("/"))[:250]


def git_commit() -> str | None:
    """The commit of the code that runs (None outside a git checkout, e.g. a Ray job's working dir)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


class Tracker:
    """One run of the loop (or of a benchmark) as an MLflow run; every method is safe to call."""

    def __init__(self, cfg: LemaConfig, run_dir: Storage, from_stage: str | None = None):
        self.cfg, self.run_dir = cfg, run_dir
        self.client: Any = None
        self.run_id: str | None = None
        self.state: dict[str, Any] = {}
        self.off = not cfg.tracking.enabled
        self.uri = tracking_uri(cfg)
        self._safely(self._start, from_stage)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        status = "FINISHED" if exc_type is None else "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        self._safely(lambda: self.client.set_terminated(self.run_id, status))

    def _safely(self, fn: Any, *args: Any) -> None:
        """Run one MLflow step; the first failure warns once and turns tracking off."""
        if self.off:
            return
        try:
            fn(*args)
        except Exception as e:  # whatever the tracker does, the job goes on
            self.off = True
            warnings.warn(f"MLflow tracking is off for run {self.cfg.run!r} ({self.uri}): {type(e).__name__}: "
                          f"{str(e)[:300]}; the stage manifests keep every figure", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------ start or resume
    def _start(self, from_stage: str | None) -> None:
        if self.uri is None:
            raise RuntimeError(f"output_dir {self.cfg.output_dir} is not local: no embedded store there; "
                               "set tracking.uri or MLFLOW_TRACKING_URI")
        if self.uri.startswith(("http://", "https://")):
            for key, value in HTTP_LIMITS.items():
                os.environ.setdefault(key, value)
            where = urlsplit(self.uri)  # one quick look before MLflow's own retries
            socket.create_connection((where.hostname, where.port or (443 if where.scheme == "https" else 80)),
                                     timeout=3).close()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.uri)
        params = {k[:250]: v[:6000] for k, v in flat_params(self.cfg.model_dump(mode="json")).items()}
        tags = {k: v for k, v in {"lema.output": self.run_dir.uri, "mlflow.source.git.commit": git_commit(),
                                  "mlflow.parentRunId": self.cfg.tracking.parent_run,
                                  "lema.reuse": ", ".join(self.cfg.reuse) or None}.items() if v is not None}
        notes = []
        run = self._earlier_run()
        if run is not None:  # a resumed run: the same MLflow run, its first params kept
            self.run_id = run.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            notes.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} resumed")
            changed = sorted(k for k, v in params.items() if run.data.params.get(k, v) != v)
            if changed:  # MLflow keeps a param's first value: the new ones go into the note
                notes.append("config changed since the first start: "
                             + "; ".join(f"{k} = {params[k]}" for k in changed))
            params = {k: v for k, v in params.items() if k not in run.data.params}
        else:
            run = self.client.create_run(self._experiment_id(), run_name=self.cfg.run, tags=tags)
            self.run_id, self.state = run.info.run_id, {"tracking_uri": self.uri, "run_id": run.info.run_id,
                                                        "logged": {}}
        if from_stage:
            notes.append(f"--from {from_stage}: that stage and the ones after it redone and logged again")
        if notes:
            tags[NOTE_TAG] = "\n".join(filter(None, [run.data.tags.get(NOTE_TAG), "; ".join(notes)]))[-8000:]
        self._log(params=params, tags=tags)
        self.run_dir.join(STATE_FILE).write_json(self.state)

    def _earlier_run(self) -> Any:
        """The MLflow run this run directory began in this store (None: none yet, or deleted)."""
        from mlflow.exceptions import MlflowException

        state = self.run_dir.join(STATE_FILE).read_json() or {}
        if state.get("tracking_uri") != self.uri:
            return None
        try:
            run = self.client.get_run(state["run_id"])
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return None
        self.state = state
        return run if run.info.lifecycle_stage == "active" else None

    def _experiment_id(self) -> str:
        """The experiment's id, created when new (with the embedded store: artifacts beside it)."""
        experiment = self.client.get_experiment_by_name(self.cfg.tracking.experiment)
        if experiment is not None:
            return experiment.experiment_id
        out = Storage(self.cfg.output_dir)
        artifacts = Path(out.path, "mlartifacts").as_uri() if self.uri.startswith("sqlite:") and out.local else None
        return self.client.create_experiment(self.cfg.tracking.experiment, artifact_location=artifacts,
                                             tags={"mlflow.experimentKind": "custom_model_development"})  # UI view

    def _log(self, metrics: list[tuple[str, float, int]] = (), params: dict[str, str] | None = None,
             tags: dict[str, str] | None = None) -> None:
        """One log_batch per MLflow's batch limits (100 params or tags, 1000 metrics)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        ms = [Metric(metric_name(k), v if math.isfinite(v) else float("nan"), now, step) for k, v, step in metrics]
        ps = [Param(k, v) for k, v in (params or {}).items()]
        ts = [RunTag(k, str(v)[:8000]) for k, v in (tags or {}).items()]
        for i in range(0, len(ms), 1000):
            self.client.log_batch(self.run_id, metrics=ms[i:i + 1000])
        for i in range(0, len(ps), 100):
            self.client.log_batch(self.run_id, params=ps[i:i + 100])
        for i in range(0, len(ts), 100):
            self.client.log_batch(self.run_id, tags=ts[i:i + 100])

    # ------------------------------------------------------------ what the loop calls
    def log_stage(self, stage: str, digest: str, manifest: dict[str, Any] | None, redone: bool = False) -> None:
        """A stage's figures and tags, once per stage and config hash (again when `--from` redid it)."""
        if self.off or not manifest or (not redone and self.state["logged"].get(stage) == digest):
            return

        def log() -> None:
            how = (f"taken over from {manifest['taken_over_from']}" if manifest.get("taken_over_from")
                   else "redone (--from)" if redone else "complete")
            tags = {f"lema.hash.{stage}": digest, f"lema.stage.{stage}": how}
            for kind in ("adapter", "model"):  # the tuned adapter (LoRA, QLoRA) or model (full)
                if manifest.get(f"{kind}_dir"):
                    tags[f"lema.{kind}"] = manifest[f"{kind}_dir"]
            self._log(stage_metrics(stage, manifest), tags=tags)
            if manifest.get("adapter_dir") and self.cfg.tracking.log_adapter:
                self.client.log_artifacts(self.run_id, Storage(manifest["adapter_dir"]).local_dir(), "adapter")
            self.state["logged"][stage] = digest
            self.run_dir.join(STATE_FILE).write_json(self.state)

        self._safely(log)

    def log_metrics(self, figures: dict[str, Any], prefix: str = "") -> None:
        """The numbers of a result tree (a benchmark's summary) as `[prefix/]key/sub` metrics."""
        self._safely(lambda: self._log([(k, v, 0) for k, v in flat_metrics(figures, prefix).items()]))

    def log_report(self, report_uri: str) -> None:
        """The report (Markdown) and the PNGs beside it, as the run's `report/` artifacts."""

        def log() -> None:
            where = Storage(report_uri).parent
            with tempfile.TemporaryDirectory() as tmp:
                for name in where.list():
                    if name == Storage(report_uri).name or name.endswith(".png"):
                        Path(tmp, name).write_bytes(where.join(name).read_bytes())
                self.client.log_artifacts(self.run_id, tmp, "report")

        self._safely(log)
