"""The correct stage: inaccurate Paths -> Corrections (parsed, verified against gold).

Local correctors run one engine per actor like the sampler; an API corrector runs in one actor
whose engine keeps `openai.max_concurrency` requests in flight within its per-minute budget.
Run alone: `python -m pipelines.correct CONFIG [key=val ...]` (runs the stages before it first unless complete).
"""

from __future__ import annotations

import json
from typing import Any

from lema.config import CorrectConfig, LemaConfig
from lema.correcting import correct_paths, summarize_corrections
from pipelines.pool import Timer, chunk_seed, make_chunks, run_chunks
from pipelines.stage_io import StageDir


class CorrectStage:
    """One actor: builds the corrector engine once, corrects a chunk of paths per call."""

    def __init__(self, correct: dict[str, Any], grading_mode: str, threads: int):
        self.cfg = CorrectConfig.model_validate(correct)
        self.grading_mode = grading_mode
        self.engine = None
        if self.cfg.corrector == "llm":
            from lema.engines import build_engine

            engine_cfg = self.cfg.engine
            if engine_cfg.threads is None and engine_cfg.backend == "transformers":
                engine_cfg = engine_cfg.model_copy(update={"threads": threads})
            self.engine = build_engine(engine_cfg)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"chunk_id": [], "records": [], "side": []}
        for chunk_id, payload in zip(batch["chunk_id"], batch["payload"]):
            cfg = self.cfg.model_copy(deep=True)
            cfg.sampling.seed = chunk_seed(cfg.sampling.seed, str(chunk_id))
            corrections = correct_paths(json.loads(payload), cfg, self.engine, self.grading_mode)
            out["chunk_id"].append(str(chunk_id))
            out["records"].append(json.dumps([c.to_dict() for c in corrections]))
            out["side"].append("{}")  # tokens and cost travel on each Correction
        return out


def select_inaccurate(paths: list[dict[str, Any]], problems: dict[str, dict[str, Any]],
                      max_paths: int | None) -> list[dict[str, Any]]:
    """Inaccurate, successfully generated paths in a stable order, with gold steps joined in."""
    chosen = sorted((p for p in paths if not p["correct"] and not p.get("error")),
                    key=lambda p: p["path_id"])[:max_paths]
    return [{**p, "steps": problems.get(p["problem_id"], {}).get("steps")} for p in chosen]


def run_correct(cfg: LemaConfig, paths: list[dict[str, Any]], problems: dict[str, dict[str, Any]],
                stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Correct every selected inaccurate path; write Correction parts and the manifest."""
    timer = Timer()
    todo = select_inaccurate(paths, problems, cfg.correct.max_paths)
    pool = cfg.correct.pool
    for _ in run_chunks(
        stage, make_chunks(todo, pool.batch_size), CorrectStage,
        {"correct": cfg.correct.model_dump(mode="json"), "grading_mode": cfg.grading_mode,
         "threads": max(1, int(pool.num_cpus))},
        pool, desc=f"correct ({cfg.correct.corrector})",
    ):
        pass
    rows = stage.read_rows()
    figures = summarize_corrections(rows)
    lost = len(todo) - len(rows)
    if lost:
        raise RuntimeError(f"correct stage: {lost} of {len(todo)} paths have no correction record")
    return stage.write_manifest(stage_hash, corrector=cfg.correct.corrector if cfg.correct.corrector
                                == "reference" else cfg.correct.engine.label,
                                inaccurate_paths=len(todo), wall_s=timer.seconds, **figures)


if __name__ == "__main__":  # this stage and the ones before it (skipped when already complete)
    import sys

    from pipelines.lema import main

    sys.exit(main([*sys.argv[1:], "--until", "correct"]))
