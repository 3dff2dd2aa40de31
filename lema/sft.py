"""Supervised fine-tuning pieces: completion-only tokenization, LoRA model, the step loop.

No Ray here: `iterate_training` is the loop body that `pipelines/train.py` runs inside a Ray
Train worker and that benchmarks run bare. The data position, learning rate and step are all
functions of the step number, so a run resumes exactly from a saved step.

TRL supplies two small pieces that would otherwise be hand-written: `common_prefix_length`
(where the completion starts when a chat template renders the prompt alone slightly
differently) and `DataCollatorForLanguageModeling` (right padding, labels padded with -100).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from trl.data_utils import common_prefix_length
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from lema.config import LoraConfig
from lema.engines import encode_prompt
from lema.prompts import render_plain

IGNORE_INDEX = -100  # label of tokens that carry no loss
ADAPTER_DIR = "adapter"  # inside a checkpoint
STATE_FILE = "trainer_state.pt"  # optimizer (LoRA), scheduler, step, RNG
SHARDED_DIR = "sharded"  # full fine-tuning: weights and optimizer state, a shard per rank
MODEL_DIR = "model"  # full fine-tuning: the final model, a Hugging Face directory
HISTORY_FILE = "history.json"

Messages = list[dict[str, str]]
Features = dict[str, list[int]]


# ---------------------------------------------------------------- data
def tokenize_chat(messages: Messages, tokenizer: Any, max_seq_len: int,
                  prompt_format: str = "chat") -> Features | None:
    """Tokenize a chat; only the last (assistant) message carries labels.

    Args:
        messages: chat messages; the last one is the assistant target.
        tokenizer: the model's tokenizer.
        max_seq_len: sequences are cut on the right to this many tokens.
        prompt_format: `chat` renders with the tokenizer's chat template; `plain` as the
            engines render prompts for a model without one (`lema.prompts.render_plain`), the
            target followed by EOS so the tuned model learns to stop.

    Returns:
        {"input_ids", "labels"} with labels = IGNORE_INDEX on the prompt, or None when the cut
        leaves no completion token.
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant target, got "
                         f"{messages[-1]['role'] if messages else 'no messages'!r}")
    if prompt_format == "plain":
        prompt = encode_prompt(tokenizer, "plain", messages[:-1])  # as the engines send it
        full = tokenizer(render_plain(messages))["input_ids"]
        full = full + [tokenizer.eos_token_id]
    else:
        prompt = tokenizer.apply_chat_template(
            messages[:-1], tokenize=True, return_dict=True, add_generation_prompt=True
        )["input_ids"]
        full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    start = common_prefix_length(prompt, full)
    input_ids = full[:max_seq_len]
    labels = ([IGNORE_INDEX] * start + full[start:])[:max_seq_len]
    if all(label == IGNORE_INDEX for label in labels[1:]):  # the first token is never predicted
        return None
    return {"input_ids": input_ids, "labels": labels}


def tokenize_chats(
    chats: Sequence[Messages], tokenizer: Any, max_seq_len: int, prompt_format: str = "chat"
) -> tuple[list[Features], int]:
    """Tokenize many chats; returns (features, how many were dropped for having no completion)."""
    out = [tokenize_chat(m, tokenizer, max_seq_len, prompt_format) for m in chats]
    kept = [f for f in out if f is not None]
    return kept, len(out) - len(kept)


def build_collator(pad_token_id: int) -> DataCollatorForLanguageModeling:
    """Right-pads input_ids (pad id), labels (-100) and builds the attention mask."""
    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id)


@dataclass(frozen=True)
class TrainPlan:
    """How long a run is and how it walks the data (all derived from sizes and config)."""

    total_steps: int  # optimizer steps
    warmup_steps: int
    micro_batches_per_epoch: int  # over all workers
    batch_size: int  # examples per micro-batch per worker
    grad_accum: int
    world_size: int = 1


