"""Grader agreement on three sets, side by side with math-verify and the LeMa paper's code.

    .venv/bin/python benchmarks/grading_agreement.py [--peer-repo PATH ...] [--lema-repo PATH]

1. Bare answers: final answers with no solution around them, built here from ../shared/data.
   Each MATH-500 answer (gold) meets the same answer and an equivalent rewrite of it (plain, in
   `$..$`, `\\(..\\)` or `\\boxed{}`), and a changed answer (its first integer plus one); GSM8K
   test golds meet `1,250`/`$80`-style forms of the same number and of a different one. Labels are
   known by construction.
2. Peer verdicts: equivalence verdicts asserted by other graders' own test suites
   (huggingface/Math-Verify `tests/`, NVIDIA/NeMo-Skills `tests/test_math_equal.py`), read at
   run time from checkouts or bare git mirrors given with --peer-repo; none are stored here.
   Tables whose test passes non-default options (precision, strict, set relations) are left out.
3. lema_compat vs the paper: our `--mode lema_compat` against microsoft/LEMA
   `inference_code/utils.py` imported at run time from --lema-repo, on real GSM8K solutions
   ending in varied "The answer is" lines and MATH-500 solutions ending in varied ways.

math-verify runs two ways, each named: "fair", as its docs and peers call it (gold wrapped in
`$...$`), and "bare", `verify(parse(gold), parse(pred))`. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.math_verify_baseline import math_verify_bare, math_verify_fair  # noqa: E402
from lema.grading import grade_many  # noqa: E402

DATA_DIR = ROOT.parent / "shared" / "data"
Row = tuple[str, str, str, bool, str]  # prediction, gold, dataset, true verdict, source/form
_DIGITS_RE = re.compile(r"\d+")
_PEER_FILES = {  # repo file -> (its project, how its tables are read)
    "tests/test_all.py": ("Math-Verify", "gold_pred"), "tests/test_boxed.py": ("Math-Verify", "gold_pred"),
    "tests/test_numina_cases.py": ("Math-Verify", "gold_pred"),
    "tests/test_open_thoughts.py": ("Math-Verify", "gold_pred"),
    "tests/test_yujianll.py": ("Math-Verify", "gold_pred"),
    "tests/test_math_equal.py": ("NeMo-Skills", "pairs_both_ways"),
}
_NON_DEFAULT_OPTIONS = {"precision", "strict", "allow_set_relation_comp"}


# ---------------------------------------------------------------- 1. bare answers
def _load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def _wrap(answer: str, rng: random.Random) -> tuple[str, str]:
    forms = {"plain": answer, "$..$": f"${answer}$", "\\(..\\)": f"\\({answer}\\)",
             "\\boxed{..}": f"\\boxed{{{answer}}}"}
    form = rng.choice(list(forms))
    return forms[form], form


def equivalent_rewrite(answer: str) -> str:
    r"""The same answer written another common way (`\dfrac`/`\frac`, `a/b`, decimals, spacing,
    `\left`/`\right`, `\!` separators); the answer itself when no rewrite applies."""
    m = re.fullmatch(r"(-?)\\d?frac\{(\d+)\}\{(\d+)\}", answer)
    if m:
        sign, num, den = m.groups()
        d = int(den)
        while d % 2 == 0:
            d //= 2
        while d % 5 == 0:
            d //= 5
        return f"{sign}{int(num) / int(den):g}" if d == 1 and len(f"{int(num) / int(den):g}") < 8 else \
            f"{sign}{num}/{den}"
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", answer):
        return answer.replace(",", "")
    for old, new in (("\\dfrac", "\\frac"), ("\\frac", "\\dfrac"), ("\\left", ""), ("\\right", ""),
                     (",\\!", ""), (", ", ",")):
        if old in answer:
            return answer.replace(old, new)
    return answer.replace(",", ", ") if "," in answer else answer


def changed_answer(answer: str, others: list[str], rng: random.Random) -> str:
    """A different answer: its first integer plus one, else another problem's answer."""
    first = _DIGITS_RE.search(answer)
    if first:
        return answer[: first.start()] + str(int(first.group()) + 1) + answer[first.end():]
    return rng.choice([o for o in others if o.replace(" ", "") != answer.replace(" ", "")])


