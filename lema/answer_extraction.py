"""Final-answer extraction from free-form solutions, and answer normalisation.

Pure string work (no sympy): pulls the final answer out of model text or a gold solution and
rewrites answers into a canonical form before they are compared (see `lema.grading`). The
answer is the one after the latest marker (`#### n`, "The answer is", a final `A: n` line, the
last `\\boxed{}`/`\\fbox{}` or a run of boxes that lists several, the last `<answer>` tag);
else the whole text when it is itself a final answer (`\\frac{1}{2}`, `$(1, 2)$`, `1,250`);
else the last number (numeric datasets) or what the text's last sentence states (its last math
span or number).
"""

from __future__ import annotations

import re
from fractions import Fraction

NUMERIC_DATASETS = ("gsm8k", "synthetic")
LATEX_DATASETS = ("math", "math500")
MAX_NUMBER_CHARS = 400  # longer "numbers" are junk (and Python caps int<->str at 4300 digits)
MAX_BARE_ANSWER_CHARS = 200  # a longer text is a solution, not a final answer on its own
MAX_EXPONENT = 400  # past 10^±400 a "number" is junk (and an exact Fraction of it is costly)
MAX_SENTENCE_CHARS = 1000  # the tail of a text read for the answer its last sentence states

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(rf"(?:(?<![\w.])-)?(?:{_NUMBER})(?:\s*/\s*(?:{_NUMBER}))?")
_HASHES_RE = re.compile(r"####\s*([^\n]*)")
_PHRASE_RE = re.compile(
    r"\b(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*(?:is|:))\s*:?[ \t]*"
    r"|^[ \t*#]*answer\s*:[ \t]*",  # "Answer:" only at the start of a line
    re.IGNORECASE | re.MULTILINE,
)
_A_LINE_RE = re.compile(r"^[ \t]*A:[ \t]*(\S[^\n]*)$", re.MULTILINE)
_BOX_BRACE_RE = re.compile(r"\\(?:boxed|fbox)\s*\{|[{}]")
_BARE_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s+([^\s{$][^\s$]*)")
_MATH_SPAN_RE = re.compile(
    r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL
)
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mbox|textrm|mathbf|textit)\{(.*)\}$")
_TRAILING_UNIT_RE = re.compile(
    r"(?<=\S)\s*\\(?:text|mbox|mathrm|textrm)\{\s*[a-zA-Z][a-zA-Z .]*\}(?:\^\{?[23]\}?)?$"
)
_WORD_UNIT_RE = re.compile(
    rf"^(-?(?:{_NUMBER})(?:/\d+)?)\s+[a-zA-Z]{{2,}}\.?(?:\s+[a-zA-Z]{{2,}}\.?)*(?:\^\{{?[23]\}}?)?$"
)
_VAR_EQ_RE = re.compile(r"^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=\S)")
_CHOICE_RE = re.compile(r"^\(?([A-Ea-e])\)$|^\(([A-Ea-e])\)?$")
_THOUSANDS_RE = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL_COMMA_RE = re.compile(r"^-?\d+,\d+$")
_FRAC_RE = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$|^(-?)\\frac(\d)(\d)$")
_MIXED_RE = re.compile(
    r"(-?)(\d+)\s+(\d+)\s*/\s*(\d+)|(-?)(\d+)\s*\\frac\s*\{(\d+)\}\s*\{(\d+)\}|(-?)(\d+)\s*\\frac(\d)(\d)"
)
_SCIENTIFIC_RE = re.compile(  # 1e-3 (no spaces: "2e - 3" is Euler's e), 2.31 \times 10^{-3}
    r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))(?:[eE]([-+]?\d+)|\s*(?:\\times|\\cdot|\*|×)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?)"
)
_DEGREES = r"(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree)"
_TRIG_DEGREES_RE = re.compile(  # \sin 30^\circ, \cos(60^{\circ}), \tan^2 45°
    rf"(\\(?:sin|cos|tan|cot|sec|csc)(?:\s*\^\s*\{{?\d+\}}?)?)\s*"
    rf"(?:\(\s*(-?\d+(?:\.\d+)?)\s*{_DEGREES}\s*\)|(-?\d+(?:\.\d+)?)\s*{_DEGREES})"
)
_SIMPLE_NUMBER_RE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/[-+]?\d+)?$")
_TEXT_BLOCK_RE = re.compile(r"\\(?:text\w*|math\w+|mbox|operatorname)\s*\{[^{}]*\}|\\[A-Za-z]+")
_TWO_WORDS_RE = re.compile(r"\b(?:[A-Za-z]+\s+[A-Za-z]{2,}|[A-Za-z]{2,}\s+[A-Za-z]+)\b")
_LABEL_RE = re.compile(r"^[A-Za-z]{2,}\.?\s+[^A-Za-z\s]")  # "Step 3: 20", "Total 20": a label first
_MATH_DELIMITER_RE = re.compile(r"(?<!\\)\$|\\[()\[\]]")
_EQUALS_RE = re.compile(r"(?<![<>!=\\])=(?!=)")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_WHOLE_TAG_RE = re.compile(r"\s*<answer>\s*(.*?)\s*(?:</answer>)?\s*", re.DOTALL | re.IGNORECASE)
_NAME = r"[a-zA-Z](?:_\{?\w+\}?)?"  # x, y_1, a_{n}: a variable an answer is assigned to
_GAP_SEP = r"(?:\s|[,;$&]|\\[()\[\],;:! ]|\\q?quad)*"
_BOX_LABEL = r"(?:for\s+)?(?:part\s*)?\([a-z0-9]\)|[A-Za-z]{2,}"  # "for part (a)", "papers", "cm"
_BOX_LINK = rf"(?:(?P<label>{_BOX_LABEL}){_GAP_SEP}(?:\band\b|\bor\b|[,;])|\band\b|\bor\b)"
_BOX_GAP_RE = re.compile(  # between two boxes of one answer: "papers and", ", and y =", "for part (a) and"
    rf"{_GAP_SEP}(?:{_BOX_LINK}{_GAP_SEP})?(?:(?P<name>{_NAME})\s*={_GAP_SEP})?"
)
_NAME_BEFORE_RE = re.compile(rf"(?<![A-Za-z\\])({_NAME})\s*=[\s$]*(?:\\[(\[])?\s*$")
_NOT_LABELS = {"then", "so", "thus", "hence", "therefore", "but", "not", "wait", "is", "was", "gives",
               "first", "next", "finally", "also", "instead", "actually", "get", "got", "becomes"}


