"""Shared fixtures: one small local Ray cluster per test session, the tiny model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # see RAY-NOTES: report() blocks
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
