"""Synthetic multi-step arithmetic word problems with exact answers: the offline default source.

Each problem is a chain of `level` operations on one quantity; every gold step computes one
intermediate value and ends with "= <value> <items>.", so a reference corrector can find the
first step where a solution goes wrong. `solve_question` reads a question back into its worked
steps (the scripted engine answers from it).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lema.records import Problem, stable_id

_NAMES = ["Mia", "Liam", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Sofia", "Ken"]
_ITEMS = ["marbles", "stickers", "apples", "coins", "pencils", "cards", "shells", "books"]


_TIMES = {2: "doubles", 3: "triples", 4: "quadruples"}
_FACTOR = {word: k for k, word in _TIMES.items()}


@dataclass(frozen=True)
class _Op:
    """One operation on the quantity. Its templates name {name}, {item}, the operation's numbers
    {a} and {b}, {ab} (a * b), {word} (a as "doubles", ...), {x} (the amount before) and {y} (after)."""

    sentence: str  # the question's sentence
    work: str  # the gold step (without the leading "Step k:")
    apply: Callable[[int, int, int], int]  # (x, a, b) -> y
    draw: Callable[[random.Random, int], tuple[int, int] | None]  # (a, b) for amount x; None: does not fit


def _draw_give(rng: random.Random, x: int) -> tuple[int, int] | None:
    return (rng.randint(1, x - 2), 0) if x >= 4 else None


def _draw_multiply(rng: random.Random, x: int) -> tuple[int, int] | None:
    return None if x > 400 else (rng.choice([2, 3, 4]), 0)


def _draw_share(rng: random.Random, x: int) -> tuple[int, int] | None:
    ks = [k for k in (2, 3, 4, 5) if x % k == 0 and x // k >= 2]
    return (rng.choice(ks), 0) if ks else None


_OPS = [
    _Op("{name} buys {a} packs with {b} {item} in each pack.",
        "{name} buys {a} * {b} = {ab} {item}, so {name} has {x} + {ab} = {y} {item}.",
        lambda x, a, b: x + a * b, lambda rng, x: (rng.randint(2, 6), rng.randint(2, 12))),
    _Op("Then {name} finds {a} more {item}.",
        "After finding {a} more, {name} has {x} + {a} = {y} {item}.",
        lambda x, a, b: x + a, lambda rng, x: (rng.randint(3, 40), 0)),
    _Op("{name} gives {a} {item} to a friend.",
        "After giving away {a}, {name} has {x} - {a} = {y} {item}.",
        lambda x, a, b: x - a, _draw_give),
    _Op("Then the number of {item} {name} has {word}.",
        "The number {word}, so {name} has {x} * {a} = {y} {item}.",
        lambda x, a, b: x * a, _draw_multiply),
    _Op("{name} splits the {item} equally into {a} groups and keeps one group.",
        "{name} keeps one of {a} equal groups: {x} / {a} = {y} {item}.",
        lambda x, a, b: x // a, _draw_share),
]
_START = "{name} has {x} {item}."
_ASK = "How many {item} does {name} have now?"


def _fill(template: str, name: str, item: str, a: int = 0, b: int = 0, x: int = 0, y: int = 0) -> str:
    return template.format(name=name, item=item, a=a, b=b, ab=a * b, word=_TIMES.get(a, ""), x=x, y=y)


def make_problem(rng: random.Random, level: int, pid: str, split: str) -> Problem:
    """One problem with `level` operations after the starting amount."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    x = rng.randint(5, 60)
    sentences, steps = [_fill(_START, name, item, x=x)], []
    while len(steps) < level:
        op = rng.choice(_OPS)
        drawn = op.draw(rng, x)
        if drawn is None:
            continue
        y = op.apply(x, *drawn)
        sentences.append(_fill(op.sentence, name, item, *drawn))
        steps.append(_fill(op.work, name, item, *drawn, x=x, y=y))
        x = y
    question = " ".join(sentences) + " " + _fill(_ASK, name, item)
    solution = "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))
    return Problem(
        id=pid,
        dataset="synthetic",
        split=split,
        question=question,
        answer=str(x),
        solution=f"{solution}\nThe answer is {x}.",
        level=str(level),
        steps=steps,
    )


# ---------------------------------------------------------------- reading a question back
def _pattern(template: str) -> re.Pattern[str]:
    """A regex for the sentences of `template`: {a}, {b} and {x} as numbers, other fields as words."""
    def group(m: re.Match[str]) -> str:
        return f"(?P<{m[1]}>" + (r"\d+" if m[1] in ("a", "b", "x") else r"\w+") + ")"

    return re.compile(re.sub(r"\\\{(\w+)\\\}", group, re.escape(template)))


_OP_PATTERNS = [(op, _pattern(op.sentence)) for op in _OPS]
_START_PATTERN, _ASK_PATTERN = _pattern(_START), _pattern(_ASK)


def _read_op(sentence: str, name: str, item: str) -> tuple[_Op, int, int] | None:
    """The operation a question sentence states, with its numbers (a, b)."""
    for op, pattern in _OP_PATTERNS:
        m = pattern.fullmatch(sentence)
        if m and (m["name"], m["item"]) == (name, item):
            fields = m.groupdict()
            a = _FACTOR[fields["word"]] if "word" in fields else int(fields["a"])
            return op, a, int(fields.get("b") or 0)
    return None


