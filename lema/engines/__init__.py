"""Generation engines: one interface, four backends (transformers, vLLM, OpenAI-compatible HTTP, and
`scripted`, a null engine that replies by rule without a model).

Callers build an engine from its config and call `generate(requests, sampling)`:

    engine = build_engine(EngineConfig(backend="transformers", model="tiny"))
    outputs = engine.generate([[{"role": "user", "content": "2+2?"}]], SamplingConfig(n=2))
    outputs[0].completions[1].text

One `RequestOutput` per request, in order, each with `sampling.n` completions. A request that
fails for good gets `error` set and no completions; only a dead or misconfigured engine raises.
Backends import their heavy packages (torch, vllm, openai) when built, not at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lema.config import EngineConfig, SamplingConfig
from lema.prompts import render_plain

if TYPE_CHECKING:
    from lema.engines.budget import Budget

Messages = list[dict[str, str]]
"""One chat request: [{"role": "user", "content": "..."}, ...]."""

STAT_KEYS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "retries",
    "cache_hits",
    "failures",
    "seconds",
)
"""Keys of `Engine.stats()` (counts since the engine was built; cost in USD; wall seconds
spent inside generate)."""


class EngineError(RuntimeError):
    """The engine itself cannot work (bad model, bad credentials, unreachable backend)."""


@dataclass
class Completion:
    text: str
    tokens: int  # completion tokens (padding excluded)
    finish_reason: str  # "stop" | "length" | "error"


@dataclass
class RequestOutput:
    completions: list[Completion] = field(default_factory=list)
    prompt_tokens: int = 0
    error: str | None = None  # set when the request failed for good (no completions then)
    cached: bool = False  # served from the response cache (no backend call, no cost)
    cost: float = 0.0  # USD


@runtime_checkable
class Engine(Protocol):
    """What every backend implements."""

    name: str  # label written on records

    def generate(
        self,
        requests: list[Messages],
        sampling: SamplingConfig,
        json_schema: dict | None = None,
        seeds: list[int | None] | None = None,
    ) -> list[RequestOutput]:
        """Complete each chat request `sampling.n` times.

        Args:
            requests: chat message lists.
            sampling: n, temperature (0 is greedy), top_p, max_tokens, stop, seed.
            json_schema: constrain the output to this JSON schema (vLLM, OpenAI); the
                transformers backend ignores it.
            seeds: one sampling seed per request (instead of `sampling.seed`), so a request
                samples the same whichever batch or chunk it travels in (vLLM, OpenAI; the
                transformers backend seeds each of its batches from its requests' seeds).

        Returns:
            One RequestOutput per request, in order.
        """
        ...

    def stats(self) -> dict[str, float]:
        """Running totals, keyed by STAT_KEYS."""
        ...

    def close(self) -> None:
        """Release the model / connections; the engine is unusable afterwards."""
        ...


def new_stats() -> dict[str, float]:
    """A zeroed stats dict with every key of STAT_KEYS."""
    return {k: 0.0 for k in STAT_KEYS}


def add_output_stats(stats: dict[str, float], outputs: list[RequestOutput], seconds: float) -> None:
    """Count a local engine's generate() call into its stats."""
    stats["requests"] += len(outputs)
    stats["failures"] += sum(o.error is not None for o in outputs)
    stats["prompt_tokens"] += sum(o.prompt_tokens for o in outputs)
    stats["completion_tokens"] += sum(c.tokens for o in outputs for c in o.completions)
    stats["seconds"] += seconds


def release_torch_memory() -> None:
    """After a local engine drops its model: collect it and return cached GPU memory."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_prompt_format(cfg_format: str, tok: Any, model: str) -> str:
    """`chat` or `plain` for this tokenizer (see EngineConfig.prompt_format).

    Raises:
        EngineError: `chat` was asked for and the tokenizer has no chat template.
    """
    has_template = bool(tok.chat_template)
    if cfg_format == "chat" and not has_template:
        raise EngineError(f"model {model!r} has no chat template; set prompt_format: plain "
                          "(plain-text prompts, as for a base model) or auto")
    if cfg_format == "auto":
        return "chat" if has_template else "plain"
    return cfg_format


def encode_prompt(tok: Any, prompt_format: str, messages: Messages) -> list[int]:
    """The prompt token ids a local engine sends for one request: the chat template with its
    generation prompt, or (`plain`) the text of `lema.prompts.render_plain`, BOS first if the
    tokenizer adds one."""
    if prompt_format == "plain":
        return tok(render_plain(messages))["input_ids"]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def encode_requests(
    tok: Any, prompt_format: str, requests: list[Messages]
) -> tuple[dict[int, list[int]], list[RequestOutput | None]]:
    """Encode each request with `encode_prompt`; one whose chat template fails fails alone.

    Returns:
        (prompt ids by request index, in index order; one slot per request: None, or the
        error output of a request that could not be rendered).
    """
    from jinja2 import TemplateError

    encoded: dict[int, list[int]] = {}
    outputs: list[RequestOutput | None] = [None] * len(requests)
    for i, messages in enumerate(requests):
        try:
            encoded[i] = encode_prompt(tok, prompt_format, messages)
        except (TemplateError, ValueError, TypeError, KeyError) as e:  # fails alone
            outputs[i] = RequestOutput(error=f"cannot render the chat template: {e}")
    return encoded, outputs


def build_engine(cfg: EngineConfig, budget: Budget | None = None, cpus: float | None = None) -> Engine:
    """Build the engine `cfg.backend` names (loads the model / opens the client).

    Args:
        budget: for the openai backend, an API budget shared with other engines (a stage's
            actor pool shares one); None gives the engine its own from `cfg.openai`.
        cpus: the CPUs the calling actor or replica reserves: a transformers engine whose
            `threads` is unset runs that many torch threads.
    Raises:
        ValueError: for an unknown backend, naming the valid ones.
    """
    if cfg.backend == "transformers":
        from lema.engines.transformers_engine import TransformersEngine

        if cfg.threads is None and cpus is not None:
            cfg = cfg.model_copy(update={"threads": max(1, int(cpus))})

        return TransformersEngine(cfg)
    if cfg.backend == "vllm":
        from lema.engines.vllm_engine import VLLMEngine

        return VLLMEngine(cfg)
    if cfg.backend == "openai":
        from lema.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(cfg, budget)
    if cfg.backend == "scripted":
        from lema.engines.scripted_engine import ScriptedEngine

        return ScriptedEngine(cfg)
    raise ValueError(
        f"engine backend {cfg.backend!r} is unknown; choose scripted, transformers, vllm or openai"
    )


__all__ = [
    "STAT_KEYS",
    "Completion",
    "Engine",
    "EngineError",
    "Messages",
    "RequestOutput",
    "add_output_stats",
    "build_engine",
    "encode_prompt",
    "encode_requests",
    "new_stats",
    "release_torch_memory",
    "resolve_prompt_format",
]
