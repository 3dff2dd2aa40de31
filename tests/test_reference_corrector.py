"""The reference corrector: replies that parse, name the right step, and verify against gold."""

from __future__ import annotations

import pytest

from lema.correction import ParsedCorrection, parse_correction, verify_correction
from lema.prompts import number_steps
from lema.reference_corrector import first_wrong_step, reference_correction, step_result
from lema.synthetic import generate_problems

STEPS = [
    "Tom buys 3 boxes of 12 pens, so he has 3 * 12 = 36 pens.",
    "He gives away 10 pens, so he has 36 - 10 = 26 pens.",
    "He splits them into 2 equal groups and keeps one: 26 / 2 = 13 pens.",
]
ANSWER = "13"
RIGHT = [f"Step {i}: {s}" for i, s in enumerate(STEPS, 1)]

# (wrong path, expected incorrect step)
PATHS = [
    ("Step 1: He has 3 + 12 = 15 pens.\nStep 2: 15 - 10 = 5.\nStep 3: 5 / 2 = 2.5.\n"
     "The answer is 2.5.", 1),
    (f"{RIGHT[0]}\nStep 2: He has 36 - 10 = 25 pens.\nStep 3: 25 / 2 = 12.5.\n"
     "The answer is 12.5.", 2),
    (f"{RIGHT[0]}\n{RIGHT[1]}\nStep 3: He keeps 26 * 2 = 52 pens.\nThe answer is 52.", 3),
    (f"{RIGHT[0]}\n{RIGHT[1]}\nThe answer is 26.", 2),  # stops early
    ("\n".join(RIGHT) + "\nThe answer is 26.", 3),  # right steps, wrong answer line
    ("\n".join(RIGHT) + "\nStep 4: Then 13 + 10 = 23.\nThe answer is 23.", 4),  # too long
    ("He has 3 * 12 = 36 pens. He gives 10 and has 36 - 10 = 24 pens. So 24 / 2 = 12.\n"
     "The answer is 12.", 2),  # free-form sentences
    ("He has 36 pens.\nThen 26.\nThe answer is 26.", 2),  # lines, no arithmetic
    ("1. 3 * 12 = 36\n2. 36 - 10 = 26\n3. 26 / 2 = 31\n#### 31", 3),  # list + GSM8K style
]


@pytest.mark.parametrize(("path", "step"), PATHS)
def test_round_trip(path, step):
    reply = reference_correction(STEPS, ANSWER, path)
    parsed = parse_correction(reply, path, "synthetic")
    assert isinstance(parsed, ParsedCorrection), (parsed, reply)
    assert parsed.incorrect_step == step
    assert parsed.explanation.startswith(("Step", "After"))
    assert parsed.predicted_answer == ANSWER
    assert verify_correction(parsed, ANSWER, "synthetic").correct
    fixed = number_steps(parsed.corrected_solution)
    kept = number_steps(path)[: step - 1]
    assert fixed[: step - 1] == kept  # the path's steps before the mistake are kept
    assert fixed[step - 1:] == STEPS[step - 1:]  # then the gold steps


def test_explanation_names_the_computation():
    path = f"{RIGHT[0]}\nStep 2: He has 36 - 10 = 25 pens.\nThe answer is 25."
    reply = reference_correction(STEPS, ANSWER, path)
    assert "Explanation: Step 2 should compute 36 - 10 = 26, but the solution gets 25." in reply
    assert reply.endswith("Step 3: He splits them into 2 equal groups and keeps one: "
                          "26 / 2 = 13 pens.\nThe answer is 13.")


def test_helpers():
    assert step_result("so he has 3 * 12 = 36 pens, and 1,200 more") == 36
    assert step_result("He has 1,200 pens") == 1200
    assert step_result("no numbers") is None
    assert first_wrong_step(STEPS, ["36", "26"]) == 2


def test_synthetic_problems_round_trip():
    for problem in generate_problems(12, [2, 3, 4], seed=3):
        steps = number_steps(problem.solution or "")
        # Break one step's result at each position in turn.
        for k in range(1, len(steps) + 1):
            broken = list(steps)
            broken[k - 1] = broken[k - 1].rsplit("=", 1)[0] + "= 99999 things."
            path = "\n".join(f"Step {i}: {s}" for i, s in enumerate(broken, 1))
            path += "\nThe answer is 99999."
            parsed = parse_correction(reference_correction(problem.steps or [], problem.answer,
                                                           path), path, "synthetic")
            assert isinstance(parsed, ParsedCorrection)
            assert parsed.incorrect_step == k
            assert verify_correction(parsed, problem.answer, "synthetic").correct


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="gold steps"):
        reference_correction([], "1", "Step 1: 1.")
    with pytest.raises(ValueError, match="no steps"):
        reference_correction(STEPS, ANSWER, "   ")
