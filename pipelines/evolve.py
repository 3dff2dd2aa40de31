"""The evolve stage (LeMa §2.2): seeds drawn from the corrected questions -> new questions, labelled.

Seeds are drawn with replacement from the problem ids of verified corrections (each correction
one entry: correction-centric) or uniformly from all training questions (`general`, the paper's
control). The seeds' problems are read from the problems stage by a Ray Data filter; the whole
selection goes to one `lema.evolution.evolve_questions` call (near-duplicates are found across
the selection), run as one Ray task with the evolver pool's CPUs and GPUs. The new questions are
this stage's part; the `evolve_sample` and `evolve_correct` stages then sample and correct them
as the originals were (`pipelines.lema`), and their verified corrections join the correction data
only, with `origin: evolved`.

Driver memory: the correction entries' problem ids (one per verified correction; with `general`,
every training problem's id), the drawn seeds' problems and the new questions (`evolve.seeds`
of each), the seeds' accuracies and two 10-bin histograms.

A killed evolve stage redoes its one call (an API evolver's replies come from the response cache
when `openai.cache` is on).
"""

from __future__ import annotations

from typing import Any

from lema.config import GeneratorConfig, LemaConfig
from lema.evolution import ORIGIN, seed_rows, select_seeds
from pipelines.correct import run_correct
from pipelines.evaluate import eval_problems
from pipelines.pool import Timer
from pipelines.sample import run_sample
from pipelines.stage_io import RunContext, StageDir, log

DIFFICULTY_BINS = 10  # histogram of per-question accuracy (fraction of sampled paths correct)


