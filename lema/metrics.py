"""Evaluation metrics over sampled solutions: pass@k (unbiased), majority vote, pass@1, and the
statistics that compare two models on the same problems.

pass@k follows Chen et al. 2021 ("Evaluating Large Language Models Trained on Code"): with n
samples of which c are correct, pass@k = 1 - C(n-c, k) / C(n, k), computed as a product so
large n does not overflow.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

Equal = Callable[[str, str], bool]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of the chance that at least one of k samples (out of n) is correct.

    Args:
        n: samples drawn for the problem.
        c: how many of them are correct.
        k: the k of pass@k (1 <= k <= n).
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):  # C(n-c, k) / C(n, k) = prod(1 - k/i)
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def majority_vote(answers: Sequence[str | None], equal: Equal = operator.eq) -> str | None:
    """The most frequent answer (None answers do not vote); ties go to the earliest seen.

    Args:
        answers: predicted final answers, None where none was extracted.
        equal: answer equivalence (e.g. a grader's); the first answer of a group represents it.

    Returns:
        The representative of the largest group, or None when no answer voted.
    """
    groups: list[list[str]] = []
    for answer in answers:
        if answer is None:
            continue
        for group in groups:
            if equal(group[0], answer):
                group.append(answer)
                break
        else:
            groups.append([answer])
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda i: (len(groups[i]), -i))
    return groups[best][0]


def score_samples(
    samples: Sequence[Sequence[tuple[str | None, bool]]],
    ks: Sequence[int] = (1,),
    equal: Equal = operator.eq,
) -> dict[str, object]:
    """Accuracy figures over problems, each with its list of (predicted_answer, correct) samples.

    Args:
        samples: per problem, its samples in order (the first is the greedy one, if any).
        ks: the k values for pass@k; each must not exceed the smallest sample count.
        equal: answer equivalence for the majority vote.

    Returns:
        {"problems", "n" (smallest samples per problem), "pass@1" (first sample correct),
        "pass@k" {k: unbiased pass@k}, "majority" (the voted answer is a correct one)};
        the rates are means over problems, 0.0 when there are no problems.
    """
    if not samples:
        return {"problems": 0, "n": 0, "pass@1": 0.0, "pass@k": {k: 0.0 for k in ks},
                "majority": 0.0}
    n_min = min(len(s) for s in samples)
    if n_min == 0:
        raise ValueError("score_samples: a problem has no samples")
    bad = [k for k in ks if not 1 <= k <= n_min]
    if bad:
        raise ValueError(f"score_samples: k={bad} outside 1..{n_min} (the fewest samples)")
    first = sum(s[0][1] for s in samples)
    pass_k = {k: sum(pass_at_k(len(s), sum(ok for _, ok in s), k) for s in samples) for k in ks}
    majority = 0
    for s in samples:
        winner = majority_vote([answer for answer, _ in s], equal)
        majority += winner is not None and any(
            ok for answer, ok in s if answer is not None and equal(winner, answer))
    m = len(samples)
    return {
        "problems": m,
        "n": n_min,
        "pass@1": first / m,
        "pass@k": {k: v / m for k, v in pass_k.items()},
        "majority": majority / m,
    }


Z95 = 1.959964  # two-sided 95% normal quantile


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion k/n ((0, 0) when n is 0)."""
    if n == 0:
        return 0.0, 0.0
    p, z2 = k / n, Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(a: dict[str, bool], b: dict[str, bool]) -> dict[str, float | int | tuple[float, float]]:
    """How much better b solves the problems both were scored on than a does.

    Args:
        a, b: per problem id, whether each model solved it.
    Returns:
        {"n", "diff" (pass@1 of b minus a), "ci95" (paired normal approximation),
        "mcnemar_p" (exact two-sided binomial test on the discordant problems), "only_a", "only_b"}.
    """
    ids = a.keys() & b.keys()
    n = len(ids)
    only_b = sum(b[i] and not a[i] for i in ids)
    only_a = sum(a[i] and not b[i] for i in ids)
    if n == 0:
        return {"n": 0, "diff": 0.0, "ci95": (0.0, 0.0), "mcnemar_p": 1.0, "only_a": 0, "only_b": 0}
    d = (only_b - only_a) / n
    se = math.sqrt(max(only_a + only_b - (only_b - only_a) ** 2 / n, 0.0)) / n
    m = only_a + only_b
    tail = sum(math.comb(m, j) for j in range(min(only_a, only_b) + 1)) / 2**m if m else 1.0
    return {"n": n, "diff": d, "ci95": (d - Z95 * se, d + Z95 * se), "mcnemar_p": min(1.0, 2 * tail),
            "only_a": only_a, "only_b": only_b}
