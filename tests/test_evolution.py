"""Correction-centric evolution (lema.evolution): seeds, the reference evolver, strict parsing,
majority labels, near-duplicates, and the LLM evolver through the real openai engine against
the fake server on loopback."""

from __future__ import annotations

import random
import socket
from collections import Counter

import pytest

from lema.config import ConfigError, EngineConfig, EvolveConfig, OpenAIOptions, config_hash, load_config
from lema.engines import Completion, EngineError, RequestOutput, build_engine
from lema.evolution import (
    CREATED_MARKER,
    NearDuplicates,
    drop_near_duplicates,
    evolve_messages,
    evolve_questions,
    evolved_id,
    label_by_majority,
    parse_created_question,
    reference_evolve,
    seed_rows,
    select_seeds,
)
from lema.prompts import load_prompt
from lema.records import Problem
from lema.synthetic import chain_problem, generate_problems, read_chain, solve_question
from tests.fakes import FakeBehaviour, FakeOpenAIServer


# ---------------------------------------------------------------- config
def test_config_defaults_off_and_checked():
    cfg = load_config()
    assert cfg.evolve.enabled is False and cfg.evolve.strategy == "correction_centric"
    assert (cfg.evolve.votes, cfg.evolve.evolver, cfg.evolve.generator_adapter) == (3, "llm", None)
    cfg = load_config(None, ["evolve.enabled=true", "evolve.strategy=general", "evolve.seeds=8"])
    assert (cfg.evolve.enabled, cfg.evolve.strategy, cfg.evolve.seeds) == (True, "general", 8)
    with pytest.raises(ConfigError, match="write_sampling.n is 2.*answer_sampling.temperature is 0"):
        load_config(None, ["evolve.write_sampling.n=2", "evolve.answer_sampling.temperature=0"])
    with pytest.raises(ConfigError, match="evolve.votes"):
        load_config(None, ["evolve.votes=1"])
    with pytest.raises(ConfigError, match="evolve.strateg"):
        load_config(None, ["evolve.strategy=random"])
    load_config(None, ["evolve.evolver=reference", "evolve.answer_sampling.temperature=0"])
    base = EvolveConfig()
    assert config_hash(base) == config_hash(base.model_copy(update={"pool": base.pool.model_copy(
        update={"max_actors": 8})})) != config_hash(base.model_copy(update={"votes": 5}))


# ---------------------------------------------------------------- seeds
def test_correction_centric_draws_weight_by_corrections():
    draws = select_seeds(["a", "a", "a", "b"], ["a", "b", "c", "d"], 40_000, "correction_centric", seed=1)
    counts = Counter(draws)
    assert set(counts) == {"a", "b"}
    assert 2.8 < counts["a"] / counts["b"] < 3.2


def test_general_draws_uniform_over_all_questions():
    counts = Counter(select_seeds(["a", "a", "a"], ["a", "b", "c", "d"], 40_000, "general", seed=1))
    assert set(counts) == {"a", "b", "c", "d"}
    assert all(abs(k / 10_000 - 1) < 0.05 for k in counts.values())


def test_seed_draws_are_deterministic():
    ids = [f"q{i}" for i in range(20)]
    fixes = [f"q{i % 7}" for i in range(30)]
    one = select_seeds(fixes, ids, 50, "correction_centric", seed=3)
    assert one == select_seeds(list(reversed(fixes)), ids, 50, "correction_centric", seed=3)
    assert one != select_seeds(fixes, ids, 50, "correction_centric", seed=4)
    assert select_seeds([], ids, 50, "correction_centric", seed=3) == []
    with pytest.raises(ValueError, match="correction_centric, general"):
        select_seeds(fixes, ids, 5, "random")


def test_a_seed_drawn_twice_gives_two_draw_indices_and_ids():
    problems = {"a": {"id": "a", "question": "qa"}, "b": {"id": "b", "question": "qb"}}
    rows = seed_rows(["a", "b", "a", "zzz"], problems)
    assert [(r["id"], r["draw"]) for r in rows] == [("a", 0), ("b", 1), ("a", 2)]
    assert evolved_id("a", 0) != evolved_id("a", 2) and evolved_id("a", 0) == evolved_id("a", 0)


