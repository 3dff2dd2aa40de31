"""The grader: extraction, equivalence tables (both directions), modes, and the time bound."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lema import verify_worker
from lema.grading import (
    Verdict,
    answers_equal,
    extract_answer,
    gold_answer,
    grade,
    grade_many,
    normalize_answer,
)

ADVERSARIAL = "The answer is $9^{9^{9^{9^{9}}}}$"  # sympy would compute for ever
BOUND_S = 1.0
SLACK_S = 1.5  # pipe round trip, killing the worker, a busy 2-core machine


@pytest.fixture(scope="module", autouse=True)
def warm_worker():
    """Start a math-verify worker once, so timings below measure grading, not its start."""
    assert grade("The answer is $\\sqrt{2}$", "\\sqrt{2}", "math").correct


# ---------------------------------------------------------------- extraction
EXTRACTION = [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "gsm8k", "18"),
    ("The answer is 1,234.", "gsm8k", "1234"),
    ("The answer is $1,234.50.", "gsm8k", "1234.5"),
    ("The answer is \\$18.00.", "gsm8k", "18"),
    ("The final answer is 12 apples.", "gsm8k", "12"),
    ("Answer: 5 cm", "gsm8k", "5"),
    ("The answer is 5 \\text{ cm}.", "gsm8k", "5"),
    ("The answer is 50%.", "gsm8k", "50"),
    ("The answer is -7.", "gsm8k", "-7"),
    ("The answer is -0.25", "gsm8k", "-0.25"),
    ("So she uses 3/4 of the flour.", "gsm8k", "0.75"),
    ("2 + 3 = 5\nA: 5", "gsm8k", "5"),
    ("He has 3 apples and buys 4 more, so 7 apples.", "gsm8k", "7"),
    ("Thus 3-5 = -2", "gsm8k", "-2"),
    ("The answer is x = 8.", "gsm8k", "8"),
    ("I got \\boxed{12} first, but the answer is 13.", "gsm8k", "13"),
    ("The answer is 12. It took 3 steps.", "gsm8k", "12"),
    ("No numbers here.", "gsm8k", None),
    ("Hence $\\boxed{\\frac{9}{4}}$.", "math", "\\frac{9}{4}"),
    ("So \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.", "math", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("First \\boxed{1}, then \\fbox{2}.", "math", "2"),
    ("The nested \\boxed{\\frac{\\sqrt{3}}{\\{2\\}}} case", "math", "\\frac{\\sqrt{3}}{\\{2\\}}"),
    ("The final answer is $10$. I hope it is correct.", "math", "10"),
    ("The answer is: \\frac{1}{2}", "math", "\\frac{1}{2}"),
    ("The answer is (C).", "math", "(C)"),
    ("We may check our answer: 3 + 4 = 7. So \\boxed{7}.", "math", "7"),
    ("\\boxed 5", "math", "5"),
    # a prediction that is itself the final answer is read whole
    ("\\frac{1}{2}", "math", "\\frac{1}{2}"),
    ("(1, 2)", "math", "(1, 2)"),
    ("x^2+1", "math", "x^2+1"),
    ("$\\frac{3}{4}$", "math", "\\frac{3}{4}"),
    ("\\(\\sqrt{2}\\)", "math", "\\sqrt{2}"),
    ("\\pi", "math", "\\pi"),
    ("x = 5", "math", "x = 5"),
    ("\\text{Monday}", "math", "\\text{Monday}"),
    ("even", "math", "even"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "math", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("1,250", "gsm8k", "1250"),
    ("$80", "gsm8k", "80"),
    ("\\$1,250.00", "gsm8k", "1250"),
    ("3 + 4 = 7", "math", "7"),  # working, not an answer: its last number
    ("Step 3: 20.", "gsm8k", "20"),  # a label, not an answer
    ("I do not know.", "math", None),
    # several boxes with only separators between them are one list answer
    ("\\[ \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1} \\]", "math", "-2, 1"),
    ("\\boxed{1}, \\boxed{2}", "math", "1, 2"),
    ("\\boxed{5} and \\boxed{5}", "math", "5"),
    # a LaTeX answer stated in a sentence: its last math span, unless a number follows it
    ("Therefore $x \\geq 5$ is the solution.", "math", "x \\geq 5"),
    ("The final answer is the number 12.", "math", "12"),
    ("The volume of $ABCD$ is 120.", "math", "120"),
]


@pytest.mark.parametrize("text, dataset, expected", EXTRACTION)
def test_extract_answer(text, dataset, expected):
    assert extract_answer(text, dataset) == expected


GOLDS = [
    ("18", "gsm8k", "18"),
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 1,800", "gsm8k", "1800"),
    ("So we get $\\boxed{\\frac{\\pi}{2}}$.", "math", "\\frac{\\pi}{2}"),
    ("\\frac{\\pi}{2}", "math", "\\frac{\\pi}{2}"),
    ("3 + 4 = 7 apples.\nA: 7", "gsm8k", "7"),
    ("The answer is: 42", "gsm8k", "42"),
    ("no number at all", "gsm8k", None),
    ("   ", "math", None),
]


@pytest.mark.parametrize("gold, dataset, expected", GOLDS)
def test_gold_answer(gold, dataset, expected):
    assert gold_answer(gold, dataset) == expected


@pytest.mark.parametrize(
    "answer, dataset, expected",
    [("$1,234.00", "gsm8k", "1234"), ("18 dollars", "gsm8k", "18"), ("\\dfrac{1}{2}", "math",
     "\\frac{1}{2}"), ("\\text{(C)}", "math", "C"), ("x = 5", "math", "5"), ("10{,}000", "math",
     "10000"), ("30^\\circ", "math", "30"), ("\\text{Monday}", "math", "Monday")],
)
def test_normalize_answer_is_canonical_and_stable(answer, dataset, expected):
    assert normalize_answer(answer, dataset) == expected
    assert normalize_answer(expected, dataset) == expected


# ---------------------------------------------------------------- equivalence tables
EQUAL = [
    ("18", "18.0", "gsm8k"), ("18", "18.00", "gsm8k"), ("18", "$18", "gsm8k"),
    ("18", "18 dollars", "gsm8k"), ("1234", "1,234", "gsm8k"), ("0.5", "1/2", "gsm8k"),
    ("-3", "-3.0", "synthetic"), ("50", "50%", "gsm8k"), ("7", "\\$7", "gsm8k"),
    ("\\frac{1}{2}", "0.5", "math"), ("\\dfrac{1}{2}", "\\frac12", "math"),
    ("x = 5", "5", "math"), ("\\text{(C)}", "C", "math"), ("\\textbf{(A)}", "A", "math"),
    ("50\\%", "50", "math"), ("10{,}000", "10000", "math"), ("1,234", "1234", "math"),
    ("\\text{Monday}", "monday", "math"), ("30^\\circ", "30", "math"),
    ("5\\text{ cm}^2", "5", "math"), ("2\\sqrt{2}", "\\sqrt{8}", "math"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", "math"),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", "math500"),
    ("[1,3)", "[1, 3)", "math"), ("(-\\infty, 2]", "(-\\infty,2]", "math"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "math"),
    ("\\{1,2,3\\}", "3,2,1", "math"), ("a^2+b^2", "b^2+a^2", "math"),
    ("-\\frac{2}{3}", "-2/3", "math"), ("18 dollars", "18", "math"), ("\\$4.50", "4.5", "math"),
    ("x=1, x=2", "1, 2", "math"), ("\\text{even}", "\\text{Even}", "math"),
    ("12", "12.0", "my_local_set"), ("\\frac{1}{4}", "0.25", "my_local_set"),
    ("3\\sqrt13", "3\\sqrt{13}", "math"), ("10/9", "\\frac{10}{9}", "math"), ("(1,4.5)", "(1,\\frac{9}{2})", "math"),
    ("11,\\! 111", "11111", "math"), ("52_8", "52", "math"), ("4210_{5}", "4210_5", "math"),
    ("1,22", "1.22", "math"), ("y = 2x + 3", "2x+3", "math"), ("\\cfrac{1}{3}", "1/3", "math"),
    ("\\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6}", "\\frac{5}{6}", "math"),
]
NOT_EQUAL = [
    ("18", "17", "gsm8k"), ("18", "180", "gsm8k"), ("0.33", "1/3", "gsm8k"),
    ("-3", "3", "gsm8k"), ("1234", "1.234", "gsm8k"), ("5", "x", "gsm8k"),
    ("\\frac{1}{2}", "\\frac{1}{3}", "math"), ("2\\sqrt{3}", "2", "math"),
    ("\\text{(C)}", "B", "math"), ("(1,2)", "[1,2]", "math"), ("\\sqrt{2}", "2", "math"),
    ("\\text{Monday}", "Tuesday", "math"), ("x^2", "2x", "math"), ("30^\\circ", "60", "math"),
    ("\\{1,2\\}", "\\{1,3\\}", "math"), ("\\pi", "3", "math"), ("5x", "5", "math"),
    ("12", "13", "my_local_set"), ("\\frac{\\pi}{2}", "\\pi", "my_local_set"),
    ("3\\sqrt13", "3\\sqrt{14}", "math"), ("53_8", "52_8", "math"), ("52_8", "52_9", "math"),
    ("32, 349", "32349", "math"), ("0,111", "111", "math"), ("1,000", "1.000", "math"),
]


@pytest.mark.parametrize("a, b, dataset", EQUAL)
def test_equal_both_directions(a, b, dataset):
    assert answers_equal(a, b, dataset) and answers_equal(b, a, dataset)


@pytest.mark.parametrize("a, b, dataset", NOT_EQUAL)
def test_not_equal_both_directions(a, b, dataset):
    assert not answers_equal(a, b, dataset) and not answers_equal(b, a, dataset)


# math-verify as its docs and peers call it (gold wrapped in `$...$`) gets these wrong; we do not.
# Each case also notes the bare call, verify(parse(gold), parse(prediction)).
VS_MATH_VERIFY = [  # (gold, prediction, equivalent)
    ("\\text{(C)}", "The answer is (C).", True),
    ("\\text{Monday}", "The answer is Monday.", True),
    ("\\text{(B)}", "The final answer is B", True),
    ("18", "The answer is \\$18.00.", True),
    ("\\frac{\\pi}{2}", "The answer is \\frac{1}{2}\\pi.", True),
    ("\\sqrt{2}", "The answer is \\sqrt2.", True),
    ("(1,2)", "The answer is (1, 2).", True),
    ("5", "\\fbox{5}", True),
    ("3\\sqrt{13}", "So $\\boxed{3\\sqrt13}$.", True),
    ("\\sqrt{51}", "\\sqrt{51}", True),
    ("6+9i", "6+9i", True),
    ("\\pi", "\\pi", True),
    ("x^2+1", "x^2 + 1", True),
    ("(1,4.5)", "(1,\\frac{9}{2})", True),
    ("80", "\\$80", True),
    ("\\text{(E)}", "E", True),
    ("52_8", "52_9", False),  # math-verify drops the base
]


@pytest.mark.parametrize("gold, prediction, expected", VS_MATH_VERIFY)
def test_right_where_math_verify_is_wrong(gold, prediction, expected):
    from benchmarks.math_verify_baseline import math_verify_fair  # imports math-verify

    assert grade(prediction, gold, "math").correct is expected
    if math_verify_fair(gold, prediction) is expected:
        pytest.skip("math-verify ($-wrapped gold) now gets this case right too")


def test_agreement_figures_against_math_verify_each_named(capsys):
    """The table's figures: ours, math-verify called fairly ($-wrapped gold), and bare."""
    from benchmarks.math_verify_baseline import math_verify_bare, math_verify_fair  # imports math-verify

    cases = [(p, g, expected) for g, p, expected in VS_MATH_VERIFY]
    cases += [(a, b, True) for a, b, d in EQUAL if d != "gsm8k"] + [(a, b, False) for a, b, d in NOT_EQUAL
                                                                      if d != "gsm8k"]
    ours = sum(grade(p, g, "math").correct is e for p, g, e in cases)
    fair = sum(math_verify_fair(g, p) is e for p, g, e in cases)
    bare = sum(math_verify_bare(g, p) is e for p, g, e in cases)
    with capsys.disabled():
        print(f"\n{len(cases)} grader cases: ours {ours}, math-verify fair ($-wrapped gold) {fair}, "
              f"math-verify bare call {bare}")
    assert ours == len(cases) and ours >= fair


