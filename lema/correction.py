"""The corrector's reply: its output format, a drift-tolerant parser, and verification.

A reply names the first incorrect step, explains it and gives a corrected solution, either as
text (the zero_shot/few_shot format written by `format_correction_reply`) or as JSON (the
`json` variant, `CORRECTION_JSON_SCHEMA`). The parser accepts markdown decoration, other header
words, missing headers and chatter around the answer, and says why when it cannot parse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lema.prompts import (
    ANSWER_LINE,
    CORRECTION_JSON_SCHEMA,
    format_numbered,
    number_steps,
    paper_steps,
    split_solution,
)

if TYPE_CHECKING:
    from lema.grading import Verdict

__all__ = [
    "CORRECTION_JSON_SCHEMA",
    "ParseFailure",
    "ParsedCorrection",
    "format_correction_reply",
    "parse_correction",
    "verify_correction",
]


@dataclass
class ParsedCorrection:
    incorrect_step: int  # 1-based, within the inaccurate solution's numbered steps
    explanation: str
    corrected_solution: str  # ends with the final answer line when the reply had one
    predicted_answer: str | None  # extracted from corrected_solution (lema.grading)


@dataclass
class ParseFailure:
    reason: str


def format_correction_reply(incorrect_step: int, explanation: str, corrected_solution: str,
                            layout: str = "lema") -> str:
    """A reply in the text format the corrector prompts ask for (and the parser reads).

    Args:
        corrected_solution: the whole corrected solution (steps, then the answer line).
        layout: `lema` gives the whole corrected solution; `paper` (the LeMa paper's) gives
            "..." for the steps kept from the original, then the steps from the incorrect one
            on, the answer line numbered as the last step, all in braces.
    """
    head = f"Incorrect Step: Step {incorrect_step}.\nExplanation: {explanation.strip()}\nCorrect Solution:\n"
    if layout != "paper":
        return head + corrected_solution.strip()
    fixed = paper_steps(*split_solution(corrected_solution))[incorrect_step - 1:]
    lines = ["..."] if incorrect_step > 1 else []
    if fixed:
        lines.append(format_numbered(fixed, start=incorrect_step))
    return head + "{\n" + "\n".join(lines) + "\n}"


# ---------------------------------------------------------------- headers
_STEP_LABEL = (r"(?:the\s+)?(?:first\s+)?(?:incorrect|wrong|erroneous|faulty|mistaken|error)\s+step"
               r"|first\s+(?:error|mistake)|location\s+of\s+(?:the\s+)?(?:error|mistake)")
_EXPLAIN_LABEL = r"explanation|reason(?:ing)?|why|analysis|error\s+analysis|what\s+went\s+wrong"
_SOLUTION_LABEL = (r"(?:the\s+)?(?:correct(?:ed)?|revised|fixed|right)\s+(?:solution|steps)"
                   r"|correction")
_LABELS = {"step": _STEP_LABEL, "explanation": _EXPLAIN_LABEL, "solution": _SOLUTION_LABEL}

# A header at the start of a line: "### Explanation", "**Incorrect Step:** 3", "(2) Correction -".
_LINE_HEADER = re.compile(
    r"^(?P<lead>[ \t>]*(?:#{1,6}[ \t]*)?(?:[-*+][ \t]+)?(?:\(?\d\)[ \t]*|\d[.)][ \t]+)?)"
    r"(?P<b1>\*\*|__)?[ \t]*(?P<label>" + "|".join(f"(?P<{k}>{v})" for k, v in _LABELS.items())
    + r")[ \t]*(?P<c1>[:\uff1a])?[ \t]*(?P<b2>\*\*|__)?[ \t]*"
    r"(?P<c2>[:\uff1a]|[-\u2013\u2014](?=\s))?[ \t]*(?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)
# A header inside a line needs a capital and a colon: "... Step 3. Explanation: ...".
_INLINE_HEADER = re.compile(
    r"(?<![\w*])(?:\*\*)?(?P<label>(?P<step>(?:First )?[Ii]ncorrect [Ss]tep)|(?P<explanation>"
    r"Explanation)|(?P<solution>Correct(?:ed)? [Ss]olution|Correction))(?:\*\*)?\s*:(?:\*\*)?[ \t]*"
)

_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}  # noqa: SIM905
_ORDINALS = {w: i for i, w in enumerate(
    "zeroth first second third fourth fifth sixth seventh eighth ninth tenth".split())}  # noqa: SIM905
_NUM = r"(\d+|" + "|".join(_WORDS) + r")\b"
_STEP_REF = re.compile(r"\bstep\s*(?:no\.?|number|#)?\s*" + _NUM, re.IGNORECASE)
_ORDINAL_REF = re.compile(r"\b(" + "|".join(_ORDINALS) + r")\s+step\b", re.IGNORECASE)
_LEADING_NUM = re.compile(r"^\W*" + _NUM, re.IGNORECASE)
_STEP_PHRASES = [  # free-text mentions when there is no header
    re.compile(r"\b(?:incorrect|wrong|erroneous|mistake|error|flaw)\b[^.\n]{0,40}?\bstep\s*" + _NUM,
               re.IGNORECASE),
    re.compile(r"\bstep\s*" + _NUM + r"[^.\n]{0,30}?\b(?:is|was|contains|has|makes)\b[^.\n]{0,20}?"
               r"\b(?:incorrect|wrong|erroneous|mistake|error)", re.IGNORECASE),
]
_STEP_LINE = re.compile(r"^[ \t>#*_-]*step[ \t]*\d+[ \t]*(?:\*\*|__)?[ \t]*[:.)]",
                        re.IGNORECASE | re.MULTILINE)
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is\b|:)|\\boxed|####", re.IGNORECASE)
_BOLD = re.compile(r"(\*\*|__)(.+?)\1")


def _find_headers(text: str) -> dict[str, tuple[int, int]]:
    """The first header of each kind: kind -> (header start, content start)."""
    found: list[tuple[int, int, str]] = []
    for m in _LINE_HEADER.finditer(text):
        line_end = text.find("\n", m.end())
        rest = text[m.end(): line_end if line_end >= 0 else len(text)].strip()
        marked = m.group("c1") or m.group("c2") or m.group("b1") or "#" in m.group("lead")
        if marked or not rest:  # a bare word opening a sentence is not a header
            found.append((m.start(), m.end(), _kind(m)))
    for m in _INLINE_HEADER.finditer(text):
        if not any(s <= m.start() < e for s, e, _ in found):
            found.append((m.start(), m.end(), _kind(m)))
    headers: dict[str, tuple[int, int]] = {}
    for start, end, kind in sorted(found):
        headers.setdefault(kind, (start, end))
    return headers


def _kind(m: re.Match[str]) -> str:
    return next(k for k in _LABELS if m.group(k))


def _section(text: str, headers: dict[str, tuple[int, int]], kind: str) -> str | None:
    if kind not in headers:
        return None
    start = headers[kind][1]
    ends = [s for s, _ in headers.values() if s >= start]
    return text[start: min(ends, default=len(text))].strip()


def _to_int(token: str) -> int:
    return int(token) if token.isdigit() else _WORDS[token.lower()]


def _step_number(text: str) -> int | None:
    """The step number a header's content names: "Step 3", "3.", "step three", "the third step"."""
    head = text.strip()[:200]
    for pattern in (_STEP_REF, _LEADING_NUM):
        m = pattern.search(head)
        if m:
            return _to_int(m.group(1))
    m = _ORDINAL_REF.search(head)
    return _ORDINALS[m.group(1).lower()] if m else None


def _clean(text: str) -> str:
    text = _BOLD.sub(r"\2", text).strip()
    text = re.sub(r"^```\w*\n|\n?```$", "", text).strip()
    return text.strip("*_ \n")


def _trim_solution(text: str) -> str:
    """Cut chatter after the corrected solution's final answer line."""
    text = _clean(text)
    lines = text.split("\n")
    answer_lines = [i for i, line in enumerate(lines) if _ANSWER_PHRASE.search(line)]
    if answer_lines:
        lines = lines[: answer_lines[-1] + 1]
    return "\n".join(lines).strip()


def _strip_step_ref(text: str) -> str:
    """An explanation written on the incorrect-step line: drop the "Step 3." it starts with."""
    text = re.sub(r"^\W*(?:step\s*)?" + _NUM + r"\W*", "", text.strip(), count=1,
                  flags=re.IGNORECASE)
    return _clean(text)


# ---------------------------------------------------------------- parsing
def _parse_text(reply: str) -> tuple[int, str, str] | ParseFailure:
    """(incorrect step, explanation, corrected solution) from a free-text reply."""
    headers = _find_headers(reply)
    step_text = _section(reply, headers, "step")
    solution = _section(reply, headers, "solution")
    explanation = _section(reply, headers, "explanation")

    step = _step_number(step_text) if step_text is not None else None
    if step is None:
        before = reply[: headers["solution"][0]] if "solution" in headers else reply
        for pattern in _STEP_PHRASES:
            m = pattern.search(before)
            if m:
                step = _to_int(m.group(1))
                break
    if step is None:
        return ParseFailure("no incorrect step found")
    if solution is None:  # no header: the corrected steps are the first "Step n:" lines after
        after = headers.get("explanation", headers.get("step", (0, 0)))[1]
        m = _STEP_LINE.search(reply, after)
        if m is None:
            return ParseFailure("no corrected solution")
        solution = reply[m.start():]
        if explanation is not None and "explanation" in headers:
            explanation = reply[headers["explanation"][1]: m.start()]
        elif step_text is not None and "step" in headers:
            step_text = reply[headers["step"][1]: m.start()]
    if not explanation:
        explanation = _strip_step_ref(step_text) if step_text else ""
    if not explanation and "step" not in headers:  # no step header: the prose before
        end = headers["solution"][0] if "solution" in headers else reply.find(solution)
        explanation = _clean(reply[:end])
    return step, _clean(explanation), _trim_solution(solution)


_JSON_FENCE = re.compile(r"```(?:json)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_KEYS = {
    "incorrect_step": ("incorrect_step", "first_incorrect_step", "step", "wrong_step"),
    "explanation": ("explanation", "reason", "analysis"),
    "corrected_solution": ("corrected_solution", "correct_solution", "solution", "correction"),
    "final_answer": ("final_answer", "answer"),
}


def _json_candidate(reply: str) -> str | None:
    """The JSON text of a reply, when the reply is (or fences, or wraps) a JSON object."""
    fence = _JSON_FENCE.search(reply)
    if fence and fence.group(1).lstrip().startswith("{"):
        return fence.group(1).strip()
    stripped = reply.strip()
    if stripped.startswith("{"):
        return stripped[: stripped.rfind("}") + 1] if "}" in stripped else stripped
    m = re.search(r"^\s*\{\s*\"(?:incorrect_step|first_incorrect_step)\"", reply, re.MULTILINE)
    if m:
        return reply[m.start(): reply.rfind("}") + 1]
    return None


def _parse_json(raw: str) -> tuple[int | None, str, str] | ParseFailure:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        return ParseFailure(f"invalid JSON: {e}")
    if not isinstance(data, dict):
        return ParseFailure(f"invalid JSON: expected an object, got {type(data).__name__}")
    get: dict[str, Any] = {k: next((data[a] for a in names if a in data), None)
                           for k, names in _KEYS.items()}
    raw_step = get["incorrect_step"]
    if isinstance(raw_step, bool) or raw_step is None:
        return ParseFailure("no incorrect step found")
    if isinstance(raw_step, (int, float)) and float(raw_step).is_integer():
        step: int | None = int(raw_step)
    else:
        step = _step_number(str(raw_step))
        if step is None:
            return ParseFailure(f"no incorrect step found: incorrect_step is {raw_step!r}")
    solution = get["corrected_solution"]
    if isinstance(solution, list):  # a list of steps
        solution = "\n".join(str(s) for s in solution)
    solution = _clean(str(solution or ""))
    final = get["final_answer"]
    if solution and final not in (None, "") and not _ANSWER_PHRASE.search(solution):
        solution += "\n" + ANSWER_LINE.format(answer=str(final).strip())
    return step, _clean(str(get["explanation"] or "")), solution


def _expand_kept_steps(corrected: str, steps: list[str], step: int) -> str:
    """A whole corrected solution from one in the paper's layout: braces removed, and a leading
    "..." (the steps kept from the original) replaced by the original steps before `step`."""
    text = corrected.strip()
    if text.startswith("{"):
        text = text[1:].rstrip().removesuffix("}").strip()
    if text.startswith("..."):
        text = format_numbered(steps[: step - 1]) + "\n" + text[3:].lstrip("\n .")
    return text.strip()


def parse_correction(
    reply: str, solution: str, dataset: str = "gsm8k"
) -> ParsedCorrection | ParseFailure:
    """Parse a corrector reply (text or JSON) against the solution it corrects.

    Args:
        reply: the corrector's raw output.
        solution: the inaccurate solution as given to the corrector (numbered with
            `lema.prompts.number_steps`, like the prompt did).
        dataset: for answer extraction from the corrected solution.
    Returns:
        ParsedCorrection, or ParseFailure with the reason (e.g. "incorrect_step 7 out of range
        1..4", "no incorrect step found", "no corrected solution", "invalid JSON: ...").
    """
    if not reply or not reply.strip():
        return ParseFailure("empty reply")
    raw_json = _json_candidate(reply)
    parsed = _parse_json(raw_json) if raw_json is not None else _parse_text(reply)
    if isinstance(parsed, ParseFailure):
        return parsed
    step, explanation, corrected = parsed
    steps = number_steps(solution)
    if step is None or not 1 <= step <= len(steps):
        return ParseFailure(f"incorrect_step {step} out of range 1..{len(steps)}")
    corrected = _expand_kept_steps(corrected, steps, step)
    if not corrected:
        return ParseFailure("no corrected solution")
    if not explanation:
        return ParseFailure("no explanation")
    from lema.grading import extract_answer

    return ParsedCorrection(step, explanation, corrected, extract_answer(corrected, dataset))


def verify_correction(
    parsed: ParsedCorrection, gold: str, dataset: str, mode: str = "robust"
) -> Verdict:
    """Grade the corrected solution against gold; a correction is kept only when correct."""
    from lema.grading import grade

    return grade(parsed.corrected_solution, gold, dataset=dataset, mode=mode)
