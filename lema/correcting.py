"""Correct inaccurate paths: corrector reply -> parsed Correction -> verified against gold.

Pure library code (no Ray). Every path given ends as exactly one Correction whose status is
verified, unverified (parsed, wrong final answer), unparseable (reply kept with the parser's
reason) or failed (no reply: the engine gave up on the request).
"""

from __future__ import annotations

from typing import Any

from lema.config import CorrectConfig
from lema.records import Correction
from lema.sampling import request_seed
from lema.sources import grading_dataset

REQUIRED_PATH_FIELDS = ("path_id", "problem_id", "question", "text", "answer")
NOT_VERIFIED = "no gold answer given: parsed, not verified"


def reference_replies(paths: list[dict[str, Any]]) -> tuple[list[list[str]], list[str | None]]:
    """Replies of the reference corrector (synthetic problems: needs each path's `steps`),
    and per path the reason it could not correct it (e.g. a path with no steps)."""
    from lema.reference_corrector import reference_correction

    replies: list[list[str]] = []
    errors: list[str | None] = []
    for p in paths:
        try:
            replies.append([reference_correction(list(p["steps"]), p["answer"], p["text"])])
            errors.append(None)
        except ValueError as e:
            replies.append([])
            errors.append(f"reference corrector: {e}")
    return replies, errors


def correct_paths(
    paths: list[dict[str, Any]],
    cfg: CorrectConfig,
    engine: Any | None,
    grading_mode: str = "robust",
) -> list[Correction]:
    """One Correction per path, in order.

    Args:
        paths: inaccurate Path dicts (with question, text, answer, dataset; `steps` for the
            reference corrector). An llm corrector takes `answer: None` (no gold, as in a
            service request): the correction is parsed, not verified (`unverified`, NOT_VERIFIED).
        cfg: corrector kind, prompt variant, k tries, sampling.
        engine: an `lema.engines.Engine` for the llm corrector (None for reference).
    """
    from lema.correction import (
        CORRECTION_JSON_SCHEMA,
        ParseFailure,
        parse_correction,
        verify_correction,
    )
    from lema.prompts import build_corrector_messages

    label = "reference" if cfg.corrector == "reference" else cfg.engine.label
    results: list[Correction | None] = [None] * len(paths)
    todo: list[int] = []
    for i, p in enumerate(paths):
        missing = [k for k in REQUIRED_PATH_FIELDS if not isinstance(p.get(k), str) or not p.get(k)]
        if cfg.corrector == "llm" and p.get("answer") is None:
            missing.remove("answer")  # no gold: parse only
        if cfg.corrector == "reference" and not p.get("steps"):
            missing.append("steps")
        if missing:
            results[i] = _correction(p, label, "failed", reason=f"missing {', '.join(missing)}", attempts=0)
        else:
            todo.append(i)
    batch = [paths[i] for i in todo]
    if cfg.corrector == "reference":
        replies, errors = reference_replies(batch)
        usage = [(0, 0.0)] * len(batch)
    else:
        assert engine is not None, "the llm corrector needs an engine"
        sampling = cfg.sampling.model_copy(update={"n": cfg.k})
        schema = CORRECTION_JSON_SCHEMA if cfg.prompt == "json" else None
        messages = [build_corrector_messages(p["question"], p["text"], cfg.prompt) for p in batch]
        seeds = [request_seed(sampling.seed, p["path_id"]) for p in batch]
        outputs = engine.generate(messages, sampling, json_schema=schema, seeds=seeds)
        replies = [[c.text for c in o.completions] for o in outputs]
        errors = [o.error for o in outputs]
        usage = [(o.prompt_tokens + sum(c.tokens for c in o.completions), o.cost) for o in outputs]

    for i, p, tries, error, (tokens, cost) in zip(todo, batch, replies, errors, usage):
        dataset = grading_dataset(p.get("dataset") or "gsm8k")
        if not tries:
            results[i] = _correction(p, label, "failed", reason=error or "no reply", tokens=tokens, cost=cost)
            continue
        best: Correction | None = None
        for attempt, reply in enumerate(tries, 1):
            parsed = parse_correction(reply, p["text"], dataset)
            if isinstance(parsed, ParseFailure):
                cand = _correction(p, label, "unparseable", raw=reply, reason=parsed.reason)
            else:
                verdict = None if p["answer"] is None else verify_correction(
                    parsed, p["answer"], dataset, mode=grading_mode)
                verified = verdict is not None and verdict.correct
                cand = _correction(
                    p, label, "verified" if verified else "unverified", raw=reply,
                    incorrect_step=parsed.incorrect_step, explanation=parsed.explanation,
                    corrected_solution=parsed.corrected_solution, verified=verified,
                    predicted_answer=verdict.predicted_answer if verdict else parsed.predicted_answer,
                    reason=None if verified else NOT_VERIFIED if verdict is None else
                    f"corrected answer {verdict.predicted_answer!r} != gold {p['answer']!r}",
                )
            cand.attempts, cand.tokens, cand.cost = attempt, tokens, cost
            if best is None or _rank(cand) > _rank(best):
                best = cand
            if cand.verified:
                break
        results[i] = best
    return [r for r in results if r is not None]


