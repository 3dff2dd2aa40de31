"""Problem sources: Hugging Face datasets by name, local JSONL/Parquet, the synthetic generator.

Every source yields the same Problem records. Malformed rows (no question, no parsable gold
answer) are set aside with a reason and counted, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lema.config import ProblemSourceConfig
from lema.records import Problem


@dataclass(frozen=True)
class HubDataset:
    """Where a named benchmark lives on the hub and how its columns map to a Problem."""

    repo: str
    config: str | None
    fields: dict[str, str]  # Problem field -> column
    answer_format: str  # how the gold column reads: gsm8k | math | plain


HUB_DATASETS: dict[str, HubDataset] = {
    "gsm8k": HubDataset("openai/gsm8k", "main", {"question": "question", "answer": "answer"}, "gsm8k"),
    "math": HubDataset(
        "DigitalLearningGmbH/MATH-lighteval",
        "default",
        {"question": "problem", "answer": "solution", "solution": "solution", "level": "level"},
        "math",
    ),
    "math500": HubDataset(
        "HuggingFaceH4/MATH-500",
        None,
        {"question": "problem", "answer": "answer", "solution": "solution", "level": "level"},
        "plain",
    ),
}
_DEFAULT_FIELDS = {"question": "question", "answer": "answer", "solution": "solution"}
_NUMERIC_DATASETS = {"gsm8k", "synthetic"}


@dataclass
class LoadResult:
    problems: list[Problem]
    rejects: list[dict[str, Any]] = field(default_factory=list)  # {"row": i, "id", "reason"}

    def counts(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for r in self.rejects:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        return {"problems": len(self.problems), "rejected": len(self.rejects), "reject_reasons": reasons}


def grading_dataset(name: str) -> str:
    """The grader's dataset family for a source name: numeric (gsm8k) or LaTeX (math)."""
    return "gsm8k" if name in _NUMERIC_DATASETS else "math"


def _read_hub(cfg: ProblemSourceConfig, spec: HubDataset | None) -> Any:
    """Rows of a hub dataset, or of a local copy in the hub's layout (cfg.path)."""
    import datasets

    if cfg.path:
        p = Path(cfg.path)
        if p.is_file():
            kind = "parquet" if p.suffix == ".parquet" else "json"
            return datasets.load_dataset(kind, data_files={cfg.split: str(p)}, split=cfg.split)
        data_dir = spec.config if spec and spec.config and (p / spec.config).is_dir() else None
        return datasets.load_dataset(str(p), data_dir=data_dir, split=cfg.split)
    repo = spec.repo if spec else cfg.name
    return datasets.load_dataset(repo, spec.config if spec else None, split=cfg.split)


def _read_local(path: str) -> Iterator[dict[str, Any]]:
    """The rows of a local .jsonl or .parquet file, read as they are used (a line or a Parquet
    batch at a time); a line that is not a JSON object is a row with its `__error__`."""
    import json

    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"problem file {path!r} does not exist")
    if p.suffix == ".parquet":
        for batch in pq.ParquetFile(p).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
        return
    if p.suffix not in (".jsonl", ".json"):
        raise ValueError(f"problem file {path!r}: expected .jsonl or .parquet")
    with p.open() as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                row = {"__error__": f"invalid JSON on line {i + 1}: {e.msg}"}
            yield row if isinstance(row, dict) else {"__error__": "row is not an object"}


