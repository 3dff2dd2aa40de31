"""Training formats, the mixed/deduplicated/decontaminated/split set, files `datasets` loads."""

from __future__ import annotations

import dataclasses

import pytest

from lema.config import DataConfig
from lema.correction import ParsedCorrection, parse_correction
from lema.records import Correction, Path, Problem
from lema.reference_corrector import reference_correction
from lema.synthetic import generate_problems
from lema.training_data import (
    build_examples,
    correction_example,
    cot_example,
    read_examples,
    write_examples,
)


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


def test_mixing_ratio_and_sources():
    problems, paths, corrections = _world(20)
    verified = sum(c.verified for c in corrections)  # 15
    cfg = DataConfig(eval_fraction=0.0, correction_ratio=None)
    train, held_out, stats = build_examples(problems, paths, corrections, [], cfg)
    assert held_out == [] and stats["cot"] == 20 and stats["correction"] == verified
    assert len(train) == stats["train"] == 20 + verified

    cfg = DataConfig(eval_fraction=0.0, correction_ratio=0.5)
    train, _, stats = build_examples(problems, paths, corrections, [], cfg)
    assert stats["correction"] == 10 and stats["correction_dropped_by_ratio"] == verified - 10
    assert sum(e.kind == "correction" for e in train) == 10

    cfg = DataConfig(eval_fraction=0.0, include_corrections=False)
    train, _, stats = build_examples(problems, paths, corrections, [], cfg)
    assert stats["correction"] == 0 and all(e.kind == "cot" for e in train)

    sampled = DataConfig(eval_fraction=0.0, cot_source="sampled", include_corrections=False)
    train, _, stats = build_examples(problems, paths, corrections, [], sampled)
    assert stats["cot"] == 10
    assert all(e.source_ids[1].endswith("/right") for e in train)
    # "both": the reworded sampled paths number like the gold ones, so they are duplicates
    both = DataConfig(eval_fraction=0.0, cot_source="both", include_corrections=False)
    train, _, stats = build_examples(problems, paths, corrections, [], both)
    assert stats["cot"] == 20 and stats["duplicates_dropped"] == 10


def test_dedup_decontaminate_and_split():
    problems, paths, corrections = _world(20)
    copy = dataclasses.replace(problems[0], id="other-id")  # same question and solution
    eval_questions = [problems[1].question, problems[2].question.upper(),
                      "an unrelated eval question about trains"]
    cfg = DataConfig(eval_fraction=0.25, seed=1, decontaminate_ngram=8)
    train, held_out, stats = build_examples(problems + [copy], paths, corrections + corrections[:1],
                                            eval_questions, cfg)
    assert stats["duplicates_dropped"] == 2
    contaminated = {problems[1].id, problems[2].id}
    dropped = 2 + sum(c.verified for c in corrections if c.problem_id in contaminated)
    assert stats["contaminated_dropped"] == dropped
    total = 20 + sum(c.verified for c in corrections) - dropped
    assert stats["train"] + stats["held_out"] == len(train) + len(held_out) == total
    assert abs(len(held_out) - 0.25 * total) <= 3  # whole problems at a time
    assert all(e.split == "eval" for e in held_out) and all(e.split == "train" for e in train)
    assert not {e.source_ids[0] for e in train} & {e.source_ids[0] for e in held_out}
    assert not any(e.source_ids[0] in contaminated for e in train + held_out)
    assert len({e.id for e in train + held_out}) == total
    again = build_examples(problems + [copy], paths, corrections + corrections[:1],
                           eval_questions, cfg)
    assert [e.id for e in again[0]] == [e.id for e in train]  # seeded: same split and order


def test_short_eval_question_still_decontaminates():
    problems, paths, corrections = _world(4)
    short = " ".join(problems[0].question.split()[:5])  # shorter than the n-gram
    _, _, stats = build_examples(problems, [], [], [short], DataConfig(eval_fraction=0.0))
    assert stats["contaminated_dropped"] == 1


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_written_file_loads_with_datasets(tmp_path, suffix):
    import datasets

    problems, paths, corrections = _world(6)
    train, _, _ = build_examples(problems, paths, corrections, [], DataConfig(eval_fraction=0.0))
    target = write_examples(train, tmp_path / "out" / f"train.{suffix}")
    loaded = datasets.load_dataset("json" if suffix == "jsonl" else "parquet", data_files=target,
                                   split="train", cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == len(train)
    assert {"id", "kind", "messages", "source_ids", "split"} <= set(loaded.column_names)
    first = loaded[0]["messages"]
    assert [set(m) for m in first] == [{"role", "content"}] * len(first)
    assert first[-1]["role"] == "assistant"
    assert [e.messages for e in read_examples(target)] == [e.messages for e in train]


def test_write_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="'.csv' is not one of"):
        write_examples([], tmp_path / "x.csv")


def test_cot_cap_keeps_gold_first_then_sampled():
    problems, paths, corrections = _world(20)
    for p in paths:  # distinct sampled texts, so none is a duplicate of its gold solution
        p.text = p.text.replace("step", "Stage")
    both = DataConfig(eval_fraction=0.0, cot_source="both", include_corrections=False, max_cot=25)
    train, _, stats = build_examples(problems, paths, corrections, [], both)
    assert stats["cot"] == 25 and stats["cot_dropped_by_cap"] == 5
    gold = [e for e in train if len(e.source_ids) == 1]
    assert len(gold) == 20  # all gold, then 5 of the 10 sampled
    capped = DataConfig(eval_fraction=0.0, cot_source="gold", include_corrections=False, max_cot=8)
    assert build_examples(problems, paths, corrections, [], capped)[2]["cot"] == 8


def test_examples_take_the_evaluated_cot_prompt_and_the_paper_layout():
    problems, paths, corrections = _world(4)
    cfg = DataConfig(eval_fraction=0.0, correction_prompt="paper")
    train, _, _ = build_examples(problems, paths, corrections, [], cfg, cot_prompt="paper_cot")
    cot = next(e for e in train if e.kind == "cot")
    assert cot.messages[0]["content"].startswith("Please solve the following math problem.\nQuestion: ")
    fix = next(e for e in train if e.kind == "correction")
    assert [m["role"] for m in fix.messages] == ["system", "user", "assistant"]  # no few-shot turns
    assert "Original Solution:\n{\nStep 1:" in fix.messages[1]["content"]
    target = fix.messages[2]["content"]
    assert target.startswith("Incorrect Step: Step ") and "Correct Solution:\n{\n" in target
    assert target.endswith("\n}")
