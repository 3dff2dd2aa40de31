"""ASGI middleware of the ingress: a deadline on every request that no client header lifts."""

from __future__ import annotations

import asyncio
import contextlib

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
