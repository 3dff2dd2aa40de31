"""Training examples: CoT and correction formats, the mixed/deduplicated/decontaminated set,
and writing it as JSONL or Parquet that Hugging Face `datasets` loads (a `messages` column).

A CoT example is the CoT prompt's user turn and, as the assistant target, the solution as
numbered steps ending "The answer is X.". A correction example is the zero-shot corrector
prompt for a question and an inaccurate solution, and as the target the correction in the
corrector's output format (incorrect step, explanation, corrected solution). A corrected CoT
example (`DataConfig.corrections_as: cot`, the paper's CoT-45K control) is a CoT example of the
question with the correction's corrected solution as its target.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path as FilePath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lema.config import DataConfig
from lema.correction import format_correction_reply
from lema.prompts import build_corrector_messages, build_cot_messages, corrector_prompt, format_solution
from lema.records import Correction, Example, Path, Problem, stable_id
from lema.storage import Storage


def cot_example(
    problem_id: str,
    question: str,
    solution: str,
    answer: str | None = None,
    source_ids: list[str] | None = None,
    prompt: str = "cot",
) -> Example:
    """A CoT example: the CoT prompt for `question`, answered by `solution` as numbered steps.

    Args:
        answer: the final answer line's X; None keeps the solution's own answer line
            ("#### n" becomes "The answer is n.").
        source_ids: lineage (default: [problem_id]).
        prompt: the CoT prompt the tuned model will be sampled and evaluated with.
    """
    target = format_solution(solution, answer)
    messages = build_cot_messages(question, prompt) + [{"role": "assistant", "content": target}]
    return Example(id=stable_id("cot", problem_id, target), kind="cot", messages=messages,
                   source_ids=source_ids or [problem_id])


def correction_example(correction: Correction, prompt: str = "zero_shot") -> Example:
    """A correction example from a (verified) Correction with its question and solution.

    Args:
        prompt: the corrector prompt whose instructions and layout the example takes (its
            few-shot examples left out).
    Raises:
        ValueError: the correction lacks its question, solution, incorrect step or fix.
    """
    c = correction
    missing = [name for name, value in (("question", c.question), ("solution", c.solution),
                                        ("incorrect_step", c.incorrect_step),
                                        ("corrected_solution", c.corrected_solution))
               if not value]
    if missing:
        raise ValueError(f"correction of path {c.path_id!r} cannot make an example: "
                         f"missing {', '.join(missing)}")
    assert c.incorrect_step is not None
    layout = corrector_prompt(prompt).layout
    target = format_correction_reply(c.incorrect_step, c.explanation, c.corrected_solution, layout)
    messages = build_corrector_messages(c.question, c.solution, prompt, shots=False)
    messages.append({"role": "assistant", "content": target})
    return Example(id=stable_id("correction", c.path_id, target), kind="correction",
                   messages=messages, source_ids=[c.problem_id, c.path_id])


def corrected_cot_example(correction: Correction, prompt: str = "cot") -> Example:
    """A CoT example from a (verified) Correction: the CoT prompt for its question, answered by
    its corrected solution as numbered steps (the form of a CoT example, not of a correction).

    Args:
        prompt: the CoT prompt the tuned model will be sampled and evaluated with.
    """
    c = correction
    target = format_solution(c.corrected_solution)
    messages = build_cot_messages(c.question, prompt) + [{"role": "assistant", "content": target}]
    return Example(id=stable_id("corrected_cot", c.path_id, target), kind="cot", messages=messages,
                   source_ids=[c.problem_id, c.path_id])


# ---------------------------------------------------------------- building the set
# The set is built in passes over batches (pipelines/data.py runs them as Ray Data steps, so no
# process holds the whole set): `Candidates` turns input records into candidate rows, one per
# example; `dedup_bucket` keeps the smallest id of each dedup key within a hash bucket;
# `count_batch` adds up a batch's figures; `locate` and `select_bucket` find the exact
# threshold of a cap; `finalize_batch` applies caps and the split and writes each row's JSON line.
def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _digest(text: str, size: int = 8) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=size).digest()


def seeded_hash(seed: int, salt: str, text: str) -> int:
    """A stable 64-bit hash of `text` under a seed and a purpose (same on every run and process)."""
    return int.from_bytes(_digest(f"{seed}\x1f{salt}\x1f{text}"), "big")


def held_out(problem_key: str, seed: int, fraction: float) -> bool:
    """Whether a problem is held out: its seeded hash falls in the first `fraction` of the range
    (about `fraction` of the problems, the same ones on every run)."""
    return seeded_hash(seed, "split", problem_key) < fraction * 2**64


class Contamination:
    """Word n-gram overlap with eval questions (shorter eval questions count whole). The n-grams
    are kept as sorted 64-bit hashes: 8 bytes each, picklable to every worker."""

    def __init__(self, eval_questions: Iterable[str], n: int):
        self.n = n
        grams: dict[int, set[int]] = {}
        for q in eval_questions:
            words = _words(q)
            size = min(n, len(words))
            if size:
                grams.setdefault(size, set()).update(_ngrams(words, size))
        self.grams = {size: np.array(sorted(g), dtype=np.uint64) for size, g in grams.items()}

    def __call__(self, question: str) -> bool:
        words = _words(question)
        for size, grams in self.grams.items():
            mine = np.fromiter(_ngrams(words, size), dtype=np.uint64)
            at = np.searchsorted(grams, mine).clip(max=len(grams) - 1)
            if mine.size and (grams[at] == mine).any():
                return True
        return False

    @property
    def size(self) -> int:
        """How many n-gram hashes are held."""
        return sum(len(g) for g in self.grams.values())


def _ngrams(words: list[str], n: int) -> set[int]:
    return {int.from_bytes(_digest(" ".join(words[i: i + n])), "big") for i in range(len(words) - n + 1)}


def _dedup_key(example: Example) -> str:
    return "\x1e".join(f"{m['role']}\x1f{' '.join(m['content'].lower().split())}"
                       for m in example.messages)


# Candidate categories: the three kinds of example, and records that make none (counted).
GOLD, SAMPLED, CORRECTION, NO_SOLUTION, INCOMPLETE = range(5)
EXAMPLE_CATS = (GOLD, SAMPLED, CORRECTION)
BUCKET_BITS = 12  # rank histograms: 4096 buckets per category
BUCKETS = 1 << BUCKET_BITS

CANDIDATE_SCHEMA = pa.schema([
    ("bucket", pa.int32()),  # the dedup key's hash bucket (duplicates share it)
    ("key", pa.binary(16)),  # blake2b of the normalised messages (`_dedup_key`)
    ("id", pa.string()),
    ("cat", pa.int8()),
    ("lineage", pa.string()),  # the source ids joined: the last tie-break of a key's rows
    ("contaminated", pa.bool_()),
    ("rank", pa.uint64()),  # seeded hash of the id: caps keep the smallest
    ("kind", pa.string()),  # the example's kind (a correction's may be cot: corrections_as)
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("source_ids", pa.list_(pa.string())),
    ("origin", pa.string()),  # "evolved" for corrections on evolved questions, else null
])
DEDUPED_SCHEMA = pa.schema([f for f in CANDIDATE_SCHEMA if f.name not in ("bucket", "lineage")]
                           + [pa.field("dups", pa.int32())])


class Candidates:
    """One batch of input records (rows of Problem, Path or Correction) -> candidate rows: the
    example each makes, with its dedup key, contamination flag and rank (or a counted record that
    makes none: a problem without a solution, an incomplete correction).

    Args:
        source: "problems" (gold CoT), "sample" (sampled CoT from correct paths) or "correct"
            (verified corrections).
        cfg: the data config (correction prompt, what corrections become, seed).
        contamination: the eval questions' n-grams.
        cot_prompt: the CoT prompt of CoT examples (the one the model is evaluated with).
        buckets: how many dedup hash buckets (the groups a dedup step sees whole).
    """

    def __init__(self, source: str, cfg: DataConfig, contamination: Contamination, cot_prompt: str = "cot",
                 buckets: int = 64):
        if source not in ("problems", "sample", "correct"):
            raise ValueError(f"unknown candidate source {source!r}")
        self.source, self.cfg, self.contamination, self.cot_prompt = source, cfg, contamination, cot_prompt
        self.buckets = buckets

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [row for r in batch.to_pylist() if (row := self.row(r)) is not None]
        return pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA)

    def row(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The candidate row of one record (None: it makes no example and counts nothing)."""
        if self.source == "problems":
            p = Problem.from_dict(record)
            if not p.solution:
                return self._counted(NO_SOLUTION, p.id)
            ex = cot_example(p.id, p.question, p.solution, p.answer, prompt=self.cot_prompt)
            return self._candidate(GOLD, p.question, ex)
        if self.source == "sample":
            path = Path.from_dict(record)
            if not path.correct or path.error:
                return None
            ex = cot_example(path.problem_id, path.question, path.text, path.answer or None,
                             [path.problem_id, path.path_id], prompt=self.cot_prompt)
            return self._candidate(SAMPLED, path.question, ex)
        c = Correction.from_dict(record)
        if not (c.verified and c.status == "verified"):
            return None
        try:
            ex = correction_example(c, self.cfg.correction_prompt)
        except ValueError:
            return self._counted(INCOMPLETE, c.path_id)
        if self.cfg.corrections_as == "cot":  # deduplicated and ranked as the correction example
            return self._candidate(CORRECTION, c.question, corrected_cot_example(c, self.cot_prompt), c.origin, ex)
        return self._candidate(CORRECTION, c.question, ex, c.origin)

    def _candidate(self, cat: int, question: str, ex: Example, origin: str | None = None,
                   stands_for: Example | None = None) -> dict[str, Any]:
        """`stands_for`: the example whose dedup key and rank `ex` takes (default: its own), so a
        corrected CoT example is kept or dropped exactly as its correction example would be."""
        like = stands_for or ex
        key = _digest(_dedup_key(like), 16)
        return {"bucket": int.from_bytes(key[:4], "big") % self.buckets, "key": key, "id": ex.id,
                "cat": cat, "lineage": "\x1f".join(ex.source_ids), "contaminated": self.contamination(question),
                "rank": seeded_hash(self.cfg.seed, "rank", like.id), "kind": ex.kind,
                "messages": ex.messages, "source_ids": ex.source_ids, "origin": origin}

    def _counted(self, cat: int, record_id: str) -> dict[str, Any]:
        key = _digest(f"{cat}\x1f{record_id}", 16)  # never an example's key (no \x1e, no role)
        return {"bucket": int.from_bytes(key[:4], "big") % self.buckets, "key": key, "id": record_id,
                "cat": cat, "lineage": record_id, "contaminated": False, "rank": 0, "kind": None, "messages": [],
                "source_ids": [], "origin": None}


