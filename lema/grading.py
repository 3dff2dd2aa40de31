"""The answer grader every stage trusts: extract, normalise, compare, with a hard time bound.

Plain numbers, identical normal forms, choice letters, words, base-n numerals and decimal
commas are decided in-process (no sympy). Everything else goes to `math-verify`, which runs
in a persistent worker subprocess on that process's main thread (where its signal timeouts
work); a call that outlives `timeout_s` gets its worker killed and returns a "timeout"
verdict, so adversarial input never hangs a thread, an asyncio handler or a Ray actor.

Modes: `robust` (default) and `lema_compat`, which extracts and compares by the rules of the
LeMa paper's evaluation code (microsoft/LEMA); see `lema.lema_compat_grading`. Both return a
`Verdict` (`lema.verdict`, re-exported here).
"""

from __future__ import annotations

import re

from lema.answer_extraction import (
    LATEX_DATASETS,
    NUMERIC_DATASETS,
    decimal_comma_value,
    extract_answer,
    gold_answer,
    normalize_answer,
    parse_number,
)
from lema.lema_compat_grading import grade_compat
from lema.verdict import Verdict
from lema.verify_worker import verify_latex_pairs

MODES = ("robust", "lema_compat")
_DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.\-/]*$")
_CHOICE_PREFIX_RE = re.compile(r"^(?:\\text(?:bf)?\{)?\(([A-E])\)")
_WORDS_RE = re.compile(r"^[A-Za-z][A-Za-z ]*$")
_BASE_NUMBER_RE = re.compile(r"^(\d+)(?:_\{?(\d+)\}?)?$")  # 52_8, 4210_{5}: digits in a base (or none)

__all__ = [
    "Verdict",
    "answers_equal",
    "extract_answer",
    "gold_answer",
    "grade",
    "grade_many",
    "normalize_answer",
]


def answer_kind(dataset: str) -> str:
    """`numeric` (gsm8k, synthetic), `latex` (math, math500) or `auto` (any other label).

    Raises:
        ValueError: the dataset is not a non-empty label.
    """
    if not isinstance(dataset, str) or not _DATASET_NAME_RE.match(dataset):
        known = ", ".join(NUMERIC_DATASETS + LATEX_DATASETS)
        raise ValueError(
            f"dataset {dataset!r} is not a dataset name; use one of {known} "
            "(any other label is graded numerically when both answers are numbers, else as LaTeX)"
        )
    name = dataset.lower()
    if name in NUMERIC_DATASETS:
        return "numeric"
    return "latex" if name in LATEX_DATASETS else "auto"


def check_mode(mode: str) -> None:
    """Raise ValueError naming the valid modes when `mode` is not one of them."""
    if mode not in MODES:
        raise ValueError(f"grading mode {mode!r} is not one of {', '.join(MODES)}")


def _decide_in_process(pred: str, gold: str, kind: str) -> bool | None:
    """True/False when no sympy is needed; None when math-verify must decide."""
    p_num, g_num = parse_number(pred), parse_number(gold)
    if kind == "numeric":
        return p_num is not None and p_num == g_num
    p_norm, g_norm = normalize_answer(pred, "math"), normalize_answer(gold, "math")
    if p_norm == g_norm:
        return True
    p_num = p_num if p_num is not None else parse_number(p_norm)
    g_num = g_num if g_num is not None else parse_number(g_norm)
    if (p_num is None) != (g_num is None) and "." in p_norm + g_norm:  # 1,22 (European) vs 1.22
        comma_value = decimal_comma_value(p_norm if p_num is None else g_norm)
        if comma_value is not None and comma_value == (g_num if p_num is None else p_num):
            return True
    if p_num is not None and g_num is not None:
        if p_num == g_num:
            return True
        decimals = "." in p_norm or "." in g_norm  # math-verify rounds decimals
        return None if decimals and kind == "latex" else False
    p_base, g_base = _BASE_NUMBER_RE.match(p_norm), _BASE_NUMBER_RE.match(g_norm)
    if p_base and g_base and (p_base.group(2) or g_base.group(2)):
        (p_digits, p_radix), (g_digits, g_radix) = p_base.groups(), g_base.groups()
        return p_digits == g_digits and (p_radix is None or g_radix is None or p_radix == g_radix)
    if re.fullmatch(r"[A-E]", g_norm):
        m = _CHOICE_PREFIX_RE.match(p_norm)
        if m:
            return m.group(1) == g_norm
    if _WORDS_RE.match(p_norm) and _WORDS_RE.match(g_norm) and re.search(
        "[A-Za-z]{3}", p_norm + " " + g_norm
    ):
        return p_norm.lower().split() == g_norm.lower().split()
    return None


