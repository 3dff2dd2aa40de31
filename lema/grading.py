"""The answer grader every stage trusts: extract, normalise, compare, with a hard time bound.

Plain numbers (mixed numbers and scientific notation included), identical normal forms, choice
letters, words, base-n numerals, decimal commas, complex arithmetic (`(1+2i)(3-i)` = `5+5i`) and
a differing count of primes (`E'` is not `E`) are decided in-process (no sympy). Everything else
goes to `math-verify`, which runs in a persistent worker subprocess on that process's main thread
(where its signal timeouts work); a call that outlives `timeout_s` gets its worker killed and
returns a "timeout" verdict, so adversarial input never hangs a thread, an asyncio handler or a
Ray actor.

Tuples: `(1, 2)` is not `(2, 1)`; a list (`1, 2`, `x = 1, 2`) is compared in any order, as
math-verify does; a list of values named by different variables (`x = 2, y = 3`, also what
several boxes assigned to variables extract to) meets a tuple in the order written.

Modes: `robust` (default) and `lema_compat`, which extracts and compares by the rules of the
LeMa paper's evaluation code (microsoft/LEMA); see `lema.lema_compat_grading`. Both return a
`Verdict` (`lema.verdict`, re-exported here).
"""

from __future__ import annotations

import re
from fractions import Fraction

from lema.answer_extraction import (
    LATEX_DATASETS,
    NUMERIC_DATASETS,
    clean_answer,
    decimal_comma_value,
    extract_answer,
    gold_answer,
    normalize_answer,
    parse_number,
    strip_decorations,
)
from lema.lema_compat_grading import grade_compat
from lema.verdict import Verdict
from lema.verify_worker import verify_latex_pairs

MODES = ("robust", "lema_compat")
_DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.\-/]*$")
_CHOICE_PREFIX_RE = re.compile(r"^(?:\\text(?:bf)?\{)?\(([A-E])\)")
_WORDS_RE = re.compile(r"^[A-Za-z][A-Za-z ]*$")
_PRIME_RE = re.compile(r"(?<=[A-Za-z)}])'+")  # E', f'(x), y'': a prime on a name, not 5' (feet)
_TEXT_RE = re.compile(r"\\(?:text\w*|mbox)\s*\{[^{}]*\}")
_NAMED_PART_RE = re.compile(r"\s*([a-zA-Z](?:_\{?\w+\}?)?)\s*=\s*([^=]+?)\s*")
_COMPLEX_TOKEN_RE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+|\\frac|\\cdot|\\times|[i+\-*/^(){}])")
MAX_POWER = 64  # n of `z^n` evaluated in-process
MAX_COMPLEX_CHARS = 200  # longer arithmetic goes to math-verify (which has the time bound)
MAX_COMPLEX_BITS = 4096  # an intermediate value past this size: left to math-verify
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


class _NotComplex(Exception):
    """The text is not arithmetic on numbers and i."""


