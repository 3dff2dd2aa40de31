"""The corrector-reply parser on replies of every shape, and verification both ways."""

from __future__ import annotations

import json

import pytest

from lema.correction import (
    ParsedCorrection,
    ParseFailure,
    format_correction_reply,
    parse_correction,
    verify_correction,
)

SOLUTION = ("Step 1: She makes 4 * 15 = 60 muffins.\n"
            "Step 2: After selling 38, she has 60 - 38 = 32 muffins.\n"
            "Step 3: After giving 7 away, she has 32 - 7 = 25 muffins.\n"
            "The answer is 25.")
FIX = ("Step 1: She makes 4 * 15 = 60 muffins.\n"
       "Step 2: After selling 38, she has 60 - 38 = 22 muffins.\n"
       "Step 3: After giving 7 away, she has 22 - 7 = 15 muffins.\n"
       "The answer is 15.")
WHY = "60 - 38 is 22, not 32."

# (reply, incorrect step, explanation, predicted answer); each parses.
GOOD = [
    (format_correction_reply(2, WHY, FIX), 2, WHY, "15"),
    (f"Incorrect Step: Step 2.\nExplanation: {WHY}\nCorrect Solution:\n{FIX}", 2, WHY, "15"),
    (f"Sure, let me check.\n\n**Incorrect Step:** 2\n\n**Explanation:** {WHY}\n\n"
     f"**Correct Solution:**\n{FIX}\n\nI hope this helps!", 2, WHY, "15"),
    (f"**Incorrect Step**: Step 2\n**Explanation**: {WHY}\n**Corrected Solution**:\n{FIX}",
     2, WHY, "15"),
    (f"### Incorrect Step\nStep two\n\n### Explanation\n{WHY}\n\n### Corrected Solution\n{FIX}",
     2, WHY, "15"),
    (f"## First incorrect step: the second step\n## Reason: {WHY}\n## Correction\n{FIX}",
     2, WHY, "15"),
    (f"1. Incorrect step: 2.\n2. Explanation: {WHY}\n3. Correct solution:\n{FIX}", 2, WHY, "15"),
    (f"incorrect step - step 3\nexplanation - 22 - 7 is 15.\ncorrect solution -\n{FIX}",
     3, "22 - 7 is 15.", "15"),
    (f"Incorrect Step: Step 2. Explanation: {WHY} Correct Solution: Step 2: 60 - 38 = 22. "
     "Step 3: 22 - 7 = 15. The answer is 15.", 2, WHY, "15"),
    (f"Incorrect Step: Step 2. The subtraction is wrong.\nCorrect Solution:\n{FIX}",
     2, "The subtraction is wrong.", "15"),
    (f"Incorrect Step: Step 2\nExplanation: {WHY}\n{FIX}", 2, WHY, "15"),  # no solution header
    (f"The mistake is in step 2: {WHY}\n{FIX}", 2, f"The mistake is in step 2: {WHY}", "15"),
    (f"Step 2 is wrong because {WHY}\n\nCorrected solution:\n{FIX}",
     2, f"Step 2 is wrong because {WHY}", "15"),
    (f"Incorrect Step: Step 2.\nExplanation: {WHY}\nCorrect Solution:\n"
     "Step 2: 60 - 38 = 22.\nStep 3: 22 - 7 = 15.\nSo the final answer is $\\boxed{15}$.",
     2, WHY, "15"),
    (f"Incorrect Step: Step 1.\nExplanation: x\nCorrect Solution:\n{FIX}", 1, "x", "15"),
    (f"Incorrect Step: Step 3.\nExplanation: {WHY}\nCorrect Solution:\nStep 3: 20.",
     3, WHY, "20"),  # no answer line: the last number
    # JSON, bare, fenced, with chatter, string step, list solution, answer only in final_answer
    (json.dumps({"incorrect_step": 2, "explanation": WHY, "corrected_solution": FIX,
                 "final_answer": "15"}), 2, WHY, "15"),
    ("Here you go:\n```json\n" + json.dumps({
        "incorrect_step": 2, "explanation": WHY, "corrected_solution": FIX,
        "final_answer": "15"}, indent=2) + "\n```\nDone.", 2, WHY, "15"),
    ("```\n" + json.dumps({"incorrect_step": "Step 2", "explanation": WHY,
                           "corrected_solution": ["Step 2: 22.", "Step 3: 15."],
                           "final_answer": "15"}) + "\n```", 2, WHY, "15"),
    (json.dumps({"incorrect_step": 2.0, "explanation": WHY,
                 "corrected_solution": "Step 2: 60 - 38 = 22.\nStep 3: 22 - 7 = 17.",
                 "final_answer": "17"}), 2, WHY, "17"),
    ("Reasoning first.\n" + json.dumps({"incorrect_step": 3, "explanation": "bad",
                                        "corrected_solution": "Step 3: 15.\nThe answer is 15.",
                                        "final_answer": "15"}), 3, "bad", "15"),
]


@pytest.mark.parametrize(("reply", "step", "explanation", "answer"), GOOD)
def test_parses(reply, step, explanation, answer):
    parsed = parse_correction(reply, SOLUTION)
    assert isinstance(parsed, ParsedCorrection), parsed
    assert parsed.incorrect_step == step
    assert parsed.explanation == explanation
    assert parsed.predicted_answer == answer
    assert parsed.corrected_solution.startswith("Step")
    assert "hope" not in parsed.corrected_solution and "Done" not in parsed.corrected_solution