# ---------------------------------------------------------------- verdicts and modes
def test_verdict_reasons():
    rows = [
        ("The answer is 18.", "#### 18", "gsm8k"),
        ("The answer is 17.", "#### 18", "gsm8k"),
        ("I do not know.", "#### 18", "gsm8k"),
        ("The answer is 18.", "a gold with no number", "gsm8k"),
        ("So $\\boxed{\\frac{1}{2}}$.", "$\\boxed{0.5}$", "math"),
    ]
    verdicts = grade_many(rows)
    assert [v.reason for v in verdicts] == [None, "mismatch", "no answer found",
                                            "unparseable gold", None]
    assert verdicts[0] == Verdict(True, "18", "18", None)
    assert verdicts[2].predicted_answer is None and verdicts[2].gold_answer == "18"


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"mode": "strict"}, "robust, lema_compat"), ({"dataset": ""}, "gsm8k"),
     ({"dataset": "bad name!"}, "math500"), ({"timeout_s": 0}, "timeout_s")],
)
def test_bad_arguments_raise_naming_choices(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        grade("The answer is: \\sqrt{2}", "\\sqrt{3}", **{"dataset": "math", **kwargs})


# ---------------------------------------------------------------- the time bound
def _timed_grade() -> tuple[Verdict, float]:
    start = time.monotonic()
    verdict = grade(ADVERSARIAL, "5", "math", timeout_s=BOUND_S)
    return verdict, time.monotonic() - start


def test_adversarial_input_is_bounded_off_the_main_thread():
    out: list[tuple[Verdict, float]] = []
    thread = threading.Thread(target=lambda: out.append(_timed_grade()))
    thread.start()
    thread.join(BOUND_S + SLACK_S + 5)
    assert out, "grading hung in a thread"
    verdict, elapsed = out[0]
    assert verdict == Verdict(False, "9^{9^{9^{9^{9}}}}", "5", "timeout")
    assert elapsed < BOUND_S + SLACK_S


def test_adversarial_input_is_bounded_in_an_asyncio_handler():
    async def handler() -> tuple[Verdict, float]:
        return _timed_grade()

    verdict, elapsed = asyncio.run(asyncio.wait_for(handler(), BOUND_S + SLACK_S + 5))
    assert verdict.reason == "timeout" and elapsed < BOUND_S + SLACK_S


def test_concurrent_threads_get_their_own_answers():
    rows = [(f"The answer is $\\sqrt{{{n}}}$", f"\\sqrt{{{n}}}", "math") for n in range(2, 10)]
    results: dict[int, bool] = {}

    def work(i: int) -> None:
        prediction, gold, dataset = rows[i]
        wrong = rows[(i + 1) % len(rows)][1]
        results[i] = grade(prediction, gold, dataset).correct and not grade(
            prediction, wrong, dataset).correct

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: True for i in range(len(rows))}


def test_worker_past_the_bound_is_killed():
    """A bound shorter than one comparison makes the parent kill the worker mid-call."""
    worker = verify_worker.VerifyWorker()
    assert worker.verify([("\\sqrt{8}", "2\\sqrt{2}")], timeout_s=1e-4) == ["timeout"]
    assert not worker.alive


def test_batch_goes_on_after_a_killed_worker():
    pairs = [("\\sqrt{8}", "2\\sqrt{2}"), ("\\frac{\\pi}{3}", "\\frac{\\pi}{3}")]
    results = verify_worker.verify_latex_pairs(pairs, timeout_s=1e-4)
    assert results[0] == "timeout" and set(results) <= {"timeout", "true"}
    assert verify_worker.verify_latex_pairs(pairs, timeout_s=5.0) == ["true", "true"]