def find_boxes(text: str) -> list[tuple[int, int, str]]:
    r"""(start, end, content) of every outermost `\boxed{...}`/`\fbox{...}` (nested braces ok)
    and `\boxed 5`, in order. One pass over the braces: many unclosed boxes cost linear time."""
    found: list[tuple[int, int, str]] = []
    open_boxes: list[tuple[int, int, int]] = []  # (brace depth, box start, content start)
    depth = 0
    for m in _BOX_BRACE_RE.finditer(text):
        token = m.group(0)
        if token == "}":
            if open_boxes and open_boxes[-1][0] == depth:
                _, start, content = open_boxes.pop()
                if not open_boxes:
                    found.append((start, m.end(), text[content: m.start()]))
            depth = max(0, depth - 1)
            continue
        depth += 1
        if token != "{":
            open_boxes.append((depth, m.start(), m.end()))
    found += [(m.start(), m.end(), m.group(1)) for m in _BARE_BOX_RE.finditer(text)]
    return sorted(found)


def find_last_boxed(text: str) -> tuple[int, str] | None:
    r"""The start and contents of the last outermost `\boxed{...}` or `\fbox{...}`."""
    boxes = find_boxes(text)
    return (boxes[-1][0], boxes[-1][2]) if boxes else None


def _box_gap(gap: str) -> re.Match[str] | None:
    """How the text between two boxes of one answer reads (a link, a variable), or None when it
    says more than that ("then", a sentence)."""
    m = _BOX_GAP_RE.fullmatch(re.sub(r"\\(?:text|mbox|textrm)\s*\{([^{}]*)\}", r" \1 ", gap))
    return None if m and (m.group("label") or "").lower() in _NOT_LABELS else m