def solve_question(question: str, mistake: tuple[int, int] | None = None) -> list[tuple[str, int]] | None:
    """Solve a synthetic question by reading its sentences back.

    Args:
        question: a question of `make_problem`'s templates.
        mistake: (step index from 0, error): that step's value comes out `error` more than it
            should, and the later steps carry the wrong value on.
    Returns:
        (step text, value) per operation, the text as the problem's gold step (`Problem.steps`);
        None when the question is not a synthetic one.
    """
    sentences = re.split(r"(?<=[.?]) ", question.strip())
    first, last = _START_PATTERN.fullmatch(sentences[0]), _ASK_PATTERN.fullmatch(sentences[-1])
    if not first or not last or (first["name"], first["item"]) != (last["name"], last["item"]):
        return None
    name, item, x = first["name"], first["item"], int(first["x"])
    steps = []
    for i, sentence in enumerate(sentences[1:-1]):
        read = _read_op(sentence, name, item)
        if read is None:
            return None
        op, a, b = read
        y = op.apply(x, a, b) + (mistake[1] if mistake and mistake[0] == i else 0)
        steps.append((_fill(op.work, name, item, a, b, x, y), y))
        x = y
    return steps or None


def iter_problems(count: int, levels: list[int], seed: int = 0, split: str = "train") -> Iterator[Problem]:
    """`count` problems, one at a time, cycling through `levels`; the same (seed, split) gives the
    same problems (each from its own index, so a source of any size streams)."""
    if not levels or any(lv < 1 for lv in levels):
        raise ValueError(f"levels must be a non-empty list of integers >= 1, got {levels!r}")
    for i in range(count):
        rng = random.Random(f"{seed}/{split}/{i}")
        pid = f"synthetic-{split}-{stable_id(seed, split, i, length=16)}"  # 64 bits: no collisions at 1M
        yield make_problem(rng, levels[i % len(levels)], pid, split)


def generate_problems(count: int, levels: list[int], seed: int = 0, split: str = "train") -> list[Problem]:
    """`iter_problems` as a list."""
    return list(iter_problems(count, levels, seed, split))


# ---------------------------------------------------------------- chains (the reference evolver)
@dataclass(frozen=True)
class Chain:
    """What a synthetic problem states: who, which items, the starting amount, and per step the
    operation (an index into the operation table) with its numbers (a, b)."""

    name: str
    item: str
    start: int
    ops: tuple[tuple[int, int, int], ...]  # (operation index, a, b)


OPERATIONS = len(_OPS)
"""How many kinds of operation a chain step can take (indices 0 .. OPERATIONS - 1)."""


def read_chain(question: str) -> Chain | None:
    """The chain a synthetic question states (None when it is not one of `make_problem`'s)."""
    sentences = re.split(r"(?<=[.?]) ", question.strip())
    first, last = _START_PATTERN.fullmatch(sentences[0]), _ASK_PATTERN.fullmatch(sentences[-1])
    if not first or not last or (first["name"], first["item"]) != (last["name"], last["item"]):
        return None
    ops = []
    for sentence in sentences[1:-1]:
        read = _read_op(sentence, first["name"], first["item"])
        if read is None:
            return None
        op, a, b = read
        ops.append((_OPS.index(op), a, b))
    return Chain(first["name"], first["item"], int(first["x"]), tuple(ops)) if ops else None


def draw_chain(rng: random.Random, name: str, item: str, start: int, kinds: list[int]) -> Chain:
    """A chain doing the operations `kinds` in order, with numbers drawn as `make_problem` draws
    them; a kind that does not fit the amount at its step (nothing left to give, no equal
    groups) is replaced by a drawn one that does."""
    x, ops = start, []
    for kind in kinds:
        drawn = _OPS[kind].draw(rng, x)
        while drawn is None:
            kind = rng.randrange(len(_OPS))
            drawn = _OPS[kind].draw(rng, x)
        ops.append((kind, *drawn))
        x = _OPS[kind].apply(x, *drawn)
    return Chain(name, item, start, tuple(ops))


def chain_problem(chain: Chain, pid: str, split: str) -> Problem:
    """The Problem a chain states, worded and solved exactly as `make_problem` does (so
    `solve_question` reads its question back into its gold steps)."""
    name, item, x = chain.name, chain.item, chain.start
    sentences, steps = [_fill(_START, name, item, x=x)], []
    for kind, a, b in chain.ops:
        op = _OPS[kind]
        y = op.apply(x, a, b)
        sentences.append(_fill(op.sentence, name, item, a, b))
        steps.append(_fill(op.work, name, item, a, b, x=x, y=y))
        x = y
    solution = "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))
    return Problem(id=pid, dataset="synthetic", split=split,
                   question=" ".join(sentences) + " " + _fill(_ASK, name, item), answer=str(x),
                   solution=f"{solution}\nThe answer is {x}.", level=str(len(steps)), steps=steps)
