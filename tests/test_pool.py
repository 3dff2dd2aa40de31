"""The chunk runner's bookkeeping: item-based resume under any chunking, and the failure gate."""

from __future__ import annotations

import json

import pytest

from pipelines.correct import is_inaccurate
from pipelines.pool import (
    MIN_REQUESTS_FOR_RATE,
    FailureGate,
    Progress,
    StageFailed,
    add_counts,
    chunk_items,
    done_items,
    part_chunks,
)
from pipelines.stage_io import StageDir


def _items(n: int) -> list[dict]:
    return [{"id": f"p{i}", "question": f"q{i}", "correct": i % 2 == 1, "path_id": f"p{i}"} for i in range(n)]


def test_chunk_ids_name_position_and_items():
    a = chunk_items(_items(5), "id", 2, prefix="g0-")
    assert [json.loads(c["items"]) for c in a] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert [c["chunk_id"][:8] for c in a] == ["g0-00000", "g0-00002", "g0-00004"]
    assert chunk_items(_items(5), "id", 2, prefix="g0-") == a  # stable
    assert chunk_items(_items(5), "id", 3)[0]["chunk_id"] != a[0]["chunk_id"].removeprefix("g0-")


def test_done_items_survive_rechunking(tmp_path):
    stage = StageDir(tmp_path, "sample")
    for chunk in chunk_items(_items(5), "id", 2, prefix="g0-")[:2]:  # two chunks finished, then a kill
        items = json.loads(chunk["items"])
        stage.file(f"chunk-{chunk['chunk_id']}.json").write_json({"items": items})
        stage.write_part(chunk["chunk_id"], [{"problem_id": i} for i in items])
    stage.file("chunk-g0-00004-orphan.json").write_json({"items": ["p4"]})  # side written, part not
    assert done_items(stage, "g0-") == {"p0", "p1", "p2", "p3"}
    assert done_items(stage, "g1-") == set()
    pending = [x for x in _items(6) if x["id"] not in done_items(stage, "g0-")]
    assert [json.loads(c["items"]) for c in chunk_items(pending, "id", 3)] == [["p4", "p5"]]


def test_part_chunks_stream_each_input_part_leaving_out_done_items(ray_cluster, tmp_path):
    """Chunks are cut per input part by Ray tasks, named after their part; items a finished
    chunk covers are left out on the next pass, however it was chunked; `select` filters rows."""
    source, stage = StageDir(tmp_path, "problems"), StageDir(tmp_path, "sample")
    items = _items(10)
    source.write_part("00000", items[:6])
    source.write_part("00001", items[6:])

    def cut(size: int, select=None) -> list[dict]:
        rows = part_chunks(source, stage, "id", size, prefix="g0-", select=select).take_all()
        return sorted(rows, key=lambda c: c["chunk_id"])

    first = cut(4)
    assert [json.loads(c["items"]) for c in first] == [["p0", "p1", "p2", "p3"], ["p4", "p5"], ["p6", "p7", "p8", "p9"]]
    assert [c["chunk_id"][:14] for c in first] == ["g0-00000-00000", "g0-00000-00004", "g0-00001-00000"]
    assert cut(4) == first  # the same input cuts into the same chunks
    done = first[0]
    stage.file(f"chunk-{done['chunk_id']}.json").write_json({"items": json.loads(done["items"])})
    stage.write_part(done["chunk_id"], [])
    assert [json.loads(c["items"]) for c in cut(3)] == [["p4", "p5"], ["p6", "p7", "p8"], ["p9"]]
    assert [json.loads(c["items"]) for c in cut(3, is_inaccurate)] == [["p4"], ["p6", "p8"]]


def test_progress_lines_give_the_rate_and_an_eta(capsys):
    progress = Progress("sample m", total=1000, done=100, every_s=0.0)
    progress.start -= 10  # 10 s ago
    progress.update(500)
    line = capsys.readouterr().out
    assert "sample m: 600/1,000 items (60%), 50.0 items/s, ETA 0m08s" in line
    quiet = Progress("sample m", total=1000, every_s=3600)
    quiet.update(10)
    assert capsys.readouterr().out == ""  # not a line per chunk


def test_chunk_counts_add_up():
    total: dict = {}
    add_counts(total, {"m": {"paths": 2, "correct": 1}, "fifths": [1, 0], "status": {"verified": 1}})
    add_counts(total, {"m": {"paths": 3, "correct": 0}, "fifths": [0, 2], "status": {"failed": 1}})
    assert total == {"m": {"paths": 5, "correct": 1}, "fifths": [1, 2], "status": {"verified": 1, "failed": 1}}


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