def bare_answer_rows(data_dir: Path, rng: random.Random, gsm8k_n: int) -> list[Row]:
    rows: list[Row] = []
    answers = [r["answer"] for r in _load_jsonl(data_dir / "math500_test.jsonl")]
    no_digits = [a for a in answers if not _DIGITS_RE.search(a)]
    for gold in answers:
        same, form = _wrap(gold, rng)
        rows.append((same, gold, "math", True, f"math same {form}"))
        rewrite, form = _wrap(equivalent_rewrite(gold), rng)
        rows.append((rewrite, gold, "math", True, f"math rewrite {form}"))
        wrong, form = _wrap(changed_answer(gold, no_digits, rng), rng)
        rows.append((wrong, gold, "math", False, f"math changed {form}"))
    golds = [r["answer"].split("####")[-1].strip() for r in _load_jsonl(data_dir / "gsm8k_test.jsonl")]
    for gold in rng.sample(golds, min(gsm8k_n, len(golds))):
        value = int(gold.replace(",", ""))
        for shown, truth in ((value, True), (value + rng.choice([1, -1, 10, 100]), False)):
            form = rng.choice(["{:,}", "${:,}", "\\${:,}", "{:,}.00", "{}", "${}"])
            rows.append((form.format(shown), gold, "gsm8k", truth, f"gsm8k {form}"))
    return rows


