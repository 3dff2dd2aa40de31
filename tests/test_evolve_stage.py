"""The evolve stages in the loop (`evolve` -> `evolve_sample` -> `evolve_correct` -> data): seeds
from the verified corrections, new questions by the reference evolver, their mistakes from the
null engine, their corrections in the training data only, marked `origin: evolved`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lema.config import load_config
from pipelines.lema import main_pipeline

ROOT = Path(__file__).parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"
SCRIPTED = ["sample.generators.0.engine.backend=scripted", "sample.generators.0.sampling.max_tokens=256",
            "sample.generators.0.engine.scripted.p_correct=0.5",
            "problems.count=24", "problems.levels=[2,3,4]", "evaluate.datasets.0.count=4"]
EVOLVE = ["evolve.enabled=true", "evolve.evolver=reference", "evolve.seeds=20"]


def _manifest(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())


def _rows(run: Path, stage: str) -> list[dict]:
    rows = []
    for f in sorted((run / stage).glob("part-*.parquet")):
        t = pq.read_table(f)
        rows += [] if "_empty" in t.column_names else t.to_pylist()
    return rows


def _examples(run: Path) -> list[dict]:
    return [json.loads(line) for name in ("train.jsonl", "held_out.jsonl")
            for line in (run / "data" / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def evolved_run(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("evolve")
    cfg = load_config(SMOKE, [f"output_dir={out}", *SCRIPTED, *EVOLVE])
    main_pipeline(cfg, until="data")
    return out / "smoke", cfg


def test_evolved_corrections_join_the_correction_data_only(evolved_run):
    run, _ = evolved_run
    evo, corr = _manifest(run, "evolve"), _manifest(run, "correct")
    assert evo["enabled"] and evo["seeds"] == 20 and evo["corrections"] == corr["verified"]
    assert evo["seeds"] == evo["kept"] + sum(evo["dropped"].values())  # every seed a question or a reject
    assert sum(evo["seed_difficulty"]) == 20 and sum(evo["train_difficulty"]) == 24

    problems = {p["id"]: p for p in _rows(run, "evolve")}
    assert len(problems) == evo["kept"] == _manifest(run, "evolve_sample")["problems"]
    assert all(p["origin"] == "evolved" and p["seed_id"] for p in problems.values())
    corrected = {r["problem_id"] for r in _rows(run, "correct") if r["verified"]}
    assert {p["seed_id"] for p in problems.values()} <= corrected  # correction-centric: seeds were corrected

    sample, fixes = _manifest(run, "evolve_sample"), _manifest(run, "evolve_correct")
    assert fixes["attempted"] == sample["inaccurate"] > 0 and fixes["verified"] > 0
    assert all(r["origin"] == "evolved" for r in _rows(run, "evolve_correct"))
    examples = _examples(run)
    evolved = [e for e in examples if e["origin"] == "evolved"]
    assert evolved and all(e["kind"] == "correction" and e["source_ids"][0] in problems for e in evolved)
    assert not [e for e in examples if e["kind"] == "cot" and e["source_ids"][0] in problems]  # no CoT from them
    originals = [e for e in examples if e["kind"] == "correction" and e["origin"] is None]
    assert originals and all(e["source_ids"][0] not in problems for e in originals)


def test_rerun_skips_the_evolve_stages_and_off_writes_no_evolved_data(evolved_run, tmp_path, capsys):
    run, cfg = evolved_run
    main_pipeline(cfg, until="data")
    assert capsys.readouterr().out.count("complete for this config, skipped") == 7  # problems .. data

    off = load_config(SMOKE, [f"output_dir={tmp_path}", *SCRIPTED])
    main_pipeline(off, until="data")
    assert not _manifest(tmp_path / "smoke", "evolve")["enabled"]
    assert not [e for e in _examples(tmp_path / "smoke") if e["origin"] == "evolved"]
    # the same problems, samples and corrections as the evolved run: only the evolved ones differ
    base = [e["id"] for e in _examples(tmp_path / "smoke")]
    assert sorted(base) == sorted(e["id"] for e in _examples(run) if e["origin"] is None)


def test_general_evolution_draws_from_every_training_question(ray_cluster, tmp_path):
    cfg = load_config(SMOKE, [f"output_dir={tmp_path}", *SCRIPTED, *EVOLVE, "evolve.strategy=general",
                              "evolve.seeds=60", "sample.generators.0.engine.scripted.p_correct=0.9"])
    main_pipeline(cfg, until="evolve")
    run = tmp_path / "smoke"
    corrected = {r["problem_id"] for r in _rows(run, "correct") if r["verified"]}
    seeds = {p["seed_id"] for p in _rows(run, "evolve")}
    assert seeds - corrected  # uniform over all questions: some were never corrected
    assert _manifest(run, "evolve")["strategy"] == "general"


NEW = [  # what the fake evolver writes (by seed) and every vote's answer
    ("A farmer packs 6 crates with 12 apples in each crate. How many apples does the farmer pack?", "72"),
    ("Lena swims 3 laps every day for two whole weeks. How many laps does she swim altogether?", "42"),
    ("A library lends 45 books on Monday and twice as many on Tuesday. How many books is that?", "135"),
]


def _evolver_reply(messages: list[dict]) -> str:
    text = messages[-1]["content"]
    if "#Given Question#:" in text:
        return f"#Created Question#: {NEW[sum(map(ord, text)) % len(NEW)][0]}"
    return next(f"Step 1: work it out.\nThe answer is {answer}." for q, answer in NEW if q in text)


@pytest.mark.slow  # a model load in a Ray task (about a minute): make slow_test
def test_llm_evolver_runs_in_a_ray_task_against_an_api(ray_cluster, tmp_path):
    from tests.fakes import FakeBehaviour, FakeOpenAIServer

    with FakeOpenAIServer(FakeBehaviour(reply=_evolver_reply)) as server:
        cfg = load_config(SMOKE, [f"output_dir={tmp_path}", *SCRIPTED, "evolve.enabled=true", "evolve.evolver=llm",
                                  "evolve.seeds=8", "evolve.engine.backend=openai", "evolve.engine.model=fake",
                                  f"evolve.engine.openai.base_url={server.base_url}",
                                  "evolve.engine.openai.max_retries=0"])
        main_pipeline(cfg, until="evolve")
    evo = _manifest(tmp_path / "smoke", "evolve")
    assert evo["evolver"] == "fake" and evo["generated"] == 8 and evo["tokens"] > 0
    assert evo["seeds"] == evo["kept"] + sum(evo["dropped"].values())
    kept = {p["question"]: p["answer"] for p in _rows(tmp_path / "smoke", "evolve")}
    assert kept and all(dict(NEW)[q] == a for q, a in kept.items())  # labelled by the votes' majority
    assert set(evo["dropped"]) <= {"near-duplicate of another new question"}  # a seed drawn twice: one kept