# ---------------------------------------------------------------- the reference evolver
@pytest.fixture(scope="module")
def synthetic():
    return {p.id: p.to_dict() for p in generate_problems(40, [2, 3, 4], seed=5)}


def test_chains_read_back_into_the_same_problem(synthetic):
    for p in synthetic.values():
        assert chain_problem(read_chain(p["question"]), p["id"], p["split"]) == Problem.from_dict(p)


def test_reference_evolver_is_right_by_construction(synthetic):
    draws = select_seeds(sorted(synthetic)[:12] * 2, sorted(synthetic), 64, "correction_centric", seed=0)
    seeds = seed_rows(draws, synthetic)
    cfg = EvolveConfig(evolver="reference")
    kept, rejects, counts = evolve_questions(seeds, cfg, None)
    assert counts["seeds"] == 64 and counts["kept"] == len(kept) >= 60, (counts, rejects)
    levels = Counter()
    for p in kept:
        solved = solve_question(p["question"])
        seed = synthetic[p["seed_id"]]
        assert solved is not None and p["answer"] == str(solved[-1][1])
        assert p["steps"] == [text for text, _ in solved]
        assert p["solution"].endswith(f"The answer is {p['answer']}.")
        assert p["question"] != seed["question"]
        assert (p["origin"], p["dataset"], p["id"]) == ("evolved", "synthetic", evolved_id(seed["id"], p["draw"]))
        levels[(int(p["level"]) > int(seed["level"]), int(p["level"]) == int(seed["level"]))] += 1
    assert len(levels) == 2  # some grew a step or a partner's steps, some kept the seed's length
    assert evolve_questions(seeds, cfg, None)[0] == kept  # stable


def test_reference_evolver_rejects_non_synthetic_seeds(synthetic):
    seed = {"id": "g1", "question": "Tom has 3 cats and 2 dogs. How many pets are there?", "draw": 0}
    with pytest.raises(ValueError, match="not a synthetic question"):
        reference_evolve(seed, None)
    kept, rejects, counts = evolve_questions([seed, {"id": "x", "draw": 1}], EvolveConfig(evolver="reference"))
    assert kept == [] and [r["reason"] for r in rejects] == ["missing question", "not a synthetic question"]
    assert counts["dropped"] == {"missing question": 1, "not a synthetic question": 1}


# ---------------------------------------------------------------- parsing
SEED = "Ann reads 12 pages on Monday and twice as many on Tuesday. How many pages does she read?"
GOOD = "A gardener plants 8 rows of tomatoes with 6 plants in each row. How many plants are there?"


@pytest.mark.parametrize("reply, question", [
    (f"{CREATED_MARKER} {GOOD}", GOOD),
    (f"Here is one.\n\n**{CREATED_MARKER}** {GOOD}\n", GOOD),
    (f"{CREATED_MARKER}\n{GOOD}", GOOD),
    (f"{CREATED_MARKER} A triangle has sides 3, 4 and 5. Find its area in square units.",
     "A triangle has sides 3, 4 and 5. Find its area in square units."),
])
def test_parse_created_question_reads_good_replies(reply, question):
    assert parse_created_question(reply, SEED) == (question, None)


@pytest.mark.parametrize("reply, reason", [
    (GOOD, "no #Created Question# marker"),
    (f"Created Question: {GOOD}", "no #Created Question# marker"),
    (f"{CREATED_MARKER} {GOOD}\n{CREATED_MARKER} {GOOD}", "more than one created question"),
    (f"{CREATED_MARKER}   ", "empty question"),
    (f"{CREATED_MARKER} How many apples?", "question too short"),
    (f"{CREATED_MARKER} {'very ' * 500}long?", "question too long"),
    (f"{CREATED_MARKER} Based on #Given Question#, how many pages does Ann read in total?", "leftover template"),
    (f"{CREATED_MARKER} <your new question here about pages and books and days>?", "leftover template"),
    (f"{CREATED_MARKER} {GOOD}\nAnswer: 48", "includes a solution or answer"),
    (f"{CREATED_MARKER} {GOOD}\nSolution: 8 * 6 = 48.", "includes a solution or answer"),
    (f"{CREATED_MARKER} A gardener plants 8 rows of tomatoes with 6 plants in each row.", "no question asked"),
    (f"{CREATED_MARKER} {SEED}", "same as the seed"),
    ("", "no #Created Question# marker"),
])
def test_parse_created_question_rejects_malformed_replies(reply, reason):
    question, why = parse_created_question(reply, SEED)
    assert question is None and why.startswith(reason), why


