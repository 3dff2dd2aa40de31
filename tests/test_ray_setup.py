"""The log a person reads: Ray workers drop known noise and keep everything else."""

import threading
import warnings

import pytest
import transformers

from pipelines import ray_setup


@pytest.fixture(autouse=True)
def _restore():
    filters, hook = warnings.filters[:], threading.excepthook
    yield
    warnings.filters[:], threading.excepthook = filters, hook
    transformers.utils.logging.enable_progress_bar()


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


def test_peft_deprecation_warning_and_weight_bars_are_off():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        ray_setup.quiet_worker_logs()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("something else", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else"]
    assert not transformers.utils.logging.is_progress_bar_enabled()
