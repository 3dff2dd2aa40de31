"""Engines: the transformers backend on the tiny model (and once on SmolLM2-135M), the OpenAI
backend against a real local HTTP server (tests/fakes/openai_server.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import time

import pytest

from lema.config import EngineConfig, OpenAIOptions, SamplingConfig
from lema.engines import STAT_KEYS, Engine, EngineError, build_engine
from tests.fakes import FakeBehaviour, FakeOpenAIServer


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


PROMPTS = [chat(f"What is {i} + {i * 7}?" + " Think." * i) for i in range(5)]


# ---------------------------------------------------------------- transformers
@pytest.fixture(scope="module")
def tiny_engine(tiny_model):
    engine = build_engine(EngineConfig(model="tiny", batch_size=2, threads=2))
    yield engine
    engine.close()


def test_model_without_chat_template_gets_plain_prompts(tiny_plain_model):
    from lema.prompts import render_plain

    engine = build_engine(EngineConfig(model=tiny_plain_model, batch_size=2, threads=2))
    assert engine.prompt_format == "plain"
    outs = engine.generate(PROMPTS[:3], SamplingConfig(n=2, temperature=1.0, max_tokens=6, seed=0))
    assert all(o.error is None and len(o.completions) == 2 for o in outs)
    assert outs[0].prompt_tokens == len(engine.tok(render_plain(PROMPTS[0]))["input_ids"])
    engine.close()
    with pytest.raises(EngineError, match="no chat template; set prompt_format: plain"):
        build_engine(EngineConfig(model=tiny_plain_model, prompt_format="chat"))


def test_per_request_seeds_follow_the_request_not_the_batch(tiny_engine):
    sampling = SamplingConfig(n=1, temperature=1.0, max_tokens=6)
    together = tiny_engine.generate(PROMPTS[:2], sampling, seeds=[1, 2])
    assert together == tiny_engine.generate(PROMPTS[:2], sampling, seeds=[1, 2])
    assert together != tiny_engine.generate(PROMPTS[:2], sampling, seeds=[3, 4])


def test_build_engine_rejects_unknown_backend():
    cfg = EngineConfig.model_construct(backend="tpu")
    with pytest.raises(ValueError, match="'tpu'.*transformers, vllm or openai"):
        build_engine(cfg)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_backend_without_vllm_says_how_to_install():
    with pytest.raises(EngineError, match=r"lema\[gpu\]"):
        build_engine(EngineConfig(backend="vllm", model="tiny"))


def test_transformers_n_samples_counts_and_order(tiny_engine):
    assert isinstance(tiny_engine, Engine)
    sampling = SamplingConfig(n=3, temperature=1.0, max_tokens=8, seed=1)
    outs = tiny_engine.generate(PROMPTS, sampling)
    assert len(outs) == len(PROMPTS)
    for out in outs:
        assert out.error is None and len(out.completions) == 3
        for c in out.completions:
            assert 0 < c.tokens <= 8 and c.finish_reason in ("stop", "length")
            assert c.finish_reason == "stop" or c.tokens == 8
    # order: each request alone gives its prompt length, wherever it sat in the sorted batch
    alone = [tiny_engine.generate([p], sampling)[0].prompt_tokens for p in PROMPTS]
    assert [o.prompt_tokens for o in outs] == alone
    assert alone == sorted(alone)  # prompts grow, so sorting really reordered them
    assert len({c.text for c in outs[0].completions}) > 1  # sampling varies
    stats = tiny_engine.stats()
    assert set(STAT_KEYS) <= set(stats)
    assert stats["completion_tokens"] >= sum(c.tokens for o in outs for c in o.completions)


def test_transformers_greedy_and_seeded_are_deterministic(tiny_engine):
    greedy = SamplingConfig(n=2, temperature=0.0, max_tokens=6)
    a = tiny_engine.generate(PROMPTS[:3], greedy)
    b = tiny_engine.generate(PROMPTS[:3], greedy)
    assert a == b
    assert all(o.completions[0] == o.completions[1] for o in a)
    sampled = SamplingConfig(n=2, temperature=1.0, max_tokens=6, seed=7)
    c = tiny_engine.generate(PROMPTS[:3], sampled)
    assert c == tiny_engine.generate(PROMPTS[:3], sampled)
    assert c != tiny_engine.generate(PROMPTS[:3], sampled.model_copy(update={"seed": 8}))


def test_transformers_stop_strings_and_length(tiny_engine):
    base = SamplingConfig(n=1, temperature=1.0, max_tokens=16, seed=3)
    full = tiny_engine.generate([PROMPTS[0]], base)[0].completions[0]
    assert full.finish_reason == "length" and full.tokens == 16
    stop = full.text[6:9]  # a stop string taken from the middle of the free-running text
    cut = tiny_engine.generate([PROMPTS[0]], base.model_copy(update={"stop": [stop]}))
    c = cut[0].completions[0]
    assert c.finish_reason == "stop"
    assert c.text == full.text[: full.text.index(stop)]
    assert stop not in c.text and c.tokens < 16


def test_transformers_bad_request_fails_alone(tiny_engine):
    outs = tiny_engine.generate([chat("hi"), [{"role": "user"}]], SamplingConfig(max_tokens=2))
    assert outs[0].error is None and len(outs[0].completions) == 1
    assert "chat template" in outs[1].error and outs[1].completions == []


def test_transformers_lora_adapter_changes_outputs(tiny_engine, tiny_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero (a no-op adapter): make it bite
                p.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    greedy = SamplingConfig(temperature=0.0, max_tokens=8)
    adapted = build_engine(EngineConfig(model="tiny", adapter=str(tmp_path / "adapter")))
    try:
        assert adapted.generate(PROMPTS[:2], greedy) != tiny_engine.generate(PROMPTS[:2], greedy)
    finally:
        adapted.close()
    with pytest.raises(EngineError, match="no-such-adapter"):
        build_engine(EngineConfig(model="tiny", adapter=str(tmp_path / "no-such-adapter")))


def test_smollm2_writes_text():
    engine = build_engine(EngineConfig(model="smollm2-135m", batch_size=2))
    outs = engine.generate(
        [chat("What is 2 + 3?"), chat("Name a colour.")], SamplingConfig(max_tokens=16)
    )
    engine.close()
    assert all(o.completions[0].text.strip() for o in outs), outs


# ---------------------------------------------------------------- openai
@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def fake(server):
    server.behaviour = FakeBehaviour()
    server.reset()
    return server


def api_engine(srv: FakeOpenAIServer, **opts) -> Engine:
    options = {
        "base_url": srv.base_url,
        "backoff_s": 0.01,
        "timeout_s": 5.0,
        "max_retries": 3,
    } | opts
    return build_engine(
        EngineConfig(backend="openai", model="fake", openai=OpenAIOptions(**options))
    )


def test_openai_success_tokens_and_cost(fake):
    engine = api_engine(fake, price_per_1m_input=2.0, price_per_1m_output=4.0)
    outs = engine.generate([chat("hello world"), chat("one two three")], SamplingConfig(n=3))
    engine.close()
    assert [o.completions[0].text for o in outs] == ["echo: hello world", "echo: one two three"]
    assert all(len(o.completions) == 3 and o.error is None for o in outs)
    assert outs[0].prompt_tokens == 2 and sum(c.tokens for c in outs[0].completions) == 9
    assert outs[0].cost == pytest.approx((2 * 2 + 9 * 4) / 1e6)
    s = engine.stats()
    assert (s["requests"], s["prompt_tokens"], s["completion_tokens"]) == (2, 5, 21)
    assert s["cost"] == pytest.approx((5 * 2 + 21 * 4) / 1e6)
    assert fake.requests[0]["n"] == 3 and fake.requests[0]["seed"] == 0


def test_openai_length_and_response_format(fake):
    engine = api_engine(fake, structured_output=True)
    schema = {"type": "object", "properties": {"step": {"type": "integer"}}}
    out = engine.generate([chat("a b c d e f")], SamplingConfig(max_tokens=3), json_schema=schema)
    engine.close()
    assert out[0].completions[0].finish_reason == "length"
    assert fake.requests[0]["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize("status", [429, 500])
def test_openai_retries_then_succeeds(fake, status):
    fake.behaviour = FakeBehaviour(fail_first=2, fail_status=status)
    engine = api_engine(fake)
    out = engine.generate([chat("x")], SamplingConfig())
    engine.close()
    assert out[0].error is None and out[0].completions[0].text == "echo: x"
    assert engine.stats()["retries"] == 2 and fake.calls == 3
    assert fake.statuses[status] == 2


def test_openai_timeouts_then_succeeds(fake):
    fake.behaviour = FakeBehaviour(hang_first=2, hang_s=3.0)
    engine = api_engine(fake, timeout_s=0.3)
    start = time.perf_counter()
    out = engine.generate([chat("slow")], SamplingConfig())
    engine.close()
    assert out[0].error is None and engine.stats()["retries"] == 2
    assert time.perf_counter() - start < 3.0  # the server would have taken 3 s a call


def test_openai_permanent_failure_is_one_error(fake):
    fake.behaviour = FakeBehaviour(fail_if=lambda m: 500 if "FAIL" in m[-1]["content"] else None)
    engine = api_engine(fake, max_retries=2)
    outs = engine.generate([chat("ok 1"), chat("FAIL"), chat("ok 2")], SamplingConfig())
    engine.close()
    assert outs[1].error and "3 attempts" in outs[1].error and not outs[1].completions
    assert outs[0].completions[0].text == "echo: ok 1" and outs[2].error is None
    s = engine.stats()
    assert (s["failures"], s["retries"], fake.calls) == (1, 2, 5)


def test_openai_client_errors_do_not_retry_and_bad_key_raises(fake):
    fake.behaviour = FakeBehaviour(fail_if=lambda m: 400)
    engine = api_engine(fake)
    out = engine.generate([chat("x")], SamplingConfig())
    assert "400" in out[0].error and fake.calls == 1
    fake.behaviour = FakeBehaviour(fail_if=lambda m: 401)
    with pytest.raises(EngineError, match="refused the key"):
        engine.generate([chat("x")], SamplingConfig())
    engine.close()


def test_openai_cache_pays_once(fake, tmp_path):
    requests = [chat(f"q{i}") for i in range(4)]
    first = api_engine(fake, cache_dir=str(tmp_path), price_per_1m_output=1.0)
    a = first.generate(requests, SamplingConfig(n=2))
    first.close()
    assert fake.calls == 4 and not any(o.cached for o in a)
    second = api_engine(fake, cache_dir=str(tmp_path), price_per_1m_output=1.0)
    b = second.generate(requests, SamplingConfig(n=2))
    assert fake.calls == 4 and all(o.cached and o.cost == 0 for o in b)
    assert [o.completions for o in b] == [o.completions for o in a]
    assert second.stats()["cache_hits"] == 4 and second.stats()["cost"] == 0
    second.generate(requests[:1], SamplingConfig(n=2, temperature=0.5))  # other settings: miss
    second.close()
    assert fake.calls == 5


def test_openai_concurrency_bound(fake):
    fake.behaviour = FakeBehaviour(latency_s=0.1)
    engine = api_engine(fake, max_concurrency=3)
    outs = engine.generate([chat(str(i)) for i in range(12)], SamplingConfig())
    engine.close()
    assert [o.completions[0].text for o in outs] == [f"echo: {i}" for i in range(12)]
    assert fake.max_in_flight == 3


def test_openai_requests_per_minute(fake):
    engine = api_engine(fake, requests_per_minute=300)  # 5/s, bursts of 5
    start = time.perf_counter()
    engine.generate([chat(str(i)) for i in range(10)], SamplingConfig())
    engine.close()
    assert time.perf_counter() - start >= 0.9


def test_openai_from_inside_an_event_loop(fake):
    engine = api_engine(fake)

    async def main():
        sync = engine.generate([chat("a")], SamplingConfig())  # a loop is running here
        together = await asyncio.gather(
            engine.agenerate([chat("b")], SamplingConfig()),
            engine.agenerate([chat("c")], SamplingConfig()),
        )
        return sync, together

    sync, (b, c) = asyncio.run(main())
    engine.close()
    assert [o.completions[0].text for o in (sync[0], b[0], c[0])] == ["echo: a", "echo: b", "echo: c"]


def test_openai_plain_prompts_go_to_completions(fake):
    engine = build_engine(EngineConfig(backend="openai", model="base", prompt_format="plain",
                                       openai=OpenAIOptions(base_url=fake.base_url, max_retries=0)))
    messages = [{"role": "user", "content": "Question: What is 1 + 1?\nAnswer: Let's think step by step."}]
    outs = engine.generate([messages], SamplingConfig(max_tokens=20), seeds=[5])
    engine.close()
    body = fake.requests[-1]
    assert body["prompt"] == "Question: What is 1 + 1?\nAnswer: Let's think step by step.\n"
    assert "messages" not in body
    assert body["seed"] == 5 and "\nQuestion:" in body["stop"]
    assert outs[0].completions[0].text.startswith("echo:")


def test_openai_per_request_seeds_key_the_cache(fake, tmp_path):
    engine = api_engine(fake, cache_dir=str(tmp_path))
    engine.generate([chat("a"), chat("b")], SamplingConfig(), seeds=[1, 2])
    assert [r["seed"] for r in fake.requests] == [1, 2]
    engine.generate([chat("b")], SamplingConfig(), seeds=[2])  # another batch, same request: a hit
    engine.generate([chat("b")], SamplingConfig(), seeds=[3])
    engine.close()
    assert fake.calls == 3


def test_openai_needs_a_key_without_base_url(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EngineError, match="OPENAI_API_KEY"):
        build_engine(EngineConfig(backend="openai", model="gpt-4o"))
