"""The evaluate stage: pass@1 (greedy), pass@k and majority vote, base model vs base+adapter.

Evaluation is sampling on test problems with the same actor pool and engines as the sample
stage; every per-problem prediction is kept as a Path part (`part-<dataset>--<variant>-*`).
Run alone: `python -m pipelines.evaluate CONFIG [key=val ...]`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from lema.config import EvaluateConfig, GeneratorConfig, LemaConfig, ProblemSourceConfig
from lema.metrics import score_samples
from lema.records import EvalResult, Problem
from lema.sources import load_problems
from pipelines.pool import Timer
from pipelines.sample import sample_chunks
from pipelines.stage_io import StageDir


def eval_label(src: ProblemSourceConfig) -> str:
    return f"{src.name}-{src.split}"


def load_eval_problems(cfg: EvaluateConfig) -> dict[str, list[Problem]]:
    """Each evaluation set's problems, by label (rejected rows are left out and logged)."""
    sets = {}
    for src in cfg.datasets:
        res = load_problems(src)
        if res.rejects:
            print(f"evaluate: {eval_label(src)}: {res.counts()['rejected']} malformed rows set aside")
        sets[eval_label(src)] = res.problems
    return sets


def score(paths: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """pass@1 (first sample, greedy when n=1), pass@k (unbiased) and majority vote per set."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in paths:
        by_problem[p["problem_id"]].append(p)
    samples = [[(p["predicted_answer"], bool(p["correct"])) for p in sorted(v, key=lambda p: p["sample_index"])]
               for v in by_problem.values()]
    n = min((len(s) for s in samples), default=0)
    s = score_samples(samples, [k for k in ks if k <= n] or [1])  # k above n is not defined
    return {
        "problems": s["problems"],
        "n": s["n"],
        "pass_at_1": round(s["pass@1"], 4),
        "pass_at_k": {str(k): round(v, 4) for k, v in s["pass@k"].items()},
        "majority": round(s["majority"], 4) if n > 1 else None,
    }


def run_evaluate(cfg: LemaConfig, base_model: str, adapter: str | None,
                 eval_sets: dict[str, list[Problem]], stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Evaluate the base model and the adapter on every evaluation set; write the table."""
    timer = Timer()
    ev = cfg.evaluate
    variants = ([("base", None)] if ev.base or adapter is None else []) + ([("adapter", adapter)] if adapter else [])
    runs = []  # (set label, variant, adapter dir, engine label, problem ids)
    for label, problems in eval_sets.items():
        rows = [p.to_dict() for p in problems]
        for variant, adapter_dir in variants:
            engine = ev.engine.model_copy(update={"model": base_model, "adapter": adapter_dir,
                                                  "name": f"{base_model}+{variant}"})
            sample_chunks(cfg, stage, rows, GeneratorConfig(engine=engine, sampling=ev.sampling), ev.pool,
                          prefix=f"{label}--{variant}-", desc=f"evaluate {label} {variant}")
            runs.append((label, variant, adapter_dir, engine.label, {p.id for p in problems}))

    all_preds = stage.read_rows()
    results: list[EvalResult] = []
    for label, variant, adapter_dir, engine_label, ids in runs:
        s = score([r for r in all_preds if r["generator"] == engine_label and r["problem_id"] in ids], ev.k)
        results.append(EvalResult(
            model=base_model, adapter=adapter_dir, dataset=label, n=s.get("n", 0),
            problems=s["problems"], pass_at_1=s["pass_at_1"], pass_at_k=s["pass_at_k"],
            majority=s["majority"], predictions_file=stage.part_path(f"{label}--{variant}-*"),
        ))
    table = [dict(r.to_dict(), variant="adapter" if r.adapter else "base") for r in results]
    stage.write_json("results.json", table)
    return stage.write_manifest(stage_hash, results=table, wall_s=timer.seconds)


if __name__ == "__main__":  # this stage and the ones before it (skipped when already complete)
    import sys

    from pipelines.lema import main

    sys.exit(main([*sys.argv[1:], "--until", "evaluate"]))
