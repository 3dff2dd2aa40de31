"""The service under load on a real Serve app: a flood beyond the corrector's queue gets 429 with
Retry-After; a Corrector replica killed mid-load costs no hung request and comes back; two
Corrector replicas share one API budget."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
from ray import serve

from lema.correction import format_correction_reply
from services.config import load_service_config
from services.loopback import serve_on_loopback
from tests.fakes import FakeBehaviour, FakeOpenAIServer

pytestmark = pytest.mark.slow

LATENCY_S = 1.0  # each corrector call at the fake API
RETRY_AFTER_S = 3
REQUEST = {"question": "Ann has 3 boxes with 4 pens each. How many pens?", "answer": "12",
           "solution": "Step 1: 3 * 4 = 11.\nThe answer is 11."}
REPLY = format_correction_reply(1, "3 * 4 is 12.", "Step 1: 3 * 4 = 12.\nThe answer is 12.")


@pytest.fixture(scope="module")
def fake_corrector():
    with FakeOpenAIServer(FakeBehaviour(latency_s=LATENCY_S, reply=lambda messages: REPLY)) as srv:
        yield srv


@pytest.fixture(scope="module")
def base_url(ray_cluster, fake_corrector):
    """App `flood`: two requests in a corrector replica at once, two more queued, the rest refused.
    App `kill`: room for all; calls whose replica dies are retried twice."""
    common = [
        "ingress.num_cpus=0.1", "grader.deployment.num_cpus=0.1", "corrector.deployment.num_cpus=0.2",
        "corrector.engine.backend=openai", "corrector.engine.model=fake-corrector",
        f"corrector.engine.openai.base_url={fake_corrector.base_url}", "corrector.max_batch_size=2",
        "corrector.timeout_s=30", "request_timeout_s=40",
    ]
    flood = load_service_config(None, [
        *common, "corrector.deployment.max_ongoing_requests=2", "corrector.deployment.max_queued_requests=2",
        f"corrector.deployment.backpressure_config.retry_after_s={RETRY_AFTER_S}",
    ])
    kill = load_service_config(None, [*common, "corrector.retries=2"])
    shared = load_service_config(None, [
        *common, "corrector.engine.openai.max_concurrency=1", "corrector.max_batch_size=1",
        "corrector.deployment.autoscaling_config.min_replicas=2",
        "corrector.deployment.autoscaling_config.max_replicas=2",
    ])
    with serve_on_loopback({"flood": flood, "kill": kill, "shared": shared}) as url:
        yield url


async def _post_many(url: str, n: int, on_sent=None) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=90) as client:
        calls = [asyncio.ensure_future(client.post("/v1/correct", json=REQUEST)) for _ in range(n)]
        if on_sent is not None:
            await on_sent()
        return list(await asyncio.gather(*calls))


def test_flood_beyond_the_queue_gets_429_with_retry_after(base_url):
    responses = asyncio.run(_post_many(f"{base_url}/flood", 24))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429}, statuses  # Serve may refuse more than the queue's room (its router says)
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.headers["retry-after"] == str(RETRY_AFTER_S) and "queue is full" in r.json()["detail"]
               for r in refused)
    assert all(r.json()["status"] == "verified" for r in responses if r.status_code == 200)


def _corrector_pid() -> int:
    return serve.get_deployment_handle("Corrector", "kill").ready.remote().result(timeout_s=30)["pid"]


def test_killed_corrector_replica_costs_no_hung_request_and_comes_back(base_url, fake_corrector):
    url = f"{base_url}/kill"
    pid = _corrector_pid()
    fake_corrector.reset()

    async def kill_once_in_flight() -> None:
        while fake_corrector.calls == 0:  # the replica is working on the first batch
            await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    responses = asyncio.run(_post_many(url, 6, on_sent=kill_once_in_flight))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503, 504}, statuses  # retried, or a clean error; none hung
    assert all(r.json()["status"] == "verified" for r in responses if r.status_code == 200)

    with httpx.Client(base_url=url, timeout=30) as client:
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the Corrector replica did not come back"
            time.sleep(0.5)
        assert _corrector_pid() != pid
        assert client.post("/v1/correct", json=REQUEST).json()["status"] == "verified"


def test_corrector_replicas_share_one_api_budget(base_url, fake_corrector):
    """max_concurrency 1 holds for the app, not per replica: two replicas, one call in flight."""
    fake_corrector.reset()
    responses = asyncio.run(_post_many(f"{base_url}/shared", 8))  # 4: both replicas rarely overlap
    assert [r.status_code for r in responses] == [200] * 8
    assert fake_corrector.calls == 8 and fake_corrector.max_in_flight == 1  # a budget per replica: 2
