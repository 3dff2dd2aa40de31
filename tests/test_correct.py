"""The correct stage on real Ray: an API corrector on a loopback server (realistic, malformed,
429s, timeouts, dead requests) and a local model; every inaccurate path accounted for."""

from __future__ import annotations

import json

import pytest

from lema.config import load_config
from lema.reference_corrector import reference_correction
from lema.synthetic import generate_problems
from pipelines.correct import run_correct
from pipelines.stage_io import RunContext, StageDir
from tests.fakes import FakeBehaviour, FakeOpenAIServer

KINDS = ["verified", "unverified", "unparseable", "failed", "json"]


def _wrong_paths(n: int) -> tuple[list[dict], dict[str, dict]]:
    """Inaccurate paths: each problem's gold solution with its first step's result broken."""
    problems = generate_problems(n, [2, 3], seed=7)
    paths = []
    for i, p in enumerate(problems):
        lines = p.solution.splitlines()
        first = lines[0].rsplit("=", 1)
        lines[0] = f"{first[0]}= 9999 {first[1].split(' ', 2)[-1]}"
        lines[-1] = "The answer is 9999."
        paths.append({"problem_id": p.id, "path_id": f"path-{i}", "generator": "g", "sample_index": 0,
                      "text": "\n".join(lines), "predicted_answer": "9999", "correct": False,
                      "tokens": 10, "dataset": "synthetic", "question": p.question, "answer": p.answer,
                      "error": None, "steps": p.steps})
    return paths, {p.id: p.to_dict() for p in problems}


def _scripted_reply(paths: list[dict], problems: dict[str, dict]):
    """The fake corrector's reply for each question: path i gets the behaviour KINDS[i % 5]."""
    script = {}
    for i, path in enumerate(paths):
        problem = problems[path["problem_id"]]
        good = reference_correction(problem["steps"], problem["answer"], path["text"])
        kind = KINDS[i % len(KINDS)]
        if kind == "unverified":
            script[path["question"]] = good.replace(f"The answer is {problem['answer']}.", "The answer is 1.")
        elif kind == "unparseable":
            script[path["question"]] = "Looks fine to me! Great job."
        elif kind == "json":
            script[path["question"]] = json.dumps({"incorrect_step": 1, "explanation": "wrong product",
                                                   "corrected_solution": problem["solution"],
                                                   "final_answer": problem["answer"]})
        else:
            script[path["question"]] = good
    return script


def _correct(cfg, paths: list[dict], problems: dict[str, dict], run_dir) -> dict:
    """Run the correct stage alone on these paths; returns its manifest."""
    ctx = RunContext.from_rows(cfg, run_dir, problems=list(problems.values()), sample=paths)
    return run_correct(ctx, StageDir(run_dir, "correct"), "h")


def _question_of(messages) -> str:
    return messages[-1]["content"]


def test_api_corrector_accounts_for_every_path(ray_cluster, tmp_path):
    paths, problems = _wrong_paths(15)
    script = _scripted_reply(paths, problems)
    failed = {p["question"] for i, p in enumerate(paths) if KINDS[i % len(KINDS)] == "failed"}

    def reply(messages):
        return next(v for q, v in script.items() if q in _question_of(messages))

    def fail_if(messages):
        return 500 if any(q in _question_of(messages) for q in failed) else None

    behaviour = FakeBehaviour(latency_s=0.02, reply=reply, fail_first=3, fail_status=429,
                              hang_first=0, fail_if=fail_if)
    with FakeOpenAIServer(behaviour) as srv:
        cfg = load_config(None, [
            "correct.corrector=llm", "correct.prompt=zero_shot", "correct.engine.backend=openai",
            "correct.engine.model=fake-gpt", f"correct.engine.openai.base_url={srv.base_url}",
            "correct.engine.openai.max_retries=3", "correct.engine.openai.backoff_s=0.01",
            "correct.engine.openai.timeout_s=2", "correct.engine.openai.price_per_1m_input=1000",
            "correct.pool.batch_size=8",
        ])
        stage = StageDir(tmp_path, "correct")
        manifest = _correct(cfg, paths, problems, tmp_path)
        # the first 3 calls answer 429 (unless one is a request scripted to 500): retried through
        assert srv.statuses[429] >= 1 and srv.statuses[429] + srv.statuses[500] >= 3

    rows = {r["path_id"]: r for r in stage.read_rows()}
    assert len(rows) == len(paths)  # none lost
    for i, p in enumerate(paths):
        expected = {"json": "verified"}.get(KINDS[i % len(KINDS)], KINDS[i % len(KINDS)])
        assert rows[p["path_id"]]["status"] == expected, (i, rows[p["path_id"]])
        if expected in ("unverified", "unparseable"):
            assert rows[p["path_id"]]["raw"] and rows[p["path_id"]]["reason"]  # the reply is kept
    assert rows["path-0"]["incorrect_step"] == 1 and rows["path-0"]["verified"]
    assert manifest["attempted"] == 15 == sum(manifest["status"].values())
    assert manifest["status"] == {"verified": 6, "unverified": 3, "unparseable": 3, "failed": 3}
    assert manifest["parsed"] == 9 and manifest["incorrect_step_histogram"]["1"] == 9
    assert manifest["tokens"] > 0 and manifest["cost"] > 0


def test_api_corrector_times_out_then_succeeds(ray_cluster, tmp_path):
    paths, problems = _wrong_paths(2)
    script = _scripted_reply(paths, problems)
    behaviour = FakeBehaviour(reply=lambda m: next(v for q, v in script.items() if q in _question_of(m)),
                              hang_first=2, hang_s=3.0)
    with FakeOpenAIServer(behaviour) as srv:
        cfg = load_config(None, [
            "correct.engine.backend=openai", "correct.engine.model=fake", "correct.prompt=json",
            f"correct.engine.openai.base_url={srv.base_url}", "correct.engine.openai.timeout_s=0.5",
            "correct.engine.openai.backoff_s=0.01",
        ])
        manifest = _correct(cfg, paths, problems, tmp_path)
        assert "response_format" in srv.requests[-1]  # the JSON variant asks for structured output
    assert manifest["status"] == {"verified": 1, "unverified": 1}


def test_local_model_corrector(ray_cluster, tiny_model, tmp_path):
    """A (random) local model as corrector: replies are kept with a reason, counts add up."""
    paths, problems = _wrong_paths(4)
    cfg = load_config(None, ["correct.engine.model=tiny", "correct.k=2", "correct.sampling.temperature=1.0",
                             "correct.sampling.max_tokens=16", "correct.pool.batch_size=2"])
    manifest = _correct(cfg, paths, problems, tmp_path)
    assert manifest["attempted"] == 4 == sum(manifest["status"].values())
    assert manifest["status"].get("unparseable", 0) + manifest["status"].get("unverified", 0) == 4


@pytest.mark.parametrize("max_paths", [0, 3])
def test_reference_corrector_and_cap(ray_cluster, tmp_path, max_paths):
    paths, problems = _wrong_paths(5)
    paths.append({**paths[0], "path_id": "no-steps", "text": "The answer is 7."})
    cfg = load_config(None, ["correct.corrector=reference", f"correct.max_paths={max_paths}"])
    manifest = _correct(cfg, paths, problems, tmp_path)
    assert manifest["attempted"] == max_paths
    if max_paths:
        rows = StageDir(tmp_path, "correct").read_rows()
        failed = [r for r in rows if r["path_id"] == "no-steps"]
        assert all(r["status"] == "failed" and "no steps" in r["reason"] for r in failed)
