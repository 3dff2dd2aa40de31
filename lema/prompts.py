"""Prompts (YAML files in lema/prompts, picked by name) and the numbered-step solution format.

Every prompt file holds a `user` template, an optional `system` message, optional few-shot
`examples` (rendered as earlier user/assistant turns) and a `layout`. Templates name their
placeholders in braces ({question}, {solution}); only those names are substituted, so other
braces (LaTeX, JSON) stay as written.

Solutions travel as numbered steps, one per line, then a final answer line (layout `lema`):
    Step 1: ...
    Step 2: ...
    The answer is X.
The LeMa paper's layout (`paper`) wraps the steps in braces and numbers the answer line too; its
corrections keep the steps before the wrong one as "..." (see `format_correction_reply`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROMPT_DIR = Path(__file__).parent / "prompts"
CORRECTOR_VARIANTS = ("zero_shot", "few_shot", "json", "paper")
ANSWER_LINE = "The answer is {answer}."
LAYOUTS = ("lema", "paper")

CORRECTION_JSON_SCHEMA: dict[str, Any] = {
    "title": "Correction",
    "type": "object",
    "properties": {
        "incorrect_step": {"type": "integer", "minimum": 1},
        "explanation": {"type": "string"},
        "corrected_solution": {"type": "string"},
        "final_answer": {"type": "string"},
    },
    "required": ["incorrect_step", "explanation", "corrected_solution", "final_answer"],
    "additionalProperties": False,
}
"""JSON schema of the corrector's `json` variant reply (OpenAI `response_format`, vLLM guided
decoding)."""

_REQUIRED_FIELDS = {"cot": ("question",), "corrector": ("question", "solution")}


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt file: a user template, an optional system message, few-shot examples."""

    name: str
    user: str
    system: str | None = None
    examples: list[dict[str, str]] = field(default_factory=list)
    layout: str = "lema"  # how solutions are written into it (see the module docstring)

    def render(self, shots: bool = True, **values: str) -> list[dict[str, str]]:
        """Chat messages: system, few-shot turns (unless `shots` is False, as for training
        examples), then the user turn with `values` filled in."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for ex in self.examples if shots else []:
            shot = {k: v for k, v in ex.items() if k != "reply"}
            if "solution" in shot:
                shot["solution"] = format_solution(shot["solution"], layout=self.layout)
            messages.append({"role": "user", "content": _fill(self.user, shot)})
            messages.append({"role": "assistant", "content": ex["reply"].strip()})
        messages.append({"role": "user", "content": _fill(self.user, values)})
        return messages


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


@functools.lru_cache(maxsize=64)
def load_prompt(name: str) -> PromptTemplate:
    """A prompt by name (a file in lema/prompts, without .yaml) or by path to a YAML file.

    Raises:
        ValueError: the prompt does not exist (naming the available ones) or is malformed.
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROMPT_DIR / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in PROMPT_DIR.glob("*.yaml"))
        raise ValueError(f"prompt {name!r} not found (no file {str(path)!r}); "
                         f"available: {available}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("user"), str):
        raise ValueError(f"prompt file {str(path)!r} must be a mapping with a `user` template")
    unknown = set(data) - {"user", "system", "examples", "layout"}
    if unknown:
        raise ValueError(f"prompt file {str(path)!r} has unknown keys {sorted(unknown)}; "
                         "allowed: user, system, examples, layout")
    layout = data.get("layout", "lema")
    if layout not in LAYOUTS:
        raise ValueError(f"prompt file {str(path)!r}: layout {layout!r} is not one of {LAYOUTS}")
    kind = "corrector" if path.stem.startswith("corrector") else "cot"
    missing = [f for f in _REQUIRED_FIELDS[kind] if "{" + f + "}" not in data["user"]]
    if missing:
        raise ValueError(f"prompt file {str(path)!r}: user template lacks {missing}")
    examples = data.get("examples") or []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict) or "reply" not in ex:
            raise ValueError(f"prompt file {str(path)!r}: example {i} needs a `reply`")
    return PromptTemplate(path.stem, data["user"].strip(), data.get("system"), examples, layout)