def _equal_many(pairs: list[tuple[str, str, str]], timeout_s: float) -> list[str]:
    """Compare (pred, gold, kind) answer pairs: "true", "false", "timeout" or "error: ..."."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    out: list[str] = [""] * len(pairs)
    pending: list[int] = []
    for i, (pred, gold, kind) in enumerate(pairs):
        decided = _decide_in_process(pred, gold, kind)
        if decided is None:
            pending.append(i)
        else:
            out[i] = "true" if decided else "false"
    if pending:
        latex = [
            (normalize_answer(pairs[i][1], "math"), normalize_answer(pairs[i][0], "math"))
            for i in pending
        ]
        for i, result in zip(pending, verify_latex_pairs(latex, timeout_s)):
            out[i] = result
    return out


def answers_equal(pred: str, gold: str, dataset: str = "gsm8k", timeout_s: float = 5.0) -> bool:
    """Whether two final answers (not whole solutions) are equivalent for `dataset`.

    A comparison that times out or errors counts as not equal.
    """
    kind = answer_kind(dataset)
    return _equal_many([(pred, gold, kind)], timeout_s)[0] == "true"


def grade(
    prediction: str,
    gold: str,
    dataset: str = "gsm8k",
    mode: str = "robust",
    timeout_s: float = 5.0,
) -> Verdict:
    """Grade one free-form prediction against a gold answer or gold solution.

    Args:
        prediction: model text; its final answer is extracted.
        gold: a bare answer or a whole solution (`#### n`, `\\boxed{}`, `A: n`).
        dataset: gsm8k/synthetic (numeric), math/math500 (LaTeX), or another label (auto).
        mode: `robust` or `lema_compat`.
        timeout_s: hard bound on one comparison; past it the verdict is a "timeout".
    Returns:
        The Verdict (never raises for bad model text).
    """
    return grade_many([(prediction, gold, dataset)], mode=mode, timeout_s=timeout_s)[0]


def grade_many(
    rows: list[tuple[str, str, str]], mode: str = "robust", timeout_s: float = 5.0
) -> list[Verdict]:
    """Grade (prediction, gold, dataset) rows; one worker round trip for all that need sympy.

    Raises:
        ValueError: a bad mode or dataset name (naming the valid choices).
    """
    check_mode(mode)
    kinds = [answer_kind(dataset) for _, _, dataset in rows]
    if mode == "lema_compat":
        return [grade_compat(p, g, kind) for (p, g, _), kind in zip(rows, kinds)]
    verdicts: list[Verdict | None] = [None] * len(rows)
    to_compare: list[tuple[int, tuple[str, str, str]]] = []
    for i, ((prediction, gold, dataset), kind) in enumerate(zip(rows, kinds)):
        gold_ans = gold_answer(gold, dataset)
        if gold_ans is None or (kind == "numeric" and parse_number(gold_ans) is None):
            verdicts[i] = Verdict(False, extract_answer(prediction, dataset), gold_ans,
                                  "unparseable gold")
            continue
        gold_ans = normalize_answer(gold_ans, dataset)
        pred_ans = extract_answer(prediction, dataset)
        if pred_ans is None:
            verdicts[i] = Verdict(False, None, gold_ans, "no answer found")
            continue
        verdicts[i] = Verdict(False, pred_ans, gold_ans, None)
        to_compare.append((i, (pred_ans, gold_ans, kind)))
    results = _equal_many([pair for _, pair in to_compare], timeout_s)
    for (i, _), result in zip(to_compare, results):
        verdict = verdicts[i]
        assert verdict is not None
        verdict.correct = result == "true"
        verdict.reason = {"true": None, "false": "mismatch"}.get(result, result)
    return verdicts  # type: ignore[return-value]