def test_prompt_asks_for_our_format_and_its_example_parses():
    messages = evolve_messages(SEED)
    assert messages[0]["role"] == "system" and "teacher" in messages[0]["content"]
    assert SEED in messages[-1]["content"] and CREATED_MARKER in messages[-1]["content"]
    example = load_prompt("evolve").examples[0]
    assert parse_created_question(example["reply"], example["question"])[0] is not None


# ---------------------------------------------------------------- labels
@pytest.mark.parametrize("answers, dataset, label, reason", [
    (["0.5", "1/2", "7"], "gsm8k", "0.5", None),
    (["7", "$1,000", "1000"], "gsm8k", "1000", None),
    (["12", "12", "12"], "gsm8k", "12", None),
    (["12", None, "12"], "gsm8k", "12", None),
    (["\\frac{1}{2}", "0.5", "3"], "math", "\\frac{1}{2}", None),
    (["1", "2", "3"], "gsm8k", None, "votes disagree"),
    (["1", "1", "2", "2"], "gsm8k", None, "votes tie"),
    ([None, None, None], "gsm8k", None, "no answer in any of 3 votes"),
    (["12", None, None], "gsm8k", None, "votes disagree"),
    (["x+1", "x + 1", "2"], "math", None, "label is not a number"),
    (["many", "many", "2"], "gsm8k", None, "label is not a number"),
])
def test_label_by_majority(answers, dataset, label, reason):
    got, why = label_by_majority(answers, dataset)
    assert got == label and (why or "").startswith(reason or ""), why


# ---------------------------------------------------------------- near-duplicates
def test_near_duplicates_of_seed_each_other_and_eval():
    seed_q = "Mia has 12 apples and buys 3 bags with 5 apples each. How many apples does Mia have?"
    eval_q = "A train travels 60 miles per hour for 3 hours. How far does the train travel in total?"
    fresh = "Omar bakes 4 trays of 9 cookies and eats 5 of them. How many cookies are left over?"
    new = [
        {"id": "n1", "seed_id": "s", "draw": 0, "question": seed_q.replace("12", "13")},
        {"id": "n2", "seed_id": "s", "draw": 1, "question": eval_q.replace("60", "70")},
        {"id": "n3", "seed_id": "s", "draw": 3, "question": fresh.replace("4", "6")},
        {"id": "n4", "seed_id": "s", "draw": 2, "question": fresh},
    ]
    index = NearDuplicates([eval_q, "Something else entirely, with nothing shared here?"], 3, 0.6)
    assert len(index) == 2 and index.similar(eval_q) == 1.0 and index.similar(fresh) == 0.0
    kept, rejects = drop_near_duplicates(new, {"s": seed_q}, index, 3, 0.6)
    assert [p["id"] for p in kept] == ["n4"]  # the first by draw
    assert {r["raw"]: r["reason"] for r in rejects} == {
        new[0]["question"]: "near-duplicate of its seed",
        new[1]["question"]: "near-duplicate of an eval question",
        new[2]["question"]: "near-duplicate of another new question",
    }
    short = NearDuplicates(["How many?"], 13, 0.5)  # shorter than n words: one n-gram
    assert "How many?" in short and "How many pens?" not in short


