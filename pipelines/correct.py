"""The correct stage: inaccurate Paths -> Corrections (parsed, verified against gold).

Local correctors run one engine per actor like the sampler; API correctors keep
`openai.max_concurrency` requests in flight within the per-minute budget, one budget shared by
the whole pool. Corrections are always verified in `robust` mode.
"""

from __future__ import annotations

import json
from typing import Any

from actors.budget import stage_budget
from lema.config import CorrectConfig
from lema.correcting import correct_paths, summarize_corrections
from pipelines.pool import Timer, failure_side, run_chunks
from pipelines.stage_io import RunContext, StageDir


class CorrectStage:
    """One actor: builds the corrector engine once, corrects a chunk of paths per call."""

    def __init__(self, correct: dict[str, Any], cpus: float, budget: Any = None):
        self.cfg = CorrectConfig.model_validate(correct)
        self.engine = None
        self.label = "reference"
        if self.cfg.corrector == "llm":
            from lema.engines import build_engine

            self.engine = build_engine(self.cfg.engine, budget, cpus)
            self.label = self.cfg.engine.label

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"chunk_id": [], "records": [], "side": []}
        for chunk_id, payload in zip(batch["chunk_id"], batch["payload"]):
            corrections = correct_paths(json.loads(payload), self.cfg, self.engine, "robust")
            errors = [c.reason if c.status == "failed" else None for c in corrections]
            out["chunk_id"].append(str(chunk_id))
            out["records"].append(json.dumps([c.to_dict() for c in corrections]))
            out["side"].append(json.dumps(failure_side(self.label, errors)))  # tokens, cost: on each Correction
        return out


def select_inaccurate(paths: list[dict[str, Any]], problems: dict[str, dict[str, Any]],
                      max_paths: int | None) -> list[dict[str, Any]]:
    """Inaccurate, successfully generated paths in a stable order, with gold steps joined in."""
    chosen = sorted((p for p in paths if not p["correct"] and not p.get("error")),
                    key=lambda p: p["path_id"])[:max_paths]
    return [{**p, "steps": problems.get(p["problem_id"], {}).get("steps")} for p in chosen]


def run_correct(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Correct every selected inaccurate path; write Correction parts and the manifest."""
    cfg, timer = ctx.cfg, Timer()
    problems = {p["id"]: p for p in ctx.rows("problems")}
    todo = select_inaccurate(ctx.rows("sample"), problems, cfg.correct.max_paths)
    pool = cfg.correct.pool
    engine = cfg.correct.engine if cfg.correct.corrector == "llm" else None
    with stage_budget(engine) as budget:
        ctor = {"correct": cfg.correct.model_dump(mode="json"), "cpus": pool.num_cpus,
                "budget": budget}
        for _ in run_chunks(stage, todo, "path_id", CorrectStage, ctor, pool,
                            desc=f"correct ({cfg.correct.corrector})"):
            pass
    rows = stage.read_rows()
    figures = summarize_corrections(rows)
    lost = len(todo) - len(rows)
    if lost:
        raise RuntimeError(f"correct stage: {lost} of {len(todo)} paths have no correction record")
    return stage.write_manifest(stage_hash, corrector=cfg.correct.corrector if cfg.correct.corrector
                                == "reference" else cfg.correct.engine.label,
                                inaccurate_paths=len(todo), wall_s=timer.seconds, **figures)

