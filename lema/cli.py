"""`lema grade IN.jsonl [-o OUT.jsonl] [--mode robust|lema_compat]`: grade predictions in a file."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any, TextIO

from lema.grading import MODES, grade_many

_FIELDS = ("prediction", "gold", "dataset")
_CHUNK = 256  # rows per grade_many call (one worker round trip)


def _check_row(row: Any) -> str | None:
    """Why a parsed JSONL row cannot be graded, or None when it can."""
    if not isinstance(row, dict):
        return f"row is a {type(row).__name__}, not an object"
    missing = [f for f in _FIELDS if f not in row]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    wrong = [f for f in _FIELDS if not isinstance(row[f], str)]
    if wrong:
        return "; ".join(f"{f} must be a string, got {type(row[f]).__name__}" for f in wrong)
    return None


def _grade_chunk(rows: list[dict[str, Any]], mode: str, timeout_s: float) -> None:
    """Add predicted_answer/correct/reason (or error) to each row, in place."""
    try:
        verdicts = grade_many([(r["prediction"], r["gold"], r["dataset"]) for r in rows],
                              mode=mode, timeout_s=timeout_s)
    except ValueError as e:  # a bad dataset name in the chunk: grade row by row to find it
        if len(rows) == 1:
            rows[0]["error"] = str(e)
        else:
            for row in rows:
                _grade_chunk([row], mode, timeout_s)
        return
    for row, verdict in zip(rows, verdicts):
        row.update(predicted_answer=verdict.predicted_answer, correct=verdict.correct,
                   reason=verdict.reason)


def grade_file(src: TextIO, dst: TextIO, mode: str, timeout_s: float) -> Counter[str]:
    """Grade every JSONL row of `src` into `dst` (order kept); returns counts by outcome."""
    counts: Counter[str] = Counter()
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        good = [r for r in pending if "error" not in r]
        for start in range(0, len(good), _CHUNK):
            _grade_chunk(good[start: start + _CHUNK], mode, timeout_s)
        for row in pending:
            counts["error" if "error" in row else ("correct" if row["correct"] else "wrong")] += 1
            dst.write(json.dumps(row, ensure_ascii=False) + "\n")
        pending.clear()

    for n, line in enumerate(src, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            row = {"line": n, "raw": line.rstrip("\n"), "error": f"invalid JSON: {e}"}
        problem = None if "error" in row else _check_row(row)
        if problem:
            row = row if isinstance(row, dict) else {"line": n, "raw": line.rstrip("\n")}
            row["error"] = problem
        pending.append(row)
        if len(pending) >= _CHUNK:
            flush()
    flush()
    return counts


def _cmd_grade(args: argparse.Namespace) -> int:
    with open(args.input, encoding="utf-8") as src:
        if args.output:
            with open(args.output, "w", encoding="utf-8") as dst:
                counts = grade_file(src, dst, args.mode, args.timeout)
        else:
            counts = grade_file(src, sys.stdout, args.mode, args.timeout)
    graded = counts["correct"] + counts["wrong"]
    accuracy = counts["correct"] / graded if graded else 0.0
    summary = (f"accuracy {accuracy:.4f} ({counts['correct']}/{graded} correct, "
               f"{counts['error']} bad rows, mode {args.mode})")
    print(summary, file=sys.stderr if not args.output else sys.stdout)
    return 0


def add_grade_command(sub: argparse._SubParsersAction) -> None:
    """The `grade` subcommand, on any `lema` parser's subcommands."""
    p_grade = sub.add_parser("grade", help="grade predictions in a JSONL file")
    p_grade.add_argument("input", help='JSONL rows {"prediction", "gold", "dataset"}')
    p_grade.add_argument("-o", "--output", help="output JSONL (default: stdout)")
    p_grade.add_argument("--mode", choices=MODES, default="robust",
                         help="robust (default) or lema_compat (the LeMa paper's evaluation rules)")
    p_grade.add_argument("--timeout", type=float, default=5.0,
                         help="seconds per comparison before a 'timeout' verdict")
    p_grade.set_defaults(func=_cmd_grade)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lema", description=__doc__)
    add_grade_command(parser.add_subparsers(dest="command", required=True))
    return parser


def run_command(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse `argv` with `parser` and run the chosen subcommand; returns the exit code."""
    args = parser.parse_args(argv)
    if args.command == "grade" and args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """`python -m lema.cli grade ...` (the `lema` console script adds `run`: pipelines.cli)."""
    return run_command(build_parser(), sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
