"""The sample stage: Problems -> graded Paths, on a Ray Data actor pool (one engine per actor).

Problems stream from the problems stage's parts (`part_chunks`); the manifest's figures are the
sum of each chunk's counts. Also the runner of the evaluate stage, which samples test problems
the same way.
"""

from __future__ import annotations

from typing import Any

from actors.budget import stage_budget
from lema.config import GeneratorConfig, LemaConfig, PoolConfig
from lema.sampling import count_paths, sample_problems, summarize_paths
from pipelines.pool import ChunkWorker, Timer, add_counts, failure_side, part_chunks, read_sides, run_chunks
from pipelines.stage_io import RunContext, StageDir


class SampleStage(ChunkWorker):
    """One actor: builds its engine once, then samples and grades a chunk of problems per call."""

    def __init__(self, generator: dict[str, Any], prompt: str, compat: bool, cpus: float,
                 budget: Any = None):
        from lema.engines import build_engine

        self.cfg = GeneratorConfig.model_validate(generator)
        self.engine = build_engine(self.cfg.engine, budget, cpus)
        self.prompt, self.compat = prompt, compat

    def process(self, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        paths, rejects = sample_problems(self.engine, items, self.cfg.sampling, self.cfg.engine.label,
                                         self.prompt, self.compat)
        records = [p.to_dict() for p in paths]
        errors = [p.error for p in paths if p.sample_index == 0]  # one per request
        return records, {"rejects": rejects, "counts": count_paths(records),
                         **failure_side(self.cfg.engine.label, errors)}


def sample_chunks(cfg: LemaConfig, stage: StageDir, chunks: Any, total: int, gen: GeneratorConfig,
                  pool: PoolConfig, prefix: str, desc: str, compat: bool = False) -> None:
    """Sample and grade the problems of `chunks` (`pipelines.pool` chunk datasets) with one
    generator; parts `<prefix>...`.

    Raises:
        StageFailed: the generator failed past `pool.max_failure_rate`.
    """
    with stage_budget(gen.engine) as budget:
        ctor = {"generator": gen.model_dump(mode="json"), "prompt": cfg.sample.prompt, "compat": compat,
                "cpus": pool.num_cpus, "budget": budget}
        for _ in run_chunks(stage, chunks, total, SampleStage, ctor, pool, desc=desc, prefix=prefix):
            pass


def run_sample(ctx: RunContext, stage: StageDir, stage_hash: str, source: str = "problems",
               generators: list[GeneratorConfig] | None = None) -> dict[str, Any]:
    """Sample every generator (default: `sample.generators`) over the problems of stage `source`;
    write Path parts and the manifest."""
    cfg, timer = ctx.cfg, Timer()
    generators = cfg.sample.generators if generators is None else generators
    problems = ctx.dir(source)
    total = problems.manifest()["problems"]
    pool = cfg.sample.pool
    for gi, gen in enumerate(generators):
        prefix = f"g{gi}-"
        sample_chunks(cfg, stage, part_chunks(problems, stage, "id", pool.batch_size, prefix), total, gen, pool,
                      prefix=prefix, desc=f"sample {gen.engine.label}")
    counts: dict[str, Any] = {}
    rejects: dict[str, dict[str, Any]] = {}  # each generator sees the same malformed problems: count each once
    for side in read_sides(stage):
        add_counts(counts, side.get("counts", {}))
        rejects.update({r["id"]: r for r in side.get("rejects", [])})
    figures = summarize_paths(counts)
    reasons: dict[str, int] = {}
    for r in rejects.values():
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return stage.write_manifest(
        stage_hash,
        problems=total,
        generators=[g.engine.label for g in generators],
        **figures,
        rejected=len(rejects),
        reject_reasons=reasons,
        wall_s=timer.seconds,
        tokens_per_s=round(figures["tokens"] / max(timer.seconds, 1e-9), 2),
        items_per_s=round(total * len(generators) / max(timer.seconds, 1e-9), 2),
    )
