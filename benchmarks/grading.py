"""Grader throughput and agreement, side by side with math-verify in one run.

    .venv/bin/python benchmarks/grading.py --quick

Rows come from ../shared/data (GSM8K test, MATH-500) when present, else a built-in list.
Predictions are generated: the gold answer written into a varied model-like final sentence
after the reference reasoning, and about a quarter wrong ones (a changed number, another
problem's answer), so each prediction's true verdict is known. Everything runs on one thread.
math-verify runs two ways, each named: "fair", as its docs and peers call it (gold wrapped in
`$...$`; the throughput target is against this one), and "bare", `verify(parse(gold), parse(pred))`.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.math_verify_baseline import math_verify_bare, math_verify_fair  # noqa: E402
from lema.answer_extraction import find_last_boxed  # noqa: E402
from lema.grading import grade, grade_many  # noqa: E402

DATA_DIR = ROOT.parent / "shared" / "data"
BATCH = 64  # rows per grade_many call, as a Ray Data batch would hand them over
GSM8K_TEMPLATES = [
    "The answer is {a}.", "#### {a}", "So the final answer is $\\boxed{{{a}}}$.",
    "Therefore she has {a} dollars left.", "Answer: {a}", "A: {a}",
    "The final answer is {a}. I hope it is correct.", "In total that makes {a} apples.",
]
MATH_TEMPLATES = [
    "The final answer is $\\boxed{{{a}}}$.", "So the answer is ${a}$.",
    "Therefore, the answer is $\\boxed{{{a}}}$. I hope it is correct.", "The answer is: {a}",
    "Hence we get \\[\\boxed{{{a}}}\\]", "Final answer: $\\boxed{{{a}}}$",
]
FALLBACK_MATH_FORMS = ["\\frac{{{k}}}{{{m}}}", "{k}\\sqrt{{{m}}}", "({k}, \\frac{{\\pi}}{{{m}}})",
                      "[{k}, {m})", "x^2 + {k}x + {m}", "\\text{{({c})}}", "{k}{m}", "-\\dfrac{{{k}}}{{{m}}}",
                      "\\{{{k}, {m}\\}}", "{k}\\pi", "\\begin{{pmatrix}} {k} \\\\ {m} \\end{{pmatrix}}",
                      "{k}^\\circ", "{k}\\%", "(-\\infty, {k}]"]


def fallback_gsm8k() -> list[tuple[str, str]]:
    """Distinct built-in rows (distinct, so no parse cache flatters either side)."""
    return [(f"We add the parts: {a} + {3 * a + 7} = {4 * a + 7}.\n#### {4 * a + 7:,}", str(4 * a + 7))
            for a in range(0, 3000, 10)]


def fallback_math() -> list[tuple[str, str]]:
    answers = [form.format(k=k, m=k + 2 + i, c="ABCDE"[k % 5])
               for k in range(1, 23) for i, form in enumerate(FALLBACK_MATH_FORMS)]
    return [(f"We find that the value is $\\boxed{{{a}}}$.", a) for a in answers]


def load_gsm8k(data_dir: Path) -> list[tuple[str, str]]:
    """(reference solution, gold answer) pairs."""
    path = data_dir / "gsm8k_test.jsonl"
    if not path.exists():
        return fallback_gsm8k()
    rows = [json.loads(line) for line in path.open()]
    return [(r["answer"], r["answer"].split("####")[-1].strip().replace(",", "")) for r in rows]


def load_math(data_dir: Path) -> list[tuple[str, str]]:
    """(reference solution, gold answer) pairs."""
    path = data_dir / "math500_test.jsonl"
    if not path.exists():
        return fallback_math()
    rows = [json.loads(line) for line in path.open()]
    return [(r["solution"], r["answer"]) for r in rows]


def make_gsm8k_rows(items, rng: random.Random) -> list[tuple[str, str, bool]]:
    """(prediction, gold solution, truly correct) rows."""
    out = []
    for solution, answer in items:
        reasoning = re.sub(r"<<[^>]*>>", "", solution.split("####")[0]).strip()
        value, correct = int(float(answer)), rng.random() > 0.25
        if not correct:
            value += rng.choice([1, -1, 10, value or 1])
        shown = f"{value:,}" if rng.random() < 0.3 else str(value)
        final = rng.choice(GSM8K_TEMPLATES).format(a=shown)
        out.append((f"{reasoning}\n{final}", solution, correct))
    return out


def make_math_rows(items, rng: random.Random) -> list[tuple[str, str, bool]]:
    """(prediction, gold answer, truly correct) rows."""
    out = []
    answers = [a for _, a in items]
    for solution, answer in items:
        boxed = find_last_boxed(solution)
        reasoning = solution[: boxed[0]] if boxed else solution
        shown, correct = answer, rng.random() > 0.25
        if not correct:
            shown = rng.choice([a for a in answers if a.replace(" ", "") != answer.replace(" ", "")])
        final = rng.choice(MATH_TEMPLATES).format(a=shown)
        out.append((f"{reasoning.strip()}\n{final}", answer, correct))
    return out


def time_ours(rows, dataset: str) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    got: list[bool] = []
    for i in range(0, len(rows), BATCH):
        batch = rows[i: i + BATCH]
        got += [v.correct for v in grade_many([(p, g, dataset) for p, g, _ in batch])]
    return time.perf_counter() - start, got


def time_math_verify(rows, call) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    got = [call(gold, pred) for pred, gold, _ in rows]
    return time.perf_counter() - start, got


def agreement(got: list[bool], rows) -> float:
    return sum(g == truth for g, (_, _, truth) in zip(got, rows)) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows (under 2 minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR,
                        help="folder with gsm8k_test.jsonl and math500_test.jsonl")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    gsm8k_items, math_items = load_gsm8k(args.data_dir), load_math(args.data_dir)
    has_data = (args.data_dir / "math500_test.jsonl").exists()
    source = str(args.data_dir) if has_data else "built-in fallback"
    repeat = 1 if args.quick else 4
    gsm8k_rows = make_gsm8k_rows(gsm8k_items * repeat, rng)
    math_rows = make_math_rows((math_items * repeat)[: 300 if args.quick else None], rng)
    print(f"rows: {len(gsm8k_rows)} GSM8K, {len(math_rows)} MATH ({source}); one thread")

    # warm-up: start the math-verify worker and import math-verify here (not timed)
    grade("The answer is $\\sqrt{2}$", "\\sqrt{2}", "math")
    time_math_verify([("$\\sqrt{3}$", "\\sqrt{3}", True)], math_verify_fair)

    t_gsm8k, got_gsm8k = time_ours(gsm8k_rows, "gsm8k")
    # side by side, batch by batch: a change in machine load hits all three alike
    baselines = {"math_verify_fair": math_verify_fair, "math_verify_bare": math_verify_bare}
    seconds = dict.fromkeys(["ours", *baselines], 0.0)
    got: dict[str, list[bool]] = {name: [] for name in seconds}
    for i in range(0, len(math_rows), BATCH):
        batch = math_rows[i: i + BATCH]
        t, verdicts = time_ours(batch, "math")
        seconds["ours"], got["ours"] = seconds["ours"] + t, got["ours"] + verdicts
        for name, call in baselines.items():
            t, verdicts = time_math_verify(batch, call)
            seconds[name], got[name] = seconds[name] + t, got[name] + verdicts
    figures = {
        "grades_per_s_gsm8k": round(len(gsm8k_rows) / t_gsm8k, 1),
        "agreement_gsm8k": round(agreement(got_gsm8k, gsm8k_rows), 4),
        **{f"grades_per_s_math_{name}": round(len(math_rows) / t, 1) for name, t in seconds.items()},
        **{f"agreement_math_{name}": round(agreement(g, math_rows), 4) for name, g in got.items()},
        "ratio_vs_math_verify_fair": round(seconds["math_verify_fair"] / seconds["ours"], 3),
        "ratio_vs_math_verify_bare": round(seconds["math_verify_bare"] / seconds["ours"], 3),
        "rows_gsm8k": len(gsm8k_rows),
        "rows_math": len(math_rows),
        "data": source,
    }
    print(f"GSM8K ours:             {figures['grades_per_s_gsm8k']:>9.1f} grades/s, "
          f"agreement with truth {figures['agreement_gsm8k']:.2%}")
    for name in seconds:
        print(f"MATH  {name:<17} {figures[f'grades_per_s_math_{name}']:>9.1f} grades/s, "
              f"agreement with truth {figures[f'agreement_math_{name}']:.2%}")
    print(f"ours / math-verify fair throughput on the same MATH rows: "
          f"{figures['ratio_vs_math_verify_fair']:.2f}x (target >= 0.9); "
          f"/ bare call: {figures['ratio_vs_math_verify_bare']:.2f}x")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