def dedup_bucket(batch: pa.Table) -> pa.Table:
    """Candidate rows holding every row of their dedup keys (one hash bucket, or several) -> one
    row per key, with `dups`: how many other rows had its key. The row kept has the smallest id;
    among equal ids (a gold solution and a sampled path with its text; two equal paths) gold
    comes first, then the smallest lineage, so the choice never depends on the rows' order."""
    if batch.num_rows == 0:
        return DEDUPED_SCHEMA.empty_table()
    batch = batch.sort_by([("key", "ascending"), ("id", "ascending"), ("cat", "ascending"),
                           ("lineage", "ascending")])
    keys = batch.column("key").to_pylist()
    first = np.array([i == 0 or keys[i] != keys[i - 1] for i in range(len(keys))])
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, len(keys)))
    kept = batch.filter(pa.array(first)).drop_columns(["bucket", "lineage"])
    return kept.append_column("dups", pa.array(sizes - 1, pa.int32())).select(DEDUPED_SCHEMA.names)


# count_batch's vector: these figures, then one rank histogram per example category
_FIGURES = ("gold", "sampled", "correction", "cot_no_solution", "correction_incomplete",
            "contaminated_dropped", "duplicates_dropped")
COUNT_WIDTH = len(_FIGURES) + len(EXAMPLE_CATS) * BUCKETS


