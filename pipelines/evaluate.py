"""The evaluate stage: pass@1 (greedy), pass@k and majority vote, base model vs base+adapter.

Evaluation is sampling on test problems with the same actor pool and engines as the sample
stage; every per-problem prediction is kept as a Path part (`part-<dataset>--<variant>-*`).
Each prediction is graded in both modes, `robust` and `lema_compat` (the paper's rules), and
pass@1 is reported under both side by side.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from lema.config import GeneratorConfig, ProblemSourceConfig
from lema.metrics import score_samples
from lema.records import EvalResult, Problem
from lema.sources import load_problems
from pipelines.pool import Timer, list_chunks
from pipelines.sample import sample_chunks
from pipelines.stage_io import RunContext, StageDir


def eval_label(src: ProblemSourceConfig) -> str:
    return f"{src.name}-{src.split}"


def eval_problems(ctx: RunContext) -> dict[str, list[Problem]]:
    """Each evaluation set's problems, by label, loaded once per run (rejected rows are left
    out and logged)."""

    def load() -> dict[str, list[Problem]]:
        sets = {}
        for src in ctx.cfg.evaluate.datasets:
            res = load_problems(src)
            if res.rejects:
                print(f"evaluate: {eval_label(src)}: {res.counts()['rejected']} malformed rows set aside")
            sets[eval_label(src)] = res.problems
        return sets

    return ctx.cached("eval_sets", load)


def score(paths: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """pass@1 (first sample, greedy when n=1), pass@k (unbiased) and majority vote per set,
    and pass@1 under the lema_compat grading of the same predictions."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in paths:
        by_problem[p["problem_id"]].append(p)
    ordered = [sorted(v, key=lambda p: p["sample_index"]) for v in by_problem.values()]
    samples = [[(p["predicted_answer"], bool(p["correct"])) for p in v] for v in ordered]
    n = min((len(s) for s in samples), default=0)
    s = score_samples(samples, [k for k in ks if k <= n] or [1])  # k above n is not defined
    compat = score_samples([[(p["compat_answer"], bool(p["compat_correct"])) for p in v] for v in ordered], [1])
    return {
        "problems": s["problems"],
        "n": s["n"],
        "pass_at_1": round(s["pass@1"], 4),
        "pass_at_1_lema_compat": round(compat["pass@1"], 4),
        "pass_at_k": {str(k): round(v, 4) for k, v in s["pass@k"].items()},
        "majority": round(s["majority"], 4) if n > 1 else None,
    }


def run_evaluate(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Evaluate the base model and the adapter on every evaluation set; write the table."""
    cfg, timer = ctx.cfg, Timer()
    ev, base_model = cfg.evaluate, cfg.base_model
    adapter = ctx.dir("train").manifest()["adapter_dir"]
    variants = ([("base", None)] if ev.base else []) + [("adapter", adapter)]
    runs = []  # (set label, variant, adapter dir, engine label, problem ids)
    for label, problems in eval_problems(ctx).items():
        rows = [p.to_dict() for p in problems]
        for variant, adapter_dir in variants:
            engine = ev.engine.model_copy(update={"model": base_model, "adapter": adapter_dir,
                                                  "name": f"{base_model}+{variant}"})
            prefix = f"{label}--{variant}-"
            sample_chunks(cfg, stage, list_chunks(stage, rows, "id", ev.pool.batch_size, prefix), len(rows),
                          GeneratorConfig(engine=engine, sampling=ev.sampling), ev.pool,
                          prefix=prefix, desc=f"evaluate {label} {variant}", compat=True)
            runs.append((label, variant, adapter_dir, engine.label, {p.id for p in problems}))

    all_preds = stage.read_rows()
    results: list[EvalResult] = []
    for label, variant, adapter_dir, engine_label, ids in runs:
        s = score([r for r in all_preds if r["generator"] == engine_label and r["problem_id"] in ids], ev.k)
        results.append(EvalResult(
            model=base_model, adapter=adapter_dir, dataset=label, n=s.get("n", 0),
            problems=s["problems"], pass_at_1=s["pass_at_1"], pass_at_k=s["pass_at_k"],
            majority=s["majority"], pass_at_1_lema_compat=s["pass_at_1_lema_compat"],
            predictions_file=stage.part(f"{label}--{variant}-*").uri,
        ))
    table = [dict(r.to_dict(), variant="adapter" if r.adapter else "base") for r in results]
    stage.file("results.json").write_json(table)
    return stage.write_manifest(stage_hash, results=table, headline_mode=cfg.grading_mode,
                                wall_s=timer.seconds)
