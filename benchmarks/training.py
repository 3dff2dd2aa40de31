"""Training step time: the LoRA loop inside Ray Train vs the same loop without Ray.

Both run `lema.sft.iterate_training` on the same model, data and config with one torch thread;
step times are measured inside the loop (collate + forward/backward + optimizer), so Ray
Train's fixed start-up cost (about 12-15 s per fit, RAY-NOTES) is reported apart. The plain
loop runs before and after the Ray run to bracket drift. The last line printed is JSON.

    python benchmarks/training.py --quick      # tiny-256x4, ~1-2 minutes
    python benchmarks/training.py              # smollm2-135m, longer
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _chats(n: int, words: int) -> list[list[dict[str, str]]]:
    """Synthetic Q/A chats; the answer has about `words` words so sequences have similar length."""
    out = []
    for i in range(n):
        steps = " ".join(f"{i + j} plus {j} is {i + 2 * j}." for j in range(words // 5))
        out.append([{"role": "user", "content": f"Add step by step: problem {i}."},
                    {"role": "assistant", "content": f"{steps} The answer is {i}."}])
    return out


def _config(args: argparse.Namespace):
    from lema.config import LoraConfig, TrainConfig

    return TrainConfig(base_model=args.model, lora=LoraConfig(r=16, alpha=32, dropout=0.05),
                       max_steps=args.steps, batch_size=args.batch_size, max_seq_len=args.seq_len,
                       warmup_ratio=0.1, eval_every=10**6, checkpoint_every=10**6,
                       max_failures=0, torch_threads=1)


def run_plain(chats, cfg) -> tuple[list[dict], float]:
    """The loop body alone, in this process (what the Ray worker runs, minus Ray)."""
    import torch

    from lema import sft
    from lema.models import load_model_and_tokenizer

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    model, tok = load_model_and_tokenizer(cfg.base_model, dtype="float32", device="cpu")
    feats, _ = sft.tokenize_chats(chats, tok, cfg.max_seq_len)
    model = sft.build_lora_model(model, cfg.lora)
    plan = sft.plan_training(len(feats), cfg.batch_size, cfg.grad_accum, cfg.epochs,
                             cfg.max_steps, cfg.warmup_ratio)
    optimizer, scheduler = sft.build_optimizer_and_scheduler(model, cfg.learning_rate,
                                                             cfg.weight_decay, plan)
    spec = sft.LoopSpec(plan=plan, eval_every=cfg.eval_every, eval_batch_size=cfg.batch_size,
                        max_grad_norm=cfg.max_grad_norm, seed=cfg.seed)
    history = list(sft.iterate_training(model, optimizer, scheduler, feats, [],
                                        sft.build_collator(tok.pad_token_id), spec,
                                        torch.device("cpu")))
    return history, time.perf_counter() - t0


def run_ray(chats, cfg, storage: str):
    from lema.records import Example
    from pipelines.train import run_training

    examples = [Example(id=str(i), kind="cot", messages=m) for i, m in enumerate(chats)]
    return run_training(examples, cfg, storage, "bench")


def _steady(history: list[dict], warmup: int) -> tuple[float, float]:
    """(median step seconds, tokens per second) over the steps after `warmup`."""
    rows = history[warmup:]
    return (statistics.median(r["step_time_s"] for r in rows),
            sum(r["tokens"] for r in rows) / sum(r["step_time_s"] for r in rows))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model, few steps")
    parser.add_argument("--model", default=None, help="default: tiny-256x4 quick, else smollm2-135m")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the figures")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=None)
    args = parser.parse_args(argv)
    args.model = args.model or ("tiny-256x4" if args.quick else "smollm2-135m")
    args.steps = args.steps or (25 if args.quick else 40)
    args.seq_len = args.seq_len or (96 if args.quick else 256)

    import ray

    from lema.models import resolve_model

    resolve_model(args.model)  # build/convert once, outside every timing
    cfg = _config(args)
    chats = _chats(64, words=args.seq_len // 3)
    print(f"model {args.model}, {args.steps} steps, batch {args.batch_size}, "
          f"max_seq_len {args.seq_len}, 1 torch thread, warm-up steps left out: {args.warmup}")

    # ---- plain loop, Ray Train loop, plain loop again (brackets drift on a shared machine)
    plain_a, plain_a_wall = run_plain(chats, cfg)
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with tempfile.TemporaryDirectory() as storage:
        result = run_ray(chats, cfg, storage)
    ray.shutdown()
    plain_b, plain_b_wall = run_plain(chats, cfg)

    plain_step = statistics.median([*(r["step_time_s"] for r in plain_a[args.warmup:]),
                                    *(r["step_time_s"] for r in plain_b[args.warmup:])])
    _, plain_tps = _steady(plain_a + plain_b[args.warmup:], args.warmup)
    ray_step, ray_tps = _steady(result.history, args.warmup)
    ratio = ray_step / plain_step
    tokens_per_step = statistics.mean(r["tokens"] for r in result.history)
    print(f"plain loop   : {plain_step * 1e3:8.1f} ms/step median, {plain_tps:8.0f} tokens/s "
          f"(runs {plain_a_wall:.1f} s and {plain_b_wall:.1f} s end to end)")
    print(f"Ray Train    : {ray_step * 1e3:8.1f} ms/step median, {ray_tps:8.0f} tokens/s "
          f"(fit {result.wall_s:.1f} s end to end, start-up included)")
    print(f"ratio        : Ray Train step / plain step = {ratio:.3f} (target <= 1.15); "
          f"{tokens_per_step:.0f} tokens per step")
    figures = {
        "ray_train_step_ratio": round(ratio, 3),
        "tokens_per_s": round(ray_tps, 1),
        "plain_tokens_per_s": round(plain_tps, 1),
        "ray_step_ms": round(ray_step * 1e3, 2),
        "plain_step_ms": round(plain_step * 1e3, 2),
        "ray_fit_wall_s": round(result.wall_s, 2),
        "plain_wall_s": round((plain_a_wall + plain_b_wall) / 2, 2),
        "ray_fixed_cost_s": round(result.wall_s - sum(r["step_time_s"] for r in result.history),
                                  2),
        "model": args.model,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_seq_len": args.seq_len,
        "tokens_per_step": round(tokens_per_step, 1),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
