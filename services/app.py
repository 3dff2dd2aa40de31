"""The Serve application: `serve run services.app:app` (the default config, port 8000) or
`serve run services.app:build_app config=PATH key.sub=val ...` (any config, with overrides).

`build_app` is a typed app builder: Serve validates the `key=val` arguments into `AppArgs`
(`config`, then any dotted service-config key), and the service config into `ServiceConfig`.

No `from __future__ import annotations`: Serve reads the builder's parameter annotation as a class.
"""

import json

from pydantic import BaseModel, ConfigDict
from ray.serve import Application

from services.config import ServiceConfig, load_service_config
from services.deployments import Corrector, Grader, Ingress


class AppArgs(BaseModel):
    """Arguments of `build_app`: a config file and `key.sub: value` overrides of it."""

    model_config = ConfigDict(extra="allow")  # the extra keys are the overrides, checked by ServiceConfig

    config: str | None = None
    """A service config YAML (None: services/service.yaml)."""

    def overrides(self) -> list[str]:
        """The extra arguments as `key=value` overrides."""
        extra = self.model_extra or {}  # CLI values are strings; a YAML file's may be typed (JSON is YAML)
        return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in extra.items()]


def bind_service(cfg: ServiceConfig) -> Application:
    """The three deployments of `cfg`, bound: Ingress -> (Corrector, Grader)."""
    corrector = Corrector.options(**cfg.corrector.deployment.deployment_options()).bind(
        cfg.corrector.model_dump(mode="json"), cfg.grading_mode
    )
    grader = Grader.options(**cfg.grader.deployment.deployment_options()).bind(cfg.grading_mode, cfg.grader.timeout_s)
    return Ingress.options(**cfg.ingress.deployment_options()).bind(corrector, grader, cfg.model_dump(mode="json"))


def build_app(args: AppArgs) -> Application:
    """The service app for `args` (Serve's typed app builder).

    Raises:
        lema.config.ConfigError: naming every bad key of the config and overrides at once.
    """
    return bind_service(load_service_config(args.config, args.overrides()))


app = build_app(AppArgs())
