"""The data stage: CoT examples + verified correction examples -> train/held-out chat files.

Writes `train.jsonl` and `held_out.jsonl` (Hugging Face `datasets`-compatible, a `messages`
column) so the data can be used to train elsewhere too.
"""

from __future__ import annotations

from typing import Any

from lema.records import Correction, Path, Problem
from lema.training_data import build_examples, write_examples
from pipelines.evaluate import eval_problems
from pipelines.pool import Timer
from pipelines.stage_io import RunContext, StageDir


def run_data(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Build the training set, decontaminated against every evaluation set; write it."""
    timer = Timer()
    eval_questions = [p.question for ps in eval_problems(ctx).values() for p in ps]
    train, held_out, stats = build_examples(
        [Problem.from_dict(p) for p in ctx.rows("problems")],
        [Path.from_dict(p) for p in ctx.rows("sample")],
        [Correction.from_dict(c) for c in ctx.rows("correct")],
        eval_questions, ctx.cfg.data, cot_prompt=ctx.cfg.sample.prompt,  # the prompt it is evaluated with
    )
    write_examples(train, stage.file("train.jsonl").uri)
    write_examples(held_out, stage.file("held_out.jsonl").uri)
    return stage.write_manifest(stage_hash, **stats, train_file="train.jsonl",
                                held_out_file="held_out.jsonl", wall_s=timer.seconds)
