"""The scripted null engine: rule-made replies that our grader, the reference corrector and the
corrector reply parser read as they read a model's (no model, no Ray)."""

from __future__ import annotations

import pytest

from lema.config import CorrectConfig, EngineConfig, SamplingConfig, load_config
from lema.correcting import correct_paths
from lema.correction import ParsedCorrection, parse_correction
from lema.engines import STAT_KEYS, Engine, build_engine
from lema.grading import grade
from lema.prompts import build_corrector_messages, build_cot_messages
from lema.reference_corrector import first_wrong_step
from lema.sampling import sample_problems
from lema.synthetic import generate_problems, solve_question

PROBLEMS = generate_problems(40, [1, 2, 3, 4, 6], seed=3)
OTHER = "A farmer has 17 sheep and all but 9 run away. How many are left?"


def scripted(p_correct: float = 0.5) -> Engine:
    return build_engine(EngineConfig(backend="scripted", scripted={"p_correct": p_correct}))


def cot(problems=PROBLEMS, p_correct: float = 0.5, **sampling) -> list[list[str]]:
    outputs = scripted(p_correct).generate([build_cot_messages(p.question) for p in problems],
                                           SamplingConfig(**sampling), seeds=list(range(len(problems))))
    return [[c.text for c in o.completions] for o in outputs]


def sampled_paths(p_correct: float, n: int = 1) -> list[dict]:
    paths, rejects = sample_problems(scripted(p_correct), [p.to_dict() for p in PROBLEMS],
                                     SamplingConfig(n=n, temperature=0.8), generator="scripted")
    assert not rejects and len(paths) == n * len(PROBLEMS)
    return [p.to_dict() for p in paths]


def mistaken_step(path: dict) -> int:
    """The step where a scripted wrong path leaves the gold steps."""
    lines = path["text"].splitlines()
    return next(i for i, gold in enumerate(path["steps"], 1) if lines[i - 1] != f"Step {i}: {gold}")


def test_the_parser_reads_every_synthetic_question_back_into_its_gold_steps():
    for p in generate_problems(300, [1, 2, 3, 4, 5, 8], seed=11):
        steps = solve_question(p.question)
        assert [text for text, _ in steps] == p.steps and str(steps[-1][1]) == p.answer
    assert solve_question(OTHER) is None
    assert solve_question("Mia has 5 coins. How many coins does Mia have now?") is None  # no step


def test_config_and_contract():
    cfg = load_config(None, ["sample.generators.0.engine.backend=scripted",
                             "sample.generators.0.engine.scripted.p_correct=0.9"])
    engine = build_engine(cfg.sample.generators[0].engine)
    assert isinstance(engine, Engine) and engine.name == "smollm2-135m" and engine.p_correct == 0.9
    with pytest.raises(Exception, match="scripted.p_correct"):
        load_config(None, ["sample.generators.0.engine.scripted.p_correct=1.5"])
    out = engine.generate([build_cot_messages(PROBLEMS[0].question)], SamplingConfig(n=3))
    assert len(out[0].completions) == 3 and out[0].error is None
    assert out[0].prompt_tokens == len(build_cot_messages(PROBLEMS[0].question)[0]["content"].split())
    stats = engine.stats()
    assert set(stats) == set(STAT_KEYS) and stats["requests"] == 1
    assert stats["completion_tokens"] == sum(c.tokens for c in out[0].completions)
    assert all(c.tokens == len(c.text.split()) and c.finish_reason == "stop" for c in out[0].completions)
    engine.close()


def test_replies_are_deterministic_per_request_and_seed():
    assert cot() == cot()
    engine = scripted()
    request = [build_cot_messages(PROBLEMS[5].question)]
    by_seed = {s: engine.generate(request, SamplingConfig(seed=s))[0].completions[0].text for s in range(12)}
    assert engine.generate(request, SamplingConfig(), seeds=[7])[0].completions[0].text == by_seed[7]
    assert len(set(by_seed.values())) > 3


def test_n_samples_are_drawn_apart():
    """Each sample draws its own wrong step and error (a 1-step problem has 9 errors to draw)."""
    distinct = [len(set(texts)) for texts in cot(p_correct=0.0, n=4, temperature=0.8)]
    assert min(distinct) >= 2 and sum(distinct) / len(distinct) >= 3.5, distinct


def test_p_correct_one_gives_the_gold_solution_graded_correct():
    for problem, (text,) in zip(PROBLEMS, cot(p_correct=1.0)):
        assert text == problem.solution
        assert grade(text, problem.answer, dataset="synthetic").correct


def test_p_correct_zero_goes_wrong_at_one_step_and_the_reference_corrector_fixes_it():
    paths = sampled_paths(0.0)
    assert not any(p["correct"] for p in paths)
    for p in paths:  # the reference corrector's step locator finds the mistaken step
        assert first_wrong_step(p["steps"], [s.split(": ", 1)[1] for s in p["text"].splitlines()[:-1]]) \
            == mistaken_step(p)
    corrections = correct_paths(paths, CorrectConfig(corrector="reference"), None)
    assert [c.status for c in corrections] == ["verified"] * len(paths)


@pytest.mark.parametrize("prompt", ["few_shot", "zero_shot", "paper", "json"])
def test_llm_corrector_on_the_scripted_engine_names_the_wrong_step_and_verifies(prompt):
    paths = sampled_paths(0.0)
    cfg = CorrectConfig(engine=EngineConfig(backend="scripted"), prompt=prompt)
    corrections = correct_paths(paths, cfg, build_engine(cfg.engine))
    assert [c.status for c in corrections] == ["verified"] * len(paths)
    for path, c in zip(paths, corrections):
        assert c.incorrect_step == mistaken_step(path) and c.predicted_answer == path["answer"]
        assert c.raw.startswith("{") == (prompt == "json")


def test_a_question_it_cannot_parse_gets_a_number_and_a_parseable_correction():
    engine = scripted(1.0)
    texts = [engine.generate([build_cot_messages(OTHER)], SamplingConfig(seed=s))[0].completions[0].text
             for s in range(20)]
    assert all(t.splitlines()[-1].startswith("The answer is ") for t in texts)
    assert sum(grade(t, "9", dataset="gsm8k").correct for t in texts) <= 1
    wrong = "Step 1: 17 - 9 = 8 sheep run away.\nStep 2: So 9 - 8 = 1 is left.\nThe answer is 1."
    for prompt in ("few_shot", "paper"):
        reply = engine.generate([build_corrector_messages(OTHER, wrong, prompt)], SamplingConfig())
        parsed = parse_correction(reply[0].completions[0].text, wrong, "gsm8k")
        assert isinstance(parsed, ParsedCorrection) and parsed.incorrect_step in (1, 2)


def test_max_tokens_cuts_the_reply():
    engine = scripted(1.0)
    out = engine.generate([build_cot_messages(PROBLEMS[2].question)], SamplingConfig(max_tokens=7))
    (c,) = out[0].completions
    assert c.finish_reason == "length" and c.tokens == 7 and len(c.text.split()) == 7
    assert PROBLEMS[2].solution.startswith(c.text)
    assert not grade(c.text, PROBLEMS[2].answer, dataset="synthetic").correct


def test_sampling_with_p_correct_half_gets_about_half_right():
    paths = sampled_paths(0.5, n=4)
    accuracy = sum(p["correct"] for p in paths) / len(paths)
    assert 0.4 <= accuracy <= 0.6, accuracy
    assert {p["finish_reason"] for p in paths} == {"stop"}
