"""What the service does for a request, given an engine: correct a solution, grade an answer.

Plain library code (no Ray, no HTTP): the Serve deployments call it, tests and benchmarks can
call it directly. Requests and results are plain dicts with the fields of `services.protocol`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lema.config import CorrectConfig
from lema.correcting import correct_paths
from lema.correction import CORRECTION_JSON_SCHEMA, ParseFailure, parse_correction
from lema.engines import Engine
from lema.grading import grade_many
from lema.prompts import build_corrector_messages
from lema.sources import grading_dataset
from services.config import CorrectorConfig

NOT_VERIFIED = "no gold answer given: parsed, not verified"


def request_path(request: dict[str, Any], index: int) -> dict[str, Any]:
    """A correction request as the inaccurate Path dict `correct_paths` takes."""
    return {
        "path_id": f"request-{index}",
        "problem_id": "request",
        "question": request["question"],
        "text": request["solution"],
        "answer": request.get("answer") or "",
        "dataset": request.get("dataset") or "gsm8k",
    }


def _result(model: str, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "status": status, "incorrect_step": None, "explanation": "", "corrected_solution": "",
        "final_answer": None, "verified": None, "reason": None, "raw": "", "model": model, "tokens": 0,
        **fields,
    }


class CorrectionService:
    """Corrects requests on one engine: verified against gold when a request has it, parsed otherwise."""

    def __init__(self, engine: Engine, cfg: CorrectorConfig, grading_mode: str = "robust"):
        self.engine = engine
        self.cfg = cfg
        self.grading_mode = grading_mode

    @property
    def model(self) -> str:
        return self.cfg.engine.label

    def correct_config(self, prompt: str | None) -> CorrectConfig:
        """The correct stage's config for requests that pick `prompt` (None: the service's)."""
        cfg = self.cfg
        return CorrectConfig(corrector="llm", engine=cfg.engine, sampling=cfg.sampling, prompt=prompt or cfg.prompt,
                             k=cfg.k)

    def correct(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One result per request, in order (the CorrectResponse fields but latency_ms).

        Raises:
            lema.engines.EngineError: the engine itself cannot work.
        """
        groups: dict[tuple[str | None, bool], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault((request.get("prompt"), request.get("answer") is not None), []).append(i)
        results: list[dict[str, Any]] = [{} for _ in requests]
        for (prompt, has_gold), indices in groups.items():
            paths = [request_path(requests[i], i) for i in indices]
            cfg = self.correct_config(prompt)
            answers = self._verify(paths, cfg) if has_gold else self._parse(paths, cfg)
            for i, result in zip(indices, answers):
                results[i] = result
        return results

    def _verify(self, paths: list[dict[str, Any]], cfg: CorrectConfig) -> list[dict[str, Any]]:
        return [
            _result(
                self.model, c.status, incorrect_step=c.incorrect_step, explanation=c.explanation,
                corrected_solution=c.corrected_solution, final_answer=c.predicted_answer,
                verified=c.verified, reason=c.reason, raw=c.raw, tokens=c.tokens,
            )
            for c in correct_paths(paths, cfg, self.engine, self.grading_mode)
        ]

    def _parse(self, paths: list[dict[str, Any]], cfg: CorrectConfig) -> list[dict[str, Any]]:
        """`correct_paths` for paths without gold: the first parseable of k replies, not verified."""
        sampling = cfg.sampling.model_copy(update={"n": cfg.k})
        schema = CORRECTION_JSON_SCHEMA if cfg.prompt == "json" else None
        messages = [build_corrector_messages(p["question"], p["text"], cfg.prompt) for p in paths]
        outputs = self.engine.generate(messages, sampling, json_schema=schema)
        results = []
        for path, output in zip(paths, outputs):
            tokens = output.prompt_tokens + sum(c.tokens for c in output.completions)
            result = _result(self.model, "failed", reason=output.error or "no reply", tokens=tokens)
            for completion in output.completions:
                parsed = parse_correction(completion.text, path["text"], grading_dataset(path["dataset"]))
                if isinstance(parsed, ParseFailure):
                    if result["status"] == "failed":
                        result = _result(self.model, "unparseable", reason=parsed.reason, raw=completion.text,
                                         tokens=tokens)
                    continue
                result = _result(
                    self.model, "unverified", incorrect_step=parsed.incorrect_step, explanation=parsed.explanation,
                    corrected_solution=parsed.corrected_solution, final_answer=parsed.predicted_answer,
                    reason=NOT_VERIFIED, raw=completion.text, tokens=tokens,
                )
                break
            results.append(result)
        return results


def grade_requests(requests: list[dict[str, Any]], default_mode: str, timeout_s: float) -> list[dict[str, Any]]:
    """One verdict dict (correct, predicted_answer, gold_answer, reason) per grade request, in order.

    Args:
        requests: {prediction, gold, dataset, mode} dicts; a mode of None means `default_mode`.
        timeout_s: bound on one answer comparison.
    """
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.get("mode") or default_mode, []).append(i)
    verdicts: list[dict[str, Any]] = [{} for _ in requests]
    for mode, indices in groups.items():
        rows = [(requests[i]["prediction"], requests[i]["gold"], requests[i].get("dataset") or "gsm8k")
                for i in indices]
        for i, verdict in zip(indices, grade_many(rows, mode=mode, timeout_s=timeout_s)):
            verdicts[i] = asdict(verdict)
    return verdicts
