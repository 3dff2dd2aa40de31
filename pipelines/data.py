"""The data stage: CoT examples + verified correction examples -> train/held-out chat files.

Writes `train.jsonl` and `held_out.jsonl` (Hugging Face `datasets`-compatible, a `messages`
column) so the data can be used to train elsewhere too.

It streams: the inputs are Ray Data datasets read part by part from storage, and the driver holds
figures, never rows. The passes (the per-batch steps are `lema.training_data`'s):
1. candidates: each problem, correct path and verified correction -> its example's row (dedup
   key, contamination against the evaluation questions, a seeded rank); then a hash-partitioned
   groupby on the key's bucket keeps the smallest id of each key. The result is materialised in
   the object store (spilled to disk when large), not in the driver.
2. figures: each batch's counts and per-category rank histograms, summed in the driver.
3. caps (only when `max_cot`, `correction_ratio` or `max_examples` cuts): the exact rank threshold
   of a cap is in one histogram bucket; the rows of that bucket (about 1/4096 of the category)
   come back.
4. the kept examples, each with its JSON line and split, sorted by a seeded hash of the id (a
   shuffle that is the same on every run); the driver writes the lines through two streams.

Driver memory (the bound): the evaluation questions and their n-gram hashes (8 bytes per n-gram:
1.6 MB for 6,000 questions of 45 words), the sorted block of lines being written (one shuffle
partition: about 100 MB at most, from `PARTITION_BYTES`), the summed figures (12K integers), and
for a cap the (rank, id) pairs of one histogram bucket (about 1/4096 of the category: ~1,000 at
4M examples).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.fs as pafs

from lema.config import DataConfig
from lema.storage import Storage
from lema.training_data import (
    CORRECTION,
    COUNT_WIDTH,
    GOLD,
    SAMPLED,
    Candidates,
    Contamination,
    Limit,
    count_batch,
    dedup_bucket,
    figures,
    finalize_batch,
    histogram,
    locate,
    select_bucket,
)
from pipelines.evaluate import eval_problems
from pipelines.pool import Timer
from pipelines.stage_io import RunContext, StageDir

MAX_PARTITIONS = 200  # Ray Data's default hash-shuffle parallelism
PARTITION_BYTES = 16 << 20  # of input Parquet per dedup partition (about 100 MB of candidate rows)
BUCKETS_PER_PARTITION = 16  # dedup groups (map_groups calls) per partition: a few MB each
WRITE_ROWS = 4096  # lines per write
_KIND = {"evolve_correct": "correct"}  # the candidate kind of a stage's records, when not its name


def run_data(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """Build the training set, decontaminated against every evaluation set; write it."""
    timer = Timer()
    eval_questions = [p.question for ps in eval_problems(ctx).values() for p in ps]
    inputs = {name: ctx.dir(name) for name in ("problems", "sample", "correct", "evolve_correct")}
    stats = build_data(inputs, eval_questions, ctx.cfg.data, stage.file("train.jsonl"), stage.file("held_out.jsonl"),
                       cot_prompt=ctx.cfg.sample.prompt)  # the prompt it is evaluated with
    return stage.write_manifest(stage_hash, **stats, train_file="train.jsonl",
                                held_out_file="held_out.jsonl", wall_s=timer.seconds)


def build_data(
    inputs: dict[str, StageDir],
    eval_questions: list[str],
    cfg: DataConfig,
    train_file: Storage,
    held_out_file: Storage,
    cot_prompt: str = "cot",
) -> dict[str, Any]:
    """The training set: CoT + verified corrections, mixed, deduplicated, decontaminated, split,
    written as JSON lines to `train_file` and `held_out_file` (held-out examples carry
    split="eval").

    Args:
        inputs: the stage directories of "problems" (gold solutions, for cot_source gold/both),
            "sample" (correct paths, for cot_source sampled/both), "correct" and "evolve_correct"
            (verified corrections; the evolved questions' ones carry `origin: evolved` into their
            examples, and evolved questions make no CoT examples); missing ones give nothing.
        eval_questions: questions of every eval set, for n-gram decontamination.
        cfg: the data config (sources, ratio, caps, what corrections become, n-gram size, held-out
            fraction, seed).
        cot_prompt: the CoT prompt of CoT examples (the one the model is evaluated with).
    Returns:
        The manifest figures: cot_no_solution, correction_incomplete, duplicates_dropped,
        contaminated_dropped, cot_dropped_by_cap (when capped), correction_dropped_by_ratio,
        dropped_by_max_examples (when it cuts), cot, correction, train, held_out.
    """
    contamination = Contamination(eval_questions, cfg.decontaminate_ngram)
    sources = []
    if cfg.cot_source in ("gold", "both"):
        sources.append("problems")
    if cfg.cot_source in ("sampled", "both"):
        sources.append("sample")
    if cfg.include_corrections:
        sources += ["correct", "evolve_correct"]
    sources = [s for s in sources if s in inputs and inputs[s].done_parts()]
    partitions = max(1, min(MAX_PARTITIONS, -(-sum(_part_bytes(inputs[s]) for s in sources) // PARTITION_BYTES)))
    buckets = partitions * BUCKETS_PER_PARTITION
    candidates = [inputs[s].dataset().map_batches(Candidates(_KIND.get(s, s), cfg, contamination, cot_prompt, buckets),
                                                  batch_format="pyarrow", batch_size=None)  # fused with the read
                  for s in sources]
    if not candidates:
        return _write([], train_file, held_out_file) | {
            "cot_no_solution": 0, "correction_incomplete": 0, "duplicates_dropped": 0,
            "contaminated_dropped": 0, "correction_dropped_by_ratio": 0, "cot": 0, "correction": 0}
    ds = candidates[0].union(*candidates[1:]) if len(candidates) > 1 else candidates[0]
    deduped = ds.groupby("bucket", num_partitions=partitions).map_groups(
        dedup_bucket, batch_format="pyarrow").materialize()

    total = np.zeros(COUNT_WIDTH, dtype=np.int64)
    for batch in deduped.map_batches(lambda b: {"v": count_batch(b)[None, :]}, batch_format="pyarrow",
                                     batch_size=None).iter_batches(batch_format="numpy", batch_size=None):
        total += batch["v"].sum(axis=0)
    found = figures(total)
    stats: dict[str, Any] = {k: found[k] for k in ("cot_no_solution", "correction_incomplete",
                                                   "duplicates_dropped", "contaminated_dropped")}

    # caps: how many of each category to keep (the smallest ranks)
    gold, sampled, fixes = found["gold"], found["sampled"], found["correction"]
    keep = {GOLD: gold, SAMPLED: sampled}
    if cfg.max_cot is not None and gold + sampled > cfg.max_cot:  # gold first, then sampled
        stats["cot_dropped_by_cap"] = gold + sampled - cfg.max_cot
        keep = {GOLD: min(gold, cfg.max_cot), SAMPLED: max(0, cfg.max_cot - gold)}
    cot = keep[GOLD] + keep[SAMPLED]
    keep[CORRECTION] = fixes if cfg.correction_ratio is None else min(fixes, round(cfg.correction_ratio * cot))
    stats["correction_dropped_by_ratio"] = fixes - keep[CORRECTION]
    if cfg.max_examples is not None and cot + keep[CORRECTION] > cfg.max_examples:  # CoT goes first
        stats["dropped_by_max_examples"] = cot + keep[CORRECTION] - cfg.max_examples
        keep[CORRECTION] = min(keep[CORRECTION], cfg.max_examples)
        room = cfg.max_examples - keep[CORRECTION]
        keep = {GOLD: min(keep[GOLD], room), SAMPLED: min(keep[SAMPLED], max(0, room - keep[GOLD])),
                CORRECTION: keep[CORRECTION]}  # gold first, then sampled, as max_cot keeps
    stats.update(cot=keep[GOLD] + keep[SAMPLED], correction=keep[CORRECTION])
    limits = _limits(deduped, total, keep, {GOLD: gold, SAMPLED: sampled, CORRECTION: fixes})

    seed, fraction = cfg.seed, cfg.eval_fraction
    lines = deduped.map_batches(lambda b: finalize_batch(b, limits, seed, fraction), batch_format="pyarrow",
                                batch_size=None).sort("order")
    lines.context.execution_options.preserve_order = True
    return stats | _write(lines.iter_batches(batch_format="pyarrow", batch_size=WRITE_ROWS), train_file, held_out_file)


def _part_bytes(stage: StageDir) -> int:
    """The size of a stage's Parquet parts (one listing)."""
    infos = stage.dir.fs.get_file_info(pafs.FileSelector(stage.dir.path, allow_not_found=True))
    return sum(i.size or 0 for i in infos if i.base_name.startswith("part-") and i.base_name.endswith(".parquet"))