def run_evolve(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Draw the seeds, write one new question per seed (or a reject with its reason), label them."""
    cfg, timer = ctx.cfg, Timer()
    if not cfg.evolve.enabled:
        return stage.write_manifest(stage_hash, enabled=False, seeds=0, kept=0)
    problems, sample, correct = ctx.dir("problems"), ctx.dir("sample"), ctx.dir("correct")
    corrected = _column(correct.dataset().filter(_verified), "problem_id")
    everyone = _column(problems.dataset(), "id") if cfg.evolve.strategy == "general" else []
    draws = select_seeds(corrected, everyone, cfg.evolve.seeds, cfg.evolve.strategy, cfg.evolve.seed)
    wanted = set(draws)
    seed_problems = {r["id"]: r for r in problems.dataset().filter(lambda r: r["id"] in wanted).take_all()}
    seeds = seed_rows(draws, seed_problems)
    eval_questions = [p.question for ps in eval_problems(ctx).values() for p in ps]
    log(f"evolve: {len(draws)} seeds ({len(wanted)} distinct questions, {cfg.evolve.strategy}) "
        f"from {len(corrected)} verified corrections; evolver {_evolver(cfg)}")
    kept, rejects, counts = _evolve_remote(cfg, seeds, eval_questions)
    stage.write_part("00000", [{k: v for k, v in p.items() if k != "draw"} for p in kept])
    stage.file("rejects.json").write_json(rejects)
    return stage.write_manifest(
        stage_hash, enabled=True, strategy=cfg.evolve.strategy, evolver=_evolver(cfg),
        corrections=len(corrected), distinct_seeds=len(wanted), **counts, problems=len(kept),
        **_difficulty(sample, draws, wanted), wall_s=timer.seconds)


def _verified(row: dict[str, Any]) -> bool:
    return bool(row.get("verified")) and row.get("status") == "verified"


def _column(ds: Any, name: str) -> list[str]:
    """One column of a dataset, as the driver's list (ids only)."""
    return [str(x) for batch in ds.select_columns([name]).iter_batches(batch_format="numpy", batch_size=65536)
            for x in batch[name]]


def _evolver(cfg: LemaConfig) -> str:
    return "reference" if cfg.evolve.evolver == "reference" else cfg.evolve.engine.label


def _evolve_remote(cfg: LemaConfig, seeds: list[dict[str, Any]], eval_questions: list[str]):
    """`evolve_questions` in one Ray task with the evolver pool's CPUs and GPUs (its engine is
    built there, with the stage's shared API budget)."""
    import ray

    from actors.budget import stage_budget

    pool = cfg.evolve.pool
    engine_cfg = cfg.evolve.engine if cfg.evolve.evolver == "llm" else None
    with stage_budget(engine_cfg) as budget:
        task = ray.remote(_evolve_task).options(num_cpus=pool.num_cpus, num_gpus=pool.num_gpus or None,
                                                max_retries=pool.max_restarts)
        return ray.get(task.remote(cfg.evolve.model_dump(mode="json"), seeds, eval_questions, budget))


def _evolve_task(evolve: dict[str, Any], seeds: list[dict[str, Any]], eval_questions: list[str], budget: Any):
    from lema.config import EvolveConfig
    from lema.evolution import evolve_questions

    cfg = EvolveConfig.model_validate(evolve)
    engine = None
    if cfg.evolver == "llm":
        from lema.engines import build_engine

        engine = build_engine(cfg.engine, budget, cfg.pool.num_cpus)
    try:
        return evolve_questions(seeds, cfg, engine, eval_questions)
    finally:
        if engine is not None:
            engine.close()


def _difficulty(sample: StageDir, draws: list[str], wanted: set[str]) -> dict[str, list[int]]:
    """Histograms of per-question accuracy (fraction of sampled paths correct, by a Ray Data
    groupby): of every sampled training question, and of the seeds (one entry per draw; `wanted`:
    the distinct ones)."""
    import numpy as np

    scored = sample.dataset().select_columns(["problem_id", "correct"]).map_batches(
        lambda b: {"problem_id": b["problem_id"], "c": np.asarray(b["correct"], dtype=float)},
        batch_format="numpy")
    accuracy = scored.groupby("problem_id").mean("c").materialize()
    train = np.zeros(DIFFICULTY_BINS, dtype=np.int64)
    for batch in accuracy.iter_batches(batch_format="numpy", batch_size=65536):
        train += _bins(batch["mean(c)"])
    seeds = {str(r["problem_id"]): r["mean(c)"]
             for r in accuracy.filter(lambda r: r["problem_id"] in wanted).iter_rows()}
    drawn = np.array([seeds[pid] for pid in draws if pid in seeds], dtype=float)
    return {"train_difficulty": train.tolist(), "seed_difficulty": _bins(drawn).tolist()}


def _bins(values: Any) -> Any:
    """Counts of accuracies in DIFFICULTY_BINS equal bins of [0, 1]."""
    import numpy as np

    return np.histogram(np.asarray(values, dtype=float), bins=DIFFICULTY_BINS, range=(0.0, 1.0))[0]


def evolve_generators(cfg: LemaConfig) -> list[GeneratorConfig]:
    """The generators that make the evolved questions' mistakes: the sample stage's, on
    `evolve.generator_adapter` when set (round 2: the first round's fine-tuned model)."""
    adapter = cfg.evolve.generator_adapter
    if adapter is None:
        return cfg.sample.generators
    return [g.model_copy(update={"engine": g.engine.model_copy(update={"adapter": adapter})})
            for g in cfg.sample.generators]


def run_evolve_sample(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Sample the evolved questions (as the sample stage does the originals)."""
    if not ctx.cfg.evolve.enabled:
        return stage.write_manifest(stage_hash, enabled=False, paths=0)
    return run_sample(ctx, stage, stage_hash, source="evolve", generators=evolve_generators(ctx.cfg))


def run_evolve_correct(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Correct the evolved questions' inaccurate paths; the corrections carry `origin: evolved`."""
    if not ctx.cfg.evolve.enabled:
        return stage.write_manifest(stage_hash, enabled=False, attempted=0, verified=0)
    return run_correct(ctx, stage, stage_hash, source="evolve_sample", origin=ORIGIN)
