"""`lema_compat` grading: extract and compare as the LeMa paper's evaluation code does.

That code derives from MetaMath's. GSM8K: the text after the last "The answer is: ", its
first number (one `,`/`.`/`/` separator at most), rounded to an integer, compared as a float
with the number after the gold's `####`. MATH: the same marker, the text up to the first
".\\n" less one trailing period, compared with the gold's last `\\boxed{}` after the Hendrycks
MATH `strip_string` normalisation (`is_equiv`). Written from that description; pure Python.
"""

from __future__ import annotations

import re
from fractions import Fraction

from lema.answer_extraction import find_last_boxed

MARKER = "The answer is: "
_COMPAT_NUMBER_RE = re.compile(r"[-+]?\d*[.,/]?\d+")


def compat_number(text: str) -> float | None:
    """The first number of `text` as the reference code reads it (rounded), or None."""
    m = _COMPAT_NUMBER_RE.search(text)
    if not m:
        return None
    token = m.group(0)
    if "/" in token:
        num, den = token.split("/")
        if not num.lstrip("+-").replace(".", "", 1).isdigit():
            return None
        if int(den) == 0:
            return float(round(float(num)))
        return float(round(float(Fraction(int(num), int(den)))))
    value = float(token.replace(",", ""))
    return None if value == float("inf") else float(round(value))


def compat_prediction(text: str) -> str | None:
    """The raw text after the last "The answer is: ", or None without the marker."""
    return text.split(MARKER)[-1] if MARKER in text else None


def compat_math_answer(text: str) -> str | None:
    """The MATH answer: marker text up to the first ".\\n", less one trailing period."""
    tail = compat_prediction(text)
    if tail is None:
        return None
    answer = tail.split(".\n")[0].strip()
    return answer[:-1].strip() if answer.endswith(".") else answer


def compat_gold(gold: str, numeric: bool) -> str | None:
    """The gold answer: after `####` (numeric), else the last boxed, else the bare gold."""
    if numeric and "####" in gold:
        return gold.split("####")[-1].strip().replace(",", "")
    boxed = find_last_boxed(gold)
    if boxed:
        return boxed[1]
    return gold.strip().replace(",", "") if numeric else gold.strip()


def _fix_fracs(s: str) -> str:
    r"""`\frac12` -> `\frac{1}{2}`, `\frac1{2}` -> `\frac{1}{2}`."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        if part.startswith("{") or len(part) < 2:
            out += "\\frac" + part
            continue
        a, b, rest = part[0], part[1], part[2:]
        out += "\\frac{" + a + "}" + (b + rest if b == "{" else "{" + b + "}" + rest)
    return out


def _fix_slash(s: str) -> str:
    """`a/b` with integer a, b -> `\\frac{a}{b}`."""
    if s.count("/") != 1:
        return s
    a, b = s.split("/")
    if a.isdigit() and b.isdigit():
        return "\\frac{" + a + "}{" + b + "}"
    return s


def strip_string(s: str) -> str:
    """The Hendrycks MATH normalisation of an answer string (raises on odd units, as theirs
    does; `is_equiv` then compares the raw strings)."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    if "\\text{ " in s:  # units: drop the text from "\text{ " on (exactly one allowed)
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError(f"more than one unit in {s!r}")
        s = parts[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5" -> "5"
        s = sides[1]
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_slash(s)


def is_equiv(a: str | None, b: str | None) -> bool:
    """Hendrycks MATH equivalence: equal after `strip_string` (raw equality if it raises)."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return strip_string(a) == strip_string(b)
    except (ValueError, IndexError):
        return a == b


def grade_compat(prediction: str, gold: str, kind: str):
    """The lema_compat Verdict for one row (`kind` as from `lema.grading.answer_kind`)."""
    from lema.grading import Verdict

    gold_text = compat_gold(gold, numeric=kind == "numeric")
    if kind == "auto":  # numeric when the gold is a plain number, as in GSM8K
        plain = bool(gold_text) and re.fullmatch(r"[-+]?\d[\d,]*(\.\d+)?", gold_text.strip())
        kind = "numeric" if plain else "latex"
        gold_text = gold_text.replace(",", "") if plain and gold_text else gold_text
    if kind == "numeric":
        try:
            gold_value = float(gold_text) if gold_text else None
        except ValueError:
            gold_value = None
        if gold_value is None:
            return Verdict(False, None, gold_text, "unparseable gold")
        tail = compat_prediction(prediction)
        value = compat_number(tail) if tail is not None else None
        if value is None:
            return Verdict(False, None, gold_text, "no answer found")
        pred_text = f"{value:g}" if abs(value) < 1e16 else str(value)
        correct = value == gold_value
        return Verdict(correct, pred_text, gold_text, None if correct else "mismatch")
    if not gold_text:
        return Verdict(False, None, gold_text, "unparseable gold")
    pred_text = compat_math_answer(prediction)
    if pred_text is None:
        return Verdict(False, None, gold_text, "no answer found")
    correct = is_equiv(pred_text, gold_text)
    return Verdict(correct, pred_text, gold_text, None if correct else "mismatch")