def _boxed_answer(text: str) -> tuple[int, str] | None:
    r"""The last box, or all the boxes of a final run in which only links stand between them.

    A link is separators (`,`, `;`, `\quad`, math delimiters), `and`/`or`, optionally after a
    label of the box before (`papers and`, `for part (a) and`) and before a variable of the
    box after (`and $y =`). A run is listed in order, "-2, 1"; when each of its boxes is
    assigned a different variable (`$x=\boxed{2}$ and $y=\boxed{3}$`) the names stay,
    "x = 2, y = 3", so a tuple gold is compared in that order (`lema.grading`). Any other text
    between two boxes ("then", a sentence) ends the run: the last box alone is the answer.
    """
    boxes = find_boxes(text)
    if not boxes:
        return None
    run = [boxes[-1]]  # from the last box backwards
    names: list[str | None] = []
    for box in reversed(boxes[:-1]):
        gap = _box_gap(text[box[1]: run[-1][0]])
        if gap is None:
            break
        names.append(gap.group("name"))
        run.append(box)
    before = _NAME_BEFORE_RE.search(text[max(0, run[-1][0] - 40): run[-1][0]])
    names.append(before.group(1) if before else None)
    run.reverse()
    names.reverse()
    contents = [clean_answer(c) for _, _, c in run]
    if len(set(contents)) == 1:
        return run[-1][0], run[-1][2]
    if None not in names and len(set(names)) == len(names):
        return run[0][0], ", ".join(f"{n} = {c}" for n, c in zip(names, contents))
    return run[0][0], ", ".join(contents)


def _whole_math_span(text: str) -> str | None:
    r"""The inside of a text that is exactly one math span (`$..$`, `$$..$$`, `\(..\)`, `\[..\]`)."""
    m = _MATH_SPAN_RE.fullmatch(text)
    if not m:
        return None
    inner = next(g for g in m.groups() if g is not None)
    return None if _MATH_DELIMITER_RE.search(inner) else inner


def answer_in_sentence(text: str) -> str | None:
    """The answer a sentence states: its last math span, unless a number follows that span
    (then that number); without math spans its last number; None when it has neither.

    Only the text's last lines (up to MAX_SENTENCE_CHARS) are read: the final statement is
    there, and span matching costs quadratic time in the length read.
    """
    if len(text) > MAX_SENTENCE_CHARS:
        tail = text[-MAX_SENTENCE_CHARS:]
        text = tail[tail.find("\n") + 1:]
    spans = list(_MATH_SPAN_RE.finditer(text))
    numbers = list(_NUMBER_RE.finditer(text))
    if spans and (not numbers or numbers[-1].start() < spans[-1].end()):
        return clean_answer(spans[-1].group(0)) or None
    return numbers[-1].group(0) if numbers else None


def _cut_phrase(span: str, numeric: bool) -> str:
    """The answer in the text after "The answer is": a math span, else up to the sentence end
    (for LaTeX answers, what that sentence states when it is not itself an answer)."""
    span = span.strip()
    m = _MATH_SPAN_RE.match(span)
    if m:
        return next(g for g in m.groups() if g is not None)
    end = re.search(r"\.(?=\s|$)|\n", span)
    sentence = span[: end.start()] if end else span
    if numeric or bare_answer(sentence):
        return sentence
    return answer_in_sentence(sentence) or sentence