def plan_training(
    n_examples: int,
    batch_size: int,
    grad_accum: int,
    epochs: float,
    max_steps: int | None,
    warmup_ratio: float,
    world_size: int = 1,
) -> TrainPlan:
    """Steps from epochs (or max_steps), and warmup steps from the ratio."""
    if n_examples < 1:
        raise ValueError("no training examples")
    per_epoch = max(1, n_examples // batch_size)
    if max_steps is not None:
        total = max_steps
    else:
        total = math.ceil(epochs * per_epoch / (grad_accum * world_size))
    total = max(1, total)
    return TrainPlan(
        total_steps=total,
        warmup_steps=int(warmup_ratio * total),
        micro_batches_per_epoch=per_epoch,
        batch_size=batch_size,
        grad_accum=grad_accum,
        world_size=world_size,
    )


def micro_batch_indices(n_examples: int, plan: TrainPlan, micro_index: int, seed: int) -> list[int]:
    """Example indices of global micro-batch `micro_index` (epochs reshuffle with seed + epoch)."""
    epoch, offset = divmod(micro_index, plan.micro_batches_per_epoch)
    gen = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n_examples, generator=gen).tolist()
    return perm[offset * plan.batch_size : (offset + 1) * plan.batch_size]


def step_micro_batches(
    features: Sequence[Features], plan: TrainPlan, step: int, seed: int, rank: int = 0
) -> list[list[Features]]:
    """The micro-batches this worker trains on at optimizer step `step` (1-based)."""
    out = []
    for j in range(plan.grad_accum):
        local = (step - 1) * plan.grad_accum + j
        micro = local * plan.world_size + rank
        out.append([features[i] for i in micro_batch_indices(len(features), plan, micro, seed)])
    return out


