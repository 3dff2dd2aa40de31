"""Request and response bodies of the HTTP API (pydantic; FastAPI turns them into the OpenAPI spec).

Requests refuse unknown fields. Their size limits come from the service config, so the request
models are built per config by `request_models(limits)`; a value over a limit gets 422 naming
the field.
Annotations are evaluated at class creation (no `from __future__ import annotations`) because
the limits are locals of `request_models`.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lema.config import CorrectorPrompt, GradingMode
from services.config import LimitsConfig

Status = Literal["verified", "unverified", "unparseable", "failed"]
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,63}$"
Dataset = Annotated[
    str,
    Field(
        pattern=DATASET_PATTERN,
        description="gsm8k or synthetic (numeric answers), math or math500 (LaTeX), or another label "
        "(numeric when both answers are numbers, else LaTeX).",
    ),
]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings go into the OpenAPI spec


def _text(max_chars: int, description: str) -> Any:
    return Annotated[str, Field(min_length=1, max_length=max_chars, description=description)]


@dataclass(frozen=True)
class RequestModels:
    """The request bodies, with one config's limits."""

    correct: type[RequestModel]
    correct_batch: type[RequestModel]
    grade: type[RequestModel]
    grade_list: Any  # list[grade] with a length bound


def request_models(limits: LimitsConfig) -> RequestModels:
    """Request models whose field limits are `limits`."""

    class CorrectRequest(RequestModel):
        question: _text(limits.max_question_chars, "The problem statement.")
        solution: _text(limits.max_solution_chars, "The solution to correct (its steps get numbered).")
        answer: _text(limits.max_answer_chars, "Gold final answer (without: not verified).") | None = None
        dataset: Dataset = "gsm8k"
        prompt: CorrectorPrompt | None = Field(None, description="Corrector prompt variant (default: the service's).")

    class CorrectBatchRequest(RequestModel):
        items: list[CorrectRequest] = Field(min_length=1, max_length=limits.max_batch_items)

    class GradeRequest(RequestModel):
        prediction: _text(limits.max_prediction_chars, "Model text; its final answer is extracted.")
        gold: _text(limits.max_solution_chars, "A bare answer or a whole gold solution (`#### n`, `\\boxed{}`).")
        dataset: Dataset = "gsm8k"
        mode: GradingMode | None = Field(None, description="robust, or lema_compat (the paper's grader).")

    grade_list = Annotated[list[GradeRequest], Field(min_length=1, max_length=limits.max_grade_items)]
    return RequestModels(CorrectRequest, CorrectBatchRequest, GradeRequest, grade_list)


class CorrectResponse(ResponseModel):
    status: Status
    """verified (the corrected answer matches gold), unverified (parsed; wrong answer, or no gold
    given), unparseable (the reply is in `raw`, the parser's reason in `reason`) or failed (no reply)."""
    incorrect_step: int | None = None
    """1-based number of the first wrong step, as the solution's steps were numbered."""
    explanation: str = ""
    corrected_solution: str = ""
    final_answer: str | None = None
    """The corrected solution's final answer."""
    verified: bool | None = None
    """Whether the final answer matches gold; null when no gold answer was given."""
    reason: str | None = None
    raw: str = ""
    """The corrector's reply as received."""
    model: str
    tokens: int = 0
    """Prompt and completion tokens the corrector spent."""
    latency_ms: float = 0.0
    """Time spent in the service for this item (queueing included)."""


class CorrectBatchResponse(ResponseModel):
    items: list[CorrectResponse]
    """One per request item, in order."""


class GradeVerdict(ResponseModel):
    correct: bool
    predicted_answer: str | None
    gold_answer: str | None
    reason: str | None
    """None when correct; else e.g. "mismatch", "no answer found", "unparseable gold", "timeout"."""


class ErrorResponse(ResponseModel):
    detail: Any
    """A message, or for 422 a list of {loc, msg, type} naming each bad field."""


class Health(ResponseModel):
    status: Literal["ok", "ready"]


class CorrectorInfo(ResponseModel):
    model: str
    backend: str
    adapter: str | None
    prompt: str
    prompts: list[str]
    k: int
    max_tokens: int
    temperature: float


class Info(ResponseModel):
    corrector: CorrectorInfo
    grading_mode: GradingMode
    grading_modes: list[str]
    limits: LimitsConfig
    request_timeout_s: float
    corrector_timeout_s: float
    auth: bool
