"""The evaluate stage: pass@1 (greedy), pass@k and majority vote: base, start adapter, tuned model.

Evaluation is sampling on test problems with the same actor pool and engines as the sample
stage; every per-problem prediction is kept as a Path part (`part-<dataset>--<variant>-*`).
Each prediction is graded in both modes, `robust` and `lema_compat` (the paper's rules), and
pass@1 is reported under both side by side.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, NamedTuple

from lema.config import GeneratorConfig, ProblemSourceConfig
from lema.metrics import score_samples, wilson_interval
from lema.records import EvalResult, Problem
from lema.sources import load_problems
from pipelines.pool import Timer, list_chunks
from pipelines.sample import sample_chunks
from pipelines.stage_io import RunContext, StageDir

DEV = "dev"  # the dev split's label: training problems held out of training (checkpoint selection)


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
        "ci95": [round(x, 4) for x in wilson_interval(round(s["pass@1"] * s["problems"]), s["problems"])],
        "pass_at_1_lema_compat": round(compat["pass@1"], 4),
        "pass_at_k": {str(k): round(v, 4) for k, v in s["pass@k"].items()},
        "majority": round(s["majority"], 4) if n > 1 else None,
    }


def dev_problems(ctx: RunContext) -> list[Problem]:
    """The dev split for checkpoint selection: training problems the data stage held out of
    training (`data.eval_fraction`, by problem id), at most `evaluate.dev_count`, in the order the
    problems stage wrote them (parts are read one at a time until there are enough)."""
    from lema.training_data import held_out

    cfg, stage, out = ctx.cfg, ctx.dir("problems"), []
    for part in sorted(stage.done_parts()):
        out += [Problem.from_dict(r) for r in stage.read_part(part)
                if held_out(r["id"], cfg.data.seed, cfg.data.eval_fraction)]
        if len(out) >= cfg.evaluate.dev_count:
            break
    return out[: cfg.evaluate.dev_count]


class Scored(NamedTuple):
    """A model the evaluate stage scores: its variant name, model, adapter and training step."""

    variant: str  # base, start, tuned or step_<N> (a snapshot of train.checkpoints)
    model: str
    adapter: str | None
    step: int | None  # the optimizer step it was saved at (None: not trained in this run)


def models_to_score(ctx: RunContext) -> tuple[list[Scored], list[Scored]]:
    """What the test sets score besides the checkpoints (base, the start adapter), and the
    checkpoints: the tuned model and the snapshots of `train.checkpoints` before the last."""
    cfg, train = ctx.cfg, ctx.dir("train").manifest()
    base = cfg.base_model
    full = train.get("method") == "full"

    def tuned(variant: str, where: str, step: int) -> Scored:
        return Scored(variant, where, None, step) if full else Scored(variant, base, where, step)

    references = [Scored("base", base, None, None)] if cfg.evaluate.base else []
    if cfg.evaluate.base and cfg.train.init_adapter:
        references.append(Scored("start", base, cfg.train.init_adapter, None))
    checkpoints = [tuned("tuned", train["model_dir" if full else "adapter_dir"], train["steps"])]
    checkpoints += [tuned(f"step_{s['step']:06d}", s["dir"], s["step"]) for s in train.get("snapshots") or []
                    if s["step"] != train["steps"]]
    return references, checkpoints


def select_checkpoint(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per test set: the checkpoint chosen on the dev split (ties to the later step) with its test
    pass@1, beside the paper's protocol (the best of N on the test set, the mean of its top 3),
    each labelled as what it is. `rows`: the results table; the dev rows are the checkpoints'."""
    dev = {r["variant"]: r for r in rows if r["dataset"] == DEV}
    chosen = max(dev.values(), key=lambda r: (r["pass_at_1"], r["step"]))
    out = []
    for label in sorted({r["dataset"] for r in rows} - {DEV}):
        test = sorted((r for r in rows if r["dataset"] == label and r["variant"] in dev),
                      key=lambda r: (-r["pass_at_1"], -r["step"]))
        pick = next(r for r in test if r["variant"] == chosen["variant"])
        out.append({
            "dataset": label, "checkpoints": len(dev), "steps": sorted(r["step"] for r in dev.values()),
            "dev_problems": chosen["problems"],
            "dev_selected": {"what": "chosen on the dev split (training problems held out of training): an honest "
                                     "test figure", "step": chosen["step"], "variant": chosen["variant"],
                             "dev_pass_at_1": chosen["pass_at_1"],
                             "test_pass_at_1": pick["pass_at_1"], "test_ci95": pick["ci95"]},
            "paper_best_on_test": {"what": "the paper's protocol: the best of the checkpoints on the test set "
                                           "itself (optimistic)", "step": test[0]["step"],
                                   "test_pass_at_1": test[0]["pass_at_1"], "test_ci95": test[0]["ci95"]},
            "paper_top3_mean_on_test": {"what": "the paper's Table 5: the mean of the 3 best checkpoints on the "
                                                "test set (optimistic)",
                                        "test_pass_at_1": round(sum(r["pass_at_1"] for r in test[:3])
                                                                / len(test[:3]), 4)},
        })
    return out


def run_evaluate(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Evaluate the base model, the start adapter and the tuned model on every evaluation set,
    and the snapshots of `train.checkpoints` with checkpoint selection on the dev split; write
    `results.json`: {"results": [a row per set and variant], "selection": [...]}."""
    cfg, timer = ctx.cfg, Timer()
    ev = cfg.evaluate
    references, checkpoints = models_to_score(ctx)
    sets = dict(eval_problems(ctx))
    plan = [(label, m) for label in sets for m in references + checkpoints]
    selecting = len(checkpoints) > 1
    if selecting:
        sets[DEV] = dev_problems(ctx)
        plan += [(DEV, m) for m in checkpoints]
    runs = []  # (set label, what is scored, engine label)
    for label, m in plan:
        rows = [p.to_dict() for p in sets[label]]
        engine = ev.engine.model_copy(update={"model": m.model, "adapter": m.adapter,
                                              "name": f"{cfg.base_model}+{m.variant}"})
        prefix = f"{label}--{m.variant}-"
        sample_chunks(cfg, stage, list_chunks(stage, rows, "id", ev.pool.batch_size, prefix), len(rows),
                      GeneratorConfig(engine=engine, sampling=ev.sampling), ev.pool,
                      prefix=prefix, desc=f"evaluate {label} {m.variant}", compat=True)
        runs.append((label, m, engine.label))

    all_preds = stage.read_rows()
    table: list[dict[str, Any]] = []
    for label, m, engine_label in runs:
        ids = {p.id for p in sets[label]}
        s = score([r for r in all_preds if r["generator"] == engine_label and r["problem_id"] in ids], ev.k)
        result = EvalResult(
            model=m.model, adapter=m.adapter, dataset=label, n=s.get("n", 0),
            problems=s["problems"], pass_at_1=s["pass_at_1"], pass_at_k=s["pass_at_k"],
            majority=s["majority"], pass_at_1_lema_compat=s["pass_at_1_lema_compat"],
            predictions_file=stage.part(f"{label}--{m.variant}-*").uri,
        )
        table.append(dict(result.to_dict(), variant=m.variant, step=m.step, ci95=s["ci95"]))
    selection = select_checkpoint(table) if selecting else None
    stage.file("results.json").write_json({"results": table, "selection": selection})
    return stage.write_manifest(stage_hash, results=table, selection=selection, headline_mode=cfg.grading_mode,
                                wall_s=timer.seconds)
