"""The records every stage reads and writes (one row of Parquet each).

Ids make lineage visible: a Path names its Problem, a Correction its Path, an Example the
records it was built from.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal


def stable_id(*parts: object, length: int = 16) -> str:
    """A short deterministic id from the given parts (same inputs, same id on every run)."""
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


class Record:
    """Mixin: dict round-trip for dataclass records."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, row: dict[str, Any]):
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in row.items() if k in names})


@dataclass
class Problem(Record):
    id: str
    dataset: str  # gsm8k | math | math500 | synthetic | <local name>
    split: str
    question: str
    answer: str  # gold final answer, normalised (see lema.grading.normalize_answer)
    solution: str | None = None  # reference solution, if the source has one
    level: str | None = None  # difficulty (MATH level, synthetic steps), if known
    steps: list[str] | None = None  # gold steps (synthetic problems only)
    origin: str | None = None  # how the problem was made, when not by its source: "evolved"
    seed_id: str | None = None  # evolved problems: the id of the problem it was grown from


@dataclass
class Path(Record):
    problem_id: str
    path_id: str
    generator: str  # model label
    sample_index: int
    text: str
    predicted_answer: str | None
    correct: bool
    tokens: int  # completion tokens
    dataset: str = ""
    question: str = ""  # denormalised from the Problem so later stages need no join
    answer: str = ""  # gold answer
    finish_reason: str = ""
    error: str | None = None  # set when generation failed for this path
    compat_answer: str | None = None  # lema_compat grading (evaluation only)
    compat_correct: bool | None = None
    steps: list[str] | None = None  # the problem's gold steps (synthetic problems), for the reference corrector


@dataclass
class Correction(Record):
    path_id: str
    problem_id: str
    corrector: str
    status: Literal["verified", "unverified", "unparseable", "failed"]
    incorrect_step: int | None = None
    explanation: str = ""
    corrected_solution: str = ""
    predicted_answer: str | None = None
    verified: bool = False
    raw: str = ""  # the corrector's reply as received
    reason: str | None = None  # why it was not verified / not parsed / failed
    attempts: int = 1
    tokens: int = 0
    cost: float = 0.0
    question: str = ""
    solution: str = ""  # the inaccurate solution that was corrected
    answer: str = ""  # gold answer
    dataset: str = ""
    origin: str | None = None  # "evolved": a correction of a path on an evolved question


@dataclass
class Example(Record):
    id: str
    kind: Literal["cot", "correction"]
    messages: list[dict[str, str]]  # chat messages; the last one is the assistant target
    source_ids: list[str] = field(default_factory=list)
    split: str = "train"  # train | eval
    origin: str | None = None  # "evolved": built from a correction on an evolved question


@dataclass
class EvalResult(Record):
    model: str
    adapter: str | None
    dataset: str
    n: int  # samples per problem
    problems: int
    pass_at_1: float
    pass_at_k: dict[str, float] = field(default_factory=dict)
    majority: float | None = None
    pass_at_1_lema_compat: float | None = None  # the same predictions under the paper's rules
    predictions_file: str = ""
