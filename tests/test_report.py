"""The report's plots at any size: curves binned to a few hundred points, histograms capped."""

from __future__ import annotations

from lema.metrics import wilson_interval
from lema.storage import Storage
from pipelines.evaluate import select_checkpoint
from pipelines.report import MAX_POINTS, binned, step_bars, write_report
from pipelines.stage_io import StageDir


def test_a_million_point_curve_is_binned_to_means():
    points = [(float(i), float(i % 2)) for i in range(1_000_000)]
    out = binned(points)
    assert len(out) <= MAX_POINTS
    assert all(abs(y - 0.5) < 0.01 for _, y in out)  # means of alternating 0/1
    assert out[0][0] < out[-1][0] and binned(points[:10]) == points[:10]


def test_first_mistake_steps_past_twelve_share_a_bar():
    assert step_bars({"1": 5, "2": 3, "13": 1, "40": 2}) == {"step 1": 5, "step 2": 3, "13+": 3}


def test_report_of_a_run_at_scale_from_manifests(tmp_path):
    """Figures of a million-problem run reach the report through manifests alone."""
    StageDir(tmp_path, "problems").write_manifest("h", problems=1_000_000)
    StageDir(tmp_path, "sample").write_manifest(
        "h", paths=2_000_000, inaccurate=990_000, wall_s=1500.0, items_per_s=666.7,
        per_generator={"scripted": {"paths": 2_000_000, "correct": 1_010_000, "inaccurate": 990_000,
                                    "failed": 0, "accuracy": 0.505}})
    StageDir(tmp_path, "correct").write_manifest(
        "h", attempted=990_000, verified=990_000, status={"verified": 990_000}, verification_rate=1.0,
        incorrect_step_histogram={str(k): 1000 for k in range(1, 30)})
    StageDir(tmp_path, "train").write_manifest(
        "h", history=[{"step": i, "train_loss": 1.0 / (1 + i)} for i in range(1, 5000)])
    report = write_report(Storage(tmp_path), ["problems", "sample", "correct", "train"])
    text = (tmp_path / "report.md").read_text()
    assert report.endswith("report.md") and "| sample | paths 2000000" in text and "| 666.7 |" in text
    for png in ("counts.png", "generators.png", "corrections.png", "training_loss.png"):
        assert (tmp_path / png).stat().st_size > 1000


def _row(dataset: str, variant: str, pass_at_1: float, problems: int = 100) -> dict:
    k = round(pass_at_1 * problems)
    step = 30 if variant == "tuned" else int(variant[len("step_"):]) if variant.startswith("step_") else None
    return {"dataset": dataset, "variant": variant, "step": step, "problems": problems, "pass_at_1": pass_at_1,
            "pass_at_1_lema_compat": pass_at_1, "ci95": list(wilson_interval(k, problems)), "pass_at_k": {}}


def test_checkpoint_chosen_on_dev_beside_the_papers_protocol(tmp_path):
    """The dev split picks step 20 (ties go to the later step); the test set's best is step 10:
    the two protocols are reported side by side, each labelled, and base -> start -> tuned reads
    with intervals (the dev rows stay out of that table)."""
    rows = [_row("gsm8k-test", "base", 0.10), _row("gsm8k-test", "start", 0.20),
            _row("gsm8k-test", "step_000010", 0.40), _row("gsm8k-test", "step_000020", 0.30),
            _row("gsm8k-test", "tuned", 0.25),
            _row("dev", "step_000010", 0.50, 20), _row("dev", "step_000020", 0.60, 20), _row("dev", "tuned", 0.60, 20)]
    (sel,) = select_checkpoint(rows)
    assert sel["dev_selected"]["step"] == 30 and sel["dev_selected"]["test_pass_at_1"] == 0.25
    assert sel["paper_best_on_test"]["step"] == 10 and sel["paper_best_on_test"]["test_pass_at_1"] == 0.40
    assert sel["paper_top3_mean_on_test"]["test_pass_at_1"] == round((0.40 + 0.30 + 0.25) / 3, 4)
    assert sel["steps"] == [10, 20, 30] and sel["dev_problems"] == 20

    StageDir(tmp_path, "train").write_manifest("h", steps=30, method="full")
    StageDir(tmp_path, "evaluate").write_manifest("h", results=rows, selection=[sel])
    write_report(Storage(tmp_path), ["train", "evaluate"])
    text = (tmp_path / "report.md").read_text()
    assert "| gsm8k-test | start | 100 | 0.200 [0.133, 0.289] |" in text and "| dev |" not in text
    assert "(full fine-tuning)" in text
    assert "| chosen on dev | 30 | 0.250 [" in text and "| best on test | 10 | 0.400 |" in text
    assert (tmp_path / "checkpoints-gsm8k-test.png").stat().st_size > 1000
