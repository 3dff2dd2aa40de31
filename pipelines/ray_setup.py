"""Joining or starting the Ray cluster a job runs on, with a log a person can read."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any

from lema.config import LemaConfig

# Ray Train's placement-group cleaner warns every few seconds when the State API is slow or off,
# and prints a traceback when its own stop times out on a busy machine; neither affects the run
# (a detached cleaner still removes the placement group), so a person reading the log need not see them.
_NOISY_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",
                  "ray.train.v2._internal.callbacks.placement_group_callback")
# The cleaner's monitor thread also dies with an uncaught RpcError when its GCS client times out
# (seen on a 2-core machine busy training): a traceback in the middle of the run, nothing lost.
_QUIET_THREADS = ("PlacementGroupCleanerMonitor",)


def _thread_excepthook(previous):
    def hook(args: threading.ExceptHookArgs) -> None:
        if args.thread is not None and args.thread.name in _QUIET_THREADS:
            return
        previous(args)
    return hook


def quiet_worker_logs() -> None:
    """Runs in every Ray worker process at start (`worker_process_setup_hook`). A filter, not a
    level: Ray Train's logging setup resets the levels of the loggers under `ray.train`."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).addFilter(lambda record: record.levelno >= logging.CRITICAL)
    threading.excepthook = _thread_excepthook(threading.excepthook)
    # peft calls transformers' deprecated `is_gradient_checkpointing` each time it wraps a model
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                            category=FutureWarning)


def worker_runtime_env() -> dict[str, Any]:
    """The runtime env of every worker of a job: the log filters above, and no Hugging Face
    progress bars (every stage shows its own progress; a "Loading weights" bar per actor only
    adds lines; transformers reads the variable when it is imported)."""
    health_check_s = os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    return {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": health_check_s, "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
            "worker_process_setup_hook": "pipelines.ray_setup.quiet_worker_logs"}


def init_ray(cfg: LemaConfig) -> None:
    """Join the cluster of `ray job submit` (RAY_ADDRESS) or cfg.ray.address, else start locally.

    Ray Data's own progress bars and plan printouts are off: every stage logs its own progress
    (items done of the total, rate, ETA; `pipelines.pool.Progress`) and ends with a line of figures.
    """
    import ray
    import ray.data

    if ray.is_initialized():
        return
    env = worker_runtime_env()
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        # address="local": a fresh local cluster, never some other process's
        ray.init(address="local", num_cpus=cfg.ray.num_cpus, runtime_env=env)
    data = ray.data.DataContext.get_current()
    data.enable_progress_bars = False
    data.print_on_execution_start = False