# ---------------------------------------------------------------- model
def build_lora_model(model: Any, lora: LoraConfig) -> Any:
    """Wrap a causal LM in a trainable peft LoRA adapter (only the adapter needs gradients)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def build_optimizer_and_scheduler(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, plan: TrainPlan,
    optimizer: str = "adamw", scheduler: str = "cosine",
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the trainable parameters (torch's, or bitsandbytes' paged 32-bit one), and a
    linear warmup then cosine decay or a constant rate."""
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "paged_adamw_32bit":
        import bitsandbytes as bnb

        opt: torch.optim.Optimizer = bnb.optim.PagedAdamW32bit(params, lr=learning_rate, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    if scheduler == "constant":
        return opt, get_constant_schedule_with_warmup(opt, plan.warmup_steps)
    return opt, get_cosine_schedule_with_warmup(opt, plan.warmup_steps, plan.total_steps)


def shard_model(model: Any, rank: int, device: torch.device) -> Any:
    """FSDP2 (`fully_shard`) over all workers: each decoder layer its own unit, then the root;
    parameters, gradients and optimizer state are sharded, fp32 master weights computing in bf16
    on CUDA. Rank 0 holds the loaded weights; the other ranks pass a model built on the meta
    device (`empty_model`), so a node's RAM holds the weights once. The weights (and buffers,
    e.g. rotary frequencies, which no state dict carries) are broadcast from rank 0."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if device.type == "cuda" else MixedPrecisionPolicy())
    full = model.state_dict() if rank == 0 else {}
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    if rank != 0:
        model.to_empty(device=device)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for buf in model.buffers():
        buf.data = buf.data.to(device)
        dist.broadcast(buf.data, src=0)
    return model


def empty_model(name: str) -> Any:
    """The model's architecture on the meta device: no memory, weights to come (`shard_model`)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lema.models import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(name))
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def save_sharded_state(out_dir: str | Path, model: Any, optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its shard of the weights and optimizer state (torch.distributed.checkpoint:
    a `__<rank>_0.distcp` file each, `.metadata` from rank 0); the same files whether the model is
    one process, DDP or FSDP, so a run may resume with another worker count."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optim = get_state_dict(model, optimizer)
    dcp.save({"model": weights, "optim": optim}, checkpoint_id=str(Path(out_dir) / SHARDED_DIR))


def load_sharded_state(ckpt_dir: str | Path, model: Any, optimizer: torch.optim.Optimizer) -> None:
    """Restore `save_sharded_state`'s weights and optimizer state (every rank, its own shard)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, optim = get_state_dict(model, optimizer)
    state = {"model": weights, "optim": optim}
    dcp.load(state, checkpoint_id=str(Path(ckpt_dir) / SHARDED_DIR))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def full_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU in rank 0 (empty elsewhere): a collective, every rank
    calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_model(model: Any, weights: dict[str, torch.Tensor], tokenizer: Any, out_dir: str | Path,
               dtype: str) -> None:
    """A Hugging Face model directory (config, safetensors, tokenizer) of `weights` in `dtype`,
    which vLLM, the engines and the service load like any hub model."""
    cast = getattr(torch, dtype)
    weights = {k: v.to(cast) if v.is_floating_point() else v for k, v in weights.items()}
    model.config.dtype = cast
    model.save_pretrained(out_dir, state_dict=weights)
    tokenizer.save_pretrained(out_dir)


def snapshot_steps(total_steps: int, n: int) -> list[int]:
    """N evenly spaced steps ending at the last (fewer when the run is shorter than N steps)."""
    return sorted({max(1, round(total_steps * i / n)) for i in range(1, n + 1)}) if n else []


# ---------------------------------------------------------------- steps
def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA: peft keeps LoRA weights in fp32, whose matmuls would otherwise run
    in fp32 beside a bf16 base; nothing on the CPU (fp32 there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _gradient_sync(model: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Synchronise gradients in this backward pass or not: DDP skips the all-reduce until the last
    micro-batch; FSDP2 reduce-scatters every one (skipping would keep every parameter's unsharded
    fp32 gradient on each device until the last: 4 B/param, 257 GiB for a 70B model)."""
    if sync or not hasattr(model, "no_sync"):
        yield
    else:
        with model.no_sync():
            yield


def _label_count(labels: torch.Tensor) -> int:
    """Tokens that carry loss (labels are shifted by one inside the model)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def train_step(
    model: torch.nn.Module,
    micro_batches: list[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    max_grad_norm: float | None = 1.0,
) -> dict[str, float]:
    """One optimizer step over collated micro-batches (gradient accumulation).

    The loss is the mean over all completion tokens of the step on all workers, not a mean of
    micro-batch or per-worker means, so every completion token weighs the same: each worker
    divides its token-loss sum by the global label count and scales by the world size, which
    DDP's gradient averaging divides out again. Gradients are synchronised once a step (on the
    last micro-batch only).

    Returns:
        {"loss", "label_tokens", "tokens"} over all workers.
    """
    model.train()
    local_labels = sum(_label_count(b["labels"]) for b in micro_batches)
    n_labels = max(int(_all_reduce([local_labels], device)[0]), 1)
    world = _world_size()
    loss_sum, tokens = 0.0, 0
    for j, batch in enumerate(micro_batches):
        batch = _to_device(batch, device)
        last = j == len(micro_batches) - 1
        with _gradient_sync(model, last or world == 1):
            with _autocast(device):
                out = model(**batch, num_items_in_batch=n_labels)  # this worker's sum / global count
            (out.loss * world).backward()
        loss_sum += float(out.loss.detach()) * n_labels
        tokens += int(batch["attention_mask"].sum())
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], max_grad_norm
        )
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    totals = _all_reduce([loss_sum, tokens], device)
    return {"loss": totals[0] / n_labels, "label_tokens": n_labels, "tokens": totals[1]}


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    features: Sequence[Features],
    collator: DataCollatorForLanguageModeling,
    batch_size: int,
    device: torch.device,
) -> float | None:
    """Mean completion-token loss over `features` (None when there are none)."""
    if not features:
        return None
    model.eval()
    loss_sum, n = 0.0, 0
    for i in range(0, len(features), batch_size):
        batch = _to_device(collator(list(features[i : i + batch_size])), device)
        count = _label_count(batch["labels"])
        if count == 0:
            continue
        with _autocast(device):
            out = model(**batch, num_items_in_batch=count)
        loss_sum += float(out.loss) * count
        n += count
    model.train()
    return loss_sum / n if n else None


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    """Sum across workers when torch.distributed runs with more than one (else unchanged)."""
    if _world_size() == 1:
        return values
    dist = torch.distributed
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@dataclass
class LoopSpec:
    """What the loop needs besides the model and data (plain values, picklable)."""

    plan: TrainPlan
    eval_every: int
    eval_batch_size: int
    max_grad_norm: float | None = 1.0
    seed: int = 0
    rank: int = 0


def iterate_training(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train_features: Sequence[Features],
    eval_features: Sequence[Features],
    collator: DataCollatorForLanguageModeling,
    spec: LoopSpec,
    device: torch.device,
    start_step: int = 0,
) -> Iterator[dict[str, Any]]:
    """Run optimizer steps start_step+1 .. total, yielding one history record per step.

    Records: step, train_loss, lr (used for the step), tokens, label_tokens, step_time_s
    (collate + forward/backward + optimizer), and eval_loss every `eval_every` steps and at
    the last step. Stop iterating to stop training; resume by passing `start_step`.
    """
    total = spec.plan.total_steps
    for step in range(start_step + 1, total + 1):
        t0 = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        micro = [collator(b) for b in step_micro_batches(train_features, spec.plan, step, spec.seed,
                                                         spec.rank)]
        stats = train_step(model, micro, optimizer, scheduler, device, spec.max_grad_norm)
        record: dict[str, Any] = {
            "step": step,
            "train_loss": stats["loss"],
            "lr": lr,
            "tokens": int(stats["tokens"]),
            "label_tokens": int(stats["label_tokens"]),
            "step_time_s": time.perf_counter() - t0,
        }
        if step % spec.eval_every == 0 or step == total:
            record["eval_loss"] = evaluate_loss(
                model, eval_features, collator, spec.eval_batch_size, device
            )
        yield record


# ---------------------------------------------------------------- state
def save_training_state(
    out_dir: str | Path,
    model: Any | None,
    optimizer: torch.optim.Optimizer | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    history: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a resumable checkpoint: adapter (peft format), optimizer/scheduler/step, history.

    Args:
        model: the peft model (unwrapped from DDP); None for a full fine-tune, whose weights and
            optimizer state every rank saves sharded (`save_sharded_state`).
        optimizer: the LoRA optimizer (None beside a None model).
        extra: plain values restored with the state (e.g. a restart counter).
    """
    out = Path(out_dir)
    if model is not None:
        model.save_pretrained(out / ADAPTER_DIR)
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "extra": extra or {},
        },
        out / STATE_FILE,
    )
    (out / HISTORY_FILE).write_text(json.dumps(history))


