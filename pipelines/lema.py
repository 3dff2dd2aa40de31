"""The whole LeMa loop as one Ray job.

    python -m pipelines.lema configs/demo.yaml [key.sub=value ...] [--from STAGE] [--until STAGE]
    ray job submit --working-dir . -- python -m pipelines.lema configs/demo.yaml

problems -> sample -> correct -> [evolve -> evolve_sample -> evolve_correct] -> data -> train ->
evaluate -> report (the evolve stages do their work when `evolve.enabled`). Each stage writes its
records and a manifest under <output_dir>/<run>/<stage>/. A stage's hash covers the config
parts that decide its results and its inputs' hashes: a stage complete under the same hash is
skipped, one that began under the same hash resumes from its finished parts, one that began
under another hash starts over. `--from` redoes from a stage on, `--until` stops after one
(`--until sample` runs a stage alone, after the ones before it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from lema.config import ConfigError, LemaConfig, config_hash, load_config
from lema.sources import LoadResult, stream_problems
from lema.storage import Storage
from pipelines.correct import run_correct
from pipelines.data import run_data
from pipelines.evaluate import run_evaluate
from pipelines.evolve import evolve_generators, run_evolve, run_evolve_correct, run_evolve_sample
from pipelines.pool import StageFailed
from pipelines.ray_setup import init_ray
from pipelines.report import write_report
from pipelines.sample import run_sample
from pipelines.stage_io import MANIFEST, RunContext, StageDir, log
from pipelines.tracking import Tracker
from pipelines.train import run_train

PROBLEMS_PER_PART = 10_000


def run_problems(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Load the training problems into parts of `PROBLEMS_PER_PART`, as the source yields them;
    malformed rows are set aside with their reasons."""
    total = LoadResult(problems=[])
    kept = 0
    for i, batch in enumerate(stream_problems(ctx.cfg.problems, PROBLEMS_PER_PART)):
        stage.write_part(f"{i:05d}", [p.to_dict() for p in batch.problems])
        kept += len(batch.problems)
        total.rejects.extend(batch.rejects)
    stage.file("rejects.json").write_json(total.rejects)
    return stage.write_manifest(stage_hash, source=ctx.cfg.problems.name, **{**total.counts(), "problems": kept})


@dataclass(frozen=True)
class Stage:
    """One step of the loop."""

    name: str
    inputs: tuple[str, ...]  # stages whose records it reads (their hashes enter its own)
    config: Callable[[RunContext], Any]  # the config parts that decide its results
    run: Callable[[RunContext, StageDir, str], dict[str, Any]]  # writes records, returns the manifest


def fingerprints(*uris: str | None) -> list[str | None]:
    """What the adapters a stage starts from hold now, so a stage redoes when one is retrained
    under the same URI (a local dir or any storage URI; a hub id or None gives None)."""
    return [Storage(u).fingerprint() if u else None for u in uris]


def _evolve_sample_config(cfg: LemaConfig) -> dict[str, Any]:
    generators = evolve_generators(cfg)
    return {"sample": cfg.sample, "generators": generators,
            "adapters": fingerprints(*(g.engine.adapter for g in generators))}


STAGES: tuple[Stage, ...] = (
    Stage("problems", (), lambda c: c.cfg.problems, run_problems),
    Stage("sample", ("problems",), lambda c: {
        "sample": c.cfg.sample, "adapters": fingerprints(*(g.engine.adapter for g in c.cfg.sample.generators))},
        run_sample),
    Stage("correct", ("problems", "sample"),
          lambda c: {"correct": c.cfg.correct, "adapters": fingerprints(c.cfg.correct.engine.adapter)}, run_correct),
    Stage("evolve", ("problems", "sample", "correct"), lambda c: c.cfg.evolve.enabled and {
        "evolve": c.cfg.evolve, "eval": c.cfg.evaluate.datasets}, run_evolve),
    Stage("evolve_sample", ("evolve",), lambda c: c.cfg.evolve.enabled and _evolve_sample_config(c.cfg),
          run_evolve_sample),
    Stage("evolve_correct", ("evolve_sample",), lambda c: c.cfg.evolve.enabled and {
        "correct": c.cfg.correct, "adapters": fingerprints(c.cfg.correct.engine.adapter)}, run_evolve_correct),
    Stage("data", ("problems", "sample", "correct", "evolve_correct"),
          lambda c: {"data": c.cfg.data, "eval": c.cfg.evaluate.datasets, "prompt": c.cfg.sample.prompt}, run_data),
    Stage("train", ("data",), lambda c: {
        "train": c.cfg.train, "base": c.cfg.base_model, "init": fingerprints(c.cfg.train.init_adapter)}, run_train),
    Stage("evaluate", ("problems", "train"), lambda c: {
        "evaluate": c.cfg.evaluate, "prompt": c.cfg.sample.prompt, "base": c.cfg.base_model,
        "start": fingerprints(c.cfg.train.init_adapter), "dev": [c.cfg.data.seed, c.cfg.data.eval_fraction]},
        run_evaluate),
)
STAGE_NAMES = [s.name for s in STAGES]


def stage_hash(ctx: RunContext, stage: Stage) -> str:
    return config_hash({"config": stage.config(ctx), "inputs": {name: ctx.hashes[name] for name in stage.inputs}})


