"""The whole LeMa loop as one Ray job.

    python -m pipelines.lema configs/demo.yaml [key.sub=value ...] [--from STAGE]
    ray job submit --working-dir . -- python -m pipelines.lema configs/demo.yaml

problems -> sample -> correct -> data -> train -> evaluate -> report. Each stage writes its
records and a manifest under <output_dir>/<run>/<stage>/; a stage whose manifest matches the
config is skipped, a half-done stage resumes from its finished parts, `--from` redoes from a
stage on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import yaml

from lema.config import ConfigError, LemaConfig, config_hash, load_config

STAGES = ["problems", "sample", "correct", "data", "train", "evaluate"]


def _log(msg: str) -> None:
    print(f"[lema {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def init_ray(cfg: LemaConfig) -> None:
    """Join the cluster of `ray job submit` (RAY_ADDRESS) or cfg.ray.address, else start locally."""
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get(
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")}}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        # address="local": a fresh local cluster, never some other process's
        ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False, runtime_env=env)


class Run:
    """The stage directories and config hashes of one run; decides skip / resume / redo."""

    def __init__(self, cfg: LemaConfig, from_stage: str | None):
        from pipelines.stage_io import StageDir

        self.cfg = cfg
        self.redo_from = STAGES.index(from_stage) if from_stage else len(STAGES)
        self.dirs = {s: StageDir(cfg.output_dir, cfg.run, s) for s in STAGES}
        self.hashes: dict[str, str] = {}
        self.wall: dict[str, float] = {}

    def begin(self, stage: str, parts: dict[str, Any]) -> bool:
        """Fix the stage's hash (its config + the upstream hash); True when it must run."""
        upstream = self.hashes[STAGES[STAGES.index(stage) - 1]] if stage != STAGES[0] else ""
        self.hashes[stage] = config_hash({"upstream": upstream, **parts})
        d = self.dirs[stage]
        if STAGES.index(stage) >= self.redo_from:
            d.clear()
        elif d.is_complete(self.hashes[stage]):
            _log(f"{stage}: complete for this config, skipped")
            return False
        elif d.manifest() is not None:  # finished under another config: start over
            d.clear()
        _log(f"{stage}: running" + (" (resuming)" if d.done_parts() else ""))
        self.wall[stage] = time.perf_counter()
        return True

    def end(self, stage: str, manifest: dict[str, Any]) -> None:
        _log(f"{stage}: done in {time.perf_counter() - self.wall[stage]:.1f}s "
             f"{json.dumps({k: v for k, v in manifest.items() if isinstance(v, (int, float))})}")


