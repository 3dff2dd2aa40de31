"""The HTTP service on a real Serve app, over real HTTP on loopback.

Three apps share one Serve instance for the module: `api` (the corrector is an OpenAI-compatible
loopback server scripted per question; auth on with two keys), `tiny` (the tiny local model;
auth off) and `idle` (a Corrector scaled to zero).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from ray import serve
from ray.serve.schema import ApplicationStatusOverview, DeploymentStatusOverview
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from lema.correcting import NOT_VERIFIED
from lema.correction import format_correction_reply
from services.config import load_service_config
from services.deployments import not_ready_reason
from services.loopback import serve_on_loopback
from tests.fakes import FakeBehaviour, FakeOpenAIServer

KEYS = ("key-one", "key-two")
AUTH = {"Authorization": f"Bearer {KEYS[1]}"}
QUESTION = "Ann has 3 boxes with 4 pens each. How many pens does she have?"
WRONG = "Step 1: 3 * 4 = 11.\nThe answer is 11."
GOOD_REPLY = format_correction_reply(1, "3 * 4 is 12, not 11.", "Step 1: 3 * 4 = 12.\nThe answer is 12.")
REPLIES = {  # question marker -> the scripted corrector's reply
    "[good]": GOOD_REPLY,
    "[wrong]": GOOD_REPLY.replace("12", "13"),
    "[chatty]": "Looks fine to me! Great job.",
}
ADVERSARIAL = "The answer is $9^{9^{9^{9^{9}}}}$"  # sympy would compute for ever: graded "timeout"
REQUEST_TIMEOUT_S = 4.0
CORRECTOR_TIMEOUT_S = 2.0


def _reply(messages: list[dict]) -> str:
    asked = messages[-1]["content"]
    return next((reply for marker, reply in REPLIES.items() if marker in asked), "Looks fine to me!")


def _failure(messages: list[dict]) -> int | None:
    asked = messages[-1]["content"]
    return 500 if "[fail]" in asked else 401 if "[badkey]" in asked else None


@pytest.fixture(scope="module")
def fake_corrector():
    with FakeOpenAIServer(FakeBehaviour(reply=_reply, fail_if=_failure)) as srv:
        yield srv


@pytest.fixture(scope="module")
def base_url(ray_cluster, tiny_model, fake_corrector):
    small = ["ingress.num_cpus=0.1", "grader.deployment.num_cpus=0.1", "corrector.deployment.num_cpus=0.2"]
    api = load_service_config(None, [
        *small, "corrector.engine.backend=openai", "corrector.engine.model=fake-corrector",
        f"corrector.engine.openai.base_url={fake_corrector.base_url}", "corrector.engine.openai.max_retries=0",
        f"corrector.timeout_s={CORRECTOR_TIMEOUT_S}", f"request_timeout_s={REQUEST_TIMEOUT_S}",
        "grader.timeout_s=1.5", "limits.max_solution_chars=2000", "limits.max_batch_items=4",
        "limits.max_grade_items=8", f"ingress.env_vars={{LEMA_API_KEY: '{KEYS[0]}, {KEYS[1]}'}}",
    ])
    tiny = load_service_config(None, [*small, "corrector.engine.model=tiny", "corrector.sampling.max_tokens=16"])
    idle = load_service_config(None, [
        *small, "corrector.engine.backend=openai", "corrector.engine.model=fake-corrector",
        f"corrector.engine.openai.base_url={fake_corrector.base_url}",
        "corrector.deployment.autoscaling_config.min_replicas=0",
        "corrector.deployment.autoscaling_config.max_replicas=1",
    ])
    with serve_on_loopback({"api": api, "tiny": tiny, "idle": idle}) as url:
        yield url


@pytest.fixture(scope="module")
def api(base_url):
    with httpx.Client(base_url=f"{base_url}/api", headers=AUTH, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def tiny(base_url):
    with httpx.Client(base_url=f"{base_url}/tiny", timeout=60) as client:
        yield client


def _correct(question_marker: str, **fields) -> dict:
    return {"question": f"{QUESTION} {question_marker}", "solution": WRONG, **fields}


# ---------------------------------------------------------------- health, info, auth
def test_health_readiness_and_info(api, tiny):
    assert api.get("/healthz", headers={"Authorization": ""}).json() == {"status": "ok"}
    assert tiny.get("/readyz").json() == {"status": "ready"}
    info = api.get("/v1/info").json()
    assert info["corrector"]["model"] == "fake-corrector" and info["auth"] is True
    assert info["limits"]["max_batch_items"] == 4 and info["corrector_timeout_s"] == CORRECTOR_TIMEOUT_S
    assert tiny.get("/v1/info").json()["corrector"]["model"] == "tiny"
    assert "/v1/correct" in tiny.get("/openapi.json").json()["paths"] and tiny.get("/docs").status_code == 200


def test_readiness_leaves_a_corrector_scaled_to_zero_at_zero(base_url):
    def corrector_replicas() -> dict:
        return serve.status().applications["idle"].deployments["Corrector"].replica_states

    assert corrector_replicas() == {}
    with httpx.Client(base_url=f"{base_url}/idle", timeout=30) as idle:
        answers = [idle.get("/readyz") for _ in range(3)]
    assert corrector_replicas() == {}  # a call to the Corrector would have started one
    assert [answer.json() for answer in answers] == [{"status": "ready"}] * 3


def _app(status: str, message: str = "", **deployments: str) -> ApplicationStatusOverview:
    return ApplicationStatusOverview(status, message, 0.0, {
        name: DeploymentStatusOverview(state, "UNSPECIFIED", {}, f"{name} says {state}" if state != "HEALTHY" else "")
        for name, state in deployments.items()})


def test_not_ready_reason_names_the_app_status_and_each_deployment_not_healthy():
    assert not_ready_reason(_app("RUNNING", Ingress="HEALTHY", Corrector="UPSCALING")) is None
    assert not_ready_reason(None) == "the app is not deployed"
    assert not_ready_reason(_app("DEPLOYING", Ingress="HEALTHY", Corrector="UPDATING")) == (
        "the app is DEPLOYING; Corrector is UPDATING (Corrector says UPDATING)")
    assert not_ready_reason(_app("UNHEALTHY", "The deployments ['Grader'] are UNHEALTHY.", Grader="UNHEALTHY")) == (
        "the app is UNHEALTHY: The deployments ['Grader'] are UNHEALTHY.; Grader is UNHEALTHY (Grader says UNHEALTHY)")


@pytest.mark.parametrize("header", [None, "Bearer nope", f"Basic {KEYS[0]}", f"Bearer {KEYS[0]}x",
                                    "Bearer ключ".encode()])
def test_auth_refuses_missing_and_wrong_keys(api, header):
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=api.base_url, timeout=30) as bare:
        response = bare.post("/v1/grade", json={"prediction": "7", "gold": "7"}, headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]


def test_every_key_is_accepted_and_auth_off_needs_none(api, tiny):
    for key in KEYS:
        headers = {"Authorization": f"Bearer {key}"}
        assert api.post("/v1/grade", json={"prediction": "7", "gold": "7"}, headers=headers).json()["correct"]
    assert tiny.post("/v1/grade", json={"prediction": "7", "gold": "7"}).status_code == 200


# ---------------------------------------------------------------- correct
@pytest.mark.parametrize("marker, status, verified", [
    ("[good]", "verified", True), ("[wrong]", "unverified", False), ("[chatty]", "unparseable", False),
    ("[fail]", "failed", False),
])
def test_correct_statuses_with_gold(api, marker, status, verified):
    body = api.post("/v1/correct", json=_correct(marker, answer="12")).json()
    assert (body["status"], body["verified"], body["model"]) == (status, verified, "fake-corrector")
    if status in ("verified", "unverified"):
        assert body["incorrect_step"] == 1 and "3 * 4" in body["explanation"] and body["raw"]
        assert body["final_answer"] == ("12" if verified else "13")
    if status != "verified":
        assert body["reason"]  # why not: wrong answer, the parser's reason, the engine's error
    assert body["latency_ms"] > 0


def test_correct_without_gold_is_parsed_not_verified(api):
    body = api.post("/v1/correct", json=_correct("[wrong]", prompt="zero_shot", dataset="math")).json()
    assert (body["status"], body["verified"], body["reason"]) == ("unverified", None, NOT_VERIFIED)
    assert body["corrected_solution"].endswith("The answer is 13.") and body["tokens"] > 0


def test_correct_batch_answers_in_order(api):
    markers = ["[chatty]", "[good]", "[fail]", "[wrong]"]
    response = api.post("/v1/correct/batch", json={"items": [_correct(m, answer="12") for m in markers]})
    assert [item["status"] for item in response.json()["items"]] == ["unparseable", "verified", "failed", "unverified"]


def test_tiny_model_corrects_without_auth(tiny):
    body = tiny.post("/v1/correct", json={"question": QUESTION, "solution": WRONG, "answer": "12"}).json()
    assert body["model"] == "tiny" and body["status"] in ("unparseable", "unverified") and body["tokens"] > 0
    assert body["raw"] and body["reason"]  # a random model's reply is kept, with the parser's reason
    items = tiny.post("/v1/correct/batch", json={"items": [{"question": QUESTION, "solution": WRONG}] * 3})
    assert [item["verified"] for item in items.json()["items"]] == [None, None, None]


def test_a_corrector_that_cannot_work_gives_503(api):
    response = api.post("/v1/correct", json=_correct("[badkey]"))
    assert response.status_code == 503 and "cannot work" in response.json()["detail"]


# ---------------------------------------------------------------- grade
def test_grade_one_and_a_list_in_order(api):
    one = api.post("/v1/grade", json={"prediction": "So #### 1,200", "gold": "1200"}).json()
    assert one == {"correct": True, "predicted_answer": "1200", "gold_answer": "1200", "reason": None}
    rows = [
        {"prediction": "The answer is $\\frac{1}{2}$", "gold": "0.5", "dataset": "math"},
        {"prediction": "The answer is 3", "gold": "#### 4"},
        {"prediction": "no number here", "gold": "4"},
        {"prediction": "So \\boxed{\\frac{2}{4}}.", "gold": "\\frac{1}{2}", "dataset": "math", "mode": "lema_compat"},
    ]
    verdicts = api.post("/v1/grade", json=rows).json()
    assert [v["correct"] for v in verdicts] == [True, False, False, False]
    assert [v["reason"] for v in verdicts[1:3]] == ["mismatch", "no answer found"]


# ---------------------------------------------------------------- refused requests
@pytest.mark.parametrize("path, body, field", [
    ("/v1/correct", {**_correct(""), "temperature": 2}, "temperature"),
    ("/v1/correct", _correct("", solution="x" * 2001), "solution"),
    ("/v1/correct", _correct("", question=""), "question"),
    ("/v1/correct", _correct("", prompt="/etc/passwd"), "prompt"),
    ("/v1/correct", _correct("", dataset="../../x y"), "dataset"),
    ("/v1/correct/batch", {"items": [_correct("")] * 5}, "items"),
    ("/v1/correct/batch", {"items": []}, "items"),
    ("/v1/grade", [{"prediction": "1", "gold": "1"}] * 9, "list[GradeRequest]"),
    ("/v1/grade", {"prediction": "1", "gold": "1", "mode": "strict"}, "mode"),
])
def test_bad_fields_get_422_naming_the_field(api, path, body, field):
    response = api.post(path, json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(field in [str(part) for part in error["loc"]] for error in detail), detail
    assert "x" * 100 not in response.text  # the offending input is not echoed


def test_bodies_over_the_limit_get_413_with_or_without_content_length(api):
    too_large = {"detail": "the request body is larger than the limit of 1048576 bytes"}
    big = b"{" + b" " * (8 << 20) + b"}"
    response = api.post("/v1/correct", content=big, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()) == (413, too_large)

    def chunks():  # no Content-Length: sent chunked
        for _ in range(128):
            yield b" " * 65536

    response = api.post("/v1/grade", content=chunks(), headers={"content-type": "application/json"})
    assert (response.status_code, response.json()) == (413, too_large)
    assert api.post("/v1/grade", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422


# ---------------------------------------------------------------- timeouts
def test_slow_corrector_gets_504(api, fake_corrector):
    fake_corrector.behaviour = FakeBehaviour(reply=_reply, latency_s=CORRECTOR_TIMEOUT_S + 0.5)
    try:
        response = api.post("/v1/correct", json=_correct("[good]"))
    finally:
        fake_corrector.behaviour = FakeBehaviour(reply=_reply, fail_if=_failure)
    assert response.status_code == 504 and "did not answer" in response.json()["detail"]


@pytest.mark.parametrize("client_timeout_header", ["0", "600"])
def test_request_deadline_gives_408_whatever_the_client_header_says(api, client_timeout_header):
    """Four grades that each time out (1.5 s) outlast the 4 s deadline; the header (0 turns Serve's
    proxy timeout off, 600 lifts it) cannot lift the app's."""
    response = api.post("/v1/grade", json=[{"prediction": ADVERSARIAL, "gold": "5", "dataset": "math"}] * 4,
                        headers={"x-request-timeout-seconds": client_timeout_header})
    assert response.status_code == 408
    assert response.json()["detail"] == f"the request took longer than {REQUEST_TIMEOUT_S:g} s"


# ---------------------------------------------------------------- fuzz
def _fuzz(base_url: str, mode: GenerationMode, examples: int) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json")

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def call(case):
        case.call_and_validate(base_url=f"{base_url}/api", headers=AUTH, checks=[not_a_server_error], timeout=60)

    call()


@pytest.mark.parametrize("mode", list(GenerationMode))
def test_fuzzed_requests_get_no_5xx(base_url, mode):
    """Requests generated from the OpenAPI spec (fitting it, and not) for every operation: no 5xx."""
    _fuzz(base_url, mode, examples=40)


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(GenerationMode))
def test_longer_fuzz_gets_no_5xx(base_url, mode):
    _fuzz(base_url, mode, examples=400)
