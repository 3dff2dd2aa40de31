"""ASGI middleware of the ingress: a deadline on every request that no client header lifts, and a
bound on the request body."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class DeadlineMiddleware:
    """Ends a request that runs past `timeout_s` with 408 (JSON), its handler cancelled.

    Serve's proxy applies `http_options.request_timeout_s` but lets a client change it with the
    `x-request-timeout-seconds` header (0 disables it); this deadline is the app's own, so the
    header cannot lift it.
    """

    def __init__(self, app: ASGIApp, timeout_s: float):
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, tracking_send))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
        except asyncio.CancelledError:  # the caller went away: so does the handler
            task.cancel()
            raise
        if done:
            task.result()  # re-raise what the app raised
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if not started:
            body = {"detail": f"the request took longer than {self.timeout_s:g} s"}
            await JSONResponse(body, status_code=408)(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised by `BodyLimitMiddleware`'s receive once the body passes the limit (an HTTPException:
    FastAPI passes it through body parsing instead of calling it a 400)."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"the request body is larger than the limit of {max_bytes} bytes")


class BodyLimitMiddleware:
    """Answers 413 (JSON) to a request whose body is larger than `max_bytes`.

    A Content-Length over the limit is refused before any of the body is read. Otherwise the bytes
    are counted as the app receives them (a chunked body, or one longer than its Content-Length
    said): the chunk that passes the limit, and any after it, never reach the app; its `receive`
    raises `BodyTooLarge` instead, whatever the app answers to that is dropped, and the 413 is sent
    in its place, unless the app had started its response already (then the app's error stands).
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        over = started = False

        async def limited_receive() -> Message:
            nonlocal received, over
            if over:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if over and not started:  # the app's answer to BodyTooLarge: the 413 below replaces it
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = {"detail": BodyTooLarge(self.max_bytes).detail}
        await JSONResponse(body, status_code=413)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The request's Content-Length, None when absent or not a number (the body is counted anyway)."""
    value = Headers(scope=scope).get("content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
