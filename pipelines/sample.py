"""The sample stage: Problems -> graded Paths, on a Ray Data actor pool (one engine per actor).

Run alone: `python -m pipelines.sample CONFIG [key=val ...]` (runs the problems stage first unless complete).
"""

from __future__ import annotations

import json
from typing import Any

from lema.config import GeneratorConfig, LemaConfig, PoolConfig, config_hash
from lema.records import Problem
from lema.sampling import sample_problems, summarize_paths
from pipelines.pool import Timer, chunk_seed, make_chunks, read_sides, run_chunks
from pipelines.stage_io import StageDir


class SampleStage:
    """One actor: builds its engine once, then samples and grades a chunk of problems per call."""

    def __init__(self, generator: dict[str, Any], prompt: str, grading_mode: str, threads: int):
        from lema.engines import build_engine

        self.cfg = GeneratorConfig.model_validate(generator)
        engine_cfg = self.cfg.engine
        if engine_cfg.threads is None and engine_cfg.backend == "transformers":
            engine_cfg = engine_cfg.model_copy(update={"threads": threads})
        self.engine = build_engine(engine_cfg)
        self.prompt, self.grading_mode = prompt, grading_mode

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"chunk_id": [], "records": [], "side": []}
        for chunk_id, payload in zip(batch["chunk_id"], batch["payload"]):
            sampling = self.cfg.sampling.model_copy(
                update={"seed": chunk_seed(self.cfg.sampling.seed, str(chunk_id))}
            )
            paths, rejects = sample_problems(
                self.engine, json.loads(payload), sampling, self.cfg.engine.label,
                self.prompt, self.grading_mode,
            )
            out["chunk_id"].append(str(chunk_id))
            out["records"].append(json.dumps([p.to_dict() for p in paths]))
            out["side"].append(json.dumps({"rejects": rejects}))
        return out


def sample_chunks(cfg: LemaConfig, stage: StageDir, rows: list[dict[str, Any]], gen: GeneratorConfig,
                  pool: PoolConfig, prefix: str, desc: str) -> None:
    """Sample and grade `rows` (Problem dicts) with one generator; parts `<prefix><chunk>`."""
    ctor = {"generator": gen.model_dump(mode="json"), "prompt": cfg.sample.prompt,
            "grading_mode": cfg.grading_mode, "threads": max(1, int(pool.num_cpus))}
    for _ in run_chunks(stage, make_chunks(rows, pool.batch_size, prefix=prefix), SampleStage, ctor,
                        pool, desc=desc):
        pass


def sample_stage_hash(cfg: LemaConfig, problems_hash: str) -> str:
    return config_hash({"sample": cfg.sample.model_dump(mode="json"), "grading": cfg.grading_mode,
                        "problems": problems_hash})


def run_sample(cfg: LemaConfig, problems: list[Problem], stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Sample every generator over the problems; write Path parts and the manifest."""
    timer = Timer()
    rows = [p.to_dict() for p in problems]
    pool = cfg.sample.pool
    for gi, gen in enumerate(cfg.sample.generators):
        sample_chunks(cfg, stage, rows, gen, pool, prefix=f"g{gi}-", desc=f"sample {gen.engine.label}")
    paths = stage.read_rows()
    # each generator sees the same malformed problems: count each once
    rejects = list({r["id"]: r for side in read_sides(stage) for r in side.get("rejects", [])}.values())
    figures = summarize_paths(paths)
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return stage.write_manifest(
        stage_hash,
        problems=len(problems),
        generators=[g.engine.label for g in cfg.sample.generators],
        **figures,
        rejected=len(rejects),
        reject_reasons=reasons,
        wall_s=timer.seconds,
        tokens_per_s=round(figures["tokens"] / max(timer.seconds, 1e-9), 2),
    )


if __name__ == "__main__":  # this stage and the ones before it (skipped when already complete)
    import sys

    from pipelines.lema import main

    sys.exit(main([*sys.argv[1:], "--until", "sample"]))
