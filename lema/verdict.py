"""The grade of one prediction: shared by every grading mode (`lema.grading` re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Verdict:
    """The grade of one prediction against one gold answer."""

    correct: bool
    predicted_answer: str | None
    gold_answer: str | None
    reason: str | None  # None when correct; else "no answer found", "mismatch", "timeout", ...