BAD = [
    ("", "empty reply"),
    ("   \n ", "empty reply"),
    ("I don't know how to solve this.", "no incorrect step found"),
    ("asdf qwer {{ zxcv", "no incorrect step found"),
    (f"Incorrect Step: none, every step is right.\nCorrect Solution:\n{FIX}",
     "no incorrect step found"),
    (f"Incorrect Step: Step 7.\nExplanation: {WHY}\nCorrect Solution:\n{FIX}",
     "incorrect_step 7 out of range 1..3"),
    (f"Incorrect Step: Step 0.\nExplanation: {WHY}\nCorrect Solution:\n{FIX}",
     "incorrect_step 0 out of range 1..3"),
    (f"Incorrect Step: Step 2.\nExplanation: {WHY}", "no corrected solution"),
    (f"Incorrect Step: Step 2.\nExplanation: {WHY}\nCorrect Solution:\n", "no corrected solution"),
    (f"Incorrect Step: Step 2.\nCorrect Solution:\n{FIX}", "no explanation"),
    ('{"incorrect_step": 2, "explanation": "x", ', "invalid JSON: "),
    ("```json\n{'incorrect_step': 2}\n```", "invalid JSON: "),
    (json.dumps({"incorrect_step": 9, "explanation": "x", "corrected_solution": FIX,
                 "final_answer": "15"}), "incorrect_step 9 out of range 1..3"),
    (json.dumps({"incorrect_step": None, "explanation": "x", "corrected_solution": FIX}),
     "no incorrect step found"),
    (json.dumps({"incorrect_step": "somewhere", "explanation": "x", "corrected_solution": FIX}),
     "no incorrect step found: incorrect_step is 'somewhere'"),
    (json.dumps({"incorrect_step": 2, "explanation": "x", "corrected_solution": ""}),
     "no corrected solution"),
    ("[1, 2, 3]\n", "no incorrect step found"),
]


@pytest.mark.parametrize(("reply", "reason"), BAD)
def test_rejects_with_reason(reply, reason):
    parsed = parse_correction(reply, SOLUTION)
    assert isinstance(parsed, ParseFailure), parsed
    assert parsed.reason.startswith(reason), parsed.reason


def test_range_follows_the_solutions_numbering():
    gsm8k = "She makes 60.\nShe has 32 left.\n#### 25"  # two steps, numbered like the prompt
    reply = format_correction_reply(3, WHY, FIX)
    assert parse_correction(reply, gsm8k).reason == "incorrect_step 3 out of range 1..2"
    assert parse_correction(format_correction_reply(2, WHY, FIX), gsm8k).incorrect_step == 2


def test_verify_both_ways():
    parsed = parse_correction(format_correction_reply(2, WHY, FIX), SOLUTION)
    right = verify_correction(parsed, "15", "gsm8k")
    assert right.correct and right.predicted_answer == "15"
    wrong = verify_correction(parsed, "16", "gsm8k")
    assert not wrong.correct and wrong.reason
    no_answer = ParsedCorrection(2, WHY, "Step 2: I give up.", None)
    assert not verify_correction(no_answer, "15", "gsm8k").correct


def test_math_answer():
    solution = "Step 1: $x^2 = 4$ so $x = 4$.\nThe answer is $\\boxed{4}$."
    reply = ("Incorrect Step: Step 1.\nExplanation: The square root of 4 is 2.\n"
             "Correct Solution:\nStep 1: $x^2 = 4$ so $x = 2$ (taking the positive root).\n"
             "The answer is $\\boxed{2}$.")
    parsed = parse_correction(reply, solution, "math")
    assert isinstance(parsed, ParsedCorrection)
    assert parsed.predicted_answer == "2"
    assert verify_correction(parsed, "2", "math").correct
    assert not verify_correction(parsed, "\\frac{1}{2}", "math").correct


PAPER_SOLUTION = ("Step 1: She makes 4 * 15 = 60 muffins.\nStep 2: After selling 38, she has 60 - 38 = 32 muffins.\n"
                  "Step 3: After giving 7 away, she has 32 - 7 = 25 muffins.\nThe answer is 25.")
PAPER_REPLY = ("Incorrect Step: Step 2.\nExplanation: 60 - 38 is 22.\nCorrect Solution:\n{\n...\n"
               "Step 2: After selling 38, she has 60 - 38 = 22 muffins.\n"
               "Step 3: After giving 7 away, she has 22 - 7 = 15 muffins.\nStep 4: The answer is 15.\n}")


def test_paper_layout_reply_keeps_the_original_prefix():
    parsed = parse_correction(PAPER_REPLY, PAPER_SOLUTION)
    assert parsed.incorrect_step == 2 and parsed.predicted_answer == "15"
    assert parsed.corrected_solution.startswith("Step 1: She makes 4 * 15 = 60 muffins.\nStep 2: After selling 38")
    assert "..." not in parsed.corrected_solution and "{" not in parsed.corrected_solution


def test_paper_layout_round_trip():
    parsed = parse_correction(PAPER_REPLY, PAPER_SOLUTION)
    reply = format_correction_reply(parsed.incorrect_step, parsed.explanation, parsed.corrected_solution, "paper")
    assert reply == PAPER_REPLY
    assert parse_correction(reply, PAPER_SOLUTION) == parsed