def merge_adapter(base_model: str, adapter_dir: str | Path, out_dir: str | Path, dtype: str) -> None:
    """Save the base model with the adapter merged into its weights, loaded anew in `dtype` on
    the CPU: a QLoRA adapter merges into the unquantised base (never into 4-bit weights that
    would be re-quantised, losing the update), and the training model is left as it is."""
    from peft import PeftModel

    from lema.models import load_model_and_tokenizer

    base, tokenizer = load_model_and_tokenizer(base_model, dtype=dtype, device="cpu")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def load_adapter_weights(model: Any, adapter_dir: str | Path) -> None:
    """Put a saved adapter's weights into `model`'s LoRA adapter (same rank and targets).

    Raises:
        ValueError: the saved adapter has weights this model's adapter lacks.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights)
    if result.unexpected_keys:
        raise ValueError(f"adapter {adapter_dir} has weights this model's adapter lacks "
                         f"(another rank or target modules?): {result.unexpected_keys[:5]}")


def load_training_state(
    ckpt_dir: str | Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Restore weights (the adapter, or a full fine-tune's shards: every rank calls this),
    optimizer, scheduler and RNG from `save_training_state` output.

    Returns:
        (step, history, extra).
    """
    src = Path(ckpt_dir)
    state = torch.load(src / STATE_FILE, weights_only=False)
    if (src / SHARDED_DIR).is_dir():
        load_sharded_state(src, model, optimizer)
    else:
        load_adapter_weights(model, src / ADAPTER_DIR)
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():  # dropout masks on the GPU
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    history = json.loads((src / HISTORY_FILE).read_text())
    return state["step"], history, state["extra"]
