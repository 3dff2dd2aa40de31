"""Full fine-tuning (`train.method: full`) on Ray Train, CPU and gloo: one worker, FSDP2 over two
workers (sharded weights, gradients and optimizer state) through a worker kill, the saved model
directory, snapshots for checkpoint selection.

Each fit() costs about 12-15 s of start-up here (RAY-NOTES); the file runs two in make test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FULL_COMMON as COMMON
from test_train import _config, _uneven_examples

from lema.config import ConfigError, load_config
from lema.models import load_model_and_tokenizer
from pipelines.train import TrainResult, run_training


@pytest.fixture(scope="module")
def one(full_result) -> TrainResult:
    return full_result


@pytest.fixture(scope="module")
def fsdp_killed(ray_cluster, tiny_model, tmp_path_factory) -> TrainResult:
    """The same global batch on 2 FSDP workers, rank 0 killed after step 3: the group restarts
    from checkpoint_000002's shards."""
    cfg = _config(tiny_model, batch_size=2, num_workers=2, parallelism="fsdp", crash_at_step=3,
                  **{**COMMON, "max_failures": 1})
    return run_training(_uneven_examples(32), cfg, str(tmp_path_factory.mktemp("fsdp")), "fsdp")


def test_full_fine_tuning_learns_and_saves_a_model(one: TrainResult, tiny_model):
    losses = [h["train_loss"] for h in one.history]
    assert losses[0] - losses[-1] > 1.0  # every weight moves: far past LoRA's floor on this model
    assert one.adapter_dir is None and one.model_dir is not None
    tuned, _ = load_model_and_tokenizer(one.model_dir, device="cpu")
    base, _ = load_model_and_tokenizer(tiny_model, device="cpu")
    moved = [n for n, p in tuned.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert len(moved) == len(base.state_dict())  # embeddings and norms too, not only linears
    assert [s["step"] for s in one.snapshots] == [2, 4]
    assert all((Path(s["dir"]) / "config.json").is_file() for s in one.snapshots)


def test_fsdp_two_workers_follow_one_worker_through_a_kill(one: TrainResult, fsdp_killed: TrainResult):
    """Loss per step equal to one worker's (the token mean over both, synced once per step), and
    the restart resumed at step 3 from the sharded checkpoint of step 2."""
    a = [h["train_loss"] for h in one.history]
    b = [h["train_loss"] for h in fsdp_killed.history]
    assert [h["restarts"] for h in fsdp_killed.history] == [0, 0, 1, 1]
    assert max(abs(x - y) for x, y in zip(a, b)) < 2e-4, (a, b)
    ckpt = Path(fsdp_killed.checkpoint_dir)
    assert {p.name for p in (ckpt / "sharded").glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    x, _ = load_model_and_tokenizer(one.model_dir, device="cpu")
    y, _ = load_model_and_tokenizer(fsdp_killed.model_dir, device="cpu")  # gathered from the shards
    for (name, p), q in zip(x.state_dict().items(), y.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-4), name


@pytest.mark.slow  # one more fit: make slow_test
def test_ddp_two_workers_follow_one_worker(one: TrainResult, tiny_model, tmp_path: Path):
    ddp = run_training(_uneven_examples(32), _config(tiny_model, batch_size=2, num_workers=2, **COMMON),
                       str(tmp_path), "ddp")
    a, b = ([h["train_loss"] for h in r.history] for r in (one, ddp))
    assert max(abs(x - y) for x, y in zip(a, b)) < 2e-4, (a, b)


def test_method_settings_that_do_not_go_together_are_named():
    with pytest.raises(ConfigError, match="fsdp shards a full fine-tune"):
        load_config(None, ["train.base_model=tiny", "train.parallelism=fsdp"])
    with pytest.raises(ConfigError, match="init_adapter and train.merge are for LoRA"):
        load_config(None, ["train.base_model=tiny", "train.method=full", "train.merge=true"])
    with pytest.raises(ConfigError, match="load_in_4bit: unknown key"):
        load_config(None, ["train.base_model=tiny", "train.load_in_4bit=true"])
    assert load_config(None, ["train.base_model=tiny", "train.method=qlora"]).train.load_in_4bit
