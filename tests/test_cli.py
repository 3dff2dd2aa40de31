"""`lema grade` on small files: the real console script once, `main()` in-process for the rest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lema.cli import main

ROWS = [
    {"prediction": "So 9 * 2 = 18.\n#### 18", "gold": "She makes $18.\n#### 18", "dataset": "gsm8k"},
    {"prediction": "The answer is 17.", "gold": "18", "dataset": "gsm8k"},
    {"prediction": "Thus $\\boxed{\\frac{1}{2}}$.", "gold": "\\dfrac12", "dataset": "math"},
    {"prediction": "I am not sure.", "gold": "\\sqrt{2}", "dataset": "math"},
]
BAD_LINES = [
    "{not json",
    json.dumps({"prediction": "The answer is 3", "dataset": "gsm8k"}),  # no gold
    json.dumps({"prediction": 3, "gold": "3", "dataset": "gsm8k"}),  # not a string
    json.dumps(["a", "list"]),
    json.dumps({"prediction": "The answer is 3", "gold": "3", "dataset": "no such set!"}),
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "in.jsonl", [json.dumps(r) for r in ROWS])


def test_console_script_grades_a_file(good_file: Path, tmp_path: Path):
    script = Path(sys.executable).parent / "lema"
    out = tmp_path / "out.jsonl"
    done = subprocess.run([str(script), "grade", str(good_file), "-o", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "accuracy 0.5000 (2/4 correct, 0 bad rows" in done.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, True, False]
    assert [r["reason"] for r in rows] == [None, "mismatch", None, "no answer found"]
    assert rows[0]["predicted_answer"] == "18" and rows[2]["predicted_answer"] == "\\frac{1}{2}"
    assert all(r[k] == src[k] for r, src in zip(rows, ROWS) for k in src)


def test_stdout_output_and_summary_on_stderr(good_file: Path, capsys):
    assert main(["grade", str(good_file)]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(rows) == 4 and "accuracy 0.5000" in captured.err


def test_bad_rows_get_an_error_and_the_rest_is_graded(tmp_path: Path, capsys):
    lines = [json.dumps(ROWS[0])] + BAD_LINES + [json.dumps(ROWS[2])]
    src = _write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    assert main(["grade", str(src), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(lines)
    assert rows[0]["correct"] and rows[-1]["correct"]
    assert rows[1]["line"] == 2 and rows[1]["raw"] == "{not json" and "invalid JSON" in rows[1]["error"]
    assert "missing field(s): gold" in rows[2]["error"]
    assert "prediction must be a string, got int" in rows[3]["error"]
    assert rows[4]["line"] == 5 and "not an object" in rows[4]["error"]
    assert "no such set!" in rows[5]["error"] and "correct" not in rows[5]
    assert "accuracy 1.0000 (2/2 correct, 5 bad rows" in capsys.readouterr().out


def test_lema_compat_mode(good_file: Path, tmp_path: Path):
    out = tmp_path / "out.jsonl"
    assert main(["grade", str(good_file), "-o", str(out), "--mode", "lema_compat"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # the paper's rules: `####` is no marker; a MATH answer without one is its last box
    assert [r["correct"] for r in rows] == [False, False, True, False]
    assert [r["reason"] for r in rows] == ["no answer found", "mismatch", None, "no answer found"]


def test_bad_options_exit_with_usage(good_file: Path):
    for argv in (["grade", str(good_file), "--mode", "strict"],
                 ["grade", str(good_file), "--timeout", "0"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


def test_run_forwards_the_rest_of_argv(capsys):
    """`lema run` (the console script's pipelines.cli) hands everything after `run` to
    pipelines.lema.main (its exit code too); `lema grade` stays lema.cli's."""
    from pipelines.cli import main as lema_command

    assert lema_command(["run", "no/such/config.yaml", "dry_run=true"]) == 2
    assert "no/such/config.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lema_command(["grade", "--help"])
    assert "--mode" in capsys.readouterr().out
