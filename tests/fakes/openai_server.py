"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

    with FakeOpenAIServer(FakeBehaviour(latency_s=0.05, fail_first=2, fail_status=429)) as srv:
        cfg = EngineConfig(backend="openai", model="fake",
                           openai=OpenAIOptions(base_url=srv.base_url))
        ...
        srv.calls, srv.max_in_flight, srv.requests[-1]  # what the server saw

It runs uvicorn in a background thread. Tokens are counted as whitespace-separated words.
Set `srv.behaviour` to change the script between runs and `srv.reset()` to zero the counters.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typing_extensions import Self

ChatMessages = list[dict[str, Any]]


def echo_reply(messages: ChatMessages) -> str:
    """The default reply: the last user message, echoed."""
    users = [m for m in messages if m.get("role") == "user"]
    return f"echo: {users[-1]['content'] if users else ''}"


@dataclass
class FakeBehaviour:
    """What the server does, call by call (calls are numbered from 0 in arrival order)."""

    latency_s: float = 0.0  # every answer waits this long
    reply: Callable[[ChatMessages], str] = echo_reply  # messages -> assistant text
    fail_first: int = 0  # the first k calls answer fail_status
    fail_status: int = 429
    fail_rate: float = 0.0  # after those, each call fails with fail_status at this rate
    hang_first: int = 0  # the first k calls sleep hang_s before answering (client timeouts)
    hang_s: float = 10.0
    fail_if: Callable[[ChatMessages], int | None] | None = None
    """Per-request verdict: a status code to always fail that request with, or None."""
    retry_after_s: float | None = None  # Retry-After header on 429s
    seed: int = 0  # for fail_rate


@dataclass
class _State:
    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    statuses: Counter = field(default_factory=Counter)
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each call


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "rate_limit_exceeded" if status == 429 else "server_error"
    body = {"error": {"message": message, "type": kind, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _choice(index: int, text: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    finish = "stop"
    for stop in body.get("stop") or []:
        if stop and stop in text:
            text = text[: text.index(stop)]
    words = text.split()
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if max_tokens is not None and len(words) > max_tokens:
        words, finish = words[:max_tokens], "length"
        text = " ".join(words)
    message = {"role": "assistant", "content": text}
    return {"index": index, "message": message, "finish_reason": finish}, len(words)


class FakeOpenAIServer:
    """The server; use as a context manager (or call start/stop)."""

    def __init__(self, behaviour: FakeBehaviour | None = None):
        self.behaviour = behaviour or FakeBehaviour()
        self._state = _State()
        self._lock = threading.Lock()
        self._rng = random.Random(self.behaviour.seed)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------ counters
    @property
    def calls(self) -> int:
        """HTTP calls to /v1/chat/completions and /v1/completions so far (failed ones too)."""
        return self._state.calls

    @property
    def max_in_flight(self) -> int:
        """Most calls being handled at the same time."""
        return self._state.max_in_flight

    @property
    def statuses(self) -> Counter:
        """Status code -> how many calls got it."""
        return self._state.statuses

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Request bodies, in arrival order."""
        return self._state.requests

    @property
    def arrivals(self) -> list[float]:
        """When each call arrived (time.monotonic()), in arrival order."""
        return self._state.arrivals

    def reset(self) -> None:
        with self._lock:
            self._state = _State()
            self._rng = random.Random(self.behaviour.seed)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------ app
    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": "fake", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await self._handle(await request.json())

        @app.post("/v1/completions")  # plain-text prompts (a base model): read as one user message
        async def completions(request: Request):
            return await self._handle(await request.json(), plain=True)

        return app

    async def _handle(self, body: dict[str, Any], plain: bool = False) -> JSONResponse:
        with self._lock:
            state = self._state
            number = state.calls
            state.calls += 1
            state.requests.append(body)
            state.arrivals.append(time.monotonic())
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            fail_roll = self._rng.random()
        try:
            response = await self._answer(number, body, fail_roll, plain)
        finally:
            with self._lock:
                state.in_flight -= 1
        with self._lock:
            state.statuses[response.status_code] += 1
        return response

    async def _answer(self, number: int, body: dict[str, Any], fail_roll: float, plain: bool) -> JSONResponse:
        b = self.behaviour
        messages = [{"role": "user", "content": body["prompt"]}] if plain else body.get("messages") or []
        if number < b.hang_first:
            await asyncio.sleep(b.hang_s)
        if b.latency_s:
            await asyncio.sleep(b.latency_s)
        if b.fail_if is not None and (status := b.fail_if(messages)) is not None:
            return _error(status, f"scripted failure for this request ({status})")
        if number < b.fail_first or fail_roll < b.fail_rate:
            headers = None
            if b.fail_status == 429 and b.retry_after_s is not None:
                headers = {"retry-after": str(b.retry_after_s)}
            return _error(b.fail_status, f"scripted failure on call {number}", headers)
        text = b.reply(messages)
        choices, counts = [], []
        for i in range(int(body.get("n") or 1)):
            choice, tokens = _choice(i, text, body)
            if plain:
                choice["text"] = choice.pop("message")["content"]
            choices.append(choice)
            counts.append(tokens)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": sum(counts),
            "total_tokens": prompt_tokens + sum(counts),
        }
        return JSONResponse(
            {
                "id": f"cmpl-{number}",
                "object": "text_completion" if plain else "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": choices,
                "usage": usage,
            }
        )

    # ------------------------------------------------------------ lifecycle
    def start(self) -> FakeOpenAIServer:
        config = uvicorn.Config(
            self._app(),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
