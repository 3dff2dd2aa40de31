"""The sample stage: Problems -> graded Paths, on a Ray Data actor pool (one engine per actor).

Also the runner of the evaluate stage, which samples test problems the same way.
"""

from __future__ import annotations

import json
from typing import Any

from actors.budget import stage_budget
from lema.config import GeneratorConfig, LemaConfig, PoolConfig
from lema.sampling import sample_problems, summarize_paths
from pipelines.pool import Timer, failure_side, read_sides, run_chunks
from pipelines.stage_io import RunContext, StageDir


class SampleStage:
    """One actor: builds its engine once, then samples and grades a chunk of problems per call."""

    def __init__(self, generator: dict[str, Any], prompt: str, compat: bool, cpus: float,
                 budget: Any = None):
        from lema.engines import build_engine

        self.cfg = GeneratorConfig.model_validate(generator)
        self.engine = build_engine(self.cfg.engine, budget, cpus)
        self.prompt, self.compat = prompt, compat

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"chunk_id": [], "records": [], "side": []}
        for chunk_id, payload in zip(batch["chunk_id"], batch["payload"]):
            paths, rejects = sample_problems(self.engine, json.loads(payload), self.cfg.sampling,
                                             self.cfg.engine.label, self.prompt, self.compat)
            errors = [p.error for p in paths if p.sample_index == 0]  # one per request
            out["chunk_id"].append(str(chunk_id))
            out["records"].append(json.dumps([p.to_dict() for p in paths]))
            out["side"].append(json.dumps({"rejects": rejects, **failure_side(self.cfg.engine.label, errors)}))
        return out


def sample_chunks(cfg: LemaConfig, stage: StageDir, rows: list[dict[str, Any]], gen: GeneratorConfig,
                  pool: PoolConfig, prefix: str, desc: str, compat: bool = False) -> None:
    """Sample and grade `rows` (Problem dicts) with one generator; parts `<prefix>...`.

    Raises:
        StageFailed: the generator failed past `pool.max_failure_rate`.
    """
    with stage_budget(gen.engine) as budget:
        ctor = {"generator": gen.model_dump(mode="json"), "prompt": cfg.sample.prompt, "compat": compat,
                "cpus": pool.num_cpus, "budget": budget}
        for _ in run_chunks(stage, rows, "id", SampleStage, ctor, pool, desc=desc, prefix=prefix):
            pass


def run_sample(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Sample every generator over the problems; write Path parts and the manifest."""
    cfg, timer = ctx.cfg, Timer()
    rows = ctx.rows("problems")
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
        problems=len(rows),
        generators=[g.engine.label for g in cfg.sample.generators],
        **figures,
        rejected=len(rejects),
        reject_reasons=reasons,
        wall_s=timer.seconds,
        tokens_per_s=round(figures["tokens"] / max(timer.seconds, 1e-9), 2),
    )
