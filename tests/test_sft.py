"""Completion-only masking, data order, loss weighting and checkpoint state (no Ray)."""

from __future__ import annotations

import pytest
import torch

from lema import sft
from lema.config import LoraConfig

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _chat(q: str, a: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def _labelled_text(tokenizer, features) -> str:
    return tokenizer.decode([t for t in features["labels"] if t != sft.IGNORE_INDEX])


def test_only_the_assistant_turn_has_labels(tokenizer):
    f = sft.tokenize_chat(_chat("What is 2 plus 3?", "2 + 3 = 5. The answer is 5."), tokenizer, 512)
    assert len(f["input_ids"]) == len(f["labels"])
    # The labelled span is exactly the assistant content and its end-of-turn.
    assert _labelled_text(tokenizer, f) == "2 + 3 = 5. The answer is 5.<|im_end|>\n"
    first = next(i for i, t in enumerate(f["labels"]) if t != sft.IGNORE_INDEX)
    assert tokenizer.decode(f["input_ids"][:first]).endswith("<|im_start|>assistant\n")
    assert all(t == sft.IGNORE_INDEX for t in f["labels"][:first])
    assert f["labels"][first:] == f["input_ids"][first:]


def test_plain_format_labels_the_target_and_eos(tiny_plain_model):
    from transformers import AutoTokenizer

    from lema.prompts import render_plain

    tok = AutoTokenizer.from_pretrained(tiny_plain_model)
    messages = _chat("Question: What is 2 plus 3?\nAnswer: Let's think step by step.", "2 + 3 = 5. The answer is 5.")
    f = sft.tokenize_chat(messages, tok, 512, prompt_format="plain")
    assert _labelled_text(tok, f) == "2 + 3 = 5. The answer is 5." + tok.eos_token
    first = next(i for i, t in enumerate(f["labels"]) if t != sft.IGNORE_INDEX)
    assert tok.decode(f["input_ids"][:first]) == render_plain(messages[:-1])  # what the engine sends


def test_earlier_turns_and_system_prompt_are_masked(tokenizer):
    messages = [
        {"role": "system", "content": "Find the first wrong step."},
        {"role": "user", "content": "Q: 2+2? Wrong solution: 2+2=5."},
        {"role": "assistant", "content": "Step 1 is wrong."},
        {"role": "user", "content": "Now fix it."},
        {"role": "assistant", "content": "2+2=4. The answer is 4."},
    ]
    f = sft.tokenize_chat(messages, tokenizer, 512)
    assert _labelled_text(tokenizer, f) == "2+2=4. The answer is 4.<|im_end|>\n"


def test_truncation(tokenizer):
    long_answer = " ".join(str(i) for i in range(200))
    f = sft.tokenize_chat(_chat("Count.", long_answer), tokenizer, 64)
    assert len(f["input_ids"]) == 64 and len(f["labels"]) == 64
    assert _labelled_text(tokenizer, f) in long_answer  # a prefix of the completion survives
    long_prompt = _chat("x " * 300, "ok")
    assert sft.tokenize_chat(long_prompt, tokenizer, 64) is None  # no completion left
    feats, dropped = sft.tokenize_chats([long_prompt, _chat("a", "b")], tokenizer, 64)
    assert len(feats) == 1 and dropped == 1


def test_last_message_must_be_assistant(tokenizer):
    with pytest.raises(ValueError, match="assistant"):
        sft.tokenize_chat([{"role": "user", "content": "hi"}], tokenizer, 64)


def test_collator_pads_right_with_ignored_labels(tokenizer):
    feats, _ = sft.tokenize_chats([_chat("a", "b"), _chat("a longer question", "b c d")],
                                  tokenizer, 128)
    batch = sft.build_collator(tokenizer.pad_token_id)(feats)
    short = len(feats[0]["input_ids"])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0, short:].sum() == 0
    assert (batch["labels"][0, short:] == sft.IGNORE_INDEX).all()


