"""The vLLM engine on SmolLM2-135M, alone and inside the sample stage's GPU actor pool (GPU only:
skipped, with the reason, without vLLM or CUDA; scripts/gpu_check.sh runs these)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from lema.config import EngineConfig, SamplingConfig, VLLMOptions, load_config
from lema.engines import build_engine
from lema.synthetic import generate_problems


def _missing() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'lema[gpu]')"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]

MODEL = "smollm2-135m"
OPTIONS = VLLMOptions(gpu_memory_utilization=0.25, max_model_len=2048, enforce_eager=True)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


PROMPTS = [chat("What is 2 + 3?"), chat("Name a colour."), chat("Count to five.")]


@pytest.fixture(scope="module")
def engine():
    e = build_engine(EngineConfig(backend="vllm", model=MODEL, vllm=OPTIONS))
    yield e
    e.close()


def test_vllm_greedy_n_and_order(engine):
    outs = engine.generate(PROMPTS, SamplingConfig(n=2, temperature=0.0, max_tokens=24))
    assert len(outs) == 3 and all(o.error is None and len(o.completions) == 2 for o in outs)
    assert all(o.completions[0].text == o.completions[1].text for o in outs)
    assert outs[0].completions[0].text.strip() and "5" in outs[0].completions[0].text
    assert engine.generate(PROMPTS, SamplingConfig(n=2, max_tokens=24)) == outs
    assert all(o.prompt_tokens > 0 for o in outs)


def test_vllm_seeded_sampling_stop_and_length(engine):
    sampled = SamplingConfig(n=3, temperature=1.0, max_tokens=32, seed=5)
    a = engine.generate(PROMPTS, sampled)
    assert a == engine.generate(PROMPTS, sampled)
    short = engine.generate(PROMPTS[2:], SamplingConfig(max_tokens=3))[0].completions[0]
    assert short.finish_reason == "length" and short.tokens == 3
    stopped = engine.generate(PROMPTS[2:], SamplingConfig(max_tokens=64, stop=["3"]))
    c = stopped[0].completions[0]
    assert c.finish_reason == "stop" and "3" not in c.text


def test_vllm_json_schema(engine):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    out = engine.generate(
        [chat("What is 2 + 3? Reply in JSON.")], SamplingConfig(max_tokens=64), json_schema=schema
    )
    assert isinstance(json.loads(out[0].completions[0].text)["answer"], int)


def test_vllm_lora_adapter_changes_outputs(engine, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lema.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model(MODEL))
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    peft_model.save_pretrained(tmp_path / "adapter")
    adapted = build_engine(
        EngineConfig(backend="vllm", model=MODEL, adapter=str(tmp_path / "adapter"), vllm=OPTIONS)
    )
    greedy = SamplingConfig(max_tokens=16)
    try:
        assert adapted.generate(PROMPTS, greedy) != engine.generate(PROMPTS, greedy)
    finally:
        adapted.close()


def test_vllm_over_long_prompt_fails_alone(engine):
    long = chat("word " * 3000)  # past max_model_len 2048
    outs = engine.generate([PROMPTS[0], long, PROMPTS[1]], SamplingConfig(max_tokens=8))
    assert outs[1].error is not None and "max_model_len" in outs[1].error and not outs[1].completions
    assert outs[0].error is None and outs[2].error is None


def test_vllm_per_request_seeds_follow_the_request(engine):
    sampled = SamplingConfig(n=1, temperature=1.0, max_tokens=16)
    alone = engine.generate(PROMPTS[1:2], sampled, seeds=[11])
    together = engine.generate(PROMPTS, sampled, seeds=[10, 11, 12])
    assert together[1] == alone[0]


def test_vllm_plain_prompts_for_a_model_without_template(tiny_plain_model):
    plain = build_engine(EngineConfig(backend="vllm", model=tiny_plain_model, vllm=OPTIONS))
    try:
        assert plain.prompt_format == "plain"
        out = plain.generate([chat("Question: 1 + 1?\nAnswer:")], SamplingConfig(max_tokens=8))
        assert out[0].error is None and out[0].completions[0].tokens > 0
    finally:
        plain.close()


def test_sample_stage_on_vllm(ray_cluster, tmp_path):
    """`run_sample` as the pipeline runs it on a cluster: a `backend: vllm` generator in a pool
    actor that reserves the GPU (`pool.num_gpus=1`)."""
    from pipelines.sample import run_sample
    from pipelines.stage_io import RunContext, StageDir

    engine = EngineConfig(backend="vllm", model=MODEL, vllm=OPTIONS).model_dump(mode="json")
    cfg = load_config(None, [
        f"sample.generators=[{json.dumps({'engine': engine})}]",
        "sample.generators.0.sampling={n: 2, temperature: 0.8, max_tokens: 64, seed: 0}",
        "sample.pool={min_actors: 1, max_actors: 1, num_cpus: 1, num_gpus: 1, batch_size: 8}",
    ])
    problems = generate_problems(16, [2, 3], seed=1)
    stage = StageDir(tmp_path, "sample")
    manifest = run_sample(RunContext.from_rows(cfg, tmp_path, problems=[p.to_dict() for p in problems]), stage, "h")
    rows = stage.read_rows()
    assert len({r["path_id"] for r in rows}) == len(rows) == 16 * 2
    assert manifest["failed"] == 0 and manifest["tokens"] > 0 and stage.is_complete("h")
    assert {r["generator"] for r in rows} == {MODEL}
