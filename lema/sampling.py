"""Sample CoT solutions for problems on any engine and grade each one: Problems -> Paths.

Pure library code (no Ray): the sample and evaluate stages call it once per chunk of problems.
"""

from __future__ import annotations

import zlib
from typing import Any

from lema.config import SamplingConfig
from lema.records import Path, Problem, stable_id
from lema.sources import grading_dataset

REQUIRED_PROBLEM_FIELDS = {"id": "problem id", "question": "the question text", "answer": "gold answer"}


def check_problem(row: dict[str, Any]) -> str | None:
    """Why a problem row cannot be sampled, or None when it can."""
    for key, what in REQUIRED_PROBLEM_FIELDS.items():
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            return f"missing {key} ({what})"
    return None


def request_seed(seed: int | None, key: str) -> int | None:
    """The sampling seed of one request, from the run's seed and the item's id (a problem or a
    path): the same item samples the same in any chunk or batch, and an API request keeps its
    response-cache key when the chunking changes."""
    if seed is None:
        return None
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2**31)


def sample_problems(
    engine: Any,
    problems: list[dict[str, Any]],
    sampling: SamplingConfig,
    generator: str,
    prompt: str = "cot",
    compat: bool = False,
) -> tuple[list[Path], list[dict[str, Any]]]:
    """Sample `sampling.n` paths per problem and grade them (`robust` mode).

    Args:
        engine: an `lema.engines.Engine`.
        problems: Problem dicts; malformed ones are set aside as rejects with a reason.
        sampling: n, temperature, seed, ...; each problem samples with its own seed
            (`request_seed(sampling.seed, problem id)`).
        generator: the model label written on each Path.
        compat: also grade in `lema_compat` mode (the paper's rules), into `compat_answer`
            and `compat_correct` (evaluation reports both).

    Returns:
        (paths, rejects): every valid problem gets exactly n paths (failed generations carry
        `error` and count as neither correct nor inaccurate).
    """
    from lema.grading import grade_many
    from lema.prompts import build_cot_messages

    valid: list[Problem] = []
    rejects: list[dict[str, Any]] = []
    for row in problems:
        reason = check_problem(row)
        if reason:
            rejects.append({"id": str(row.get("id")), "reason": reason})
        else:
            valid.append(Problem.from_dict(row))
    if not valid:
        return [], rejects

    outputs = engine.generate([build_cot_messages(p.question, prompt) for p in valid], sampling,
                              seeds=[request_seed(sampling.seed, p.id) for p in valid])
    paths: list[Path] = []
    to_grade: list[tuple[int, tuple[str, str, str]]] = []
    for problem, out in zip(valid, outputs):
        for k in range(sampling.n):
            completion = out.completions[k] if k < len(out.completions) else None
            path = Path(
                problem_id=problem.id,
                path_id=stable_id(problem.id, generator, k),
                generator=generator,
                sample_index=k,
                text=completion.text if completion else "",
                predicted_answer=None,
                correct=False,
                tokens=completion.tokens if completion else 0,
                dataset=problem.dataset,
                question=problem.question,
                answer=problem.answer,
                steps=problem.steps,
                finish_reason=completion.finish_reason if completion else "error",
                error=None if completion else (out.error or "no completion returned"),
            )
            if completion:
                to_grade.append((len(paths), (path.text, problem.answer, grading_dataset(problem.dataset))))
            paths.append(path)
    verdicts = grade_many([row for _, row in to_grade], mode="robust")
    for (i, _), verdict in zip(to_grade, verdicts):
        paths[i].predicted_answer = verdict.predicted_answer
        paths[i].correct = verdict.correct
    if compat:
        for (i, _), verdict in zip(to_grade, grade_many([row for _, row in to_grade], mode="lema_compat")):
            paths[i].compat_answer = verdict.predicted_answer
            paths[i].compat_correct = verdict.correct
    return paths, rejects


COUNTS = ("paths", "correct", "inaccurate", "failed", "tokens")


def count_paths(paths: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per generator: paths, correct, inaccurate, failed, tokens (a chunk's counts add up with
    `pipelines.pool.add_counts`)."""
    per: dict[str, dict[str, int]] = {}
    for p in paths:
        g = per.setdefault(p["generator"], dict.fromkeys(COUNTS, 0))
        g["paths"] += 1
        g["tokens"] += int(p["tokens"])
        if p.get("error"):
            g["failed"] += 1
        elif p["correct"]:
            g["correct"] += 1
        else:
            g["inaccurate"] += 1
    return per


def summarize_paths(per: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Manifest figures from `count_paths` counts: the totals, and per generator with accuracy."""
    per = {name: dict(g) for name, g in per.items()}
    total = {k: sum(g[k] for g in per.values()) for k in COUNTS}
    for g in per.values():
        graded = g["paths"] - g["failed"]
        g["accuracy"] = round(g["correct"] / graded, 4) if graded else 0.0  # type: ignore[assignment]
    return {**total, "per_generator": per}
