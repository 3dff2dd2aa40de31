"""The log a person reads: Ray workers drop known noise and keep everything else."""

import os
import subprocess
import sys
import threading
import warnings

import pytest

from pipelines import ray_setup


@pytest.fixture(autouse=True)
def _restore():
    filters, hook = warnings.filters[:], threading.excepthook
    yield
    warnings.filters[:], threading.excepthook = filters, hook


def _run_thread(name: str, seen: list) -> None:
    threading.excepthook = lambda args: seen.append(args.thread.name)
    ray_setup.quiet_worker_logs()
    t = threading.Thread(target=lambda: 1 / 0, name=name)
    t.start()
    t.join()


def test_cleaner_thread_traceback_is_dropped_others_are_kept():
    seen: list = []
    _run_thread("PlacementGroupCleanerMonitor", seen)
    assert seen == []
    _run_thread("worker", seen)
    assert seen == ["worker"]


def test_peft_deprecation_warning_is_dropped_others_are_kept():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        ray_setup.quiet_worker_logs()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("something else", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else"]


def test_workers_load_weights_without_progress_bars():
    env = {**os.environ, **ray_setup.worker_runtime_env()["env_vars"]}
    code = "import transformers; print(transformers.utils.logging.is_progress_bar_enabled())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
