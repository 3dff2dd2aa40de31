"""The ingress's body limit without Ray: the API app (a fake backend) on uvicorn over real HTTP on
loopback, and the middleware called as ASGI where HTTP cannot reach (a Content-Length that lies:
uvicorn frames a body by it, Serve's proxy passes on what its own server framed)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import build_api
from services.config import load_service_config
from services.middleware import BodyLimitMiddleware, BodyTooLarge

LIMIT = 1024
TOO_LARGE = {"detail": f"the request body is larger than the limit of {LIMIT} bytes"}
JSON = {"content-type": "application/json"}


class GradeOnlyBackend:
    """A `ServiceBackend` that grades every prediction correct and counts what it graded."""

    def __init__(self):
        self.graded = 0

    async def correct(self, request: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("not called here")

    async def grade(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.graded += len(requests)
        return [{"correct": True, "predicted_answer": r["gold"], "gold_answer": r["gold"], "reason": None}
                for r in requests]

    async def ready(self) -> None:
        return None


@contextmanager
def uvicorn_on_loopback(app: ASGIApp) -> Iterator[str]:
    """Serve `app` on a free 127.0.0.1 port in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _api(backend: GradeOnlyBackend) -> ASGIApp:
    return build_api(backend, load_service_config(None, [f"limits.max_body_bytes={LIMIT}"]), api_keys=[])


@pytest.fixture(scope="module")
def backend() -> GradeOnlyBackend:
    return GradeOnlyBackend()


@pytest.fixture(scope="module")
def client(backend):
    with uvicorn_on_loopback(_api(backend)) as url, httpx.Client(base_url=url, headers=JSON, timeout=30) as client:
        yield client


def _grade_body(size: int) -> bytes:
    """A valid /v1/grade body of exactly `size` bytes (JSON padded with spaces)."""
    body = json.dumps({"prediction": "7", "gold": "7"}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def _chunked(body: bytes, size: int = 300) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


# ---------------------------------------------------------------- over HTTP
def test_a_body_at_the_limit_is_answered_with_or_without_content_length(client, backend):
    before = backend.graded
    assert client.post("/v1/grade", content=_grade_body(LIMIT)).json()["correct"]
    response = client.post("/v1/grade", content=_chunked(_grade_body(LIMIT)))
    assert response.request.headers["transfer-encoding"] == "chunked" and response.json()["correct"]
    assert backend.graded == before + 2


@pytest.mark.parametrize("size", [LIMIT + 1, 8 << 20])
def test_a_content_length_over_the_limit_gets_413_json(client, backend, size):
    before = backend.graded
    response = client.post("/v1/grade", content=_grade_body(size))
    assert (response.status_code, response.json()) == (413, TOO_LARGE)
    assert backend.graded == before


@pytest.mark.parametrize("size", [LIMIT + 1, 8 << 20])
def test_a_chunked_body_over_the_limit_gets_413_json(client, backend, size):
    before = backend.graded
    response = client.post("/v1/grade", content=_chunked(_grade_body(size), size=65536 if size > LIMIT + 1 else 300))
    assert "content-length" not in response.request.headers
    assert (response.status_code, response.json()) == (413, TOO_LARGE)
    assert backend.graded == before


# ---------------------------------------------------------------- as ASGI
def _call(app: ASGIApp, chunks: list[bytes], content_length: int | None,
          sent: list[Message] | None = None) -> tuple[list[Message], int]:
    """Run one POST through `app`: the messages sent (also appended to `sent`), and how often the
    app asked the server for a message."""
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/grade", "raw_path": b"/v1/grade", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
                for i, chunk in enumerate(chunks)]
    sent = [] if sent is None else sent
    pulls = 0

    async def receive() -> Message:
        nonlocal pulls
        pulls += 1
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent, pulls


def _status_and_json(sent: list[Message]) -> tuple[list[int], Any]:
    statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
    return statuses, json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


class BodyReader:
    """An ASGI app that reads the whole body, keeping each chunk, then answers 200 (or starts its
    200 first when `respond_first`)."""

    def __init__(self, respond_first: bool = False):
        self.chunks: list[bytes] = []
        self.respond_first = respond_first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            message = await receive()
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if not self.respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _limited(app: ASGIApp) -> ASGIApp:
    return BodyLimitMiddleware(app, max_bytes=LIMIT)


def test_a_content_length_over_the_limit_is_refused_before_any_body_is_read():
    reader = BodyReader()
    sent, pulls = _call(_limited(reader), [b" " * (LIMIT + 1)], content_length=LIMIT + 1)
    assert _status_and_json(sent) == ([413], TOO_LARGE)
    assert pulls == 0 and reader.chunks == []


@pytest.mark.parametrize("content_length", [10, LIMIT, None])
def test_a_body_longer_than_its_content_length_gets_413_and_the_app_no_chunk_past_the_limit(content_length):
    reader = BodyReader()
    sent, _ = _call(_limited(reader), [b" " * 600] * 3, content_length=content_length)
    assert _status_and_json(sent) == ([413], TOO_LARGE)
    assert reader.chunks == [b" " * 600]  # the second chunk passed the limit: the app never got it


def test_the_api_answers_a_lying_content_length_with_one_413():
    """The app as built (its own BodyLimitMiddleware): FastAPI answers BodyTooLarge itself (its own
    413), and that answer is dropped for the middleware's."""
    backend = GradeOnlyBackend()
    sent, _ = _call(_api(backend), list(_chunked(_grade_body(4 * LIMIT))), content_length=20)
    assert _status_and_json(sent) == ([413], TOO_LARGE)
    assert backend.graded == 0


def test_a_response_already_started_stands_and_the_error_reaches_the_server():
    reader, sent = BodyReader(respond_first=True), []
    with pytest.raises(BodyTooLarge):
        _call(_limited(reader), [b" " * 600] * 3, content_length=None, sent=sent)
    assert sent == [{"type": "http.response.start", "status": 200, "headers": []}]  # no 413 after it
    assert reader.chunks == [b" " * 600]