def main_pipeline(cfg: LemaConfig, from_stage: str | None = None, until: str | None = None) -> str:
    """Run (or resume) the loop, through `until` if given; returns the report path (or, when
    stopping early, the last stage's directory)."""
    from lema.records import Problem
    from lema.sources import load_problems
    from pipelines.correct import run_correct
    from pipelines.data import run_data
    from pipelines.evaluate import load_eval_problems, run_evaluate
    from pipelines.report import write_report
    from pipelines.sample import run_sample
    from pipelines.train import run_training

    run = Run(cfg, from_stage)
    run_dir = run.dirs["problems"].path.rsplit("/", 1)[0]
    run.dirs["problems"].fs.create_dir(run_dir, recursive=True)
    with run.dirs["problems"].fs.open_output_stream(f"{run_dir}/config.yaml") as f:
        f.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode())
    init_ray(cfg)

    # ---- problems: load the training problems, set malformed rows aside
    d = run.dirs["problems"]
    if run.begin("problems", {"problems": cfg.problems.model_dump(mode="json")}):
        res = load_problems(cfg.problems)
        d.write_part("00000", [p.to_dict() for p in res.problems])
        d.write_json("rejects.json", res.rejects)
        run.end("problems", d.write_manifest(run.hashes["problems"], source=cfg.problems.name,
                                             **res.counts()))
    problems = [Problem.from_dict(r) for r in d.read_rows()]
    if until == "problems":
        return d.path

    # ---- sample: n graded paths per problem from each generator
    d = run.dirs["sample"]
    if run.begin("sample", {"sample": cfg.sample.model_dump(mode="json"), "grading": cfg.grading_mode}):
        run.end("sample", run_sample(cfg, problems, d, run.hashes["sample"]))
    paths = d.read_rows()
    if until == "sample":
        return d.path

    # ---- correct: the corrector names, explains and fixes the first wrong step
    d = run.dirs["correct"]
    if run.begin("correct", {"correct": cfg.correct.model_dump(mode="json")}):
        by_id = {p.id: p.to_dict() for p in problems}
        run.end("correct", run_correct(cfg, paths, by_id, d, run.hashes["correct"]))
    corrections = d.read_rows()
    if until == "correct":
        return d.path

    # ---- data: CoT + verified corrections, deduplicated, decontaminated against eval sets
    d = run.dirs["data"]
    eval_sets = load_eval_problems(cfg.evaluate)
    if run.begin("data", {"data": cfg.data.model_dump(mode="json"),
                          "eval": [s.model_dump(mode="json") for s in cfg.evaluate.datasets]}):
        eval_questions = [p.question for ps in eval_sets.values() for p in ps]
        run.end("data", run_data(cfg, problems, paths, corrections, eval_questions, d,
                                 run.hashes["data"]))
    if until == "data":
        return d.path

    # ---- train: LoRA fine-tune on Ray Train
    d = run.dirs["train"]
    base_model = cfg.train.base_model or cfg.sample.generators[0].engine.model
    if run.begin("train", {"train": cfg.train.model_dump(mode="json"), "base": base_model}):
        data_dir = run.dirs["data"]
        result = run_training(data_dir.file_path("train.jsonl"), cfg.train.model_copy(
            update={"base_model": base_model}), storage_dir=d.path, name="ray_train",
            eval_path=data_dir.file_path("held_out.jsonl"))
        manifest = {**result.to_manifest(), "history": result.history}
        run.end("train", d.write_manifest(run.hashes["train"], **manifest))
    adapter = d.manifest()["adapter_dir"]
    if until == "train":
        return d.path

    # ---- evaluate: base vs base+adapter on the evaluation sets
    d = run.dirs["evaluate"]
    if run.begin("evaluate", {"evaluate": cfg.evaluate.model_dump(mode="json"),
                              "prompt": cfg.sample.prompt}):
        run.end("evaluate", run_evaluate(cfg, base_model, adapter, eval_sets, d,
                                                 run.hashes["evaluate"]))

    # ---- report: Markdown + plots of every stage's figures
    report = write_report(run_dir, STAGES)
    sample, corr = run.dirs["sample"].manifest() or {}, run.dirs["correct"].manifest() or {}
    lines = [f"{len(problems)} problems -> {sample.get('paths', 0)} paths ({sample.get('inaccurate', 0)} "
             f"inaccurate) -> {corr.get('verified', 0)}/{corr.get('attempted', 0)} corrections verified"]
    for r in (run.dirs["evaluate"].manifest() or {}).get("results", []):
        lines.append(f"{r['dataset']:>24} {r['variant']:<8} pass@1 {r['pass_at_1']:.3f} ({r['problems']} problems)")
    _log("summary:\n  " + "\n  ".join(lines))
    _log(f"report: {report}")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.lema", description=__doc__.split("\n")[1])
    p.add_argument("config", help="a YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--from", dest="from_stage", choices=STAGES, help="redo from this stage on")
    p.add_argument("--until", choices=STAGES, help="stop after this stage")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # overrides may follow the options
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _log("config:\n" + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    if cfg.dry_run:
        _log(f"dry run: would run {' -> '.join(STAGES)} into {cfg.output_dir}/{cfg.run}")
        return 0
    main_pipeline(cfg, args.from_stage, args.until)
    return 0


if __name__ == "__main__":
    sys.exit(main())