def count_batch(batch: pa.Table) -> np.ndarray:
    """A deduplicated batch's figures as one int64 vector (vectors add up): examples kept per
    category (not contaminated), records that made no example, contaminated keys, duplicates
    dropped, and per category the histogram of the top `BUCKET_BITS` bits of the rank."""
    out = np.zeros(COUNT_WIDTH, dtype=np.int64)
    if batch.num_rows == 0:
        return out
    cat = batch.column("cat").to_numpy()
    contaminated = batch.column("contaminated").to_numpy(zero_copy_only=False)
    dups = batch.column("dups").to_numpy().astype(np.int64)
    rank = batch.column("rank").to_numpy()
    example = cat <= CORRECTION
    clean = example & ~contaminated
    for c in EXAMPLE_CATS:
        out[c] = np.count_nonzero(clean & (cat == c))
        hist = np.bincount((rank[clean & (cat == c)] >> np.uint64(64 - BUCKET_BITS)).astype(np.int64),
                           minlength=BUCKETS)
        out[len(_FIGURES) + c * BUCKETS: len(_FIGURES) + (c + 1) * BUCKETS] = hist
    out[3] = int((1 + dups[cat == NO_SOLUTION]).sum())
    out[4] = int((1 + dups[cat == INCOMPLETE]).sum())
    out[5] = np.count_nonzero(example & contaminated)
    out[6] = int(dups[example].sum())
    return out


def figures(vector: np.ndarray) -> dict[str, int]:
    """The named figures of a (summed) `count_batch` vector."""
    return {name: int(vector[i]) for i, name in enumerate(_FIGURES)}


def histogram(vector: np.ndarray, cat: int) -> np.ndarray:
    """One category's rank histogram from a (summed) `count_batch` vector."""
    return vector[len(_FIGURES) + cat * BUCKETS: len(_FIGURES) + (cat + 1) * BUCKETS]