def begin(stage: StageDir, digest: str, redo: bool) -> bool:
    """Decide what to do with a stage's directory; True when the stage must run."""
    if redo:
        stage.clear()
    elif stage.is_complete(digest):
        log(f"{stage.stage}: complete for this config, skipped")
        return False
    elif stage.started_hash() != digest:  # another config began here (or an old run): start over
        stage.clear()
    resuming = bool(stage.done_parts())
    stage.mark_started(digest)
    log(f"{stage.stage}: running" + (" (resuming from its finished parts)" if resuming else ""))
    return True


def take_over(stage: StageDir, others: list[StageDir], digest: str) -> None:
    """Copy the first of `others` that finished this stage under the same hash into `stage`."""
    for other in others:
        if other.is_complete(digest):
            stage.clear()
            other.dir.copy_to(stage.dir)
            stage.file(MANIFEST).write_json({**(stage.manifest() or {}), "taken_over_from": other.uri})
            log(f"{stage.stage}: taken over from {other.uri} (same config)")
            return


_PATH_KEYS = {"model", "base_model", "adapter", "init_adapter", "path", "cache_dir", "output_dir"}


def absolute_paths(cfg: LemaConfig) -> LemaConfig:
    """The config with relative local paths that exist made absolute: Ray workers do not share the
    driver's working directory (Ray Train's change into their trial directory), hub ids stay."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: os.path.abspath(v) if k in _PATH_KEYS and isinstance(v, str) and "://" not in v
                    and not os.path.isabs(v) and os.path.exists(v) else walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return LemaConfig.model_validate(walk(cfg.model_dump(mode="json")))


def main_pipeline(cfg: LemaConfig, from_stage: str | None = None, until: str | None = None) -> str:
    """Run (or resume) the loop, through `until` if given; returns the report's URI (or, when
    stopping early, the last stage's directory)."""
    cfg = absolute_paths(cfg)
    run_dir = Storage(cfg.output_dir).join(cfg.run)
    run_dir.join("config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    ctx = RunContext(cfg, run_dir)
    redo_from = STAGE_NAMES.index(from_stage) if from_stage else len(STAGES)
    init_ray(cfg)
    with Tracker(cfg, run_dir, from_stage) as tracker:  # the run in MLflow (pipelines/tracking.py)
        for i, stage in enumerate(STAGES):
            digest = ctx.hashes[stage.name] = stage_hash(ctx, stage)
            out = ctx.dir(stage.name)
            if i < redo_from and not out.is_complete(digest):
                take_over(out, [StageDir(run_dir.parent.join(other), stage.name) for other in cfg.reuse], digest)
            if begin(out, digest, redo=i >= redo_from):
                start = time.perf_counter()
                manifest = stage.run(ctx, out, digest)
                figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in manifest.items()
                           if isinstance(v, (int, float)) and k != "complete"}
                log(f"{stage.name}: done in {time.perf_counter() - start:.1f}s {figures}")
            tracker.log_stage(stage.name, digest, out.manifest(), redone=i >= redo_from)
            if stage.name == until:
                return out.uri

        report = write_report(run_dir, STAGE_NAMES)
        tracker.log_report(report)
    log("summary:\n  " + "\n  ".join(summary_lines(ctx)))
    log(f"report: {report}")
    return report


def summary_lines(ctx: RunContext) -> list[str]:
    """What the run did, in a few lines a person reads at the end of the log."""
    problems, sample, corr = (ctx.dir(s).manifest() or {} for s in ("problems", "sample", "correct"))
    lines = [f"{problems.get('problems', 0)} problems -> {sample.get('paths', 0)} paths ({sample.get('inaccurate', 0)} "
             f"inaccurate) -> {corr.get('verified', 0)}/{corr.get('attempted', 0)} corrections verified"]
    evaluate = ctx.dir("evaluate").manifest() or {}
    for r in evaluate.get("results", []):
        lo, hi = r.get("ci95") or (0.0, 0.0)
        lines.append(f"{r['dataset']:>24} {r['variant']:<11} pass@1 {r['pass_at_1']:.3f} [{lo:.3f}, {hi:.3f}] "
                     f"(lema_compat {r['pass_at_1_lema_compat']:.3f}; {r['problems']} problems)")
    for s in evaluate.get("selection") or []:
        d, b = s["dev_selected"], s["paper_best_on_test"]
        lines.append(f"{s['dataset']:>24} checkpoint chosen on dev: step {d['step']}, test pass@1 "
                     f"{d['test_pass_at_1']:.3f}; the paper's best of {s['checkpoints']} on test: step {b['step']}, "
                     f"{b['test_pass_at_1']:.3f}; top-3 mean {s['paper_top3_mean_on_test']['test_pass_at_1']:.3f}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.lema", description=__doc__.split("\n")[1])
    p.add_argument("config", help="a YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--from", dest="from_stage", choices=STAGE_NAMES, help="redo from this stage on")
    p.add_argument("--until", choices=STAGE_NAMES, help="stop after this stage")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # overrides may follow the options
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log("config:\n" + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    if cfg.dry_run:
        log(f"dry run: would run {' -> '.join(STAGE_NAMES)} into {cfg.output_dir}/{cfg.run}")
        return 0
    try:
        main_pipeline(cfg, args.from_stage, args.until)
    except StageFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
