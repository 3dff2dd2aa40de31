"""pass@k, majority vote and the per-problem summary, against hand-computed numbers."""

from __future__ import annotations

import pytest

from lema.metrics import majority_vote, paired_difference, pass_at_k, score_samples, wilson_interval


def same(a: str, b: str) -> bool:
    """Equal up to thousands separators."""
    return a.replace(",", "") == b.replace(",", "")


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (10, 3, 1, 0.3),  # pass@1 is c/n
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
        (4, 0, 2, 0.0),
        (4, 3, 2, 1.0),  # n - c < k: every pair holds a correct one
        (4, 4, 4, 1.0),
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 1 - 100/200, no overflow
        (200, 0, 100, 0.0),
    ],
)
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    "answers, expected",
    [
        (["5", "6", "5"], "5"),
        (["3", "4", "4", "3"], "3"),  # tie: the earliest seen wins
        ([None, None, "7"], "7"),  # None does not vote
        ([None, None], None),
        ([], None),
    ],
)
def test_majority_vote(answers, expected):
    assert majority_vote(answers) == expected


def test_majority_vote_uses_the_given_equivalence():
    answers = ["999", "1,000", "1000"]
    assert majority_vote(answers) == "999"  # three singletons: earliest
    assert majority_vote(answers, equal=same) == "1,000"  # the group's first member


def test_score_samples_hand_computed():
    samples = [
        [("5", True), ("5", True), ("6", False), (None, False)],  # first ok, c=2, vote 5 ok
        [("3", False), ("4", True), ("3", False), ("4", True)],  # c=2, vote tie -> 3 wrong
        [(None, False)] * 4,  # nothing extracted
        [("7", False), ("8", True), ("9", False), ("10", False)],  # c=1, vote 7 wrong
    ]
    s = score_samples(samples, ks=[1, 2])
    assert s["problems"] == 4 and s["n"] == 4
    assert s["pass@1"] == pytest.approx(1 / 4)  # only problem 1's first sample is right
    # pass@1 estimator: (2/4 + 2/4 + 0 + 1/4) / 4
    assert s["pass@k"][1] == pytest.approx(1.25 / 4)
    # pass@2: (1 - 1/6) + (1 - 1/6) + 0 + (1 - 3/6), over 4
    assert s["pass@k"][2] == pytest.approx((5 / 6 + 5 / 6 + 0 + 0.5) / 4)
    assert s["majority"] == pytest.approx(1 / 4)


def test_score_samples_majority_with_equivalence():
    samples = [[("999", False), ("1,000", True), ("1000", True)]]
    assert score_samples(samples)["majority"] == 0.0
    assert score_samples(samples, equal=same)["majority"] == 1.0


def test_score_samples_edges():
    assert score_samples([])["problems"] == 0
    with pytest.raises(ValueError, match="k=\\[3\\]"):
        score_samples([[("1", True), ("2", False)]], ks=[1, 3])
    greedy_only = [[("1", True)], [("2", False)], [("3", True)]]
    s = score_samples(greedy_only)
    assert s["pass@1"] == pytest.approx(2 / 3) and s["majority"] == pytest.approx(2 / 3)


def test_wilson_interval():
    low, high = wilson_interval(50, 100)
    assert abs(low - 0.4038) < 1e-3 and abs(high - 0.5962) < 1e-3
    assert wilson_interval(0, 10)[0] == 0.0 and 0.27 < wilson_interval(0, 10)[1] < 0.28
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_paired_difference_and_mcnemar():
    a = {f"p{i}": i < 4 for i in range(20)}  # solves p0-p3
    b = {f"p{i}": i < 10 for i in range(20)}  # solves p0-p9: 6 more, none fewer
    d = paired_difference(a, b)
    assert (d["n"], d["only_b"], d["only_a"]) == (20, 6, 0)
    assert d["diff"] == 0.3 and d["ci95"][0] > 0
    assert abs(d["mcnemar_p"] - 2 / 2**6) < 1e-12  # exact binomial, two-sided
    same = paired_difference(a, dict(a))
    assert same["diff"] == 0.0 and same["mcnemar_p"] == 1.0
    assert paired_difference(b, a)["diff"] == -0.3