def locate(hist: np.ndarray, k: int) -> tuple[int, int]:
    """The histogram bucket holding the k-th smallest rank (k >= 1) and its position there (1-based)."""
    cum = np.cumsum(hist)
    bucket = int(np.searchsorted(cum, k))
    return bucket, k - (int(cum[bucket - 1]) if bucket else 0)


def select_bucket(batch: pa.Table, wanted: dict[int, int]) -> pa.Table:
    """(cat, rank, id) of a batch's clean examples whose category's rank falls in the wanted
    histogram bucket ({cat: bucket}): the few rows among which a cap's threshold lies."""
    cat = batch.column("cat").to_numpy()
    bucket = (batch.column("rank").to_numpy() >> np.uint64(64 - BUCKET_BITS)).astype(np.int64)
    clean = ~batch.column("contaminated").to_numpy(zero_copy_only=False)
    mask = np.zeros(batch.num_rows, dtype=bool)
    for c, b in wanted.items():
        mask |= clean & (cat == c) & (bucket == b)
    return batch.filter(pa.array(mask)).select(["cat", "rank", "id"])


Limit = tuple[int, str] | bool
"""What a cap keeps of a category: True all, False none, (rank, id) those at or below it."""


def _within(batch: pa.Table, limit: Limit) -> np.ndarray:
    if limit is True or limit is False:
        return np.full(batch.num_rows, limit)
    rank, ids = batch.column("rank").to_numpy(), np.array(batch.column("id").to_pylist(), dtype=object)
    return (rank < np.uint64(limit[0])) | ((rank == np.uint64(limit[0])) & (ids <= limit[1]))


def finalize_batch(batch: pa.Table, limits: dict[int, Limit], seed: int, eval_fraction: float) -> pa.Table:
    """The examples a batch keeps (clean, within their category's limit), each as `order` (a
    seeded hash of its id: the files' order), `held_out` (by its problem) and its JSON line."""
    cat = batch.column("cat").to_numpy()
    keep = ~batch.column("contaminated").to_numpy(zero_copy_only=False) & (cat <= CORRECTION)
    for c in EXAMPLE_CATS:
        mask = cat == c
        if mask.any():
            keep &= ~mask | _within(batch, limits.get(c, True))
    kept = batch.filter(pa.array(keep))
    order, held, lines = [], [], []
    for row in kept.select(["id", "kind", "messages", "source_ids", "origin"]).to_pylist():
        problem = row["source_ids"][0] if row["source_ids"] else row["id"]
        is_held = held_out(problem, seed, eval_fraction)
        ex = Example(id=row["id"], kind=row["kind"],
                     messages=row["messages"], source_ids=row["source_ids"],
                     split="eval" if is_held else "train", origin=row["origin"])
        order.append(seeded_hash(seed, "order", ex.id))
        held.append(is_held)
        lines.append(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
    return pa.table({"order": pa.array(order, pa.uint64()), "held_out": pa.array(held, pa.bool_()),
                     "line": pa.array(lines, pa.large_string())})


# ---------------------------------------------------------------- files
def _suffix(target: str) -> str:
    """The lower-case file suffix of a path or URI (a query string after "?" ignored)."""
    return FilePath(target.split("?")[0]).suffix.lower()


def write_examples(examples: list[Example], path: str | FilePath) -> str:
    """Write examples as JSONL (.jsonl/.json) or Parquet (.parquet), one row per example.

    Both load with `datasets.load_dataset("json"|"parquet", data_files=path)` and give a
    `messages` column of [{role, content}] lists. `path` may be any `lema.storage` URI.

    Returns:
        The path written.
    """
    target = str(path)
    suffix = _suffix(target)
    if suffix not in (".jsonl", ".json", ".parquet"):
        raise ValueError(f"cannot write examples to {target!r}: suffix {suffix!r} is not one of "
                         ".jsonl, .json, .parquet")
    rows = [ex.to_dict() for ex in examples]
    if suffix == ".parquet":
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=_SCHEMA), buf)
        Storage(target).write_bytes(buf.getvalue())
    else:
        Storage(target).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return target


def read_examples(path: str | FilePath) -> list[Example]:
    """Examples back from a file written by `write_examples` (any `lema.storage` URI)."""
    target = str(path)
    data = Storage(target).read_bytes()
    if _suffix(target) == ".parquet":
        rows = pq.read_table(pa.BufferReader(data)).to_pylist()
    else:
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return [Example.from_dict(r) for r in rows]


_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("kind", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("source_ids", pa.list_(pa.string())),
    ("split", pa.string()),
])
