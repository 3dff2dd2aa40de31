"""The OpenAI-compatible HTTP backend (the official API, vLLM/SGLang servers, ...).

Bounded concurrency and a requests/tokens-per-minute budget (the engine's own, or one shared
by a stage's whole actor pool: `lema.engines.budget`), our own retries with jittered
exponential backoff (the SDK's are off), per-request timeouts and seeds, token and cost
accounting, and an on-disk response cache so a re-run pays nothing twice. With
`prompt_format: plain` (a base model behind a completions endpoint) requests go to
`/completions` as plain text (`lema.prompts.render_plain`).

All HTTP runs on one event loop in a background thread that the engine owns, so the sync
`generate` works from plain code, from a thread whose loop is running, and from Ray actors,
and the async client is never shared between loops. `agenerate` awaits the same work from any
event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from lema.config import EngineConfig, SamplingConfig
from lema.engines import Completion, EngineError, Messages, RequestOutput, new_stats
from lema.engines.budget import Budget, LocalBudget
from lema.engines.response_cache import ResponseCache, request_key
from lema.prompts import plain_stops, render_plain

T = TypeVar("T")
MAX_BACKOFF_S = 60.0
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "stop", "function_call": "stop"}


def backoff_delay(attempt: int, base_s: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry `attempt` (0-based): base * 2^attempt, capped at 60 s,
    jittered to between half and all of it; at least a server's Retry-After."""
    delay = min(MAX_BACKOFF_S, base_s * 2**attempt) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_BACKOFF_S))
    return delay


def response_format(json_schema: dict | None, structured_output: bool) -> dict | None:
    """The `response_format` for a request: a JSON schema, plain JSON mode, or nothing."""
    if json_schema is not None:
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": json_schema}}
    if structured_output:
        return {"type": "json_object"}
    return None


