"""Every GPU config's training fits the GPU of each node type it can land on (lema/memory.py's
estimate), and would not without gradient checkpointing where that is on; the estimate's counts
match a real model: parameters of Llama-2-7B and -70B built on the meta device, and the bytes
autograd saves for a tiny grouped-query Llama's layer, LoRA (bf16, QLoRA) and full (DDP's fp32
weights, FSDP's bf16 compute), on the CPU under bf16 autocast as on CUDA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lema.config import LemaConfig, LoraConfig, TrainConfig, load_config
from lema.memory import (
    GIB,
    GPU_MEMORY_MIB,
    LlamaShape,
    adapted_linears,
    estimate_train_memory,
    full_layer_activation_bytes,
    layer_activation_bytes,
    lora_params,
    model_shape,
)

ROOT = Path(__file__).parent.parent
INSTANCE_GPUS = {  # AWS instance type: (GPUs, GPU), for cluster.yaml's InstanceType
    "g5.2xlarge": (1, "A10G"), "g5.12xlarge": (4, "A10G"), "g6.xlarge": (1, "L4"), "g6.12xlarge": (4, "L4"),
    "g6e.xlarge": (1, "L40S"), "g6e.12xlarge": (4, "L40S"), "p4de.24xlarge": (8, "A100-80GB"),
    "p5.48xlarge": (8, "H100"),
}
RAY_ACCELERATOR = {  # GPU: the accelerator_type a node type may declare (ray.util.accelerators' names)
    "A10G": "A10G", "L4": "L4", "L40S": "L40S", "A100-80GB": "A100-80G", "H100": "H100",
}
MARGIN = 0.9  # of a GPU's memory for the estimate: the rest for the CUDA context and fragmentation
K8S_INSTANCE_LABEL = "node.kubernetes.io/instance-type"


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _gpu_types(cluster: dict[str, Any]) -> dict[str, tuple[str, dict[str, float]]]:
    """cluster.yaml's GPU node types: {name: (GPU model, resources)}, the model by InstanceType."""
    out = {}
    for name, t in cluster["available_node_types"].items():
        if not t["resources"].get("GPU"):
            continue
        instance = t["node_config"]["InstanceType"]
        assert instance in INSTANCE_GPUS, f"{name}: add {instance}'s GPUs to INSTANCE_GPUS"
        count, gpu = INSTANCE_GPUS[instance]
        assert t["resources"]["GPU"] == count, f"{name}: {instance} has {count} GPUs"
        out[name] = (gpu, t["resources"])
    return out


def _landing_types(cfg: LemaConfig, cluster: dict[str, Any]) -> dict[str, str]:
    """The GPU node types the training workers can land on, {name: GPU}: with STRICT_PACK those
    that hold all the workers, else any that holds one ({GPU: 1, CPU: cpus_per_worker} each, and
    with train.accelerator_type a share of the node's `accelerator_type:<type>`, as Ray Train asks)."""
    train = cfg.train
    n = train.num_workers if train.placement_strategy == "STRICT_PACK" else 1
    wanted = f"accelerator_type:{train.accelerator_type}" if train.accelerator_type else None
    return {name: gpu for name, (gpu, res) in _gpu_types(cluster).items()
            if res["GPU"] >= n and res.get("CPU", 0) >= n * train.cpus_per_worker
            and (wanted is None or res.get(wanted, 0) > 0)}


def _train_configs() -> list[str]:
    return [p.name for p in sorted((ROOT / "configs").glob("*.yaml")) if load_config(p).train.use_gpu]


def _config(name: str) -> LemaConfig:
    cfg = load_config(ROOT / "configs" / name)
    try:
        model_shape(cfg.base_model)
    except KeyError as e:
        pytest.skip(str(e))
    return cfg


def _report(name: str, train: TrainConfig, model: str, gpu: str) -> tuple[float, float, str]:
    """(estimate GiB, GPU GiB, a line with the parts)."""
    est = estimate_train_memory(train, model)
    parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in vars(est).items())
    have = GPU_MEMORY_MIB[gpu] / 1024
    return est.total / GIB, have, f"{name}: {est.total / GIB:.1f} GiB ({parts}) on a {gpu} of {have:.0f} GiB"


def test_there_are_gpu_training_configs():
    assert {"gsm8k_lema.yaml", "gsm8k_cot.yaml", "paper_gsm8k_7b.yaml", "paper_math_70b_full.yaml"} \
        <= set(_train_configs())


