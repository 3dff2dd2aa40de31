"""A corrector that knows the gold steps: correction data for synthetic problems, offline.

Synthetic problems (lema.synthetic) carry their gold steps; each ends by computing one
intermediate value ("... = 26 pens."). The reference corrector compares a wrong path with them
step by step and writes its reply in the same text format an LLM corrector is asked for, so the
reply goes through the same parser and verification as any other.
"""

from __future__ import annotations

import re
from fractions import Fraction

from lema.correction import format_correction_reply
from lema.prompts import ANSWER_LINE, format_numbered, number_steps, split_solution

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
_RESULT = re.compile(r"=\s*\$?(-?\d[\d,]*(?:\.\d+)?)")
_EXPRESSION = re.compile(r"((?:\d[\d,]*(?:\.\d+)?|[\s+\-*/x\u00d7\u00f7()])+?)\s*=\s*\$?(-?\d[\d,]*"
                         r"(?:\.\d+)?)")
_LEADING_MARK = re.compile(r"^\s*step\s*\d+\s*[:.)]\s*", re.IGNORECASE)


def _value(token: str) -> Fraction | None:
    try:
        return Fraction(token.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def step_result(step: str) -> Fraction | None:
    """The value a step computes: the number after its last "=", else its last number."""
    found = _RESULT.findall(step) or _NUMBER.findall(step)
    return _value(found[-1]) if found else None


def _numbers(step: str) -> set[Fraction]:
    return {v for v in map(_value, _NUMBER.findall(step)) if v is not None}


def _show(value: Fraction | None) -> str:
    if value is None:
        return "no value"
    return str(value.numerator) if value.denominator == 1 else str(float(value))


def _computation(gold_step: str) -> str:
    """"20 + 12 = 32" from a gold step (its last arithmetic before "= value")."""
    found = [m for m in _EXPRESSION.finditer(gold_step) if re.search(r"\d", m.group(1))]
    if not found:
        return f"= {_show(step_result(gold_step))}"
    return f"{found[-1].group(1).strip()} = {found[-1].group(2)}"


def _agrees(gold_step: str, path_step: str) -> bool:
    """The path step gets the gold step's value: as its result after "=", or (no "=") at all."""
    value = step_result(gold_step)
    results = _RESULT.findall(path_step)
    return _value(results[-1]) == value if results else value in _numbers(path_step)


def first_wrong_step(gold_steps: list[str], path_steps: list[str]) -> int:
    """1-based index of the first path step that does not get the gold step's result value.

    A path that agrees on all its steps but has fewer: its last step (it stops too early). A
    path that has every gold value and more steps: the first step past the gold ones.
    """
    for i, (gold, step) in enumerate(zip(gold_steps, path_steps), 1):
        if not _agrees(gold, step):
            return i
    return min(len(gold_steps) + 1, len(path_steps))


def reference_correction(problem_steps: list[str], gold_answer: str, path_text: str) -> str:
    """The reference corrector's reply for one wrong path.

    Args:
        problem_steps: the problem's gold steps (Problem.steps), one computed value each.
        gold_answer: the gold final answer.
        path_text: the inaccurate solution (free-form; numbered with `number_steps`).
    Returns:
        A reply in the zero_shot/few_shot corrector format: the first incorrect step, an
        explanation, and the corrected solution (the path's steps before it kept, the gold
        steps from it on, renumbered, then "The answer is <gold>.").
    Raises:
        ValueError: no gold steps, or a path without any step.
    """
    gold = [_LEADING_MARK.sub("", s).strip() for s in problem_steps]
    if not gold:
        raise ValueError("reference_correction needs the problem's gold steps, got none")
    path = number_steps(path_text)
    if not path:
        raise ValueError(f"reference_correction: the path has no steps: {path_text[:80]!r}")
    k = first_wrong_step(gold, path)
    got = step_result(path[k - 1])
    if k <= len(gold) and not _agrees(gold[k - 1], path[k - 1]):
        explanation = (f"Step {k} should compute {_computation(gold[k - 1])}, "
                       f"but the solution gets {_show(got)}.")
    elif k < len(gold):  # the path stops early: step k is right, but the reasoning ends there
        explanation = (f"Step {k} correctly gets {_show(got)}, but the solution stops there; "
                       f"the next step should compute {_computation(gold[k])}.")
    elif k == len(gold):  # every step is right, the stated answer is not
        stated = _stated_answer(path_text)
        explanation = (f"Step {k} correctly gets {_show(got)}, which is the answer, but the "
                       f"solution states the answer as {stated}.")
    else:  # the path goes on past the gold steps
        explanation = (f"After step {k - 1} the result is already {gold_answer}; step {k} "
                       f"computes a further value, {_show(got)}, that the question does not ask "
                       "for.")
    corrected = path[: k - 1] + gold[k - 1:]
    solution = format_numbered(corrected) + "\n" + ANSWER_LINE.format(answer=gold_answer)
    return format_correction_reply(k, explanation, solution)


def _stated_answer(path_text: str) -> str:
    answer_line = split_solution(path_text)[1]
    found = _NUMBER.findall(answer_line or "")
    return found[-1] if found else "something else"
