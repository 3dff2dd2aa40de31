"""Synthetic multi-step arithmetic word problems with exact answers: the offline default source.

Each problem is a chain of `level` operations on one quantity; every gold step computes one
intermediate value and ends with "= <value> <items>.", so a reference corrector can find the
first step where a solution goes wrong.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from lema.records import Problem, stable_id

_NAMES = ["Mia", "Liam", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Sofia", "Ken"]
_ITEMS = ["marbles", "stickers", "apples", "coins", "pencils", "cards", "shells", "books"]


@dataclass
class _Step:
    sentence: str  # the question's sentence for this operation
    work: str  # the gold step (without the leading "Step k:")
    value: int  # the quantity after this step


Op = Callable[[random.Random, str, str, int], "_Step | None"]


def _buy_groups(rng: random.Random, name: str, item: str, x: int) -> _Step:
    a, b = rng.randint(2, 6), rng.randint(2, 12)
    y = x + a * b
    return _Step(
        f"{name} buys {a} packs with {b} {item} in each pack.",
        f"{name} buys {a} * {b} = {a * b} {item}, so {name} has {x} + {a * b} = {y} {item}.",
        y,
    )


def _find(rng: random.Random, name: str, item: str, x: int) -> _Step:
    a = rng.randint(3, 40)
    return _Step(
        f"Then {name} finds {a} more {item}.",
        f"After finding {a} more, {name} has {x} + {a} = {x + a} {item}.",
        x + a,
    )


def _give(rng: random.Random, name: str, item: str, x: int) -> _Step | None:
    if x < 4:
        return None
    a = rng.randint(1, x - 2)
    return _Step(
        f"{name} gives {a} {item} to a friend.",
        f"After giving away {a}, {name} has {x} - {a} = {x - a} {item}.",
        x - a,
    )


def _multiply(rng: random.Random, name: str, item: str, x: int) -> _Step | None:
    if x > 400:
        return None
    k = rng.choice([2, 3, 4])
    word = {2: "doubles", 3: "triples", 4: "quadruples"}[k]
    return _Step(
        f"Then the number of {item} {name} has {word}.",
        f"The number {word}, so {name} has {x} * {k} = {x * k} {item}.",
        x * k,
    )


def _share(rng: random.Random, name: str, item: str, x: int) -> _Step | None:
    ks = [k for k in (2, 3, 4, 5) if x % k == 0 and x // k >= 2]
    if not ks:
        return None
    k = rng.choice(ks)
    return _Step(
        f"{name} splits the {item} equally into {k} groups and keeps one group.",
        f"{name} keeps one of {k} equal groups: {x} / {k} = {x // k} {item}.",
        x // k,
    )


_OPS: list[Op] = [_buy_groups, _find, _give, _multiply, _share]


def make_problem(rng: random.Random, level: int, pid: str, split: str) -> Problem:
    """One problem with `level` operations after the starting amount."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    x = rng.randint(5, 60)
    sentences, steps = [f"{name} has {x} {item}."], []
    while len(steps) < level:
        step = rng.choice(_OPS)(rng, name, item, x)
        if step is None:
            continue
        sentences.append(step.sentence)
        steps.append(step.work)
        x = step.value
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
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


def generate_problems(count: int, levels: list[int], seed: int = 0, split: str = "train"):
    """`count` problems, cycling through `levels`; the same (seed, split) gives the same list."""
    if not levels or any(lv < 1 for lv in levels):
        raise ValueError(f"levels must be a non-empty list of integers >= 1, got {levels!r}")
    problems = []
    for i in range(count):
        rng = random.Random(f"{seed}/{split}/{i}")
        pid = f"synthetic-{split}-{stable_id(seed, split, i, length=8)}"
        problems.append(make_problem(rng, levels[i % len(levels)], pid, split))
    return problems