def test_node_types_declare_their_own_gpu_as_accelerator_type(cluster):
    """A declared accelerator_type:<X> names the node's GPU as Ray does, so that a config asking
    for it gets the GPU its memory estimate is for."""
    from ray.util.accelerators import accelerators

    assert set(RAY_ACCELERATOR.values()) <= {v for k, v in vars(accelerators).items() if k.isupper()}
    for name, (gpu, res) in _gpu_types(cluster).items():
        declared = {k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")}
        assert declared <= {RAY_ACCELERATOR[gpu]}, f"{name}: a {gpu} node declares {declared}"


def test_the_70b_full_fine_tune_lands_on_a100_80gb_only(cluster):
    cfg = _config("paper_math_70b_full.yaml")
    assert _landing_types(cfg, cluster) == {"gpu-8x": "A100-80GB"}
    anywhere = cfg.model_copy(update={"train": cfg.train.model_copy(update={"accelerator_type": None})})
    assert len(_landing_types(anywhere, cluster)) > 1  # without it, PACK would take smaller GPUs too


@pytest.mark.parametrize("name", _train_configs())
def test_training_fits_the_gpus_it_can_land_on(name, cluster):
    cfg = _config(name)
    landing = _landing_types(cfg, cluster)
    assert landing, f"{name}: no node type holds its training workers"
    for gpu in landing.values():
        need, have, line = _report(name, cfg.train, cfg.base_model, gpu)
        assert need <= MARGIN * have, line


@pytest.mark.parametrize("name", _train_configs())
def test_checkpointing_is_on_where_it_is_needed(name, cluster):
    """The point of gradient checkpointing (a third more compute): without it, no fit on some GPU
    the workers can land on (a 7B LoRA run that may land on gpu-4x's L40S needs it there, though
    gpu-8x's A100s would hold it without)."""
    cfg = _config(name)
    if not cfg.train.gradient_checkpointing:
        pytest.skip("no gradient checkpointing")
    bare = cfg.train.model_copy(update={"gradient_checkpointing": False})
    reports = [_report(name, bare, cfg.base_model, gpu) for gpu in set(_landing_types(cfg, cluster).values())]
    assert any(need > have for need, have, _ in reports), \
        "fits everywhere without checkpointing: " + "; ".join(line for *_, line in reports)


def test_k8s_gpu_groups_run_on_cluster_yamls_instance_types(cluster):
    """The GPU groups are pinned to the instance types whose GPUs the configs are sized for."""
    for path in sorted((ROOT / "k8s").glob("ray*.yaml")):
        text = path.read_text()
        for doc in yaml.safe_load_all(text):
            for group in _worker_groups(doc):
                node_type = cluster["available_node_types"][group["groupName"]]
                if node_type["resources"].get("GPU"):
                    selector = group["template"]["spec"].get("nodeSelector", {})
                    assert selector.get(K8S_INSTANCE_LABEL) == node_type["node_config"]["InstanceType"], \
                        f"{path.name} {group['groupName']}"


def _worker_groups(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, dict):
        return doc.get("workerGroupSpecs", []) + [g for v in doc.values() for g in _worker_groups(v)]
    if isinstance(doc, list):
        return [g for v in doc for g in _worker_groups(v)]
    return []


# ---------------------------------------------------------------- the estimate against real models
def test_unknown_model_and_target_are_named():
    with pytest.raises(KeyError, match="no shape for model 'org/other'.*meta-llama/Llama-2-7b-hf"):
        model_shape("org/other")
    with pytest.raises(ValueError, match=r"\['lm_proj'\].*q_proj"):
        adapted_linears(model_shape("meta-llama/Llama-2-7b-hf"), ["q_proj", "lm_proj"])


@pytest.mark.parametrize("model_id,params,adapter", [
    ("meta-llama/Llama-2-7b-hf", 6_738_415_616, 159_907_840),
    ("meta-llama/Llama-2-70b-hf", 68_976_648_192, 828_375_040),  # grouped-query: 8 kv heads of 64
], ids=["7b", "70b"])
def test_parameter_counts_match_llama_2_built_on_meta(model_id, params, adapter):
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    from lema.sft import build_lora_model

    shape = model_shape(model_id)
    with torch.device("meta"):
        model = LlamaForCausalLM(_llama_config(LlamaConfig, shape))
        assert sum(p.numel() for p in model.parameters()) == shape.params == params
        layer = model.model.layers[0]
        assert sum(p.numel() for p in layer.parameters()) == shape.layer_params
        model = build_lora_model(model, LoraConfig(r=64, target_modules="all-linear"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == lora_params(shape, 64, "all-linear") == adapter


def _llama_config(config_class: Any, shape: LlamaShape) -> Any:
    return config_class(hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                        num_key_value_heads=shape.kv_heads or shape.heads, intermediate_size=shape.intermediate,
                        vocab_size=shape.vocab, attn_implementation="sdpa")


TINY = LlamaShape(hidden=256, layers=2, heads=4, kv_heads=2, intermediate=688, vocab=512)  # grouped-query


@pytest.mark.parametrize("load_in_4bit", [False, True], ids=["bf16", "qlora"])
def test_layer_count_matches_what_autograd_saves(load_in_4bit, tmp_path):
    """What one layer saves for the backward pass, per example (a batch of 2 less a batch of 1:
    what every example shares, RoPE's tables and autocast's copies of the adapter weights, cancels
    out), counted by a saved-tensors hook, is layer_activation_bytes x seq. The CPU stands in for
    CUDA: bf16 autocast as lema/sft.py runs it there, the model prepared as pipelines/train.py
    does; its dropout masks take their input's 4 bytes (CUDA's: 1)."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    from lema.sft import build_lora_model

    shape, seq, lora = TINY, 96, LoraConfig(r=8, dropout=0.05)
    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama_config(LlamaConfig, shape)).to(torch.bfloat16)
    if load_in_4bit:
        pytest.importorskip("bitsandbytes")
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        model.save_pretrained(tmp_path)
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        model = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, quantization_config=quant,
                                                 device_map={"": "cpu"})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = build_lora_model(model, lora)
    model.train()
    layer = model.base_model.model.model.layers[1]
    per_example = _saved_by_layer(torch, model, layer, 2, seq) - _saved_by_layer(torch, model, layer, 1, seq)
    want = layer_activation_bytes(shape, seq, lora.r, lora.target_modules, stream_bytes=4 if load_in_4bit else 2,
                                  dropout=True, mask_bytes=4)
    assert per_example == seq * want


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_full_layer_count_matches_what_autograd_saves(parallelism):
    """The same for a full fine-tune: DDP's fp32 weights under bf16 autocast (an fp32 residual
    stream), or FSDP's bf16 compute copies (MixedPrecisionPolicy(param_dtype=bf16); the unsharded
    parameters the layers see are plain bf16 ones, as here)."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    shape, seq = TINY, 96
    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama_config(LlamaConfig, shape))
    if parallelism == "fsdp":
        model = model.to(torch.bfloat16)
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    layer = model.model.layers[1]
    per_example = _saved_by_layer(torch, model, layer, 2, seq) - _saved_by_layer(torch, model, layer, 1, seq)
    assert per_example == seq * full_layer_activation_bytes(shape, seq, stream_bytes=2 if parallelism == "fsdp" else 4)