# ---------------------------------------------------------------- the LLM evolver, real HTTP
QUESTIONS = {  # seed question -> what the evolver writes
    "Ann reads 12 pages a day for 5 days. How many pages does she read?":
        f"{CREATED_MARKER} A gardener plants 8 rows of tomatoes with 6 plants in each row and then gives "
        "10 plants away. How many tomato plants does the gardener have left?",
    "Ben has 3 boxes of 7 pens and loses 4 pens. How many pens does he have?":
        "Sure! Here is a new question: How many pens are there in 9 boxes of 7 pens each?",
    "Cara walks 2 miles each morning and 3 each evening. How far does she walk in a week?":
        f"{CREATED_MARKER} A baker fills 5 trays with 12 rolls each and sells most of them to a shop. "
        "How many rolls does the baker have left?",
    "Dan saves 15 dollars a week for 8 weeks. How much money does he save?":
        f"{CREATED_MARKER} Dan saves 15 dollars a week for 9 weeks. How much money does he save?",
    "Eve buys 4 packs of 6 eggs and breaks 3 of them. How many eggs are unbroken?":
        f"{CREATED_MARKER} A train travels 60 miles per hour for 3 hours. How far does the train travel in total?",
}
ANSWERS = {  # new question -> every vote's reply
    "gives 10 plants away": "Step 1: 8 * 6 = 48 plants.\nStep 2: 48 - 10 = 38.\nThe answer is 38.",
    "sells most of them": "Step 1: We cannot tell how many were sold.\nThe answer is unknown.",
}
EVAL = ["A train travels 60 miles per hour for 3 hours. How far does the train travel in total?"]


def scripted_reply(messages):
    text = messages[-1]["content"]
    if "#Given Question#:" in text:
        seed = text.split("#Given Question#:")[1].split("Reply in exactly")[0].strip()
        return QUESTIONS[seed]
    return next((reply for key, reply in ANSWERS.items() if key in text),
                "Step 1: 9 * 15 = 135.\nThe answer is 135.")


def _seeds(order: list[int]) -> list[dict]:
    seeds = [{"id": f"s{i}", "dataset": "gsm8k", "split": "train", "question": q, "answer": "1"}
             for i, q in enumerate(QUESTIONS)]
    return [{**seeds[i], "draw": d} for d, i in enumerate(order)]


def _llm_cfg(base_url: str, **opts) -> EvolveConfig:
    options = {"base_url": base_url, "max_retries": 0, "timeout_s": 5.0, "backoff_s": 0.01} | opts
    return EvolveConfig(enabled=True, evolver="llm",
                        engine=EngineConfig(backend="openai", model="fake", openai=OpenAIOptions(**options)))


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(FakeBehaviour(reply=scripted_reply)) as srv:
        yield srv


def test_llm_evolver_writes_parses_labels_and_dedups(server):
    cfg = _llm_cfg(server.base_url)
    engine = build_engine(cfg.engine)
    try:
        kept, rejects, counts = evolve_questions(_seeds([0, 1, 2, 3, 4, 0]), cfg, engine, EVAL)
    finally:
        engine.close()
    assert [(p["id"], p["answer"], p["seed_id"], p["origin"]) for p in kept] == [
        (evolved_id("s0", 0), "38", "s0", "evolved")]
    assert kept[0]["question"].startswith("A gardener") and kept[0]["solution"] is None
    assert counts | {"dropped": None} == {"seeds": 6, "generated": 6, "parsed": 5, "distinct": 2, "kept": 1,
                                          "dropped": None, "tokens": counts["tokens"], "cost": 0.0}
    assert counts["tokens"] > 0
    assert counts["dropped"] == {"no #Created Question# marker": 1, "no answer in any of 3 votes": 1,
                                 "near-duplicate of its seed": 1, "near-duplicate of an eval question": 1,
                                 "near-duplicate of another new question": 1}
    by_stage = Counter(r["stage"] for r in rejects)
    assert by_stage == {"parse": 1, "label": 1, "dedup": 3}
    assert next(r for r in rejects if r["stage"] == "parse")["raw"].startswith("Sure!")
    writes = [b for b in server.requests if "#Given Question#" in b["messages"][-1]["content"]]
    votes = [b for b in server.requests if "#Given Question#" not in b["messages"][-1]["content"]]
    assert len(writes) == 6 and len(votes) == 2  # near-duplicates are dropped before their votes
    assert len({b["seed"] for b in writes}) == 6  # the seed drawn twice asks with two request seeds
    assert all(b["n"] == 3 and b["temperature"] == 0.7 for b in votes)
    assert all(b["n"] == 1 for b in writes)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_llm_evolver_dead_endpoint_rejects_every_seed():
    cfg = _llm_cfg(f"http://127.0.0.1:{_closed_port()}/v1")
    engine = build_engine(cfg.engine)
    try:
        kept, rejects, counts = evolve_questions(_seeds([0, 1, 2]), cfg, engine)
    finally:
        engine.close()
    assert kept == [] and counts["dropped"] == {"engine": 3} and counts["generated"] == 0
    assert all(r["stage"] == "write" and "APIConnectionError" in r["reason"] for r in rejects)


