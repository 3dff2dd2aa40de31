"""Training formats; the mixed/deduplicated/decontaminated/split set built by the data stage on
Ray Data from real stage files; files `datasets` loads."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest

from lema.config import DataConfig, load_config
from lema.correction import ParsedCorrection, parse_correction
from lema.prompts import build_cot_messages, format_solution
from lema.records import Correction, Example, Path, Problem
from lema.reference_corrector import reference_correction
from lema.storage import Storage
from lema.synthetic import generate_problems
from lema.training_data import (
    CANDIDATE_SCHEMA,
    Contamination,
    correction_example,
    cot_example,
    dedup_bucket,
    locate,
    read_examples,
    write_examples,
)
from pipelines.data import build_data, run_data
from pipelines.stage_io import RunContext, StageDir


def test_cot_example_format():
    gold = "She sold 48/2 = <<48/2=24>>24.\nSo 72 total.\n#### 72"
    ex = cot_example("p1", "How many clips?", gold)
    assert ex.kind == "cot" and ex.source_ids == ["p1"]
    assert [m["role"] for m in ex.messages] == ["user", "assistant"]
    assert "How many clips?" in ex.messages[0]["content"]
    assert ex.messages[1]["content"] == ("Step 1: She sold 48/2 = 24.\nStep 2: So 72 total.\n"
                                         "The answer is 72.")
    with_answer = cot_example("p1", "q", "Step 1: 2 + 2 = 4.", answer="4")
    assert with_answer.messages[-1]["content"] == "Step 1: 2 + 2 = 4.\nThe answer is 4."


def _correction(problem: Problem, path_text: str, **kw) -> Correction:
    reply = reference_correction(problem.steps or [], problem.answer, path_text)
    parsed = parse_correction(reply, path_text, "synthetic")
    assert isinstance(parsed, ParsedCorrection)
    fields = dict(
        path_id=f"{problem.id}/wrong", problem_id=problem.id, corrector="reference",
        status="verified", incorrect_step=parsed.incorrect_step,
        explanation=parsed.explanation, corrected_solution=parsed.corrected_solution,
        predicted_answer=parsed.predicted_answer, verified=True, raw=reply,
        question=problem.question, solution=path_text, answer=problem.answer,
        dataset="synthetic")
    fields.update(kw)
    return Correction(**fields)


def _wrong_path(problem: Problem) -> str:
    return (problem.solution or "").rsplit("=", 1)[0] + "= 7777 things.\nThe answer is 7777."


def test_correction_example_format():
    problem = generate_problems(1, [3], seed=5)[0]
    ex = correction_example(_correction(problem, _wrong_path(problem)))
    assert ex.kind == "correction" and ex.source_ids == [problem.id, f"{problem.id}/wrong"]
    user, target = ex.messages[0]["content"], ex.messages[-1]["content"]
    assert [m["role"] for m in ex.messages] == ["user", "assistant"]
    assert problem.question in user and "7777" in user and "Step 3:" in user
    assert target.startswith("Incorrect Step: Step 3.\nExplanation: Step 3 should compute")
    assert "\nCorrect Solution:\nStep 1:" in target and target.endswith(
        f"The answer is {problem.answer}.")
    # the target is a reply the parser reads back
    assert parse_correction(target, _wrong_path(problem), "synthetic").incorrect_step == 3
    with pytest.raises(ValueError, match="missing question"):
        correction_example(dataclasses.replace(_correction(problem, _wrong_path(problem)),
                                               question=""))


def _world(n: int = 20):
    """Synthetic problems with made-up questions that share no n-gram with each other (the
    synthetic questions come from shared templates, so their n-grams overlap)."""
    problems = [dataclasses.replace(p, question=" ".join(f"q{i}w{j}" for j in range(15)) + "?")
                for i, p in enumerate(generate_problems(n, [2, 3], seed=11))]
    paths, corrections = [], []
    for i, p in enumerate(problems):
        wrong = _wrong_path(p)
        paths.append(Path(p.id, f"{p.id}/wrong", "gen", 0, wrong, "7777", False, 10,
                          question=p.question, answer=p.answer))
        if i % 2 == 0:  # a correct sampled path, reworded
            paths.append(Path(p.id, f"{p.id}/right", "gen", 1, p.solution.replace("Step", "step"),
                              p.answer, True, 10, question=p.question, answer=p.answer))
        corrections.append(_correction(p, wrong, verified=i % 4 != 3,
                                       status="verified" if i % 4 != 3 else "unverified"))
    return problems, paths, corrections


def _write_inputs(root, problems, paths, corrections, parts: int = 1) -> dict[str, StageDir]:
    """The records as stage directories of Parquet parts, as the earlier stages leave them."""
    inputs = {}
    for name, records in (("problems", problems), ("sample", paths), ("correct", corrections)):
        stage = StageDir(root, name)
        rows = [r.to_dict() for r in records]
        for i in range(parts):
            stage.write_part(f"{i:05d}", rows[i::parts])
        inputs[name] = stage
    return inputs


@pytest.fixture(scope="module")
def build(ray_cluster, tmp_path_factory):
    """The data stage's set from records: (train, held_out, stats, files), through stage files and
    Ray Data. The inputs are written once per distinct record set."""
    written: dict[int, dict[str, StageDir]] = {}

    def run(problems, paths, corrections, eval_questions, cfg, cot_prompt="cot"):
        key = hash(json.dumps([[r.to_dict() for r in rs] for rs in (problems, paths, corrections)],
                              sort_keys=True))
        if key not in written:
            written[key] = _write_inputs(tmp_path_factory.mktemp("inputs"), problems, paths, corrections)
        out = Storage(tmp_path_factory.mktemp("data"))
        files = out.join("train.jsonl"), out.join("held_out.jsonl")
        stats = build_data(written[key], eval_questions, cfg, *files, cot_prompt=cot_prompt)
        return read_examples(files[0].uri), read_examples(files[1].uri), stats, files

    return run


@pytest.fixture(scope="module")
def world():
    return _world(20)


def test_mixing_ratio_and_sources(build, world):
    problems, paths, corrections = world
    verified = sum(c.verified for c in corrections)  # 15
    cfg = DataConfig(eval_fraction=0.0, correction_ratio=None)
    train, held_out, stats, _ = build(problems, paths, corrections, [], cfg)
    assert held_out == [] and stats["cot"] == 20 and stats["correction"] == verified
    assert len(train) == stats["train"] == 20 + verified
    assert stats["held_out"] == 0 and "cot_dropped_by_cap" not in stats

    cfg = DataConfig(eval_fraction=0.0, correction_ratio=0.5)
    train, _, stats, _ = build(problems, paths, corrections, [], cfg)
    assert stats["correction"] == 10 and stats["correction_dropped_by_ratio"] == verified - 10
    assert sum(e.kind == "correction" for e in train) == 10

    cfg = DataConfig(eval_fraction=0.0, include_corrections=False)
    train, _, stats, _ = build(problems, paths, corrections, [], cfg)
    assert stats["correction"] == 0 and all(e.kind == "cot" for e in train)

    sampled = DataConfig(eval_fraction=0.0, cot_source="sampled", include_corrections=False)
    train, _, stats, _ = build(problems, paths, corrections, [], sampled)
    assert stats["cot"] == 10
    assert all(e.source_ids[1].endswith("/right") for e in train)
    # "both": the reworded sampled paths number like the gold ones, so they are duplicates
    both = DataConfig(eval_fraction=0.0, cot_source="both", include_corrections=False)
    train, _, stats, _ = build(problems, paths, corrections, [], both)
    assert stats["cot"] == 20 and stats["duplicates_dropped"] == 10
    # of a duplicate pair the smaller id is kept; here the ids are equal too (same problem, same
    # target), and gold wins the tie
    assert all(len(e.source_ids) == 1 for e in train)


def test_dedup_decontaminate_and_split(build, world):
    problems, paths, corrections = world
    copy = dataclasses.replace(problems[0], id="other-id")  # same question and solution
    eval_questions = [problems[1].question, problems[2].question.upper(),
                      "an unrelated eval question about trains"]
    cfg = DataConfig(eval_fraction=0.25, seed=1, decontaminate_ngram=8)
    train, held_out, stats, files = build(problems + [copy], paths, corrections + corrections[:1],
                                          eval_questions, cfg)
    assert stats["duplicates_dropped"] == 2
    contaminated = {problems[1].id, problems[2].id}
    dropped = 2 + sum(c.verified for c in corrections if c.problem_id in contaminated)
    assert stats["contaminated_dropped"] == dropped
    total = 20 + sum(c.verified for c in corrections) - dropped
    assert stats["train"] + stats["held_out"] == len(train) + len(held_out) == total
    assert 0 < len(held_out) < total / 2  # about a quarter of the problems, by a seeded hash
    assert all(e.split == "eval" for e in held_out) and all(e.split == "train" for e in train)
    assert not {e.source_ids[0] for e in train} & {e.source_ids[0] for e in held_out}
    assert not any(e.source_ids[0] in contaminated for e in train + held_out)
    assert len({e.id for e in train + held_out}) == total
    assert [e.id for e in train] != sorted(e.id for e in train)  # shuffled
    again = build(problems + [copy], paths, corrections + corrections[:1], eval_questions, cfg)[3]
    for first, second in zip(files, again):  # seeded: the same split, order and bytes
        assert first.read_bytes() == second.read_bytes()


def test_short_eval_question_still_decontaminates(build):
    problems, _, _ = _world(4)
    short = " ".join(problems[0].question.split()[:5])  # shorter than the n-gram
    _, _, stats, _ = build(problems, [], [], [short], DataConfig(eval_fraction=0.0))
    assert stats["contaminated_dropped"] == 1 and stats["cot"] == 3
    contamination = Contamination([short, "x " * 20], 13)
    assert contamination(problems[0].question.upper()) and not contamination(problems[1].question)


@pytest.fixture(scope="module")
def small_train(build):
    problems, paths, corrections = _world(6)
    train, _, _, files = build(problems, paths, corrections, [], DataConfig(eval_fraction=0.0))
    return train, files[0]


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_written_file_loads_with_datasets(tmp_path, small_train, suffix):
    import datasets

    train, stage_file = small_train
    # the stage's own train.jsonl, and the same examples through write_examples
    target = stage_file.uri if suffix == "jsonl" else write_examples(train, tmp_path / "out" / "train.parquet")
    loaded = datasets.load_dataset("json" if suffix == "jsonl" else "parquet", data_files=target,
                                   split="train", cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == len(train) > 0
    assert {"id", "kind", "messages", "source_ids", "split"} <= set(loaded.column_names)
    first = loaded[0]["messages"]
    assert [set(m) for m in first] == [{"role", "content"}] * len(first)
    assert first[-1]["role"] == "assistant"
    assert [e.messages for e in read_examples(target)] == [e.messages for e in train]


def test_write_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="'.csv' is not one of"):
        write_examples([], tmp_path / "x.csv")


def test_cot_cap_keeps_gold_first_then_sampled(build, world):
    problems, paths, corrections = world
    paths = [dataclasses.replace(p, text=p.text.replace("step", "Stage")) for p in paths]  # distinct
    # from their gold solutions, so none is a duplicate
    both = DataConfig(eval_fraction=0.0, cot_source="both", include_corrections=False, max_cot=25)
    train, _, stats, _ = build(problems, paths, corrections, [], both)
    assert stats["cot"] == 25 and stats["cot_dropped_by_cap"] == 5
    gold = [e for e in train if len(e.source_ids) == 1]
    assert len(gold) == 20  # all gold, then 5 of the 10 sampled
    capped = DataConfig(eval_fraction=0.0, cot_source="gold", max_cot=8, correction_ratio=0.5)
    _, _, stats, _ = build(problems, paths, corrections, [], capped)
    assert stats["cot"] == 8 and stats["cot_dropped_by_cap"] == 12 and stats["correction"] == 4


def test_size_controls_corrections_as_cot_and_max_examples(build, world):
    """The paper's data-size controls: CoT + corrections as CoT examples has LeMa's size exactly
    (CoT-45K), and LeMa trimmed by max_examples has the CoT set's size (LeMa-32K)."""
    problems, paths, corrections = world
    for split in (dict(eval_fraction=0.25, seed=1, correction_ratio=0.5), dict(eval_fraction=0.0)):
        lema_train, lema_held, lema, _ = build(problems, paths, corrections, [], DataConfig(**split))
        train, held, stats, _ = build(problems, paths, corrections, [], DataConfig(**split, corrections_as="cot"))
        assert (stats["train"], stats["held_out"], stats["cot"], stats["correction"]) == (
            lema["train"], lema["held_out"], lema["cot"], lema["correction"])
        assert all(e.kind == "cot" for e in train + held)
        # the same corrections kept, on the same side of the split
        for mine, theirs in ((train, lema_train), (held, lema_held)):
            assert sorted(e.source_ids for e in mine if len(e.source_ids) == 2) == sorted(
                e.source_ids for e in theirs if e.kind == "correction")
    by_path = {c.path_id: c for c in corrections}
    fixed = [e for e in train if len(e.source_ids) == 2]  # all held in (the last split: none held out)
    assert len(fixed) == sum(c.verified for c in corrections) == 15
    for e in fixed:
        c = by_path[e.source_ids[1]]
        assert e.messages == build_cot_messages(c.question, "cot") + [
            {"role": "assistant", "content": format_solution(c.corrected_solution)}]
    # a corrected solution that repeats its gold solution still counts: the size is LeMa's
    gold = {e.source_ids[0]: e.messages for e in train if len(e.source_ids) == 1}
    assert any(e.messages == gold[e.source_ids[0]] for e in fixed)

    cot = build(problems, paths, corrections, [], DataConfig(eval_fraction=0.0, include_corrections=False))[2]
    trimmed_cfg = DataConfig(eval_fraction=0.0, max_examples=cot["train"])
    train, _, stats, _ = build(problems, paths, corrections, [], trimmed_cfg)
    assert stats["train"] == len(train) == cot["train"] == 20
    assert stats["correction"] == 15 and stats["cot"] == 5 and stats["dropped_by_max_examples"] == 15
    assert sum(e.kind == "correction" for e in train) == 15
    assert [e.id for e in build(problems, paths, corrections, [], trimmed_cfg)[0]] == [e.id for e in train]  # seeded
    other = build(problems, paths, corrections, [], DataConfig(eval_fraction=0.0, max_examples=20, seed=3))[0]
    assert {e.id for e in other if e.kind == "cot"} != {e.id for e in train if e.kind == "cot"}  # at random
    _, _, stats, _ = build(problems, paths, corrections, [], DataConfig(eval_fraction=0.0, max_examples=10))
    assert (stats["cot"], stats["correction"], stats["dropped_by_max_examples"]) == (0, 10, 25)
    with pytest.raises(ValueError, match="corrections_as"):
        DataConfig(corrections_as="both")