# ---------------------------------------------------------------- 2. peer verdicts
def read_repo_file(repo: Path, rel: str) -> str | None:
    """A file of a checkout, or of a bare git mirror's HEAD; None when it has none."""
    if (repo / rel).is_file():
        return (repo / rel).read_text(encoding="utf-8")
    done = subprocess.run(["git", f"--git-dir={repo}", "show", f"HEAD:{rel}"],
                          capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else None


def _literal(node: ast.AST) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None  # e.g. `5 / 2`: not a literal, left out


def _options_passed(func: ast.FunctionDef) -> set[str]:
    return {kw.arg for call in ast.walk(func) if isinstance(call, ast.Call)
            for kw in call.keywords if kw.arg}


def peer_tables(source: str, style: str) -> tuple[list[tuple[str, str, bool, str]], int]:
    """(prediction, gold, asserted verdict, test name) of one test file; and how many left out."""
    rows, left_out = [], 0
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, ast.FunctionDef):
            continue
        for deco in func.decorator_list:
            if not (isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize"):
                continue
            names = [n.strip() for n in str(_literal(deco.args[0])).strip("()").replace("'", "").split(",")]
            cases = [_literal(e) for e in getattr(deco.args[1], "elts", [])]
            skip = bool(_options_passed(func) & _NON_DEFAULT_OPTIONS) or "precision" in names
            for case in cases:
                if style == "pairs_both_ways":
                    pair = case[0] if isinstance(case, tuple) and len(case) == 1 else case
                    ok = isinstance(pair, tuple) and all(isinstance(v, (str, int, float)) for v in pair)
                    if skip or not ok:
                        left_out += 1
                        continue
                    a, b = (str(v) for v in pair)
                    truth = "incorrect" not in func.name
                    rows += [(a, b, truth, func.name), (b, a, truth, func.name)]
                elif isinstance(case, tuple) and {"gold", "pred"} <= set(names) and not skip:
                    item = dict(zip(names, case))
                    expected = item.get("expected", item.get("result"))
                    rows.append((item["pred"], item["gold"], bool(expected), func.name))
                else:
                    left_out += 1
    return rows, left_out


def peer_verdict_rows(repos: list[Path]) -> tuple[list[Row], int]:
    rows: list[Row] = []
    left_out = 0
    for repo in repos:
        for rel, (project, style) in _PEER_FILES.items():
            source = read_repo_file(repo, rel)
            if source is None:
                continue
            table, dropped = peer_tables(source, style)
            left_out += dropped
            rows += [(p, g, "math", truth, f"{project}:{rel}:{name}") for p, g, truth, name in table]
    return rows, left_out


# ---------------------------------------------------------------- 3. lema_compat vs the paper
def load_paper_utils(repo: Path):
    """microsoft/LEMA `inference_code/utils.py` as a module (from a checkout or bare mirror)."""
    source = read_repo_file(repo, "inference_code/utils.py")
    if source is None:
        raise SystemExit(f"{repo} has no inference_code/utils.py")
    folder = Path(tempfile.mkdtemp(prefix="lema_paper_"))
    (folder / "lema_paper_utils.py").write_text(source, encoding="utf-8")
    sys.path.insert(0, str(folder))
    import lema_paper_utils  # type: ignore[import-not-found]

    return lema_paper_utils


GSM8K_ENDINGS = [
    "The answer is {a}.", "The answer is: {a}", "The answer is {a:,}.", "The answer is ${a}.",
    "The answer is {a} dollars.", "The answer is {a}%.", "The answer is {expr} = {a}.",
    "The answer is <<{expr}={a}>>{a}.", "The answer is £{a}.", "The answer is €{a:,}.",
    "The answer is {a}. I hope it is correct.", "The answer is {a}.\n\nQ: What is 2 + 3?\nA: The answer is 5.",
    "The answer is {a}.\n\nQuestion: How many legs do 2 cats have?\nThe answer is 8.",
    "The answer is {a} hours and 30 minutes.", "The answer is {a}:30.", "The answer is {a}/2.",
    "The answer is {a} + 0.", "The answer is -{a}.", "The answer is {a}% of the total.",
    "The answer is \"{a}\".", "The answer is {a}/", "The answer is ",
    "So the total is {a}.", "#### {a}", "The answer is **{a}**.", "The answer is $\\boxed{{{a}}}$.",
    "The answer is {a} * 2 / 2.", "The answer is ({a}).", "The answer is {a}.0.",
]
MATH_ENDINGS = [
    "{solution}", "{reasoning}\nThe answer is: {a}", "{reasoning}\nThe answer is ${a}$.",
    "{reasoning}\nThe answer is $\\boxed{{{a}}}$.", "{reasoning}\nThe answer is \\boxed{{{a}}}",
    "{reasoning}\nThe answer is {a}. I hope it is correct.", "{reasoning}\nSo we get $\\fbox{{{a}}}$.",
    "{solution}\n\nQ: What is $1+1$?\nA: The answer is 2.", "{reasoning}\nThe answer is: {a}\n\nQuestion: next",
    "{reasoning}\nThe answer is: {a} \\text{{ units}}", "{reasoning} no final answer here.",
]


def lema_rows(data_dir: Path, rng: random.Random, n_gsm8k: int) -> list[tuple[str, str, str, str]]:
    """(prediction, our gold, the paper's gold completion, dataset) rows."""
    rows = []
    gsm8k = _load_jsonl(data_dir / "gsm8k_test.jsonl") + _load_jsonl(data_dir / "gsm8k_train.jsonl")
    for item in rng.sample(gsm8k, n_gsm8k):
        solution = item["answer"]
        reasoning, gold = solution.split("####")
        value = int(gold.strip().replace(",", ""))
        shown = value if rng.random() < 0.7 else value + rng.choice([1, -1, 10])
        exprs = re.findall(r"<<([^=>]*)=", reasoning) or [str(shown)]
        if rng.random() < 0.5:
            reasoning = re.sub(r"<<[^>]*>>", "", reasoning)
        ending = rng.choice(GSM8K_ENDINGS).format(a=shown, expr=exprs[-1])
        ours = solution if rng.random() < 0.5 else gold.strip()
        rows.append((f"{reasoning.strip()}\n{ending}", ours, f"{reasoning.strip()} The answer is {gold.strip()}.",
                     "gsm8k"))
    for item in _load_jsonl(data_dir / "math500_test.jsonl"):
        solution, answer = item["solution"], item["answer"]
        shown = answer if rng.random() < 0.7 else changed_answer(answer, [answer + "+1"], rng)
        shown = equivalent_rewrite(shown) if rng.random() < 0.3 else shown
        reasoning = solution[: solution.rfind("\\boxed")] if "\\boxed" in solution else solution
        ending = rng.choice(MATH_ENDINGS).format(solution=solution, reasoning=reasoning.strip(), a=shown)
        if rng.random() < 0.5:
            rows.append((ending, solution, solution, "math"))
        else:
            rows.append((ending, answer, f"The answer is {answer}.", "math"))
    return rows


def paper_verdict(utils, prediction: str, gold_completion: str, dataset: str) -> bool | None:
    """The paper's verdict, or None where its evaluation refuses the gold (reads 0 or '')."""
    read = utils.get_final_result_gsm8k if dataset == "gsm8k" else utils.get_final_result_math
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every unreadable answer
        gold, pred = read(gold_completion), read(prediction)
    return None if gold in (0, "") else pred == gold


# ---------------------------------------------------------------- scoring
def ours(rows: list[Row], mode: str = "robust") -> list[bool]:
    return [v.correct for v in grade_many([(p, g, d) for p, g, d, _, _ in rows], mode=mode)]


def baseline(rows: list[Row], call: Callable[[str, str], bool]) -> list[bool]:
    return [call(g, p) for p, g, _, _, _ in rows]


def agreement(got: list[bool], rows: list[Row]) -> float:
    return sum(g == row[3] for g, row in zip(got, rows)) / len(rows)


def show_misses(name: str, got: list[bool], rows: list[Row], limit: int) -> None:
    misses = [(row, g) for row, g in zip(rows, got) if g != row[3]]
    for (p, g, d, truth, source), _ in misses[:limit]:
        print(f"  miss [{name}] {source}: pred={p[-80:]!r} gold={g[-60:]!r} {d} truth={truth}")


def score_set(name: str, rows: list[Row], figures: dict, misses: int) -> None:
    results = {"ours": ours(rows), "math_verify_fair": baseline(rows, math_verify_fair),
               "math_verify_bare": baseline(rows, math_verify_bare)}
    print(f"\n{name}: {len(rows)} rows ({sum(r[3] for r in rows)} equivalent)")
    for who, got in results.items():
        figures[f"{name}_{who}"] = round(agreement(got, rows), 4)
        print(f"  {who:<18} agreement {figures[f'{name}_{who}']:.2%}")
    figures[f"{name}_rows"] = len(rows)
    figures[f"{name}_ratio_vs_math_verify_fair"] = round(
        figures[f"{name}_ours"] / figures[f"{name}_math_verify_fair"], 3)
    show_misses("ours", results["ours"], rows, misses)
    show_misses("math-verify fair", results["math_verify_fair"], rows, misses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--peer-repo", type=Path, action="append", default=[],
                        help="checkout or bare mirror of huggingface/Math-Verify or NVIDIA/NeMo-Skills")
    parser.add_argument("--lema-repo", type=Path, help="checkout or bare mirror of microsoft/LEMA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gsm8k-rows", type=int, default=400, help="GSM8K golds per set")
    parser.add_argument("--show-misses", type=int, default=10, help="disagreements printed per grader")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    figures: dict = {}
    if not (args.data_dir / "math500_test.jsonl").exists():
        raise SystemExit(f"{args.data_dir} lacks math500_test.jsonl / gsm8k_test.jsonl")

    score_set("bare_answers", bare_answer_rows(args.data_dir, rng, args.gsm8k_rows), figures, args.show_misses)

    if args.peer_repo:
        rows, left_out = peer_verdict_rows(args.peer_repo)
        figures["peer_verdicts_left_out"] = left_out
        print(f"\n(peer tables: {left_out} cases left out: non-default options or non-literal values)")
        score_set("peer_verdicts", rows, figures, args.show_misses)
        by_source = Counter(r[4].split(":")[0] for r in rows)
        print("  sources: " + ", ".join(f"{k} {v}" for k, v in by_source.items()))

    if args.lema_repo:
        utils = load_paper_utils(args.lema_repo)
        rows = lema_rows(args.data_dir, rng, args.gsm8k_rows * 2)
        paper = [paper_verdict(utils, p, gc, d) for p, _, gc, d in rows]
        kept = [(p, g, d, truth, "lema") for (p, g, _, d), truth in zip(rows, paper) if truth is not None]
        got = ours(kept, mode="lema_compat")
        figures["lema_compat_vs_paper"] = round(agreement(got, kept), 4)
        figures["lema_compat_rows"] = len(kept)
        figures["lema_compat_refused_by_paper"] = len(rows) - len(kept)
        print(f"\nlema_compat vs the paper's code: {len(kept)} rows "
              f"({sum(r[3] for r in kept)} correct by the paper), agreement {figures['lema_compat_vs_paper']:.2%}")
        show_misses("lema_compat", got, kept, args.show_misses)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