# ---------------------------------------------------------------- the LLM evolver, a stub engine
class StubEngine:
    """Replies from tables: seed question -> created question reply, new question -> votes."""

    name = "stub"

    def __init__(self, writes: dict[str, str], votes: dict[str, list[str]], finish: str = "stop",
                 raises: bool = False):
        self.writes, self.votes, self.finish, self.raises = writes, votes, finish, raises

    def generate(self, requests, sampling, json_schema=None, seeds=None):
        if self.raises:
            raise EngineError("model 'stub' not found")
        outs = []
        for messages in requests:
            text = messages[-1]["content"]
            if "#Given Question#:" in text:
                seed = text.split("#Given Question#:")[1].split("Reply in exactly")[0].strip()
                outs.append(RequestOutput([Completion(self.writes[seed], 9, self.finish)]))
            else:
                replies = next(v for k, v in self.votes.items() if k in text)
                outs.append(RequestOutput([Completion(r, 3, "stop") for r in replies[: sampling.n]]))
        return outs

    def stats(self):
        return {}

    def close(self):
        pass


def test_llm_evolver_majority_of_equivalent_votes_and_disagreement():
    seeds = _seeds([0, 2])
    writes = {seeds[0]["question"]: f"{CREATED_MARKER} Half of a 1 litre bottle of juice is poured out "
                                    "into a glass. How many litres are in the glass?",
              seeds[1]["question"]: f"{CREATED_MARKER} A shop sells 3 kinds of fruit in crates of 20 and "
                                    "sells 17 crates. How many pieces of fruit does the shop sell?"}
    votes = {"litres": ["The answer is 0.5.", "The answer is 1/2.", "The answer is 7."],
             "crates": ["The answer is 340.", "The answer is 60.", "The answer is 51."]}
    kept, rejects, counts = evolve_questions(seeds, EvolveConfig(), StubEngine(writes, votes))
    assert [(p["seed_id"], p["answer"]) for p in kept] == [("s0", "0.5")]
    assert [(r["stage"], r["reason"].split(":")[0]) for r in rejects] == [("label", "votes disagree")]
    assert counts["kept"] == 1 and counts["tokens"] == 2 * 9 + 6 * 3

    kept, rejects, counts = evolve_questions(seeds, EvolveConfig(), StubEngine(writes, votes, finish="length"))
    assert kept == [] and counts["dropped"] == {"reply cut at max_tokens": 2}

    kept, rejects, counts = evolve_questions(seeds, EvolveConfig(), StubEngine(writes, votes, raises=True))
    assert kept == [] and counts["dropped"] == {"engine": 2}
    assert rejects[0]["reason"] == "engine: EngineError: model 'stub' not found"
    with pytest.raises(ValueError, match="needs an engine"):
        evolve_questions(seeds, EvolveConfig(), None)


def test_reference_evolver_seeds_differ_by_draw(synthetic):
    p = next(iter(synthetic.values()))
    a, b = (reference_evolve({**p, "draw": d}, None, 0) for d in (0, 1))
    assert a.id != b.id and a.question != b.question and a.seed_id == b.seed_id == p["id"]
    state = random.getstate()
    reference_evolve({**p, "draw": 2}, None, 0)
    assert random.getstate() == state  # its draws use their own generator
