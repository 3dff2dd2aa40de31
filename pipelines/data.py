"""The data stage: CoT examples + verified correction examples -> train/held-out chat files.

Writes `train.jsonl` and `held_out.jsonl` (Hugging Face `datasets`-compatible, a `messages`
column) so the data can be used to train elsewhere too.
"""

from __future__ import annotations

from typing import Any

from lema.config import LemaConfig
from lema.records import Correction, Path, Problem
from lema.training_data import build_examples, write_examples
from pipelines.pool import Timer
from pipelines.stage_io import StageDir


def run_data(cfg: LemaConfig, problems: list[Problem], paths: list[dict[str, Any]],
             corrections: list[dict[str, Any]], eval_questions: list[str], stage: StageDir,
             stage_hash: str) -> dict[str, Any]:
    timer = Timer()
    train, held_out, stats = build_examples(
        problems, [Path.from_dict(p) for p in paths], [Correction.from_dict(c) for c in corrections],
        eval_questions, cfg.data,
    )
    write_examples(train, stage.file_path("train.jsonl"))
    write_examples(held_out, stage.file_path("held_out.jsonl"))
    return stage.write_manifest(stage_hash, **stats, train_file="train.jsonl",
                                held_out_file="held_out.jsonl", wall_s=timer.seconds)


if __name__ == "__main__":  # this stage and the ones before it (skipped when already complete)
    import sys

    from pipelines.lema import main

    sys.exit(main([*sys.argv[1:], "--until", "data"]))
