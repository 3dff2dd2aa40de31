"""`lema_compat` grading: the answer rules of the LeMa paper's evaluation code.

The rules are those of microsoft/LEMA `inference_code/utils.py` (MIT), written here from their
description; our own code, pure Python, no `eval`. Both sides go through the same reader:
a gold is read as the paper's reference completions end, "The answer is <gold>".

GSM8K: cut the completion at a following "\\n\\nQ: " / "\\n\\nQuestion: " turn; "The answer is: "
counts as "The answer is "; without that marker there is no answer. The text after the last
marker loses a trailing period (twice, around £/€ removal) and its commas; then only what
follows the last `=` and the last `>>` is kept; ASCII letters are dropped; it is cut at `:`;
`$` and `"` go; a trailing `%` goes (a `%` anywhere else means no answer), then a trailing `/`
and all spaces; text with + - * / is evaluated as arithmetic. Answers compare as floats.

MATH: cut at "Q:" / "Question:"; the same marker rule. Without the marker the answer is the
content of the last `\\boxed{}` (the paper's code finds a last `\\fbox{...}` but cannot unwrap
it, so that is no answer). With it: the text after the last marker, less one trailing period
and every `$`, a `\\boxed{}` inside unwrapped. Then the Hendrycks MATH normalisation
(`hendrycks_normalize`); answers compare as strings.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import string

from lema.verdict import Verdict

MARKER = "The answer is "
COLON_MARKER = "The answer is: "
_GSM8K_TURNS = ("\n\nQ: ", "\n\nQuestion: ")
_MATH_TURNS = ("Q:", "Question:")
_ARITHMETIC = set("+-*/")
_PLAIN_NUMBER_RE = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_MAX_BITS = 1100  # a power or shift past this overflows a float anyway
_BINARY_OPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.BitXor: operator.xor, ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_, ast.LShift: operator.lshift, ast.RShift: operator.rshift,
}
_UNARY_OPS = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Invert: operator.invert}


# ---------------------------------------------------------------- GSM8K
def _marker_tail(text: str) -> str | None:
    """The text after the last "The answer is " ("The answer is: " counts), or None."""
    text = text.replace(COLON_MARKER, MARKER)
    return text.split(MARKER)[-1] if MARKER in text else None


def _drop_trailing(text: str, char: str) -> str:
    return text[:-1] if text.endswith(char) else text


def _evaluate(node: ast.AST) -> int | float:
    """Python arithmetic on number literals only (what the paper's `eval` meets in an answer)."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        return _UNARY_OPS[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, (ast.Pow, ast.LShift)) and abs(right) * math.log2(abs(left) + 2) > _MAX_BITS:
            raise OverflowError("result too large for a float")
        return _BINARY_OPS[type(node.op)](left, right)
    raise ValueError(f"not arithmetic: {ast.dump(node)[:80]}")


def to_number(text: str) -> float | None:
    """`float(text)`, or its arithmetic value when it holds + - * /; None when neither works."""
    try:
        if _ARITHMETIC & set(text):
            value = _evaluate(ast.parse(text.lstrip(" \t"), mode="eval").body)
            return float(value)
        return float(text)
    except (SyntaxError, ValueError, TypeError, ArithmeticError, RecursionError):
        return None


def read_gsm8k_answer(completion: str) -> float | None:
    """The number the paper's GSM8K rules read from a completion; None when they find none."""
    for turn in _GSM8K_TURNS:
        completion = completion.split(turn)[0]
    s = _marker_tail(completion)
    if not s:
        return None
    s = _drop_trailing(s, ".").replace("£", "").replace("€", "")
    if not s:
        return None
    s = _drop_trailing(s, ".").replace(",", "")
    for sep in ("=", ">>"):
        if sep in s:
            s = s.split(sep)[-1].strip()
    s = "".join(c for c in s.lower() if c not in string.ascii_lowercase)
    s = s.split(":")[0].replace("$", "").replace('"', "")
    if "%" in s:
        s = s.strip()
        if not s.endswith("%"):
            return None
        s = s[:-1]
    if not s:
        return None
    return to_number(_drop_trailing(s, "/").replace(" ", ""))


# ---------------------------------------------------------------- MATH
def last_boxed_span(text: str) -> str | None:
    r"""From the last `\boxed` (else the last `\fbox`) to the `}` that balances the braces after
    it, as the Hendrycks MATH code scans; None when they never balance."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start: i + 1]
    return None


def _unbox(span: str | None) -> str | None:
    r"""The content of a span that is exactly `\boxed{...}`, else None."""
    prefix = "\\boxed{"
    if span and span.startswith(prefix) and span.endswith("}"):
        return span[len(prefix): -1]
    return None


def _brace_sqrt(s: str) -> str:
    r"""`\sqrt3` -> `\sqrt{3}`: the one character after a brace-less `\sqrt` gets braces."""
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        out += "\\sqrt" + (part if part[0] == "{" else "{" + part[0] + "}" + part[1:])
    return out


def _brace_frac(s: str) -> str:
    r"""`\frac12` -> `\frac{1}{2}`, `\frac1{2}` -> `\frac{1}{2}`; a `\frac` with fewer than two
    characters after it leaves the whole string as it was."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part[0] == "{":
            out += part
        elif len(part) < 2:
            return s
        elif part[1] == "{":
            out += "{" + part[0] + "}" + part[1:]
        else:
            out += "{" + part[0] + "}{" + part[1] + "}" + part[2:]
    return out


def _slash_to_frac(s: str) -> str:
    r"""`a/b` written as two plain integers -> `\frac{a}{b}`."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def hendrycks_normalize(s: str) -> str:
    r"""The Hendrycks MATH answer normalisation, as the paper applies it.

    Raises:
        ValueError: more than one `\text{ ` unit; IndexError: a bare `\sqrt`/`\frac` at the end.
        The paper reads either as no answer.
    """
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:  # a unit on the right: keep what precedes it (one unit only)
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError(f"more than one unit in {s!r}")
        s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5" -> " 5"
        s = sides[1]
    s = _brace_frac(_brace_sqrt(s).replace(" ", ""))
    return _slash_to_frac("\\frac{1}{2}" if s == "0.5" else s)


def read_math_answer(completion: str) -> str | None:
    """The normalised answer the paper's MATH rules read from a completion; None when none."""
    for turn in _MATH_TURNS:
        if turn in completion:
            completion = completion.split(turn)[0].strip()
    tail = _marker_tail(completion)
    if tail is None:
        answer = _unbox(last_boxed_span(completion))
    else:
        answer = _drop_trailing(tail.strip(), ".").replace("$", "").strip()
        if "boxed{" in answer:
            answer = _unbox(last_boxed_span(answer))
    if not answer:
        return None
    try:
        return hendrycks_normalize(answer) or None
    except (ValueError, IndexError):
        return None


# ---------------------------------------------------------------- verdicts
def as_completion(gold: str, kind: str) -> str:
    """A gold answer or solution written as the paper's reference completions end.

    A gold that already holds the marker, or (MATH) a `\\boxed{}`, is read as it is; a GSM8K
    `#### n` solution and a bare answer become "The answer is <answer>".
    """
    if MARKER in gold or COLON_MARKER in gold or (kind != "numeric" and "\\boxed" in gold):
        return gold
    if kind == "numeric" and "####" in gold:
        gold = gold.split("####")[-1]
    return MARKER + gold.strip()


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def grade_compat(prediction: str, gold: str, kind: str) -> Verdict:
    """The lema_compat Verdict for one row.

    Args:
        prediction: model text.
        gold: a bare answer or a whole solution.
        kind: `numeric`, `latex` or `auto` (as from `lema.grading.answer_kind`); `auto` uses
            the GSM8K rules when the gold is a plain number, else the MATH rules.
    """
    if kind == "auto":
        plain = _PLAIN_NUMBER_RE.fullmatch(gold.split("####")[-1].strip())
        kind = "numeric" if plain else "latex"
    gold_completion = as_completion(gold, kind)
    if kind == "numeric":
        gold_value, pred_value = read_gsm8k_answer(gold_completion), read_gsm8k_answer(prediction)
        gold_text = None if gold_value is None else _format_number(gold_value)
        pred_text = None if pred_value is None else _format_number(pred_value)
        correct = gold_value is not None and pred_value == gold_value
    else:
        gold_text, pred_text = read_math_answer(gold_completion), read_math_answer(prediction)
        correct = gold_text is not None and pred_text == gold_text
    if gold_text is None:
        return Verdict(False, pred_text, None, "unparseable gold")
    if pred_text is None:
        return Verdict(False, None, gold_text, "no answer found")
    return Verdict(correct, pred_text, gold_text, None if correct else "mismatch")