def _marked_answer(text: str, numeric: bool) -> str | None:
    """The answer after the latest marker (`####`, boxed, answer phrase, final `A:` line,
    `<answer>` tag)."""
    candidates: list[tuple[int, str]] = []
    tags = list(_ANSWER_TAG_RE.finditer(text))
    if tags:  # a box or phrase inside the tag starts later, so it wins
        candidates.append((tags[-1].start(), _cut_phrase(tags[-1].group(1), numeric)))
    hashes = list(_HASHES_RE.finditer(text))
    if hashes:
        candidates.append((hashes[-1].start(), hashes[-1].group(1)))
    boxed = _boxed_answer(text)
    if boxed:
        candidates.append(boxed)
    phrases = list(_PHRASE_RE.finditer(text))
    if phrases:
        candidates.append((phrases[-1].start(), _cut_phrase(text[phrases[-1].end():], numeric)))
    a_lines = list(_A_LINE_RE.finditer(text))
    if a_lines and not text[a_lines[-1].end():].strip():
        candidates.append((a_lines[-1].start(), a_lines[-1].group(1)))
    for _, answer in sorted(candidates, reverse=True):
        answer = clean_answer(answer)
        if answer:
            return answer
    return None


def bare_answer(text: str) -> str | None:
    r"""The whole text, cleaned, when it is itself a final answer; else None.

    A final answer is short, and either wholly one math span (`$..$`, `\(..\)`, `\[..\]`) or
    free of math delimiters; it has no two words in a row outside `\text{}` (a sentence), no
    leading label ("Step 3: 20"), no line break outside `\begin..\end`, and no `=` after plain
    arithmetic ("3 + 4 = 7" is working, not an answer). Answers: "(1, 2)", "x^2+1",
    "$\frac{3}{4}$", "\pi", "x = 5", "Monday", "$80".
    """
    s = text.strip()
    if not s or len(s) > MAX_BARE_ANSWER_CHARS:
        return None
    if _whole_math_span(s) is None and _MATH_DELIMITER_RE.search(s.lstrip("$")):  # "$80" is money
        return None
    answer = clean_answer(s)
    words = _TEXT_BLOCK_RE.sub(" ", answer)
    if not answer or _TWO_WORDS_RE.search(words) or _LABEL_RE.match(words) or (
            "\n" in answer and "\\begin" not in answer):
        return None
    if "=" in answer and not re.search("[A-Za-z]", answer.split("=")[0]):
        return None
    return answer


def unwrap_answer_tag(answer: str) -> str:
    """The inside of an answer that is wholly one `<answer>...</answer>` tag (closed or not)."""
    m = _WHOLE_TAG_RE.fullmatch(answer)
    return m.group(1) if m and "<answer>" not in m.group(1).lower() else answer


def clean_answer(answer: str) -> str:
    """Strip math delimiters, a wrapping box, and trailing punctuation from an answer span."""
    answer = unwrap_answer_tag(answer.strip())
    inner = _whole_math_span(answer)
    if inner is not None:
        answer = inner.strip()
    boxed = find_last_boxed(answer)
    if boxed and boxed[0] == 0 and answer.endswith("}"):
        answer = boxed[1].strip()
    answer = answer.strip(" \t\n$")
    return re.sub(r"(?:\s*[.;:!]|\\\.)+$", "", answer).strip()


def first_number(span: str) -> str | None:
    """The first number in an answer span (after its last `=`), canonical; None if none."""
    span = span.replace("{,}", ",").rsplit("=", 1)[-1]
    value = parse_number(span)
    if value is not None:
        return format_number(value)
    m = _NUMBER_RE.search(span.replace("\\$", "$"))
    value = parse_number(m.group(0)) if m else None
    return None if value is None else format_number(value)


def extract_answer(text: str, dataset: str = "gsm8k") -> str | None:
    """The final answer in free-form model text, or None when there is none.

    Args:
        text: a model's solution.
        dataset: `gsm8k`/`synthetic` return a canonical number ("1234", "-3.5", "3/4");
            other datasets return the LaTeX answer as written (delimiters stripped).
    Returns:
        The answer string, or None.
    """
    numeric = dataset.lower() in NUMERIC_DATASETS
    answer = _marked_answer(text, numeric) or bare_answer(text)
    if answer is None:
        if numeric:
            numbers = _NUMBER_RE.findall(text)
            answer = numbers[-1] if numbers else None
        else:
            answer = answer_in_sentence(text)
    if answer is None or not numeric:
        return answer
    return first_number(answer)


