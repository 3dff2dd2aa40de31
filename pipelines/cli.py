"""The `lema` console script: `lema grade IN.jsonl ...` (lema.cli) and `lema run CONFIG key=val ...`
(the whole loop, `python -m pipelines.lema`)."""

from __future__ import annotations

import argparse
import sys

from lema.cli import add_grade_command, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lema", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_grade_command(sub)
    p_run = sub.add_parser("run", help="run the whole pipeline: lema run CONFIG key=val ...")
    p_run.add_argument("rest", nargs=argparse.REMAINDER, help="CONFIG and overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lema` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"] and not {"-h", "--help"} & set(argv[1:2]):
        from pipelines.lema import main as run_loop  # heavy (ray): only `lema run` pays for it

        return run_loop(argv[1:])  # everything after `run` is the loop's, options too
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