def _rank(c: Correction) -> int:
    return {"verified": 3, "unverified": 2, "unparseable": 1, "failed": 0}[c.status]


def _correction(p: dict[str, Any], corrector: str, status: str, **kw: Any) -> Correction:
    return Correction(
        path_id=str(p.get("path_id")), problem_id=str(p.get("problem_id")), corrector=corrector,
        status=status,  # type: ignore[arg-type]
        question=p.get("question") or "", solution=p.get("text") or "", answer=p.get("answer") or "",
        dataset=p.get("dataset") or "", **kw,
    )


def count_corrections(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A chunk's counts (they add up with `pipelines.pool.add_counts`): attempted, by status and
    reason, tokens, cost, where the first mistake falls (step number, and position as a fraction
    of the steps, in fifths)."""
    from lema.prompts import number_steps

    status: dict[str, int] = {}
    reasons: dict[str, int] = {}
    steps: dict[str, int] = {}
    position = [0] * 5  # fifths of the solution: first mistake early .. late
    for r in rows:
        status[r["status"]] = status.get(r["status"], 0) + 1
        if r["status"] != "verified" and r.get("reason"):
            key = r["reason"].split(":")[0] if r["status"] != "unverified" else "wrong corrected answer"
            reasons[key] = reasons.get(key, 0) + 1
        if r.get("incorrect_step"):
            s = int(r["incorrect_step"])
            steps[str(s)] = steps.get(str(s), 0) + 1
            n = max(1, len(number_steps(r["solution"])))
            position[min(4, int((s - 1) / n * 5))] += 1
    return {
        "attempted": len(rows),
        "status": status,
        "reject_reasons": reasons,
        "tokens": sum(int(r.get("tokens") or 0) for r in rows),
        "cost": sum(float(r.get("cost") or 0) for r in rows),
        "incorrect_step_histogram": steps,
        "mistake_position_fifths": position,
    }


def summarize_corrections(counts: dict[str, Any]) -> dict[str, Any]:
    """Manifest figures from `count_corrections` counts: parsed, verified, the verification rate."""
    status = counts.get("status", {})
    attempted = counts.get("attempted", 0)
    parsed = status.get("verified", 0) + status.get("unverified", 0)
    return {
        "attempted": attempted,
        "parsed": parsed,
        "verified": status.get("verified", 0),
        "status": status,
        "reject_reasons": counts.get("reject_reasons", {}),
        "verification_rate": round(status.get("verified", 0) / attempted, 4) if attempted else 0.0,
        "tokens": counts.get("tokens", 0),
        "cost": round(counts.get("cost", 0.0), 6),
        "incorrect_step_histogram": dict(sorted(counts.get("incorrect_step_histogram", {}).items(),
                                                key=lambda kv: int(kv[0]))),
        "mistake_position_fifths": counts.get("mistake_position_fifths", [0] * 5),
    }