def split_tokens(total: int, texts: list[str]) -> list[int]:
    """Share a response's completion tokens among its n choices by text length (the API
    reports only the total); the parts add up to `total`."""
    if len(texts) == 1:
        return [total]
    weights = [max(len(t), 1) for t in texts]
    parts = [total * w // sum(weights) for w in weights]
    parts[-1] += total - sum(parts)
    return parts


def _usage_tokens(resp: Any) -> float | None:
    """Prompt + completion tokens a response reports (None when it reports no usage)."""
    return None if resp.usage is None else resp.usage.prompt_tokens + resp.usage.completion_tokens


def _retry_after(err: Exception) -> float | None:
    import openai

    if not isinstance(err, openai.APIStatusError):
        return None
    value = err.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("generate() called from the engine's own loop; await agenerate()")
        return self.submit(coro).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class OpenAIEngine:
    """`Engine` over an OpenAI-compatible chat-completions endpoint (see lema.engines.Engine).

    Stats: `requests` counts every request (cached ones too); tokens and cost count what the
    backend billed (cache hits are free); `retries` counts retried HTTP calls; `failures`
    counts requests that ended with an error.
    """

    def __init__(self, cfg: EngineConfig, budget: Budget | None = None):
        import openai

        opts = cfg.openai
        api_key = os.environ.get(opts.api_key_env)
        if not api_key:
            if opts.base_url is None:
                raise EngineError(
                    f"the OpenAI backend needs an API key in ${opts.api_key_env} "
                    "(or set openai.base_url for a local server that takes none)"
                )
            api_key = "EMPTY"
        self.name = cfg.label
        self.model = cfg.model
        self.opts = opts
        self.prompt_format = "plain" if cfg.prompt_format == "plain" else "chat"  # auto: chat
        self.cache = ResponseCache(opts.cache_dir) if opts.cache_dir else None
        self._stats = new_stats()
        self._loop = _LoopThread(f"openai-engine-{self.name}")

        async def setup() -> None:  # loop-bound objects are made on the engine's loop
            self._client = openai.AsyncOpenAI(
                api_key=api_key, base_url=opts.base_url, timeout=opts.timeout_s, max_retries=0
            )
            self._budget = budget or LocalBudget(
                opts.requests_per_minute, opts.tokens_per_minute, opts.max_concurrency)

        self._loop.run(setup())
        self._closed = False

    # ------------------------------------------------------------ public
    def generate(
        self,
        requests: list[Messages],
        sampling: SamplingConfig,
        json_schema: dict | None = None,
        seeds: list[int | None] | None = None,
    ) -> list[RequestOutput]:
        """See `Engine.generate`. Blocks the calling thread (never its event loop's work)."""
        self._check_open()
        return self._loop.run(self._generate_all(requests, sampling, json_schema, seeds))

    async def agenerate(
        self,
        requests: list[Messages],
        sampling: SamplingConfig,
        json_schema: dict | None = None,
        seeds: list[int | None] | None = None,
    ) -> list[RequestOutput]:
        """`generate` for async callers: awaitable from any event loop."""
        self._check_open()
        return await asyncio.wrap_future(
            self._loop.submit(self._generate_all(requests, sampling, json_schema, seeds))
        )

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.run(self._client.close())
        self._loop.stop()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"engine {self.name!r} is closed")

    # ------------------------------------------------------------ one call
    async def _generate_all(
        self, requests: list[Messages], sampling: SamplingConfig, json_schema: dict | None,
        seeds: list[int | None] | None,
    ) -> list[RequestOutput]:
        start = time.perf_counter()
        if seeds is not None:  # one SamplingConfig per request: its seed travels and keys the cache
            per_request = [sampling.model_copy(update={"seed": s}) for s in seeds]
        else:
            per_request = [sampling] * len(requests)
        tasks = [asyncio.ensure_future(self._one(m, s, json_schema))
                 for m, s in zip(requests, per_request)]
        try:
            outputs = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        self._stats["seconds"] += time.perf_counter() - start
        return list(outputs)

    async def _one(
        self, messages: Messages, sampling: SamplingConfig, json_schema: dict | None
    ) -> RequestOutput:
        self._stats["requests"] += 1
        if self.prompt_format == "plain":
            sampling = sampling.model_copy(update={"stop": plain_stops(messages, sampling.stop)})
        key = request_key(self.model, messages, sampling, json_schema) if self.cache else ""
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self._stats["cache_hits"] += 1
            return hit
        out = await self._call_with_retries(messages, sampling, json_schema)
        if out.error is not None:
            self._stats["failures"] += 1
        elif self.cache is not None:
            self.cache.put(key, out)
        return out

    def _params(self, messages: Messages, sampling: SamplingConfig, json_schema: dict | None):
        params: dict[str, Any] = {
            "model": self.model,
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.stop:
            params["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            params["seed"] = sampling.seed
        if self.prompt_format == "plain":
            params["prompt"] = render_plain(messages)
            return params  # the completions endpoint takes no response_format
        params["messages"] = messages
        fmt = response_format(json_schema, self.opts.structured_output)
        if fmt is not None:
            params["response_format"] = fmt
        return params

    async def _call_with_retries(
        self, messages: Messages, sampling: SamplingConfig, json_schema: dict | None
    ) -> RequestOutput:
        import openai

        params = self._params(messages, sampling, json_schema)
        create = (self._client.completions.create if self.prompt_format == "plain"
                  else self._client.chat.completions.create)
        estimate = len(json.dumps(messages)) / 4 + sampling.max_tokens * sampling.n
        last = ""
        for attempt in range(self.opts.max_retries + 1):
            if attempt > 0:
                self._stats["retries"] += 1
            await self._budget.acquire(estimate)
            actual: float | None = None
            try:
                resp = await create(**params)
                actual = _usage_tokens(resp)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                raise EngineError(f"endpoint {self.opts.base_url!r} refused the key: {e}") from e
            except openai.NotFoundError as e:
                raise EngineError(
                    f"model {self.model!r} or endpoint {self.opts.base_url!r} not found: {e}"
                ) from e
            except (openai.APIConnectionError, openai.APIStatusError) as e:  # timeouts included
                error: Exception | None = e
            except openai.APIError as e:  # e.g. a malformed response body
                return RequestOutput(error=f"{type(e).__name__}: {e}")
            else:
                error = None
            finally:
                await self._budget.release(estimate, actual)  # the slot is free while backing off
            if error is None:
                return self._to_output(resp)
            status = error.status_code if isinstance(error, openai.APIStatusError) else None
            last = f"{type(error).__name__}: {error}"
            if status is not None and status < 500 and status not in (408, 409, 429):
                return RequestOutput(error=f"request rejected ({status}): {error}")
            if attempt < self.opts.max_retries:
                await asyncio.sleep(backoff_delay(attempt, self.opts.backoff_s, _retry_after(error)))
        return RequestOutput(error=f"failed after {self.opts.max_retries + 1} attempts: {last}")

    def _to_output(self, resp) -> RequestOutput:
        choices = sorted(resp.choices, key=lambda c: c.index)
        texts = [(c.text if self.prompt_format == "plain" else c.message.content) or "" for c in choices]
        usage = resp.usage
        prompt_tokens = usage.prompt_tokens if usage is not None else 0
        completion_tokens = usage.completion_tokens if usage is not None else 0
        completions = [
            Completion(text=t, tokens=k, finish_reason=_FINISH.get(c.finish_reason, "error"))
            for c, t, k in zip(choices, texts, split_tokens(completion_tokens, texts))
        ]
        cost = (
            prompt_tokens * self.opts.price_per_1m_input
            + completion_tokens * self.opts.price_per_1m_output
        ) / 1e6
        s = self._stats
        s["prompt_tokens"] += prompt_tokens
        s["completion_tokens"] += completion_tokens
        s["cost"] += cost
        return RequestOutput(completions=completions, prompt_tokens=prompt_tokens, cost=cost)