def test_examples_take_the_evaluated_cot_prompt_and_the_paper_layout(build):
    problems, paths, corrections = _world(4)
    cfg = DataConfig(eval_fraction=0.0, correction_prompt="paper")
    train, _, _, _ = build(problems, paths, corrections, [], cfg, cot_prompt="paper_cot")
    cot = next(e for e in train if e.kind == "cot")
    assert cot.messages[0]["content"].startswith("Please solve the following math problem.\nQuestion: ")
    fix = next(e for e in train if e.kind == "correction")
    assert [m["role"] for m in fix.messages] == ["system", "user", "assistant"]  # no few-shot turns
    assert "Original Solution:\n{\nStep 1:" in fix.messages[1]["content"]
    target = fix.messages[2]["content"]
    assert target.startswith("Incorrect Step: Step ") and "Correct Solution:\n{\n" in target
    assert target.endswith("\n}")


def test_incomplete_and_unsolved_records_are_counted(build):
    problems, paths, corrections = _world(4)
    problems[0] = dataclasses.replace(problems[0], solution=None)
    corrections[0] = dataclasses.replace(corrections[0], solution="")  # its inaccurate solution lost
    _, _, stats, _ = build(problems, paths, corrections, [], DataConfig(eval_fraction=0.0))
    assert stats["cot_no_solution"] == 1 and stats["correction_incomplete"] == 1
    assert stats["cot"] == 3 and stats["correction"] == 2


