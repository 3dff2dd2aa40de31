"""Run service apps in this process's Ray, on a free 127.0.0.1 port (tests, benchmarks, scripts)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from ray import serve
from ray.serve import RunTarget

from services.app import bind_service
from services.config import ServiceConfig

PROXY_TIMEOUT_MARGIN_S = 5.0  # Serve's proxy times out after the apps' own deadline (their 408 is JSON)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_on_loopback(apps: dict[str, ServiceConfig]) -> Iterator[str]:
    """Serve each app under `/<name>` on a free loopback port; yields the base URL; shuts Serve down.

    Ray must be initialised (with CPUs for the apps' replicas), its head on this machine; Serve
    must not be running. One proxy, on the head: loopback reaches no other, and on a fake
    multi-node cluster (one machine) proxies on other nodes would share the port (SO_REUSEPORT).
    """
    port = free_port()
    timeout_s = max(cfg.request_timeout_s for cfg in apps.values()) + PROXY_TIMEOUT_MARGIN_S
    serve.start(proxy_location="HeadOnly",
                http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": timeout_s})
    try:
        serve.run_many([RunTarget(bind_service(cfg), name=name, route_prefix=f"/{name}") for name, cfg in apps.items()])
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
