"""benchmarks/lema_effect.py's summary and report from made-up arm results: every arm's example
count, the size controls' paired differences, and the size notes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lema.storage import Storage

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "lema_effect.py"
_SPEC = importlib.util.spec_from_file_location("lema_effect", BENCHMARK)
lema_effect = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(lema_effect)


def _run(solved: set[int], train: int, steps: int, fixes: int = 0, base: bool = False) -> dict:
    verdicts = {"tuned": {f"p{i}": i in solved for i in range(10)}}
    verdicts["selected"] = verdicts["tuned"]  # no checkpoint selection: the last checkpoint
    if base:
        verdicts["base"] = {f"p{i}": False for i in range(10)}
    manifests = {"data": {"train": train, "cot": train - fixes, "correction": fixes}, "train": {"steps": steps},
                 "correct": {"attempted": 12}}
    return {"verdicts": verdicts, "manifests": manifests, "wall_s": {"train": 1.0}, "total_s": 2.0,
            "selected_step": None}


def test_summary_counts_every_arm_and_the_size_controls(tmp_path):
    runs = {"lema": _run({0, 1, 2}, 30, 8, 10, base=True), "cot": _run({0}, 20, 5),
            "cot_corrected": _run({0, 1}, 30, 8, 10), "lema_trimmed": _run({0, 1}, 20, 5, 10),
            "lema-equal-steps": _run({0, 1}, 30, 5, 10), "cot_corrected-equal-steps": _run(set(), 30, 5, 10)}
    result = lema_effect.summarize(runs)
    assert result["examples"] == {"cot": 20, "lema": 30, "cot_corrected": 30, "lema_trimmed": 20}
    assert result["lema_minus_cot_corrected"] == 0.1 and result["lema_trimmed_minus_cot"] == 0.1
    assert result["lema_minus_cot"] == 0.2 and 0 < result["lema_minus_cot_corrected_p"] <= 1
    steps = result["equal_steps"]
    assert steps["runs"]["lema_trimmed"] == "lema_trimmed"  # its equal-epochs run takes cot's steps
    assert steps["steps"] == {"cot": 5, "lema": 5, "cot_corrected": 5, "lema_trimmed": 5}
    assert steps["lema_minus_cot_corrected"]["diff"] == 0.2

    text = Storage(lema_effect.write_report(result, Storage(tmp_path))).read_text()
    assert "| cot_corrected | 30 | 8 |" in text and "| lema_trimmed | 20 | 5 |" in text
    assert "cot_corrected: 30 training examples (20 CoT + 10 corrections as CoT), lema: 30 (the same size)." in text
    assert "lema - cot_corrected: +0.100" in text and "lema_trimmed - cot: +0.100" in text
    assert "serves both" in text and "outnumber" not in text

    runs["lema_trimmed"] = _run({0, 1}, 21, 6, 10)  # a held-out split left one more
    runs["lema_trimmed-equal-steps"] = _run({0}, 21, 5)
    result = lema_effect.summarize(runs)
    text = Storage(lema_effect.write_report(result, Storage(tmp_path))).read_text()
    assert "lema_trimmed: 21 training examples (11 CoT + 10 corrections), cot: 20: more by 1" in text
    assert result["equal_steps"]["runs"]["lema_trimmed"] == "lema_trimmed-equal-steps"

    runs["lema"] = _run({0, 1, 2}, 30, 8, 25, base=True)  # more corrections than cot has examples
    runs["lema_trimmed"] = _run({0, 1}, 20, 5, 20)
    text = Storage(lema_effect.write_report(lema_effect.summarize(runs), Storage(tmp_path))).read_text()
    assert "lema_trimmed keeps no CoT example and 20 of lema's 25 corrections" in text
