"""Joining or starting the Ray cluster a job runs on."""

from __future__ import annotations

import os

from lema.config import LemaConfig


def init_ray(cfg: LemaConfig) -> None:
    """Join the cluster of `ray job submit` (RAY_ADDRESS) or cfg.ray.address, else start locally."""
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get(
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")}}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        # address="local": a fresh local cluster, never some other process's
        ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False, runtime_env=env)