def test_cap_threshold_helpers():
    hist = np.array([0, 3, 0, 2, 5])
    assert locate(hist, 1) == (1, 1) and locate(hist, 3) == (1, 3) and locate(hist, 4) == (3, 1)
    assert locate(hist, 10) == (4, 5)
    ex = [cot_example(f"p{i}", "q", f"Step 1: {i}.") for i in range(6)]
    rows = [{"bucket": 0, "key": bytes([i % 3]) * 16, "id": e.id, "cat": 0, "lineage": e.id, "contaminated": False,
             "rank": i, "messages": e.messages, "source_ids": e.source_ids} for i, e in enumerate(ex)]
    out = dedup_bucket(pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA))
    assert out.num_rows == 3 and out.column("dups").to_pylist() == [1, 1, 1]
    by_key: dict[bytes, list[str]] = {}
    for r in rows:
        by_key.setdefault(r["key"], []).append(r["id"])
    assert sorted(out.column("id").to_pylist()) == sorted(min(ids) for ids in by_key.values())


def test_stage_streams_thousands_of_records(ray_cluster, tmp_path, monkeypatch):
    """The stage on 1,500 problems, 4,500 paths and 1,500 corrections in 12 parts each: the counts
    add up, and the driver reads no part itself (Ray tasks do)."""
    n = 1500
    problems = [Problem(f"p{i}", "synthetic", "train", f"Question {i}: what is {i} plus {i}?", str(2 * i),
                        solution=f"Step 1: {i} + {i} = {2 * i}.\n#### {2 * i}") for i in range(n)]
    paths, corrections = [], []
    for p in problems:
        i = int(p.id[1:])
        for k in range(3):  # one right path (a copy of the gold text for every 10th problem), two wrong
            right = k == 0
            text = p.solution if right and i % 10 == 0 else (
                f"Step 1: {i} + {i} = {2 * i} indeed.\nThe answer is {2 * i}." if right else f"Step 1: wrong {k}.")
            paths.append(Path(p.id, f"{p.id}/{k}", "gen", k, text, p.answer if right else "0", right, 5,
                              question=p.question, answer=p.answer))
        corrections.append(Correction(
            f"{p.id}/1", p.id, "reference", "verified" if i % 5 else "unverified", incorrect_step=1,
            explanation="It is wrong.", corrected_solution=f"Step 1: {i} + {i} = {2 * i}.\nThe answer is {2 * i}.",
            predicted_answer=p.answer, verified=bool(i % 5), question=p.question, solution="Step 1: wrong 1.",
            answer=p.answer))
    cfg = load_config(None, [f"output_dir={tmp_path}", "data.cot_source=both", "data.eval_fraction=0.1",
                             "data.max_cot=2000", "data.correction_ratio=0.25", "evaluate.datasets=[]"])
    ctx = RunContext(cfg, Storage(tmp_path / "run"))
    _write_inputs(ctx.run_dir, problems, paths, corrections, parts=12)

    def no_driver_reads(*args, **kwargs):
        raise AssertionError("the driver read a stage's rows")

    monkeypatch.setattr(StageDir, "read_part", no_driver_reads)
    monkeypatch.setattr(StageDir, "read_rows", no_driver_reads)
    stage = ctx.dir("data")
    m = run_data(ctx, stage, "h")
    assert m["duplicates_dropped"] == n // 10 and m["contaminated_dropped"] == 0 and m["cot_no_solution"] == 0
    assert m["cot"] == 2000 and m["cot_dropped_by_cap"] == 2 * n - n // 10 - 2000  # exact caps
    assert m["correction"] == 500 and m["correction_dropped_by_ratio"] == n * 4 // 5 - 500
    assert m["train"] + m["held_out"] == m["cot"] + m["correction"]
    assert abs(m["held_out"] / (m["train"] + m["held_out"]) - 0.1) < 0.03  # by problem: ~0.1 of them
    assert m == stage.manifest() and m["train_file"] == "train.jsonl"
    train = [Example.from_dict(json.loads(line)) for line in stage.file("train.jsonl").read_text().splitlines()]
    held = [Example.from_dict(json.loads(line)) for line in stage.file("held_out.jsonl").read_text().splitlines()]
    assert (len(train), len(held)) == (m["train"], m["held_out"])
    assert sum(e.kind == "correction" for e in train + held) == 500
    assert sum(len(e.source_ids) == 1 for e in train + held if e.kind == "cot") > 1300  # gold first
    assert not {e.source_ids[0] for e in train} & {e.source_ids[0] for e in held}


def test_stage_files_appear_whole_or_not_at_all(tmp_path):
    target = Storage(tmp_path / "d" / "train.jsonl")
    with pytest.raises(RuntimeError), target.open_output() as out:
        out.write(b"half\n")
        raise RuntimeError("the stage failed")
    assert not target.exists() and list((tmp_path / "d").iterdir()) == []
    with target.open_output() as out:
        out.write(b"a\n")
        out.write(b"b\n")
        assert not target.exists()
    assert target.read_text() == "a\nb\n"
