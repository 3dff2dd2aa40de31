"""The correct stage: inaccurate Paths -> Corrections (parsed, verified against gold).

Inaccurate paths stream from the sample stage's parts (`part_chunks`, each path carrying its
problem's gold steps for the reference corrector). Local correctors run one engine per actor
like the sampler; API correctors keep `openai.max_concurrency` requests in flight within the
per-minute budget, one budget shared by the whole pool. Corrections are always verified in
`robust` mode.
"""

from __future__ import annotations

import functools
from typing import Any

from actors.budget import stage_budget
from lema.config import CorrectConfig
from lema.correcting import correct_paths, count_corrections, summarize_corrections
from pipelines.pool import ChunkWorker, Timer, add_counts, failure_side, part_chunks, read_sides, run_chunks
from pipelines.stage_io import RunContext, StageDir


class CorrectStage(ChunkWorker):
    """One actor: builds the corrector engine once, corrects a chunk of paths per call."""

    def __init__(self, correct: dict[str, Any], cpus: float, budget: Any = None, origin: str | None = None):
        self.cfg, self.origin = CorrectConfig.model_validate(correct), origin
        self.engine = None
        self.label = "reference"
        if self.cfg.corrector == "llm":
            from lema.engines import build_engine

            self.engine = build_engine(self.cfg.engine, budget, cpus)
            self.label = self.cfg.engine.label

    def process(self, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        corrections = correct_paths(items, self.cfg, self.engine, "robust")
        for c in corrections:
            c.origin = self.origin
        records = [c.to_dict() for c in corrections]
        errors = [c.reason if c.status == "failed" else None for c in corrections]
        # tokens, cost: on each Correction
        return records, {"counts": count_corrections(records), **failure_side(self.label, errors)}


def is_inaccurate(path: dict[str, Any], last_id: str | None = None) -> bool:
    """An inaccurate, successfully generated path (with `last_id`: one whose id sorts no later)."""
    return not path["correct"] and not path.get("error") and (last_id is None or path["path_id"] <= last_id)


def last_selected(sample: StageDir, max_paths: int | None) -> str | None:
    """The largest path id among the first `max_paths` inaccurate paths by id (a distributed sort
    of the ids), or None to take them all."""
    if max_paths is None:
        return None
    ids = sample.dataset().filter(is_inaccurate).select_columns(["path_id"]).sort("path_id").limit(max_paths)
    return ids.max("path_id")


def run_correct(ctx: RunContext, stage: StageDir, stage_hash: str, source: str = "sample",
                origin: str | None = None) -> dict[str, Any]:
    """Correct every selected inaccurate path of stage `source`; write Correction parts (marked
    with `origin`, e.g. "evolved") and the manifest."""
    cfg, timer = ctx.cfg, Timer()
    sample, pool = ctx.dir(source), cfg.correct.pool
    inaccurate = sample.manifest()["inaccurate"]
    total = min(inaccurate, cfg.correct.max_paths) if cfg.correct.max_paths is not None else inaccurate
    last_id = last_selected(sample, cfg.correct.max_paths) if total < inaccurate else None
    chunks = part_chunks(sample, stage, "path_id", pool.batch_size, select=functools.partial(is_inaccurate,
                                                                                             last_id=last_id))
    engine = cfg.correct.engine if cfg.correct.corrector == "llm" else None
    with stage_budget(engine) as budget:
        ctor = {"correct": cfg.correct.model_dump(mode="json"), "cpus": pool.num_cpus, "budget": budget,
                "origin": origin}
        for _ in run_chunks(stage, chunks, total, CorrectStage, ctor, pool, desc=f"correct ({cfg.correct.corrector})"):
            pass
    counts: dict[str, Any] = {}
    for side in read_sides(stage):
        add_counts(counts, side.get("counts", {}))
    figures = summarize_corrections(counts)
    if figures["attempted"] != total:
        raise RuntimeError(f"correct stage: {total - figures['attempted']} of {total} paths have no correction record")
    return stage.write_manifest(stage_hash, corrector=cfg.correct.corrector if cfg.correct.corrector
                                == "reference" else cfg.correct.engine.label,
                                inaccurate_paths=total, wall_s=timer.seconds,
                                items_per_s=round(total / max(timer.seconds, 1e-9), 2), **figures)
