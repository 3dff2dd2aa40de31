"""What the service does for a request, given an engine: correct a solution, grade an answer.

Plain library code (no Ray, no HTTP): the Serve deployments call it, tests and benchmarks can
call it directly. Requests and results are plain dicts with the fields of `services.protocol`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lema.config import CorrectConfig
from lema.correcting import correct_paths
from lema.engines import Engine, build_engine
from lema.grading import grade_many
from lema.prompts import CORRECTOR_VARIANTS
from services.config import CorrectorConfig


def request_path(request: dict[str, Any], index: int) -> dict[str, Any]:
    """A correction request as the inaccurate Path dict `correct_paths` takes (`answer` None:
    no gold, parsed only)."""
    return {
        "path_id": f"request-{index}",
        "problem_id": "request",
        "question": request["question"],
        "text": request["solution"],
        "answer": request.get("answer"),
        "dataset": request.get("dataset") or "gsm8k",
    }


class CorrectionService:
    """Corrects requests on one engine: verified against gold when a request has it, parsed otherwise."""

    def __init__(self, engine: Engine, cfg: CorrectorConfig, grading_mode: str = "robust"):
        self.engine = engine
        self.cfg = cfg
        self.grading_mode = grading_mode
        # the correct stage's config per prompt a request may pick; built from the validated service
        # config, without the stage's actor-pool checks (the service has no pool)
        self.configs = {prompt: CorrectConfig.model_construct(corrector="llm", engine=cfg.engine, sampling=cfg.sampling,
                                                              prompt=prompt, k=cfg.k)
                        for prompt in CORRECTOR_VARIANTS}

    @property
    def model(self) -> str:
        return self.cfg.engine.label

    def correct(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One result per request, in order (the CorrectResponse fields but latency_ms).

        Raises:
            lema.engines.EngineError: the engine itself cannot work.
        """
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.get("prompt") or self.cfg.prompt, []).append(i)
        results: list[dict[str, Any]] = [{} for _ in requests]
        for prompt, indices in groups.items():
            paths = [request_path(requests[i], i) for i in indices]
            for i, c in zip(indices, correct_paths(paths, self.configs[prompt], self.engine, self.grading_mode)):
                results[i] = {
                    "status": c.status, "incorrect_step": c.incorrect_step, "explanation": c.explanation,
                    "corrected_solution": c.corrected_solution, "final_answer": c.predicted_answer,
                    "verified": c.verified if requests[i].get("answer") is not None else None,
                    "reason": c.reason, "raw": c.raw, "model": self.model, "tokens": c.tokens,
                }
        return results


def build_correction_service(cfg: CorrectorConfig, grading_mode: str, budget: Any = None) -> CorrectionService:
    """The service a Corrector replica runs: its engine (torch threads = the replica's CPUs for
    transformers; `budget`: the API budget an openai engine draws from)."""
    return CorrectionService(build_engine(cfg.engine, budget, cpus=cfg.deployment.num_cpus), cfg, grading_mode)


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