def iter_rows(rows: Iterable[dict[str, Any]], name: str, split: str, fields: dict[str, str],
              answer_format: str) -> Iterator[Problem | dict[str, Any]]:
    """Map raw rows to Problems, one at a time; a row with no question or no parsable gold
    comes out as a reject `{"row", "id", "reason"}`."""
    from lema.grading import gold_answer, normalize_answer

    family = grading_dataset(name)
    for i, row in enumerate(rows):
        pid = str(row.get(fields.get("id", "id")) or f"{name}-{split}-{i}")
        if "__error__" in row:
            yield {"row": i, "id": pid, "reason": row["__error__"]}
            continue
        question = row.get(fields["question"])
        if not isinstance(question, str) or not question.strip():
            yield {"row": i, "id": pid, "reason": "no question"}
            continue
        raw_gold = row.get(fields["answer"])
        if isinstance(raw_gold, (int, float)) and not isinstance(raw_gold, bool):
            raw_gold = str(raw_gold)
        gold = None
        if isinstance(raw_gold, str) and raw_gold.strip():
            gold = raw_gold.strip() if answer_format == "plain" else gold_answer(raw_gold, family)
        if not gold:
            yield {"row": i, "id": pid, "reason": "no parsable gold answer"}
            continue
        solution = row.get(fields["solution"]) if "solution" in fields else None
        if solution is None and isinstance(raw_gold, str) and raw_gold.strip() != gold:
            solution = raw_gold  # the gold column was a whole solution
        level = row.get(fields.get("level", "")) if fields.get("level") else None
        yield Problem(
            id=pid,
            dataset=name,
            split=split,
            question=question.strip(),
            answer=normalize_answer(gold, family),
            solution=solution if isinstance(solution, str) else None,
            level=None if level is None else str(level),
        )


def rows_to_problems(
    rows: Any, name: str, split: str, fields: dict[str, str], answer_format: str
) -> LoadResult:
    """Map raw rows to Problems; set aside rows with no question or no parsable gold."""
    result = LoadResult(problems=[])
    for out in iter_rows(rows, name, split, fields, answer_format):
        (result.problems if isinstance(out, Problem) else result.rejects).append(out)
    return result


def _iter_source(cfg: ProblemSourceConfig) -> Iterator[Problem | dict[str, Any]]:
    """The configured source's problems and rejects, one at a time (see ProblemSourceConfig)."""
    if cfg.kind == "synthetic":
        from lema.synthetic import iter_problems

        yield from iter_problems(cfg.count, cfg.levels, cfg.seed, cfg.split)
    elif cfg.kind == "hf":
        spec = HUB_DATASETS.get(cfg.name)
        if spec is None and not cfg.fields:
            raise ValueError(
                f"hf dataset {cfg.name!r} is not one of {sorted(HUB_DATASETS)}: give `fields` "
                "to map its columns (question, answer, solution)"
            )
        fields = {**(spec.fields if spec else _DEFAULT_FIELDS), **cfg.fields}
        fmt = cfg.answer_format if cfg.answer_format != "auto" else (spec.answer_format if spec else "plain")
        yield from iter_rows(_read_hub(cfg, spec), cfg.name, cfg.split, fields, fmt)
    else:
        if not cfg.path:
            raise ValueError("problems.kind=local needs problems.path (a .jsonl or .parquet file)")
        fields = {**_DEFAULT_FIELDS, **cfg.fields}
        yield from iter_rows(_read_local(cfg.path), cfg.name, cfg.split, fields, cfg.answer_format)


def stream_problems(cfg: ProblemSourceConfig, batch_size: int) -> Iterator[LoadResult]:
    """The configured source in batches of up to `batch_size` problems (with the rejects met on
    the way), the first `max_samples` problems only: a source of any size in bounded memory."""
    batch = LoadResult(problems=[])
    kept = 0
    for out in _iter_source(cfg):
        if isinstance(out, Problem):
            if cfg.max_samples is not None and kept >= cfg.max_samples:
                break
            batch.problems.append(out)
            kept += 1
        else:
            batch.rejects.append(out)
        if len(batch.problems) >= batch_size:
            yield batch
            batch = LoadResult(problems=[])
    if batch.problems or batch.rejects:
        yield batch


def load_problems(cfg: ProblemSourceConfig) -> LoadResult:
    """Load problems from the configured source (see ProblemSourceConfig) into memory (evaluation
    sets; the problems stage streams them with `stream_problems`)."""
    result = LoadResult(problems=[])
    for batch in stream_problems(cfg, batch_size=2**62):
        result.problems.extend(batch.problems)
        result.rejects.extend(batch.rejects)
    return result
