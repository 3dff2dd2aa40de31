"""The HTTP API: thin FastAPI routes over a `ServiceBackend`, errors mapped to status codes.

`build_api(backend, cfg, api_keys)` makes the app; the Serve ingress passes a backend made of
deployment handles, a test may pass any object with the same methods. Every error is JSON
`{"detail": ...}`; no traceback reaches a client.

No `from __future__ import annotations`: the routes' body types are locals of `build_api`.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar, Union

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from lema.grading import MODES
from lema.prompts import CORRECTOR_VARIANTS
from services.auth import api_key_dependency
from services.config import ServiceConfig
from services.middleware import BodyLimitMiddleware, DeadlineMiddleware
from services.protocol import (
    CorrectBatchResponse,
    CorrectorInfo,
    CorrectResponse,
    ErrorResponse,
    GradeVerdict,
    Health,
    Info,
    request_models,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class ServiceError(Exception):
    """A request the service cannot answer now: 429 (queue full), 503 (unavailable), 504 (too slow)."""

    def __init__(self, status_code: int, detail: str, retry_after_s: float | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.retry_after_s = retry_after_s


class ServiceBackend(Protocol):
    """What the routes need; raises ServiceError when it cannot answer."""

    async def correct(self, request: dict[str, Any]) -> dict[str, Any]:
        """One correction result (CorrectResponse fields but latency_ms)."""
        ...

    async def grade(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One verdict per grade request, in order."""
        ...

    async def ready(self) -> None:
        """Return when the service can answer requests; raise ServiceError(503, why) otherwise.
        Sends no request to the corrector (a corrector scaled to zero stays at zero)."""
        ...


async def gather_or_cancel(calls: list[Awaitable[T]]) -> list[T]:
    """Results of all calls, in order; when one fails, the others are cancelled and it is raised."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


def _install_error_handlers(app: FastAPI) -> None:
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = None if exc.retry_after_s is None else {"Retry-After": str(max(1, round(exc.retry_after_s)))}
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Field, message and type only: the offending input is not echoed back.
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        request_id = request.headers.get("x-request-id", "")
        return JSONResponse({"detail": f"internal error (request id {request_id or 'unknown'})"}, status_code=500)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, internal_error)


def service_info(cfg: ServiceConfig, auth: bool) -> Info:
    """What /v1/info reports: the corrector, grading modes, limits, timeouts."""
    corrector = cfg.corrector
    return Info(
        corrector=CorrectorInfo(
            model=corrector.engine.label, backend=corrector.engine.backend, adapter=corrector.engine.adapter,
            prompt=corrector.prompt, prompts=list(CORRECTOR_VARIANTS), k=corrector.k,
            max_tokens=corrector.sampling.max_tokens, temperature=corrector.sampling.temperature,
        ),
        grading_mode=cfg.grading_mode, grading_modes=list(MODES), limits=cfg.limits,
        request_timeout_s=cfg.request_timeout_s, corrector_timeout_s=corrector.timeout_s, auth=auth,
    )


def build_api(backend: ServiceBackend, cfg: ServiceConfig, api_keys: list[str]) -> FastAPI:
    """The FastAPI app: /healthz, /readyz, /v1/correct, /v1/correct/batch, /v1/grade, /v1/info.

    Args:
        backend: corrects and grades (the ingress's deployment handles).
        cfg: limits, timeouts and what /v1/info reports.
        api_keys: accepted bearer keys; empty turns auth off.
    """
    models = request_models(cfg.limits)
    CorrectRequest, CorrectBatchRequest, GradeRequest = models.correct, models.correct_batch, models.grade
    app = FastAPI(
        title="lema: correct and grade math solutions",
        version="1",
        description="LeMa's corrector (names the first wrong step, explains it, fixes it) and answer grader.",
    )
    app.add_middleware(DeadlineMiddleware, timeout_s=cfg.request_timeout_s)
    # Outermost (added last): 413 on Content-Length before anything reads the body, and on streamed bytes.
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.limits.max_body_bytes)
    _install_error_handlers(app)
    info = service_info(cfg, auth=bool(api_keys))

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Liveness: the ingress answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"], responses=_error_responses(503))
    async def readyz() -> Health:
        """Readiness: the app is running (a corrector scaled to zero counts: a request starts one)."""
        await backend.ready()
        return Health(status="ready")

    v1 = APIRouter(
        prefix="/v1",
        dependencies=[Depends(api_key_dependency(api_keys))] if api_keys else [],
        responses=_error_responses(401, 408, 413, 422, 429, 503),
    )

    async def correct_one(request: dict[str, Any]) -> CorrectResponse:
        start = time.perf_counter()
        result = await backend.correct(request)
        return CorrectResponse(**result, latency_ms=round((time.perf_counter() - start) * 1000, 2))

    @v1.post("/correct", response_model=CorrectResponse, responses=_error_responses(504))
    async def correct(body: CorrectRequest) -> CorrectResponse:
        """Correct one solution: first wrong step, explanation, corrected solution; verified when
        `answer` is given. A corrector that fails or replies unparseably is a 200 with its status."""
        return await correct_one(body.model_dump())

    @v1.post("/correct/batch", response_model=CorrectBatchResponse, responses=_error_responses(504))
    async def correct_batch(body: CorrectBatchRequest) -> CorrectBatchResponse:
        """Correct several solutions; answered in order."""
        items = await gather_or_cancel([correct_one(item.model_dump()) for item in body.items])
        return CorrectBatchResponse(items=items)

    @v1.post("/grade", response_model=Union[GradeVerdict, list[GradeVerdict]])
    async def grade(body: Union[GradeRequest, models.grade_list]) -> Union[GradeVerdict, list[GradeVerdict]]:
        """Grade one prediction against a gold answer, or a list of them (answered in order)."""
        requests = body if isinstance(body, list) else [body]
        verdicts = [GradeVerdict(**v) for v in await backend.grade([r.model_dump() for r in requests])]
        return verdicts if isinstance(body, list) else verdicts[0]

    @v1.get("/info", response_model=Info)
    async def service_information() -> Info:
        """The corrector's model, adapter and prompt, grading modes, limits and timeouts."""
        return info

    app.include_router(v1)
    return app
