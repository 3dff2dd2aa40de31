"""Real Ray Train runs on CPU with the tiny model: learning, the saved adapter, resume after a crash.

Each fit() costs about 12-15 s of fixed start-up here (RAY-NOTES), so the file runs two.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lema.config import LoraConfig, TrainConfig
from lema.records import Example
from pipelines.train import TrainResult, build_trainer, load_chats, run_training


def _examples(n_train: int = 32, n_eval: int = 8) -> list[Example]:
    """Short arithmetic chats with a fixed answer format (learnable even by a random model)."""
    out = []
    for i in range(n_train + n_eval):
        a, b = i % 8, i // 8
        out.append(Example(
            id=f"ex{i}", kind="cot",
            messages=[{"role": "user", "content": f"What is {a} plus {b}?"},
                      {"role": "assistant", "content": f"The answer is {a + b}."}],
            split="eval" if i >= n_train else "train",
        ))
    return out


def _config(model: str, **kw) -> TrainConfig:
    base = {"base_model": model, "lora": LoraConfig(r=8, alpha=16, dropout=0.0),
            "learning_rate": 1e-2, "max_steps": 30, "batch_size": 8, "max_seq_len": 128,
            "warmup_ratio": 0.1, "eval_every": 10, "checkpoint_every": 10, "max_failures": 0}
    return TrainConfig(**{**base, **kw})


def test_load_chats_splits_by_split_field(tmp_path: Path):
    examples = _examples(4, 2)
    path = tmp_path / "ex.jsonl"
    path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in examples))
    train, held_out = load_chats(str(path))
    assert len(train) == 4 and len(held_out) == 2
    assert train[0][-1] == {"role": "assistant", "content": "The answer is 0."}


@pytest.fixture(scope="module")
def trained(ray_cluster, tiny_model, tmp_path_factory) -> TrainResult:
    storage = tmp_path_factory.mktemp("train")
    return run_training(_examples(), _config(tiny_model, merge=True), str(storage), "learn")


def test_training_loss_drops(trained: TrainResult):
    h = trained.history
    assert [r["step"] for r in h] == list(range(1, 31))
    assert trained.steps == 30 and trained.train_tokens > 0
    # A random hidden-64 model with tied 0.02-scale embeddings cannot push logits far: the loss
    # floor for LoRA-only training is about 9.5 nats (from ~10.8), so a 0.5 drop is clear.
    first = h[0]["train_loss"]
    last = sum(r["train_loss"] for r in h[-5:]) / 5
    assert last < first - 0.5, (first, last)
    evals = [r["eval_loss"] for r in h if "eval_loss" in r]
    assert len(evals) == 3 and evals[-1] < evals[0]
    assert trained.final_eval_loss == evals[-1]
    assert json.loads(Path(trained.history_file).read_text()) == h


def test_adapter_loads_and_changes_greedy_output(trained: TrainResult, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(trained.adapter_dir)
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(adapter)  # the tokenizer travels with the adapter
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 3 plus 2?"}],
                                     add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)

    def greedy(model) -> list[int]:
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        return out[0, prompt["input_ids"].shape[1]:].tolist()

    base_out = greedy(AutoModelForCausalLM.from_pretrained(tiny_model).eval())
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    tuned_out = greedy(tuned.eval())
    assert tuned_out != base_out
    merged = AutoModelForCausalLM.from_pretrained(trained.merged_dir).eval()
    with torch.no_grad():
        a = tuned(**prompt).logits
        b = merged(**prompt).logits
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_resumes_after_worker_crash(ray_cluster, tiny_model, tmp_path: Path):
    cfg = _config(tiny_model, max_steps=8, checkpoint_every=3, eval_every=4, max_failures=1,
                  crash_at_step=5)
    result = run_training(_examples(16, 4), cfg, str(tmp_path), "crash")
    h = result.history
    assert [r["step"] for r in h] == list(range(1, 9))  # no step lost or repeated
    # Steps 1-3 come from the first attempt (restored from checkpoint_000003), the rest from
    # the restarted worker, which went on from step 4 instead of starting over.
    assert [r["restarts"] for r in h] == [0, 0, 0, 1, 1, 1, 1, 1]
    assert result.restarts == 1
    assert (Path(result.adapter_dir) / "adapter_config.json").is_file()


def _uneven_examples(n: int) -> list[Example]:
    """Chats whose completions differ in length, so workers hold different label counts."""
    return [Example(id=f"u{i}", kind="cot",
                    messages=[{"role": "user", "content": f"What is {i % 8} plus {i // 8}?"},
                              {"role": "assistant", "content": f"The answer is {i % 8 + i // 8}." + " Yes." * (i % 7)}])
            for i in range(n)]


@pytest.mark.slow  # two training runs (about 1.5 min here): make slow_test
def test_two_workers_follow_one_worker(ray_cluster, tiny_model, tmp_path: Path):
    """DDP on 2 gloo workers with the same global batch gives the loss curve of one worker:
    the loss is the token mean over both workers, gradients synced once per accumulated step."""
    common = {"max_steps": 5, "grad_accum": 2, "learning_rate": 5e-2, "eval_every": 5, "checkpoint_every": 5,
              "max_failures": 0}
    one = run_training(_uneven_examples(32), _config(tiny_model, batch_size=4, **common), str(tmp_path), "one")
    two = run_training(_uneven_examples(32), _config(tiny_model, batch_size=2, num_workers=2, **common),
                       str(tmp_path), "two")
    a = [h["train_loss"] for h in one.history]
    b = [h["train_loss"] for h in two.history]
    assert [h["label_tokens"] for h in one.history] == [h["label_tokens"] for h in two.history]
    assert a[0] - a[-1] > 0.05  # it learns, so later steps depend on the earlier updates
    assert max(abs(x - y) for x, y in zip(a, b)) < 2e-4, (a, b)


@pytest.mark.slow  # one more fit: make slow_test
def test_training_continues_from_an_adapter(trained: TrainResult, tiny_model, tmp_path: Path):
    """init_adapter: the first step starts where the saved adapter left off, not from scratch."""
    cont = run_training(_examples(), _config(tiny_model, max_steps=2, init_adapter=trained.adapter_dir),
                        str(tmp_path), "cont")
    assert cont.history[0]["train_loss"] < trained.history[0]["train_loss"] - 0.3
    assert abs(cont.history[0]["train_loss"] - trained.history[-1]["train_loss"]) < 0.3


def test_training_workers_go_on_one_node_by_default(ray_cluster, tmp_path: Path):
    """A 4-GPU job on one gpu-4x node, not on four gpu-1x nodes left idle by sampling."""
    cfg = TrainConfig(base_model="tiny", num_workers=2)
    assert cfg.placement_strategy == "STRICT_PACK"
    trainer = build_trainer([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
                            cfg, str(tmp_path), "p")
    assert trainer.scaling_config.placement_strategy == "STRICT_PACK"
