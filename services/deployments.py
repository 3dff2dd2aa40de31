"""The three Serve deployments: Ingress (FastAPI) -> Corrector and Grader, through DeploymentHandles.

Each replica builds its heavy state once in `__init__` (the corrector's engine) and takes plain
dicts per call. The ingress turns Serve's failures into `ServiceError`s with the right status:
a full queue -> the deployment's backpressure status (429) with Retry-After, a dead replica ->
retried, then 503, a slow corrector -> 504. Readiness is the app's status as Serve's controller
reports it: no probe wakes a Corrector scaled to zero.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.exceptions import RayActorError, RayError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponse
from ray.serve.schema import ApplicationStatus, ApplicationStatusOverview, DeploymentStatus

from actors.budget import named_budget
from lema.engines import EngineError
from services.api import ServiceError, build_api
from services.auth import parse_api_keys
from services.config import CorrectorConfig, ServiceConfig
from services.serving import build_correction_service, grade_requests

log = logging.getLogger("ray.serve")  # lands in the replica's Serve log
READY_TIMEOUT_S = 5.0  # /readyz: how long Serve's controller has to report the app's status


@serve.deployment(name="Corrector")
class Corrector:
    """Corrects requests on one engine; concurrent requests are batched into one engine call."""

    def __init__(self, cfg: dict[str, Any], grading_mode: str):
        corrector = CorrectorConfig.model_validate(cfg)
        budget = None
        if corrector.engine.backend == "openai":  # one API budget for all replicas of this app
            budget = named_budget(f"{serve.get_replica_context().app_name}-corrector-budget", corrector.engine.openai)
        self.service = build_correction_service(corrector, grading_mode, budget)
        self.correct.set_max_batch_size(corrector.max_batch_size)
        self.correct.set_batch_wait_timeout_s(corrector.batch_wait_timeout_s)

    @serve.batch
    async def correct(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.service.correct, requests)

    def ready(self) -> dict[str, Any]:
        """The replica's model and process id (tests kill a replica by it; /readyz does not call it)."""
        return {"model": self.service.model, "pid": os.getpid()}


@serve.deployment(name="Grader")
class Grader:
    """Grades answers; math-verify runs in lema.grading's bounded worker subprocesses."""

    def __init__(self, default_mode: str, timeout_s: float):
        self.default_mode = default_mode
        self.timeout_s = timeout_s

    async def grade(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(grade_requests, requests, self.default_mode, self.timeout_s)


class HandleBackend:
    """`services.api.ServiceBackend` over the Corrector and Grader deployment handles."""

    def __init__(self, corrector: DeploymentHandle, grader: DeploymentHandle, cfg: ServiceConfig, app_name: str):
        self.app_name = app_name
        self.corrector = corrector
        self.grader = grader
        self.timeout_s = cfg.corrector.timeout_s
        self.retries = cfg.corrector.retries

    async def correct(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self._correct_with_retries(request), self.timeout_s)
        except asyncio.TimeoutError as e:
            raise ServiceError(504, f"the corrector did not answer within {self.timeout_s:g} s") from e

    async def _correct_with_retries(self, request: dict[str, Any]) -> dict[str, Any]:
        retries = 0
        while True:
            try:
                return await _call("corrector", self.corrector.correct.remote(request))
            except RayActorError as e:  # the replica died with the call in flight
                if retries == self.retries:
                    raise ServiceError(503, f"the corrector replica died ({type(e).__name__}) "
                                            f"after {retries} retries") from e
                retries += 1

    async def grade(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await _call("grader", self.grader.grade.remote(requests))

    async def ready(self) -> None:
        """The app's status from Serve's controller; not a call to the Corrector, which would start
        a replica of a Corrector scaled to zero (and keep it up, probe after probe)."""
        try:
            status = await asyncio.wait_for(asyncio.to_thread(serve.status), READY_TIMEOUT_S)
        except (asyncio.TimeoutError, RayError) as e:
            raise ServiceError(503, f"Serve's controller did not report the app's status ({type(e).__name__})") from e
        reason = not_ready_reason(status.applications.get(self.app_name))
        if reason is not None:
            raise ServiceError(503, reason)


def not_ready_reason(app: ApplicationStatusOverview | None) -> str | None:
    """Why an app cannot take requests, None when it can: it is RUNNING, which Serve reports while
    its deployments are healthy or autoscaling, a deployment scaled to zero included."""
    if app is None:
        return "the app is not deployed"
    if app.status == ApplicationStatus.RUNNING:
        return None
    reason = f"the app is {ApplicationStatus(app.status).value}" + (f": {app.message}" if app.message else "")
    for name, deployment in app.deployments.items():
        if deployment.status != DeploymentStatus.HEALTHY:
            reason += f"; {name} is {DeploymentStatus(deployment.status).value}"
            reason += f" ({deployment.message})" if deployment.message else ""
    return reason


async def _call(name: str, response: DeploymentResponse) -> Any:
    """Await a handle call; Serve's refusals become ServiceErrors (cancelled when the caller gives up)."""
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise
    except BackPressureError as e:
        raise ServiceError(e.status_code, f"the {name} queue is full; retry later", e.retry_after_s) from e
    except DeploymentUnavailableError as e:
        raise ServiceError(503, f"the {name} is unavailable") from e
    except EngineError as e:
        raise ServiceError(503, f"the {name} cannot work: {e}") from e


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """The HTTP entry: FastAPI routes (services.api) over the Corrector and Grader handles."""

    def __init__(self, corrector: DeploymentHandle, grader: DeploymentHandle, cfg: dict[str, Any]):
        self.cfg = ServiceConfig.model_validate(cfg)
        self.backend = HandleBackend(corrector, grader, self.cfg, serve.get_replica_context().app_name)
        self.api_keys = parse_api_keys(os.environ.get(self.cfg.api_keys_env))
        secrets = {"env_vars"}  # may hold keys: not logged
        log.info("service config: %s", self.cfg.model_dump_json(exclude={
            "ingress": secrets, "grader": {"deployment": secrets}, "corrector": {"deployment": secrets}}))
        if not self.api_keys:
            log.warning("auth is off: $%s is unset or empty", self.cfg.api_keys_env)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self.backend, self.cfg, self.api_keys)
