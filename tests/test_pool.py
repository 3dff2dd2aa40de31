"""The chunk runner's bookkeeping: item-based resume under any chunking, and the failure gate."""

from __future__ import annotations

import pytest

from pipelines.pool import MIN_REQUESTS_FOR_RATE, FailureGate, StageFailed, chunk_items, done_items
from pipelines.stage_io import StageDir


def _items(n: int) -> list[dict]:
    return [{"id": f"p{i}", "question": f"q{i}"} for i in range(n)]


def test_chunk_ids_name_position_and_items():
    a = chunk_items(_items(5), "id", 2, prefix="g0-")
    assert [c["items"] for c in a] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert [c["chunk_id"][:8] for c in a] == ["g0-00000", "g0-00002", "g0-00004"]
    assert chunk_items(_items(5), "id", 2, prefix="g0-") == a  # stable
    assert chunk_items(_items(5), "id", 3)[0]["chunk_id"] != a[0]["chunk_id"].removeprefix("g0-")


def test_done_items_survive_rechunking(tmp_path):
    stage = StageDir(tmp_path, "sample")
    for chunk in chunk_items(_items(5), "id", 2, prefix="g0-")[:2]:  # two chunks finished, then a kill
        stage.file(f"chunk-{chunk['chunk_id']}.json").write_json({"items": chunk["items"]})
        stage.write_part(chunk["chunk_id"], [{"problem_id": i} for i in chunk["items"]])
    stage.file("chunk-g0-00004-orphan.json").write_json({"items": ["p4"]})  # side written, part not
    assert done_items(stage, "g0-") == {"p0", "p1", "p2", "p3"}
    assert done_items(stage, "g1-") == set()
    pending = [x for x in _items(6) if x["id"] not in done_items(stage, "g0-")]
    assert [c["items"] for c in chunk_items(pending, "id", 3)] == [["p4", "p5"]]


def test_failures_below_the_rate_are_counted_not_raised():
    gate = FailureGate("sample", 0.2, sides=[])
    for _ in range(5):
        gate.check({"engine": "m", "requests": 10, "failures": 1, "first_error": "boom"})
    assert (gate.requests, gate.failures) == (50, 5)


def test_a_failing_engine_stops_the_stage_naming_it():
    gate = FailureGate("sample", 0.2, sides=[{"requests": 20, "failures": 0}])  # resumed parts count
    gate.check({"engine": "m", "requests": 4, "failures": 3, "first_error": "x"})
    with pytest.raises(StageFailed, match=r"engine 'gpt' failed 6 of 8 requests.*first error: 429 forever"):
        gate.check({"engine": "gpt", "requests": 8, "failures": 6, "first_error": "429 forever"})


def test_a_wholly_failed_chunk_stops_even_a_small_stage():
    assert MIN_REQUESTS_FOR_RATE > 2
    with pytest.raises(StageFailed, match="failed 2 of 2"):
        FailureGate("correct", 0.2, sides=[]).check({"engine": "c", "requests": 2, "failures": 2})
    FailureGate("correct", 1.0, sides=[]).check({"engine": "c", "requests": 2, "failures": 1})
