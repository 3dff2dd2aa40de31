"""Shared fixtures: one small local Ray cluster per test session, the tiny models, a local
S3-compatible server."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # see RAY-NOTES: report() blocks
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One MLflow store for the session: a new SQLite store takes seconds to set up, once per output_dir
# (tests/test_tracking.py unsets this to check the default store under output_dir).
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='lema-mlflow-')}/mlflow.db")
# Credentials for the test S3 server, set before Ray starts so its workers inherit them.
for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with 4 logical CPUs (2 cores here), shared by every test that asks."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # our own cluster, never another process's
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """A random 2-layer Llama with SmolLM2's tokenizer, built once into the lema cache."""
    from lema.models import TINY_MODEL, resolve_model

    return resolve_model(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_plain_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model with its chat template removed, as a base model ships (no template)."""
    out = tmp_path_factory.mktemp("models") / "tiny-plain"
    shutil.copytree(tiny_model, out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return str(out)


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto's server mode); yields a function bucket -> a
    `s3://bucket?endpoint_override=...` URI root that lema.storage and Ray Train accept."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()

    def uri(bucket: str) -> str:
        return f"s3://{bucket}?endpoint_override={host}:{port}&scheme=http&allow_bucket_creation=true"

    yield uri
    server.stop()


def accelerator() -> str:
    """`cuda` where a CUDA GPU is, else `cpu`: the device the vLLM and QLoRA tests run on."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


QLORA_TARGET = "The answer is 7. The answer is 7."


@pytest.fixture(scope="session")
def qlora_result(ray_cluster, tmp_path_factory):
    """The paper configs' training path, 2 steps on the packaged model through the train stage:
    4-bit NF4 base with double quantisation, r 64 all-linear LoRA, paged AdamW 32-bit, gradient
    checkpointing, clip 0.3, constant lr, the adapter merged into the unquantised base; 2 Ray
    Train workers on the CPU (1 on a GPU). Every example has one short target, so the adapter
    visibly changes greedy outputs (the vLLM tests serve it)."""
    from lema.config import LoraConfig, TrainConfig
    from pipelines.train import run_training

    gpu = accelerator() == "cuda"
    questions = [f"What is {a} + {b}?" for a in range(1, 7) for b in range(1, 5)]
    examples = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": QLORA_TARGET}],
                 "split": "train"} for q in questions]
    cfg = TrainConfig(
        base_model="smollm2-135m", method="qlora", lora=LoraConfig(r=64, alpha=16, dropout=0.0),
        optimizer="paged_adamw_32bit", lr_scheduler="constant", learning_rate=3e-3, warmup_ratio=0.0,
        max_grad_norm=0.3, gradient_checkpointing=True, max_steps=3, batch_size=4, max_seq_len=96,
        eval_every=3, checkpoint_every=3, num_workers=1 if gpu else 2, use_gpu=gpu, merge=True,
    )
    return run_training(examples, cfg, str(tmp_path_factory.mktemp("qlora")), "qlora")


FULL_COMMON = {"method": "full", "max_steps": 4, "grad_accum": 2, "learning_rate": 1e-2, "eval_every": 4,
               "checkpoint_every": 2, "checkpoints": 2, "max_failures": 0}


@pytest.fixture(scope="session")
def full_result(ray_cluster, tiny_model, tmp_path_factory):
    """A full fine-tune of the tiny model, 4 steps on one Ray Train worker (a GPU when there is
    one: fp32 master weights, bf16 autocast, the model saved in bf16), 2 snapshots."""
    import torch
    from test_train import _config, _uneven_examples

    from pipelines.train import run_training

    cfg = _config(tiny_model, batch_size=4, use_gpu=torch.cuda.is_available(), **FULL_COMMON)
    return run_training(_uneven_examples(32), cfg, str(tmp_path_factory.mktemp("full")), "one")
