"""Problem sources: synthetic, local JSONL/Parquet, datasets in the hub's layout; rejects."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lema.config import ProblemSourceConfig
from lema.sources import load_problems, stream_problems
from lema.synthetic import generate_problems


def test_synthetic_is_seeded_and_exact():
    a = generate_problems(20, [2, 3, 5], seed=1)
    b = generate_problems(20, [2, 3, 5], seed=1)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert [p.question for p in generate_problems(5, [2], seed=2)] != [p.question for p in a[:5]]
    test = generate_problems(20, [2, 3, 5], seed=1, split="test")
    assert not {p.question for p in test} & {p.question for p in a}
    for p in a:
        assert len(p.steps) == int(p.level)
        assert p.solution.endswith(f"The answer is {p.answer}.")
        # every gold step ends with its value, the last one with the answer
        assert f"= {p.answer} " in p.steps[-1]
        assert int(p.answer) >= 0
    assert len({p.id for p in a}) == 20


def test_synthetic_bad_levels():
    with pytest.raises(ValueError, match="levels"):
        generate_problems(3, [])


GSM_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "A shop sells 1,200 pens a day. How many in 2 days?", "answer": "#### 2,400"},
    {"question": "", "answer": "#### 5"},
    {"question": "No gold here?", "answer": "I don't know"},
]


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_local_jsonl_with_rejects(tmp_path):
    f = tmp_path / "p.jsonl"
    _write_jsonl(f, GSM_ROWS)
    with f.open("a") as fh:
        fh.write("{not json\n")
    res = load_problems(ProblemSourceConfig(kind="local", name="gsm8k", path=str(f)))
    assert [p.answer for p in res.problems] == ["7", "2400"]
    assert res.problems[0].solution.startswith("3+4")
    reasons = res.counts()["reject_reasons"]
    assert reasons["no question"] == 1
    assert reasons["no parsable gold answer"] == 1
    assert sum(reasons.values()) == 3 and any("invalid JSON" in r for r in reasons)


def test_local_parquet_field_mapping(tmp_path):
    f = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"problem": "Compute 1/2 + 1/4.", "final": "\\frac{3}{4}", "sol": "It is $\\boxed{\\frac34}$."},
    ]), f)
    cfg = ProblemSourceConfig(kind="local", name="mine", path=str(f),
                              fields={"question": "problem", "answer": "final", "solution": "sol"})
    res = load_problems(cfg)
    assert len(res.problems) == 1 and res.problems[0].dataset == "mine"
    assert "frac" in res.problems[0].answer and res.problems[0].solution.startswith("It is")


def test_hf_gsm8k_in_hub_layout(tmp_path):
    (tmp_path / "main").mkdir()
    pq.write_table(pa.Table.from_pylist(GSM_ROWS[:2]), tmp_path / "main" / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(GSM_ROWS), tmp_path / "main" / "train-00000-of-00001.parquet")
    res = load_problems(ProblemSourceConfig(kind="hf", name="gsm8k", split="test", path=str(tmp_path)))
    assert [p.answer for p in res.problems] == ["7", "2400"]
    assert res.problems[0].id == "gsm8k-test-0"
    train = load_problems(ProblemSourceConfig(kind="hf", name="gsm8k", split="train", path=str(tmp_path)))
    assert len(train.problems) == 2 and train.counts()["rejected"] == 2
    # max_samples stops reading at the N-th problem: rows after it are never read (nor counted)
    first = load_problems(ProblemSourceConfig(kind="hf", name="gsm8k", split="train", path=str(tmp_path),
                                              max_samples=1))
    assert len(first.problems) == 1 and first.counts()["rejected"] == 0


def test_a_source_streams_in_batches(tmp_path):
    path = tmp_path / "p.jsonl"
    _write_jsonl(path, GSM_ROWS * 3)
    cfg = ProblemSourceConfig(kind="local", name="gsm8k", path=str(path), answer_format="gsm8k")
    batches = list(stream_problems(cfg, batch_size=4))
    assert [len(b.problems) for b in batches] == [4, 2]
    assert sum(len(b.rejects) for b in batches) == 6
    synthetic = list(stream_problems(ProblemSourceConfig(count=25), batch_size=10))
    assert [len(b.problems) for b in synthetic] == [10, 10, 5]


def test_hf_math500_jsonl(tmp_path):
    f = tmp_path / "test.jsonl"
    _write_jsonl(f, [{"problem": "What is $\\sqrt{16}$?", "solution": "$\\boxed{4}$", "answer": "4",
                      "level": 1, "unique_id": "test/algebra/1.json"}])
    res = load_problems(ProblemSourceConfig(kind="hf", name="math500", split="test", path=str(f)))
    (p,) = res.problems
    assert p.answer == "4" and p.level == "1" and p.solution == "$\\boxed{4}$"


def test_hf_unknown_name_needs_fields():
    with pytest.raises(ValueError, match="gsm8k"):
        load_problems(ProblemSourceConfig(kind="hf", name="someone/else"))


def test_local_needs_path():
    with pytest.raises(ValueError, match="problems.path"):
        load_problems(ProblemSourceConfig(kind="local"))
