"""`lema_compat`: one hand-written case (or more) for every rule of the LeMa paper's evaluation."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lema.grading
import lema.verdict
from lema.grading import Verdict, grade, grade_many
from lema.lema_compat_grading import as_completion, read_gsm8k_answer, read_math_answer, to_number

GSM8K_READS = [  # (completion, number read; None where the paper's code reads its 0 "no answer")
    ("She has 5 + 7 = 12 apples. The answer is 12.", 12.0),
    ("The answer is: 12", 12.0),  # "The answer is: " counts as "The answer is "
    ("So she has 12 apples.", None),  # no marker
    ("#### 12", None),
    ("The answer is 3. No wait, The answer is 4.", 4.0),  # the last marker
    ("The answer is 5.\n\nQ: How many legs? The answer is 7.", 5.0),  # a following turn is cut
    ("The answer is 5.\n\nQuestion: How many legs? The answer is 7.", 5.0),
    ("The answer is 12..", 12.0),  # a trailing period, twice
    ("The answer is £12.", 12.0),
    ("The answer is €1,000.", 1000.0),  # currency and commas
    ("The answer is 1,234.", 1234.0),
    ("The answer is 3 + 4 = 7.", 7.0),  # after the last `=`
    ("The answer is <<12>>13", 13.0),  # after the last `>>`
    ("The answer is <<3*4=12>>12.", 12.0),
    ("The answer is 12 apples.", 12.0),  # letters dropped...
    ("The answer is 3 hours and 20 minutes.", 320.0),  # ...and the digits run together
    ("The answer is 5:30", 5.0),  # cut at `:`
    ('The answer is "$18".', 18.0),  # `$` and `"` dropped
    ("The answer is 25%.", 25.0),  # a trailing `%` dropped
    ("The answer is 25% of 80.", None),  # a `%` anywhere else: no answer
    ("The answer is 12/", 12.0),  # a trailing `/` dropped
    ("The answer is 1 000", 1000.0),  # spaces dropped
    ("The answer is 3/4.", 0.75),  # + - * / evaluated as Python arithmetic
    ("The answer is (1+2)*3", 9.0),
    ("The answer is 2**3", 8.0),
    ("The answer is 2^3+1", 6.0),  # `^` is Python's xor there: 2 ^ 4
    ("The answer is -5", -5.0),
    ("The answer is 1_000", 1000.0),
    ("The answer is 08+1", None),  # not Python: no answer
    ("The answer is **12**.", None),
    ("The answer is 5/0", None),
    ("The answer is 2**10000", None),  # past a float
    ("The answer is ", None),
    ("The answer is 0.", 0.0),  # a real zero is an answer
]


@pytest.mark.parametrize("completion, expected", GSM8K_READS)
def test_gsm8k_reading(completion, expected):
    assert read_gsm8k_answer(completion) == expected


MATH_READS = [  # (completion, normalised answer read; None where the paper's code reads "")
    ("We get \\boxed{1}, then \\boxed{\\frac{2}{3}}.", "\\frac{2}{3}"),  # no marker: the last box
    ("So \\fbox{5}.", None),  # found but never unwrapped by the paper's code
    ("The value is 5.", None),  # no marker, no box
    ("The answer is: \\frac{1}{2}", "\\frac{1}{2}"),
    ("The answer is 5.", "5"),  # one trailing period
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),  # every `$`
    ("The answer is $\\boxed{7}$.", "7"),  # a box inside is unwrapped
    ("So \\boxed{3}. The answer is 4", "4"),  # the marker wins over a box
    ("The answer is 5\nQ: What is 2+2?", "5"),  # cut at "Q:"
    ("The answer is 5\nQuestion: What is 2+2?", "5"),
    # the Hendrycks MATH normalisation
    ("The answer is \\dfrac{1}{2}", "\\frac{1}{2}"),
    ("The answer is \\tfrac{1}{2}", "\\frac{1}{2}"),
    ("The answer is \\left( 1, 2 \\right)", "(1,2)"),
    ("The answer is 90^\\circ", "90"),
    ("The answer is 90^{\\circ}", "90"),
    ("The answer is 5\\text{ cm}", "5"),  # a unit after `\text{ `
    ("The answer is 5\\text{ cm}\\text{ m}", None),  # two units: no answer
    ("The answer is 50\\%", "50"),
    ("The answer is 1,\\!000", "1,000"),
    ("The answer is .5", "\\frac{1}{2}"),  # a leading 0, then 0.5 becomes 1/2
    ("The answer is k = 3", "3"),  # a short left-hand side dropped
    ("The answer is \\sqrt3", "\\sqrt{3}"),
    ("The answer is 3 \\sqrt 2", "3\\sqrt{}2"),  # braces go on before spaces go
    ("The answer is \\frac12", "\\frac{1}{2}"),
    ("The answer is \\frac1{72}", "\\frac{1}{72}"),
    ("The answer is \\frac1", "\\frac1"),  # too short to fix: left as it is
    ("The answer is 2\\frac", None),  # a bare `\frac` at the end: no answer
    ("The answer is 2\\sqrt", None),
    ("The answer is 1/2", "\\frac{1}{2}"),
    ("The answer is -1/2", "\\frac{-1}{2}"),
    ("The answer is x = 5, y = 3", "x=5,y=3"),
    ("The answer is 5\\\\6", "5\\6"),  # `\\` becomes `\`
]


@pytest.mark.parametrize("completion, expected", MATH_READS)
def test_math_reading(completion, expected):
    assert read_math_answer(completion) == expected


@pytest.mark.parametrize(
    "gold, kind, completion",
    [("#### 1,800", "numeric", "The answer is 1,800"), ("1800", "numeric", "The answer is 1800"),
     ("Add them.\nThe answer is: 7", "numeric", "Add them.\nThe answer is: 7"),
     ("\\frac{1}{2}", "latex", "The answer is \\frac{1}{2}"),
     ("So $\\boxed{\\frac12}$.", "latex", "So $\\boxed{\\frac12}$.")],
)
def test_golds_are_read_as_the_papers_reference_completions(gold, kind, completion):
    assert as_completion(gold, kind) == completion


VERDICTS = [  # (prediction, gold, dataset, correct)
    ("3 + 4 = 7. The answer is 7.", "7", "gsm8k", True),  # our own prompts' format
    ("The answer is: 1,800 dollars", "#### 1,800", "gsm8k", True),
    ("The answer is 18.0", "18", "gsm8k", True),  # compared as floats
    ("The answer is 17.6", "#### 18", "gsm8k", False),  # no rounding
    ("#### 18", "#### 18", "gsm8k", False),  # no marker
    ("The answer is 0.5", "0.50", "my_numeric_set", True),  # a plain-number gold: GSM8K rules
    ("The answer is 0.5", "\\frac{1}{2}", "my_latex_set", True),  # else MATH rules
    ("The answer is: \\dfrac{1}{2}.", "So $\\boxed{\\frac12}$.", "math", True),
    ("The answer is: 0.5", "\\boxed{\\frac{1}{2}}", "math", True),
    ("The answer is: 5\\text{ cm}", "5", "math", True),
    ("The answer is: \\frac{2}{4}", "\\frac{1}{2}", "math", False),  # strings, no algebra
    ("So \\boxed{\\frac{1}{2}}.", "\\frac12", "math", True),  # no marker: the last box
    ("The answer is: k = 3", "3", "math500", True),
]


@pytest.mark.parametrize("prediction, gold, dataset, correct", VERDICTS)
def test_lema_compat_verdicts(prediction, gold, dataset, correct):
    assert grade(prediction, gold, dataset, mode="lema_compat").correct is correct


def test_verdict_reasons():
    rows = [("The answer is 18.", "#### 18", "gsm8k"), ("The answer is 17.", "18", "gsm8k"),
            ("I do not know.", "18", "gsm8k"), ("The answer is 18.", "no number", "gsm8k"),
            ("The answer is: \\frac{2}{3}", "\\frac{1}{2}", "math")]
    assert grade_many(rows, mode="lema_compat") == [
        Verdict(True, "18", "18", None), Verdict(False, "17", "18", "mismatch"),
        Verdict(False, None, "18", "no answer found"), Verdict(False, "18", None, "unparseable gold"),
        Verdict(False, "\\frac{2}{3}", "\\frac{1}{2}", "mismatch")]


def test_robust_stays_the_default_and_accepts_what_lema_compat_rejects():
    for prediction, gold, dataset in [("So \\boxed{\\frac{2}{4}}.", "\\frac{1}{2}", "math"),
                                      ("#### 18", "#### 18", "gsm8k"), ("Thus 18 in total.", "18", "gsm8k")]:
        assert grade(prediction, gold, dataset).correct
        assert not grade(prediction, gold, dataset, mode="lema_compat").correct


@pytest.mark.parametrize("text", ["__import__('os')", "[5][0]+1", "(5).real+1", "lambda: 1", "5<6-1"])
def test_arithmetic_is_numbers_only(text):
    assert to_number(text) is None


def test_verdict_has_its_own_module_and_grading_re_exports_it():
    assert lema.grading.Verdict is lema.verdict.Verdict
    code = "import sys, lema.lema_compat_grading; print('lema.grading' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"  # lema_compat_grading does not import the robust grader