def render_plain(messages: list[dict[str, str]]) -> str:
    """Chat messages as plain text, for models without a chat template (base models).

    The system message, then each user turn and its reply on the next line, turns separated by
    a blank line; the text ends after the last user turn's newline, where the model continues.
    A prompt written for base models (the paper's "Question: ... Answer: Let's think step by
    step.") thus reads exactly as written.
    """
    parts = [m["content"].strip() for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    text = "".join(p + "\n\n" for p in parts)
    for i, m in enumerate(turns):
        content = m["content"].strip()
        if m["role"] == "user":
            text += content + "\n"
        else:
            text += content + ("\n\n" if i < len(turns) - 1 else "")
    return text


def plain_stops(messages: list[dict[str, str]], stop: list[str] | None = None) -> list[str]:
    """Stop strings for a plain-text prompt: a base model that has answered goes on with the
    next turn, which starts like the last user turn (its first line) or with "Question:".

    With `stop` (the request's own stop strings), the merged list instead: `stop`, then those
    of these not already in it, in that order.
    """
    users = [m["content"].strip() for m in messages if m["role"] == "user"]
    first_line = users[-1].split("\n", 1)[0].strip()[:40] if users else ""
    own = [s for s in ("\n" + first_line if len(first_line) >= 8 else "", "\nQuestion:") if s]
    return own if stop is None else [*stop, *(s for s in own if s not in stop)]


def build_cot_messages(question: str, prompt: str = "cot") -> list[dict[str, str]]:
    """Chat messages asking for a numbered step-by-step solution of `question`."""
    return load_prompt(prompt).render(question=question.strip())


def corrector_prompt(variant: str) -> PromptTemplate:
    """A corrector prompt: one of CORRECTOR_VARIANTS, or a prompt name/path of a custom one."""
    return load_prompt(f"corrector_{variant}" if variant in CORRECTOR_VARIANTS else variant)


def build_corrector_messages(
    question: str, solution: str, variant: str = "few_shot", shots: bool = True
) -> list[dict[str, str]]:
    """Chat messages asking the corrector to find, explain and fix the first wrong step.

    Args:
        question: the problem statement.
        solution: the inaccurate solution, free-form; its steps are numbered here with
            `number_steps`, the same numbering `lema.correction.parse_correction` checks.
        variant: one of CORRECTOR_VARIANTS, or a prompt name/path of a custom corrector prompt.
        shots: include the prompt's few-shot examples (training examples leave them out).
    """
    prompt = corrector_prompt(variant)
    return prompt.render(shots=shots, question=question.strip(),
                         solution=format_solution(solution, layout=prompt.layout))


# ---------------------------------------------------------------- numbered steps
_CALC = re.compile(r"<<[^<>\n]*>>")  # GSM8K calculator annotations
_GSM8K_FINAL = re.compile(r"^\s*####\s*(.*?)\s*$")
_ANSWER_ONLY = re.compile(
    r"^[\W_]*(?:so|therefore|thus|hence)?,?\s*(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:)",
    re.IGNORECASE,
)
_STEP_MARK = re.compile(
    r"^[ \t>#*_-]*step[ \t]*(\d+)[ \t]*(?:\*\*|__)?[ \t]*[:.)\-\u2013](?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)
_LIST_MARK = re.compile(r"^[ \t]*(?:\*\*)?(\d+)[.)](?:\*\*)?[ \t]+", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$\\(])")


def split_solution(solution: str) -> tuple[list[str], str | None]:
    """Split a free-form solution into its steps and its final-answer line.

    Steps come from existing "Step k:" markers, else "k." list numbering, else lines, else
    sentences. GSM8K `<<...>>` annotations are removed; lines that only state the answer
    ("The answer is 5.", "#### 5", "Final Answer: ...") are not steps: the last one is returned
    as the answer line ("#### n" becomes "The answer is n.").
    """
    text = _CALC.sub("", solution or "").replace("\r\n", "\n").strip()
    lines, answer_line = [], None
    for line in text.split("\n"):
        final = _GSM8K_FINAL.match(line)
        if final:
            answer_line = ANSWER_LINE.format(answer=final.group(1).rstrip("."))
        elif _ANSWER_ONLY.match(line) and not _STEP_MARK.match(line):
            answer_line = line.strip().strip("*").strip()
        else:
            lines.append(line)
    body = "\n".join(lines).strip()
    for marker in (_STEP_MARK, _LIST_MARK):
        marks = list(marker.finditer(body))
        if len(marks) >= (1 if marker is _STEP_MARK else 2):
            ends = [m.start() for m in marks[1:]] + [len(body)]
            steps = [_clean_step(body[m.end():end]) for m, end in zip(marks, ends)]
            return [s for s in steps if s], answer_line
    steps = _merge_lines([ln.strip() for ln in body.split("\n") if ln.strip()])
    if len(steps) == 1:
        steps = [s.strip() for s in _SENTENCE_END.split(steps[0]) if s.strip()]
        if len(steps) > 1 and _ANSWER_ONLY.match(steps[-1]):
            answer_line = answer_line or steps.pop()
    return steps, answer_line


def _clean_step(text: str) -> str:
    return re.sub(r"\n\s*\n", "\n", text.strip().strip("*_").strip())


def _merge_lines(lines: list[str]) -> list[str]:
    """Join continuation lines (lowercase starts, display math) to the step before them."""
    steps: list[str] = []
    in_display = False
    for line in lines:
        joins = in_display or line[0].islower() or line.startswith(("$$", "\\[", "\\]", "\\end"))
        if steps and joins:
            steps[-1] += "\n" + line
        else:
            steps.append(line)
        if line.count("$$") % 2:
            in_display = not in_display
        if "\\[" in line or "\\]" in line:
            in_display = line.rfind("\\[") > line.rfind("\\]")
    return steps


def number_steps(solution: str) -> list[str]:
    """The steps of a free-form solution (see `split_solution`), without any numbering."""
    return split_solution(solution)[0]


def format_numbered(steps: list[str], start: int = 1) -> str:
    """"Step 1: ...\\nStep 2: ..." from a list of steps, numbered from `start`."""
    return "\n".join(f"Step {i}: {step.strip()}" for i, step in enumerate(steps, start))


def paper_steps(steps: list[str], answer_line: str | None) -> list[str]:
    """The steps of the paper layout: the answer line (if any) numbered as the last step."""
    return [*steps, *([answer_line] if answer_line else [])]


def format_solution(solution: str, answer: str | None = None, layout: str = "lema") -> str:
    """A free-form solution rewritten as numbered steps plus its final answer line.

    Args:
        solution: any solution text (model output, GSM8K or MATH gold solution).
        answer: when given, the answer line is "The answer is <answer>."; otherwise the
            solution's own answer line is kept (if it has one).
        layout: `lema` (the answer line unnumbered) or `paper` (the answer line numbered as the
            last step, everything in braces).
    """
    steps, answer_line = split_solution(solution)
    if answer is not None:
        answer_line = ANSWER_LINE.format(answer=answer)
    if layout == "paper":
        return "{\n" + format_numbered(paper_steps(steps, answer_line)) + "\n}"
    return "\n".join(x for x in (format_numbered(steps), answer_line) if x)