def _limits(deduped: Any, total: np.ndarray, keep: dict[int, int], have: dict[int, int]) -> dict[int, Limit]:
    """Per category, what its cap keeps: all, none, or the rows at or below the exact (rank, id)
    of its keep-th smallest rank (found in the one histogram bucket that holds it)."""
    limits: dict[int, Limit] = {}
    wanted: dict[int, tuple[int, int]] = {}  # cat -> (bucket, position in it)
    for cat, k in keep.items():
        if k >= have[cat]:
            limits[cat] = True
        elif k == 0:
            limits[cat] = False
        else:
            wanted[cat] = locate(histogram(total, cat), k)
    if wanted:
        buckets = {cat: b for cat, (b, _) in wanted.items()}
        found: dict[int, list[tuple[int, str]]] = {cat: [] for cat in wanted}
        for batch in deduped.map_batches(lambda b: select_bucket(b, buckets), batch_format="pyarrow",
                                         batch_size=None).iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                found[row["cat"]].append((row["rank"], row["id"]))
        for cat, (_, position) in wanted.items():
            limits[cat] = sorted(found[cat])[position - 1]
    return limits


def _write(batches: Any, train_file: Storage, held_out_file: Storage) -> dict[str, int]:
    """Write batches of (held_out, line) rows to the two files as they come; their counts."""
    counts = {"train": 0, "held_out": 0}
    with train_file.open_output() as train, held_out_file.open_output() as held:
        for batch in batches:
            mask = batch.column("held_out")
            for name, out, rows in (("held_out", held, batch.filter(mask)),
                                    ("train", train, batch.filter(pc.invert(mask)))):
                if rows.num_rows:
                    out.write("".join(rows.column("line").to_pylist()).encode())
                    counts[name] += rows.num_rows
    return counts

