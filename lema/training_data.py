"""Training examples: CoT and correction formats, the mixed/deduplicated/decontaminated set,
and writing it as JSONL or Parquet that Hugging Face `datasets` loads (a `messages` column).

A CoT example is the CoT prompt's user turn and, as the assistant target, the solution as
numbered steps ending "The answer is X.". A correction example is the zero-shot corrector
prompt for a question and an inaccurate solution, and as the target the correction in the
corrector's output format (incorrect step, explanation, corrected solution).
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import re
from collections.abc import Iterable
from pathlib import Path as FilePath
from typing import Any

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


# ---------------------------------------------------------------- building the set
def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class _Contamination:
    """Word n-gram overlap with eval questions (shorter eval questions count whole)."""

    def __init__(self, eval_questions: Iterable[str], n: int):
        self.n = n
        self.grams: dict[int, set[tuple[str, ...]]] = {}
        for q in eval_questions:
            words = _words(q)
            size = min(n, len(words))
            if size:
                self.grams.setdefault(size, set()).update(_ngrams(words, size))

    def __call__(self, question: str) -> bool:
        words = _words(question)
        return any(not grams.isdisjoint(_ngrams(words, size))
                   for size, grams in self.grams.items())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def _dedup_key(example: Example) -> str:
    return "\x1e".join(f"{m['role']}\x1f{' '.join(m['content'].lower().split())}"
                       for m in example.messages)


def build_examples(
    problems: list[Problem],
    paths: list[Path],
    corrections: list[Correction],
    eval_questions: list[str],
    cfg: DataConfig,
    cot_prompt: str = "cot",
) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """The training set: CoT + verified corrections, mixed, deduplicated, decontaminated, split.

    Args:
        problems: training problems (gold solutions for cot_source gold/both; questions).
        paths: sampled paths; correct ones are CoT examples for cot_source sampled/both.
        corrections: corrections; verified ones become correction examples.
        eval_questions: questions of every eval set, for n-gram decontamination.
        cfg: the data config (sources, ratio, cap, n-gram size, held-out fraction, seed).
        cot_prompt: the CoT prompt of CoT examples (the one the model is evaluated with).
    Returns:
        (train, held_out, stats); held_out examples carry split="eval". Problems are never
        split across the two, so a held-out question is unseen in training.
    """
    by_id = {p.id: p for p in problems}
    path_text = {p.path_id: p.text for p in paths}
    stats: dict[str, Any] = {"cot_no_solution": 0, "correction_incomplete": 0}
    cot: list[tuple[str, Example]] = []  # (question, example)
    gold_ids: set[str] = set()  # CoT examples from gold solutions (a cap keeps these first)
    if cfg.cot_source in ("gold", "both"):
        for p in problems:
            if not p.solution:
                stats["cot_no_solution"] += 1
                continue
            cot.append((p.question, cot_example(p.id, p.question, p.solution, p.answer, prompt=cot_prompt)))
            gold_ids.add(cot[-1][1].id)
    if cfg.cot_source in ("sampled", "both"):
        for path in paths:
            if not path.correct or path.error:
                continue
            problem = by_id.get(path.problem_id)
            question = path.question or (problem.question if problem else "")
            answer = path.answer or (problem.answer if problem else None)
            cot.append((question, cot_example(path.problem_id, question, path.text, answer or None,
                                              [path.problem_id, path.path_id], prompt=cot_prompt)))
    fixes: list[tuple[str, Example]] = []
    if cfg.include_corrections:
        for c in corrections:
            if not (c.verified and c.status == "verified"):
                continue
            problem = by_id.get(c.problem_id)
            c = dataclasses.replace(
                c, question=c.question or (problem.question if problem else ""),
                solution=c.solution or path_text.get(c.path_id, ""))
            try:
                fixes.append((c.question, correction_example(c, cfg.correction_prompt)))
            except ValueError:
                stats["correction_incomplete"] += 1

    contaminated = _Contamination(eval_questions, cfg.decontaminate_ngram)
    seen: set[str] = set()
    kept: dict[str, list[tuple[str, Example]]] = {"cot": [], "correction": []}
    stats.update(duplicates_dropped=0, contaminated_dropped=0)
    for question, ex in sorted(cot + fixes, key=lambda qe: qe[1].id):
        key = _dedup_key(ex)
        if key in seen:
            stats["duplicates_dropped"] += 1
            continue
        seen.add(key)
        if contaminated(question):
            stats["contaminated_dropped"] += 1
            continue
        kept[ex.kind].append((question, ex))

    rng = random.Random(cfg.seed)
    if cfg.max_cot is not None and len(kept["cot"]) > cfg.max_cot:  # gold first, then sampled at random
        gold = [qe for qe in kept["cot"] if qe[1].id in gold_ids]
        sampled = [qe for qe in kept["cot"] if qe[1].id not in gold_ids]
        stats["cot_dropped_by_cap"] = len(kept["cot"]) - cfg.max_cot
        kept["cot"] = (gold + rng.sample(sampled, len(sampled)))[: cfg.max_cot]
    chosen_fixes = kept["correction"]
    if cfg.correction_ratio is not None:
        want = min(len(chosen_fixes), round(cfg.correction_ratio * len(kept["cot"])))
        chosen_fixes = rng.sample(chosen_fixes, want)
    stats["correction_dropped_by_ratio"] = len(kept["correction"]) - len(chosen_fixes)
    examples = [ex for _, ex in kept["cot"] + chosen_fixes]
    stats.update(cot=len(kept["cot"]), correction=len(chosen_fixes))

    train, held_out = _split(examples, cfg.eval_fraction, rng)
    stats.update(train=len(train), held_out=len(held_out))
    return train, held_out, stats


def _split(examples: list[Example], fraction: float, rng: random.Random):
    """Hold out about `fraction` of the examples, whole problems at a time; shuffle both."""
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.source_ids[0] if ex.source_ids else ex.id, []).append(ex)
    keys = sorted(groups)
    rng.shuffle(keys)
    target = round(fraction * len(examples))
    held_out: list[Example] = []
    train: list[Example] = []
    for key in keys:
        (held_out if len(held_out) < target else train).extend(groups[key])
    for ex in held_out:
        ex.split = "eval"
    rng.shuffle(train)
    rng.shuffle(held_out)
    return train, held_out


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
