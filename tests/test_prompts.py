"""Prompt files render; free-form solutions split into numbered steps."""

from __future__ import annotations

import pytest

from lema.prompts import (
    CORRECTION_JSON_SCHEMA,
    CORRECTOR_VARIANTS,
    build_corrector_messages,
    build_cot_messages,
    format_numbered,
    format_solution,
    load_prompt,
    number_steps,
    split_solution,
)

GSM8K_GOLD = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
              "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")


@pytest.mark.parametrize(
    ("solution", "steps", "answer_line"),
    [
        (GSM8K_GOLD, ["Natalia sold 48/2 = 24 clips in May.",
                      "Natalia sold 48+24 = 72 clips altogether in April and May."],
         "The answer is 72."),
        ("Let's go.\n**Step 1:** a = 3.\n**Step 2:** b = 4\nso c = 7.\n\nThe answer is 7.",
         ["a = 3.", "b = 4\nso c = 7."], "The answer is 7."),
        ("### Step 1. x = 2\n### Step 2) y = 3", ["x = 2", "y = 3"], None),
        ("1. Add 2 and 3 to get 5.\n2. Double it: 10.\nThe answer is 10",
         ["Add 2 and 3 to get 5.", "Double it: 10."], "The answer is 10"),
        ("We have $x+1=3$. Therefore $x=2$. So the answer is $\\boxed{2}$.",
         ["We have $x+1=3$.", "Therefore $x=2$."], "So the answer is $\\boxed{2}$."),
        ("We compute\n$$\nx = 2\n$$\nThen y = 3.", ["We compute\n$$\nx = 2\n$$", "Then y = 3."],
         None),
        ("Just one step.", ["Just one step."], None),
        ("", [], None),
    ],
)
def test_split_solution(solution, steps, answer_line):
    assert split_solution(solution) == (steps, answer_line)
    assert number_steps(solution) == steps


def test_format_numbered_and_solution():
    assert format_numbered(["a", " b "]) == "Step 1: a\nStep 2: b"
    assert format_solution(GSM8K_GOLD) == (
        "Step 1: Natalia sold 48/2 = 24 clips in May.\n"
        "Step 2: Natalia sold 48+24 = 72 clips altogether in April and May.\nThe answer is 72.")
    assert format_solution("Step 1: 2 + 2 = 4.\nThe answer is 5.", answer="4").endswith(
        "Step 1: 2 + 2 = 4.\nThe answer is 4.")


def test_cot_messages():
    messages = build_cot_messages("What is 2 + {2}?")
    assert [m["role"] for m in messages] == ["user"]
    text = messages[0]["content"]
    assert "What is 2 + {2}?" in text and "Step 1:" in text and "The answer is X." in text


@pytest.mark.parametrize("variant", CORRECTOR_VARIANTS)
def test_corrector_messages_number_the_solution(variant):
    messages = build_corrector_messages("How many clips?", GSM8K_GOLD, variant)
    user = messages[-1]["content"]
    assert messages[-1]["role"] == "user"
    assert "How many clips?" in user
    assert "Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2:" in user
    assert "The answer is 72." in user and "<<" not in user and "{solution}" not in user
    if variant == "few_shot":
        roles = [m["role"] for m in messages]
        assert roles[0] == "system" and roles.count("assistant") >= 2
        assert all("Incorrect Step: Step" in m["content"] for m in messages
                   if m["role"] == "assistant")
    if variant == "json":
        assert "incorrect_step" in user
    if variant == "zero_shot":
        assert len(messages) == 1


def test_json_schema_fields():
    assert set(CORRECTION_JSON_SCHEMA["required"]) == {
        "incorrect_step", "explanation", "corrected_solution", "final_answer"}
    assert CORRECTION_JSON_SCHEMA["properties"]["incorrect_step"]["type"] == "integer"


def test_unknown_prompt_names_choices():
    with pytest.raises(ValueError, match="available: .*cot"):
        load_prompt("nope")
    with pytest.raises(ValueError, match="not found"):
        build_corrector_messages("q", "s", "ten_shot")


def test_prompt_from_path(tmp_path):
    bad = tmp_path / "corrector_mine.yaml"
    bad.write_text("user: 'Question: {question}'\n")
    with pytest.raises(ValueError, match="lacks \\['solution'\\]"):
        load_prompt(str(bad))
    good = tmp_path / "mine.yaml"
    good.write_text("system: Be brief.\nuser: 'Q: {question}'\n")
    assert build_cot_messages("1+1?", str(good)) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q: 1+1?"}]


def test_paper_prompts_render_as_the_papers_plain_text():
    from lema.prompts import render_plain

    cot = render_plain(build_cot_messages("What is 2 + 3?", "paper_cot"))
    assert cot == ("Please solve the following math problem.\nQuestion: What is 2 + 3?\n"
                   "Answer: Let's think step by step.\n")
    messages = build_corrector_messages("What is 2 + 3?", "2 + 3 = 6.\nThe answer is 6.", "paper")
    text = render_plain(messages)
    assert text.startswith("For the following math word problems, the original solutions may contain errors.")
    assert text.endswith("Question: What is 2 + 3?\nOriginal Solution:\n{\nStep 1: 2 + 3 = 6.\n"
                         "Step 2: The answer is 6.\n}\n")
    assert text.count("Incorrect Step: Step") == 2  # our two worked examples, in the paper's layout