def test_full_fine_tune_state_is_sharded_under_fsdp():
    """FSDP divides the 16 B/param of weights, gradients and AdamW states by the workers; DDP
    holds them all, with its buckets; FSDP2 reduce-scatters every micro-batch (grad_accum > 1
    accumulates sharded gradients, no unsharded copy)."""
    model = "meta-llama/Llama-2-70b-hf"
    params = model_shape(model).params
    fsdp = TrainConfig(method="full", parallelism="fsdp", num_workers=32, batch_size=1, max_seq_len=64)
    ddp = fsdp.model_copy(update={"parallelism": "ddp"})
    sharded, whole = estimate_train_memory(fsdp, model), estimate_train_memory(ddp, model)
    assert sharded.weights + sharded.trainable == pytest.approx(16 * params / 32, abs=1)
    assert whole.weights + whole.trainable == (16 + 4) * params
    accumulating = estimate_train_memory(fsdp.model_copy(update={"grad_accum": 2}), model)
    assert accumulating.trainable == sharded.trainable


def _saved_by_layer(torch: Any, model: Any, layer: Any, batch: int, seq: int) -> int:
    """Bytes of the distinct tensors (not parameters) `layer`, the second decoder layer, saves for
    the backward pass (under LoRA the first takes an input that needs no gradient, so it saves less)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    mask = torch.ones_like(ids)
    mask[0, -seq // 4:] = 0  # right padding, as the collator pads
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}  # storage -> bytes
    inside = [False]
    hooks = [layer.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True)),
             layer.register_forward_hook(lambda *_: inside.__setitem__(0, False))]

    def pack(t: Any) -> Any:
        ptr = t.untyped_storage().data_ptr()
        if inside[0] and ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, attention_mask=mask, labels=ids)
    for hook in hooks:
        hook.remove()
    return sum(saved.values())