def gold_answer(gold: str, dataset: str = "gsm8k") -> str | None:
    """The gold final answer from a bare answer or a whole solution (`#### n`, boxed, `A: n`).

    Returns None when a numeric dataset's gold holds no number or the gold is empty.
    """
    answer = _marked_answer(gold, dataset.lower() in NUMERIC_DATASETS)
    if answer is None:
        answer = clean_answer(gold)
    if not answer:
        return None
    if dataset.lower() in NUMERIC_DATASETS:
        return first_number(answer)
    return answer


def parse_number(answer: str) -> Fraction | None:
    """The exact value of a plain numeric answer ("$1,234.50", "3/4", "\\frac{1}{2}", "12 cm").

    Returns None for anything that is not a single number (expressions, lists, words).
    """
    if len(answer) > MAX_NUMBER_CHARS:
        return None
    s = strip_decorations(answer)
    special = mixed_number_value(s)
    if special is None:
        special = scientific_value(s)
    if special is not None:
        return special
    if re.search(r",\s", s):  # "32, 349" is a list, not 32349
        return None
    s = s.replace(" ", "")
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    m = _FRAC_RE.match(s)
    if m:
        sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.group(2) else m.group(4, 5, 6)
        s = f"{sign}{num}/{den}"
        s = s.removeprefix("--")
    if not _SIMPLE_NUMBER_RE.match(s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def mixed_number_value(s: str) -> Fraction | None:
    r"""The value of a mixed number, "3128 1/2", "3128\frac{1}{2}", "-2 \frac34" (a whole number
    then a proper fraction, the sign applying to both); None for anything else ("2, 1/2" is a
    list, "12 345/2" not a proper fraction)."""
    m = _MIXED_RE.fullmatch(s.strip())
    if not m:
        return None
    sign, whole, num, den = (g for g in m.groups() if g is not None)  # the alternative matched
    if not 0 < int(num) < int(den):
        return None
    value = int(whole) + Fraction(int(num), int(den))
    return -value if sign else value


def scientific_value(s: str) -> Fraction | None:
    r"""The exact value of "1e-3", "2.31 \times 10^{-3}", "5\cdot10^4"; None for anything else."""
    m = _SCIENTIFIC_RE.fullmatch(s.strip())
    if not m:
        return None
    exponent = int(m.group(2) or m.group(3))
    if abs(exponent) > MAX_EXPONENT:
        return None
    return Fraction(m.group(1)) * Fraction(10) ** exponent


def decimal_comma_value(answer: str) -> Fraction | None:
    """The value of "1,22" read with a European decimal comma; None for anything else, a
    thousands grouping ("1,000") included. Graders accept it only against a decimal point."""
    if not _DECIMAL_COMMA_RE.match(answer) or _THOUSANDS_RE.match(answer):
        return None
    return Fraction(answer.replace(",", "."))


def format_number(value: Fraction) -> str:
    """Canonical text of a number: "18", "-3.5", "1/3" (finite decimals as decimals)."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    return _decimal(value)


def _decimal(value: Fraction) -> str:
    sign = "-" if value < 0 else ""
    value = abs(value)
    whole, rest = divmod(value.numerator, value.denominator)
    digits = []
    while rest:
        rest *= 10
        d, rest = divmod(rest, value.denominator)
        digits.append(str(d))
    return f"{sign}{whole}." + "".join(digits)


def _drop_variable(s: str) -> str:
    """`x = 5` -> `5`; an equation between variables (`y = 2x + 3`) stays whole."""
    m = _VAR_EQ_RE.match(s)
    if m and re.search("[A-Za-z]", _TEXT_BLOCK_RE.sub("", s[m.end():])):
        return s
    return _VAR_EQ_RE.sub("", s)


def strip_decorations(answer: str) -> str:
    r"""Drop what never changes an answer's value: `$`, `\%`, degrees, units, `\left`, `x =`,
    arithmetic before a final `=`, an `<answer>` tag, `\mathcal`/`\mathscr` around letters (`\mathcal{B}`
    names the letter B); spell `\dfrac`/`\tfrac`/`\cfrac` as `\frac`, `\sqrt13` as `\sqrt{13}`,
    `^{\prime}` as `'`, and an angle in degrees under a trig function in radians
    (`\sin 30^\circ` -> `\sin(\frac{30\pi}{180})`)."""
    s = unwrap_answer_tag(answer.strip())
    inner = _whole_math_span(s)
    if inner is not None:
        s = inner.strip()
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = re.sub(r"\\sqrt\s*(\d+)", r"\\sqrt{\1}", s)  # `3\sqrt13`: shorthand for 3\sqrt{13}
    s = re.sub(r"\\left\b|\\right\b", "", s)
    s = _TRIG_DEGREES_RE.sub(lambda m: f"{m.group(1)}(\\frac{{{m.group(2) or m.group(3)}\\pi}}{{180}})", s)
    s = re.sub(r"\^\s*\{?\s*((?:\\prime\s*)+)\}?", lambda m: "'" * m.group(1).count("prime"), s)
    s = re.sub(r"\\math(?:cal|scr)\s*(?:\{\s*([A-Za-z]+)\s*\}|([A-Za-z]))", lambda m: m.group(1) or m.group(2), s)
    s = re.sub(r",\\!\s*", ",", s)  # `11,\! 111`: a thousands separator
    s = re.sub(r"(?<!\\)\\[!,;: ]|~", " ", s).replace("{,}", ",")
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\degree", "", s)
    s = re.sub(r"\s*(?:\\%|%|\\text\{\s*\\?%\})$", "", s)
    s = re.sub(r"^(-?)\\?\$\s*", r"\1", s).replace("\\$", "")
    s = _TRAILING_UNIT_RE.sub("", s)
    s = re.sub(r"\s+(?:dollars?|percent|degrees?|cents?)\.?$", "", s, flags=re.IGNORECASE)
    s = _WORD_UNIT_RE.sub(r"\1", s)
    if s.count("=") == 1 and "," not in s:
        s = _drop_variable(s)
    elif "=" in s and "," in s:
        parts = [_drop_variable(p) for p in s.split(",")]
        s = ",".join(parts) if all("=" not in p for p in parts) else s
    sides = _EQUALS_RE.split(s)
    if len(sides) > 1 and not re.search(r"[A-Za-z<>]", _TEXT_BLOCK_RE.sub("", sides[-2])) and \
            parse_number(sides[-1]) is not None:
        s = sides[-1].strip()  # "\frac{1}{2} + \frac{1}{3} = \frac{5}{6}": the value it works out
    return re.sub(r"(?:\s*[.;]|\\\.)+$", "", re.sub(r"\s+", " ", s)).strip()


def normalize_answer(answer: str, dataset: str = "gsm8k") -> str:
    """A canonical form of an answer, stable under re-normalisation.

    Numbers become canonical numerals ("$1,234.00" -> "1234"); other answers lose math
    delimiters, `\\left`/`\\right`, `\\dfrac`, units, degrees, percent signs and a leading
    `x =`; a whole `\\text{...}` is unwrapped and a multiple-choice letter becomes "C".
    """
    value = parse_number(answer)
    numeric = dataset.lower() in NUMERIC_DATASETS
    if value is not None and (numeric or not re.search(r"frac|/", answer)
                              or mixed_number_value(strip_decorations(answer)) is not None):
        return format_number(value)  # a fraction stays as written; a mixed number does not
    if numeric:
        number = first_number(answer)
        if number is not None:
            return number
    s = strip_decorations(clean_answer(answer))
    m = _TEXT_WRAP_RE.match(s)
    if m and "}" not in m.group(1):
        s = m.group(1).strip()
    choice = _CHOICE_RE.match(s)
    if choice:
        return (choice.group(1) or choice.group(2)).upper()
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    return s
