"""The train stage: a LoRA fine-tune on Ray Train (`TorchTrainer`), resumable from checkpoints.

`build_trainer` builds the ScalingConfig/RunConfig on the driver and hands each worker a plain
dict; `train_loop_per_worker` runs the loop body from `lema.sft`, reports a checkpoint (adapter,
optimizer, scheduler, step, history) every `checkpoint_every` steps and at the end, and writes
the final artifacts (adapter + tokenizer, optional merged model) into the last checkpoint.
Reports happen only with checkpoints: in Train V2 each `report()` blocks for about one
controller health-check interval (RAY-NOTES).

Checkpoints go to the stage's storage (any `lema.storage` URI: a shared mount, s3://); the
adapter is recorded by its URI there, which every node can read (engines download it once).
Several workers train data-parallel (DDP): see `lema.sft.train_step` for the loss scaling.

    python -m pipelines.train configs/demo.yaml --data runs/demo/data/train.jsonl \\
        --eval-data runs/demo/data/held_out.jsonl train.max_steps=20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lema.config import TrainConfig, load_config
from lema.records import Example
from lema.storage import Storage
from lema.training_data import read_examples
from pipelines.stage_io import RunContext, StageDir

ExamplesOrPath = Sequence[Example] | Sequence[dict] | str | os.PathLike
Messages = list[dict[str, str]]
HISTORY_FILE = "history.json"
RUN_NAME = "ray_train"  # the Ray Train run inside the train stage's directory
SNAPSHOTS = "snapshots"  # <run name>/snapshots/step_<N>: the tuned model at N (train.checkpoints)


@dataclass
class TrainResult:
    """What a finished fine-tune left behind, and its figures."""

    adapter_dir: str | None  # URI: adapter_config.json + weights + tokenizer (LoRA, QLoRA)
    merged_dir: str | None  # URI: base weights with the adapter merged in (cfg.merge)
    model_dir: str | None  # URI: the whole tuned model, a Hugging Face directory (method full)
    history: list[dict[str, Any]]  # per step: step, train_loss, lr, tokens, ..., eval_loss
    steps: int
    train_tokens: int  # input tokens (prompt + completion, no padding) seen by the optimizer
    wall_s: float  # the whole fit(), start-up included
    final_train_loss: float | None
    final_eval_loss: float | None
    checkpoint_dir: str = ""  # URI of the last checkpoint (holds the adapter dir)
    history_file: str = ""
    restarts: int = 0  # worker-group restarts recovered from checkpoints
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # [{step, dir}]: train.checkpoints

    def to_manifest(self) -> dict[str, Any]:
        """Figures for the stage manifest (the history stays in its own JSON file)."""
        out = asdict(self)
        out.pop("history")
        return out


# ---------------------------------------------------------------- data
def load_chats(data: ExamplesOrPath) -> tuple[list[Messages], list[Messages]]:
    """Examples, example dicts or a JSONL/Parquet file (any storage URI) -> (train chats, eval
    chats) by `split`."""
    rows: Sequence[Any] = read_examples(os.fspath(data)) if isinstance(data, (str, os.PathLike)) else data
    train, held_out = [], []
    for i, row in enumerate(rows):
        ex = row if isinstance(row, Example) else Example.from_dict({"id": str(i), "kind": "cot",
                                                                     **row})
        (held_out if ex.split == "eval" else train).append(
            [{"role": m["role"], "content": m["content"]} for m in ex.messages]
        )
    return train, held_out


# ---------------------------------------------------------------- worker
def _save_checkpoint_and_report(
    step: int, metrics: dict[str, Any], state: dict[str, Any], final: bool, snapshot: bool
) -> None:
    """Write the checkpoint (plus the final artifacts, and a snapshot for checkpoint selection)
    and report it. LoRA: rank 0 writes it all; full: every rank its shard of the weights and
    optimizer (Ray gathers the ranks' files into one checkpoint directory), rank 0 the rest."""
    import ray.train

    from lema import sft

    full, rank = state["full"], state["rank"]
    model, optimizer = state["model"], state["optimizer"]
    deliver = final or snapshot  # the tuned adapter or model, loadable alone
    with tempfile.TemporaryDirectory() as tmp:
        if full:
            sft.save_sharded_state(tmp, model, optimizer)
        weights = sft.full_state_dict(model) if full and deliver else None  # a collective
        if rank == 0:
            sft.save_training_state(tmp, None if full else model, None if full else optimizer,
                                    state["scheduler"], step, state["history"], state["extra"])
            out = Path(tmp) / (sft.MODEL_DIR if full else sft.ADAPTER_DIR)
            if deliver and full:
                sft.save_model(model, weights, state["tokenizer"], out, state["dtype"])
            elif deliver:
                state["tokenizer"].save_pretrained(out)
            if final and state["merge"]:
                sft.merge_adapter(state["base_model"], out, Path(tmp) / "merged", state["dtype"])
            if snapshot:  # straight to storage: Ray keeps only the last checkpoints
                Storage(out).copy_to(Storage(state["snapshots"]).join(f"step_{step:06d}"))
        checkpoint = ray.train.Checkpoint.from_directory(tmp) if rank == 0 or full else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{step:06d}")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The per-worker function: load, (restore), train, checkpoint. `config` is a plain dict."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from lema import sft
    from lema.engines import resolve_prompt_format
    from lema.models import load_model_and_tokenizer, load_tokenizer

    cfg = TrainConfig.model_validate(config["train"])
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":  # TF32 for what autocast leaves in fp32 (norms, the loss)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- model and data
    full, fsdp = cfg.method == "full", cfg.parallelism == "fsdp"
    # fp32 master weights for a full fine-tune (bf16 autocast or FSDP's bf16 compute on CUDA)
    dtype = "bfloat16" if device.type == "cuda" and not full else "float32"
    # on the CPU, then prepare_model moves it to this worker's device; a 4-bit model loads there.
    # FSDP: rank 0 alone loads the weights, the other ranks start from the architecture
    if fsdp and rank != 0:
        base, tokenizer = sft.empty_model(cfg.base_model), load_tokenizer(cfg.base_model)
    else:
        base, tokenizer = load_model_and_tokenizer(cfg.base_model, dtype=dtype, load_in_4bit=cfg.load_in_4bit,
                                                   device=str(device) if cfg.load_in_4bit else "cpu")
    prompt_format = resolve_prompt_format(cfg.prompt_format, tokenizer, cfg.base_model)
    train_chats, eval_chats = ray.get(config["data"])
    train_features, dropped = sft.tokenize_chats(train_chats, tokenizer, cfg.max_seq_len, prompt_format)
    eval_features, _ = sft.tokenize_chats(eval_chats, tokenizer, cfg.max_seq_len, prompt_format)
    if cfg.load_in_4bit:  # QLoRA: norms in fp32, inputs that carry gradients to the adapter
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                               gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not full:
            base.enable_input_require_grads()  # the frozen embeddings must pass gradients to LoRA
    if full:
        base.train()
        model = sft.shard_model(base, rank, device) if fsdp else base
    else:
        model = sft.build_lora_model(base, cfg.lora)
    if cfg.init_adapter is not None:  # continue from a saved adapter (e.g. a CoT-tuned start)
        from lema.storage import local_path

        sft.load_adapter_weights(model, local_path(cfg.init_adapter))
    # to the device (a 4-bit model is placed at load, FSDP shards are); DDP when world > 1
    wrapped = model if fsdp else ray.train.torch.prepare_model(model, move_to_device=not cfg.load_in_4bit)
    plan = sft.plan_training(len(train_features), cfg.batch_size, cfg.grad_accum, cfg.epochs,
                             cfg.max_steps, cfg.warmup_ratio, world)
    optimizer, scheduler = sft.build_optimizer_and_scheduler(
        model, cfg.learning_rate, cfg.weight_decay, plan, cfg.optimizer, cfg.lr_scheduler)
    snapshots = set(sft.snapshot_steps(plan.total_steps, cfg.checkpoints))

    # ---- resume from the last checkpoint, if this is a restart (or a re-run of the same name)
    start, history, extra = 0, [], {"restarts": 0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            start, history, extra = sft.load_training_state(ckpt_dir, model, optimizer, scheduler)
        extra["restarts"] += 1
    state = {"rank": rank, "model": model, "optimizer": optimizer, "scheduler": scheduler,
             "history": history, "extra": extra, "tokenizer": tokenizer, "merge": cfg.merge,
             "base_model": cfg.base_model, "full": full, "snapshots": config["snapshots"],
             "dtype": "bfloat16" if device.type == "cuda" else "float32"}

    # ---- train
    spec = sft.LoopSpec(plan=plan, eval_every=cfg.eval_every, eval_batch_size=cfg.batch_size,
                        max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, rank=rank)
    collator = sft.build_collator(tokenizer.pad_token_id)
    t0 = time.perf_counter()
    for record in sft.iterate_training(wrapped, optimizer, scheduler, train_features,
                                       eval_features, collator, spec, device, start_step=start):
        record["restarts"] = extra["restarts"]
        history.append(record)
        step = record["step"]
        if rank == 0 and (step % max(1, plan.total_steps // 50) == 0 or "eval_loss" in record):
            ev = f" eval_loss {record['eval_loss']:.4f}" if record.get("eval_loss") is not None else ""
            # sys.stdout, not print: Train V2 patches print to log each line twice
            sys.stdout.write(f"[train] step {step}/{plan.total_steps} loss {record['train_loss']:.4f}{ev}"
                             f" lr {record['lr']:.2e} {record['step_time_s']:.2f}s/step\n")
            sys.stdout.flush()
        if step == cfg.crash_at_step and extra["restarts"] == 0:  # fault-tolerance tests only
            os.kill(os.getpid(), signal.SIGKILL)
        final = step == plan.total_steps
        if step % cfg.checkpoint_every == 0 or final or step in snapshots:
            metrics = _summary(history, extra, dropped, time.perf_counter() - t0)
            _save_checkpoint_and_report(step, metrics, state, final, step in snapshots)
    if start >= plan.total_steps:  # a re-run of a finished run: its last checkpoint stands
        ray.train.report(_summary(history, extra, dropped, 0.0), checkpoint=None)


def _summary(history: list[dict[str, Any]], extra: dict[str, Any], dropped: int,
             loop_s: float) -> dict[str, Any]:
    evals = [h["eval_loss"] for h in history if h.get("eval_loss") is not None]
    return {
        "step": history[-1]["step"] if history else 0,
        "train_loss": history[-1]["train_loss"] if history else None,
        "eval_loss": evals[-1] if evals else None,
        "train_tokens": sum(h["tokens"] for h in history),
        "restarts": extra["restarts"],
        "dropped_examples": dropped,
        "loop_s": loop_s,
    }


# ---------------------------------------------------------------- driver
def build_trainer(
    examples_or_path: ExamplesOrPath,
    cfg: TrainConfig,
    storage: Storage | str,
    name: str,
    eval_path: ExamplesOrPath | None = None,
):
    """A `TorchTrainer` for this fine-tune (Ray must be initialised).

    Args:
        examples_or_path: Examples (or their dicts) or a JSONL/Parquet file (any storage URI);
            rows with split == "eval" are held out for the eval loss.
        cfg: the train config; `base_model` must be set.
        storage: where checkpoints go (any storage URI); the run lives in <storage>/<name>.
        name: run name (re-using it resumes that run from its last checkpoint).
        eval_path: more held-out examples (all used for the eval loss).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not cfg.base_model:
        raise ValueError("train.base_model is not set (the pipeline fills in the generator model)")
    storage = Storage(storage)
    train, held_out = load_chats(examples_or_path)
    if eval_path is not None:
        extra_train, extra_eval = load_chats(eval_path)
        held_out += extra_train + extra_eval
    if not train:
        raise ValueError(f"no training examples in {examples_or_path!r:.200}")
    scaling = ScalingConfig(
        num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu,
        resources_per_worker={"CPU": cfg.cpus_per_worker},  # use_gpu adds GPU: 1
        placement_strategy=cfg.placement_strategy,
        accelerator_type=cfg.accelerator_type,  # adds accelerator_type:<type> to each worker's resources
    )
    storage.mkdir()
    run = RunConfig(
        name=name,
        storage_path=storage.path,  # with its filesystem: s3:// and friends reach every worker
        storage_filesystem=storage.fs,
        failure_config=FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=2),
    )
    loop_config = {"train": cfg.model_dump(mode="json"), "data": ray.put((train, held_out)),
                   "snapshots": storage.join(name, SNAPSHOTS).uri}
    return TorchTrainer(train_loop_per_worker, train_loop_config=loop_config,
                        scaling_config=scaling, run_config=run)


def run_training(
    examples_or_path: ExamplesOrPath,
    cfg: TrainConfig,
    storage: Storage | str,
    name: str,
    eval_path: ExamplesOrPath | None = None,
) -> TrainResult:
    """Fine-tune, and return where the adapter went (URIs) plus the loss history (see
    build_trainer)."""
    storage = Storage(storage)
    t0 = time.perf_counter()
    result = build_trainer(examples_or_path, cfg, storage, name, eval_path).fit()
    wall = time.perf_counter() - t0
    if result.error is not None:
        raise RuntimeError(f"training run {name!r} failed") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name!r} finished without a checkpoint")
    # the checkpoint's path is on storage's filesystem: keep storage's URI (scheme, query)
    assert result.checkpoint.path.startswith(storage.path), (result.checkpoint.path, storage.path)
    ckpt = storage.join(result.checkpoint.path[len(storage.path):])
    history = ckpt.join(HISTORY_FILE).read_json()
    history_file = storage.join(name, HISTORY_FILE)
    history_file.write_text(json.dumps(history, indent=1))
    evals = [h["eval_loss"] for h in history if h.get("eval_loss") is not None]
    merged, model = ckpt.join("merged"), ckpt.join("model")
    full = cfg.method == "full"
    snapshots = storage.join(name, SNAPSHOTS)
    return TrainResult(
        adapter_dir=None if full else ckpt.join("adapter").uri,
        merged_dir=merged.uri if merged.is_dir() else None,
        model_dir=model.uri if full else None,
        snapshots=[{"step": int(n[len("step_"):]), "dir": snapshots.join(n).uri}
                   for n in snapshots.list()],
        history=history,
        steps=history[-1]["step"] if history else 0,
        train_tokens=sum(h["tokens"] for h in history),
        wall_s=round(wall, 3),
        final_train_loss=history[-1]["train_loss"] if history else None,
        final_eval_loss=evals[-1] if evals else None,
        checkpoint_dir=ckpt.uri,
        history_file=history_file.uri,
        restarts=max((h.get("restarts", 0) for h in history), default=0),
    )


def run_train(ctx: RunContext, stage: StageDir, stage_hash: str) -> dict[str, Any]:
    """The train stage of the loop: tune the base model on the data stage's files."""
    data = ctx.dir("data")
    cfg = ctx.cfg.train.model_copy(update={"base_model": ctx.cfg.base_model})
    result = run_training(data.file("train.jsonl").uri, cfg, stage.dir, RUN_NAME,
                          eval_path=data.file("held_out.jsonl").uri)
    # a stable place: <run>/train/adapter (LoRA, QLoRA) or <run>/train/model (full)
    kind, made = ("model", result.model_dir) if cfg.method == "full" else ("adapter", result.adapter_dir)
    stable = stage.file(kind)
    stable.delete_contents()
    Storage(made).copy_to(stable)
    figures = {**result.to_manifest(), f"{kind}_dir": stable.uri, f"checkpoint_{kind}_dir": made,
               "method": cfg.method}
    return stage.write_manifest(stage_hash, **figures, history=result.history)


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> TrainResult:
    """Parse `CONFIG --data PATH [key=val ...]` and run the fine-tune alone."""
    from pipelines.ray_setup import init_ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("args", nargs="*", help="[CONFIG.yaml] key.sub=value ...")
    parser.add_argument("--data", required=True, help="training examples (.jsonl/.parquet, any storage URI)")
    parser.add_argument("--eval-data", default=None, help="held-out examples for the eval loss")
    parser.add_argument("--name", default="lora", help="run name under <output_dir>/<run>/train")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    has_config = bool(args.args) and "=" not in args.args[0]
    cfg = load_config(args.args[0] if has_config else None, args.args[has_config:])
    train_cfg = cfg.train.model_copy(update={"base_model": cfg.base_model})
    print(json.dumps(train_cfg.model_dump(mode="json"), indent=1))
    init_ray(cfg)
    storage = Storage(cfg.output_dir).join(cfg.run, "train")
    result = run_training(args.data, train_cfg, storage, args.name, args.eval_data)
    print(json.dumps(result.to_manifest(), indent=1))
    return result


if __name__ == "__main__":
    main()