def test_plan_and_data_order():
    plan = sft.plan_training(10, batch_size=4, grad_accum=2, epochs=3, max_steps=None,
                             warmup_ratio=0.25)
    assert plan.micro_batches_per_epoch == 2  # the last partial batch is dropped
    assert plan.total_steps == 3 and plan.warmup_steps == 0
    assert sft.plan_training(10, 4, 1, 1, max_steps=7, warmup_ratio=0.3).total_steps == 7
    epoch0 = sft.micro_batch_indices(8, sft.plan_training(8, 4, 1, 1, None, 0), 0, seed=1) + \
        sft.micro_batch_indices(8, sft.plan_training(8, 4, 1, 1, None, 0), 1, seed=1)
    assert sorted(epoch0) == list(range(8))  # an epoch sees each example once
    feats = [{"input_ids": [i], "labels": [i]} for i in range(8)]
    plan = sft.plan_training(8, 2, 2, 1, None, 0)
    # Any step's batches come from the step number alone: resuming needs no data cursor.
    assert sft.step_micro_batches(feats, plan, 2, seed=0) == sft.step_micro_batches(
        feats, plan, 2, seed=0)
    steps = [sft.step_micro_batches(feats, plan, s, seed=0) for s in (1, 2)]
    seen = [f["input_ids"][0] for step in steps for micro in step for f in micro]
    assert sorted(seen) == list(range(8))
    # Two workers split each step's micro-batches without overlap.
    plan2 = sft.plan_training(8, 2, 1, 1, None, 0, world_size=2)
    r0 = sft.step_micro_batches(feats, plan2, 1, seed=0, rank=0)[0]
    r1 = sft.step_micro_batches(feats, plan2, 1, seed=0, rank=1)[0]
    assert not {f["input_ids"][0] for f in r0} & {f["input_ids"][0] for f in r1}


def _lora_model(tiny_model):
    from lema.models import load_model_and_tokenizer

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(tiny_model, device="cpu")
    return sft.build_lora_model(model, LoraConfig(r=4, alpha=8, dropout=0.0)), tok


def test_accumulated_loss_is_the_token_mean(tiny_model, tokenizer):
    model, tok = _lora_model(tiny_model)
    chats = [_chat(f"q{i}", "ans " * (1 + 3 * i)) for i in range(8)]  # unequal lengths
    feats, _ = sft.tokenize_chats(chats, tok, 128)
    collator = sft.build_collator(tok.pad_token_id)
    whole = sft.evaluate_loss(model, feats, collator, batch_size=8, device=CPU)
    plan = sft.plan_training(8, 4, 2, 1, 1, 0)
    optimizer, scheduler = sft.build_optimizer_and_scheduler(model, 1e-3, 0.0, plan)
    stats = sft.train_step(model, [collator(feats[:4]), collator(feats[4:])], optimizer,
                           scheduler, CPU)
    assert stats["loss"] == pytest.approx(whole, rel=1e-5)
    assert stats["label_tokens"] == sum(
        sum(t != sft.IGNORE_INDEX for t in f["labels"][1:]) for f in feats)


def test_state_round_trip(tiny_model, tmp_path):
    model, tok = _lora_model(tiny_model)
    feats, _ = sft.tokenize_chats([_chat(f"q{i}", f"a{i}") for i in range(8)], tok, 64)
    plan = sft.plan_training(8, 4, 1, 1, 10, 0.2)
    spec = sft.LoopSpec(plan=plan, eval_every=100, eval_batch_size=4)
    collator = sft.build_collator(tok.pad_token_id)
    optimizer, scheduler = sft.build_optimizer_and_scheduler(model, 1e-2, 0.0, plan)
    loop = sft.iterate_training(model, optimizer, scheduler, feats, [], collator, spec, CPU)
    history = [next(loop) for _ in range(3)]
    sft.save_training_state(tmp_path, model, optimizer, scheduler, 3, history, {"restarts": 0})
    assert (tmp_path / sft.ADAPTER_DIR / "adapter_config.json").is_file()
    reference = [r["train_loss"] for r in loop]  # steps 4..10 of the uninterrupted run

    fresh, _ = _lora_model(tiny_model)
    opt2, sch2 = sft.build_optimizer_and_scheduler(fresh, 1e-2, 0.0, plan)
    step, hist, extra = sft.load_training_state(tmp_path, fresh, opt2, sch2)
    assert (step, hist, extra) == (3, history, {"restarts": 0})
    assert sch2.last_epoch == 3  # the schedule goes on from step 3
    resumed = [r["train_loss"] for r in sft.iterate_training(
        fresh, opt2, sch2, feats, [], collator, spec, CPU, start_step=step)]
    assert resumed == pytest.approx(reference, rel=1e-5)


def test_autocast_bf16_on_cuda_only():
    """On CUDA the step runs under bf16 autocast (peft's fp32 LoRA weights would otherwise run their
    matmuls in fp32); on the CPU nothing changes."""
    import contextlib
    import warnings

    from lema.sft import _autocast

    assert isinstance(_autocast(torch.device("cpu")), contextlib.nullcontext)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPU-only torch warns that CUDA autocast is unavailable
        cuda = _autocast(torch.device("cuda"))
    assert isinstance(cuda, torch.autocast) and cuda.fast_dtype == torch.bfloat16