def _complex_value(text: str) -> tuple[Fraction, Fraction] | None:
    r"""(real, imaginary) of arithmetic on rationals and the imaginary unit i: `+ - * / ^n`,
    `\cdot`, `\times`, `\frac{}{}`, brackets and implicit products (`2i(3+i)`); None for
    anything else (another letter, a root, a list)."""
    tokens: list[str] = []
    pos, text = 0, text.strip()
    if len(text) > MAX_COMPLEX_CHARS:
        return None
    while pos < len(text):
        m = _COMPLEX_TOKEN_RE.match(text, pos)
        if not m:
            return None
        tokens.append(m.group(1))
        pos = m.end()
    at = 0

    def peek() -> str | None:
        return tokens[at] if at < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal at
        token = peek()
        if token is None or (expected is not None and token != expected):
            raise _NotComplex
        at += 1
        return token

    def mul(a: tuple[Fraction, Fraction], b: tuple[Fraction, Fraction]) -> tuple[Fraction, Fraction]:
        value = a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]
        if max(max(v.numerator.bit_length(), v.denominator.bit_length()) for v in value) > MAX_COMPLEX_BITS:
            raise _NotComplex  # (2+i)^{64} nested: exact arithmetic that would not end soon
        return value

    def div(a: tuple[Fraction, Fraction], b: tuple[Fraction, Fraction]) -> tuple[Fraction, Fraction]:
        norm = b[0] ** 2 + b[1] ** 2
        if norm == 0:
            raise _NotComplex
        return mul(a, (b[0] / norm, -b[1] / norm))

    def expr() -> tuple[Fraction, Fraction]:
        value = term()
        while peek() in ("+", "-"):
            sign = 1 if take() == "+" else -1
            right = term()
            value = value[0] + sign * right[0], value[1] + sign * right[1]
        return value

    def term() -> tuple[Fraction, Fraction]:
        value = unary()
        while peek() is not None and peek() not in ("+", "-", ")", "}", "^"):
            op = peek()
            if op in ("*", "/", "\\cdot", "\\times"):
                take()
            right = unary()
            value = div(value, right) if op == "/" else mul(value, right)
        return value

    def unary() -> tuple[Fraction, Fraction]:
        if peek() in ("+", "-"):
            sign = 1 if take() == "+" else -1
            value = unary()
            return sign * value[0], sign * value[1]
        return power()

    def power() -> tuple[Fraction, Fraction]:
        value = atom()
        if peek() == "^":
            take()
            braced = peek() == "{"
            if braced:
                take()
            negative = braced and peek() == "-"
            if negative:
                take()
            exponent = take()
            if braced:
                take("}")
            if not exponent.isdigit() or int(exponent) > MAX_POWER:
                raise _NotComplex
            result = (Fraction(1), Fraction(0))
            for _ in range(int(exponent)):
                result = mul(result, value)
            value = div((Fraction(1), Fraction(0)), result) if negative else result
        return value

    def atom() -> tuple[Fraction, Fraction]:
        token = take()
        if token == "i":
            return Fraction(0), Fraction(1)
        if token in ("(", "{"):
            value = expr()
            take(")" if token == "(" else "}")
            return value
        if token == "\\frac":
            if peek() == "{":
                return div(atom(), atom())
            digits = take()  # \frac12
            if not (digits.isdigit() and len(digits) == 2):
                raise _NotComplex
            return Fraction(int(digits[0]), int(digits[1])), Fraction(0)
        if token[0].isdigit() or token[0] == ".":
            return Fraction(token), Fraction(0)
        raise _NotComplex

    try:
        value = expr()
    except (_NotComplex, ZeroDivisionError, RecursionError):
        return None
    return value if at == len(tokens) else None


def _prime_count(answer: str) -> int:
    return sum(len(m) for m in _PRIME_RE.findall(_TEXT_RE.sub("", answer)))


def _as_tuple(answer: str) -> str | None:
    """`x = 2, y = 3` as the tuple "(2, 3)" (values in the order written) when it assigns two or
    more different variables; else None."""
    parts = [_NAMED_PART_RE.fullmatch(p) for p in answer.split(",")]
    if len(parts) < 2 or not all(parts):
        return None
    names = [m.group(1) for m in parts if m]
    if len(set(names)) < len(names):
        return None  # `x = 1, x = 2`: a list of solutions, in any order
    return "(" + ", ".join(m.group(2) for m in parts if m) + ")"


def _order_named(pred: str, gold: str) -> tuple[str, str]:
    """Against a tuple, a list of named values is that tuple in the order written, so that
    `x = 3, y = 2` is not `(2, 3)` (math-verify compares a list with a tuple in any order)."""
    def is_tuple(answer: str) -> bool:
        s = strip_decorations(answer)
        return s.startswith("(") and s.endswith(")") and "," in s

    pred_tuple, gold_tuple = _as_tuple(clean_answer(pred)), _as_tuple(clean_answer(gold))
    if pred_tuple and is_tuple(gold):
        return pred_tuple, gold
    if gold_tuple and is_tuple(pred):
        return pred, gold_tuple
    return pred, gold


def _decide_in_process(pred: str, gold: str, kind: str) -> bool | None:
    """True/False when no sympy is needed; None when math-verify must decide."""
    p_num, g_num = parse_number(pred), parse_number(gold)
    if kind == "numeric":
        return p_num is not None and p_num == g_num
    p_norm, g_norm = normalize_answer(pred, "math"), normalize_answer(gold, "math")
    if p_norm == g_norm:
        return True
    if _prime_count(p_norm) != _prime_count(g_norm):
        return False  # math-verify drops primes: E' would equal E
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
    if "i" in p_norm + g_norm:
        p_complex, g_complex = _complex_value(p_norm), _complex_value(g_norm)
        if p_complex is not None and g_complex is not None:
            return p_complex == g_complex  # math-verify reads i as a symbol: i^2 would not be -1
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
    pairs = [(*_order_named(pred, gold), kind) for pred, gold, kind in pairs]
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
