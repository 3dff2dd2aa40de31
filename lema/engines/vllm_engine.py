"""The vLLM backend: an offline `vllm.LLM` on GPU, optional LoRA adapter, structured outputs.

vLLM (the `gpu` extra, vllm>=0.12 for `StructuredOutputsParams`) is imported only when the
engine is built, so nothing else in lema needs it installed.
"""

from __future__ import annotations

import time

from lema.config import EngineConfig, SamplingConfig
from lema.engines import (
    Completion,
    EngineError,
    Messages,
    RequestOutput,
    add_output_stats,
    new_stats,
    release_torch_memory,
)

_FINISH = {"stop": "stop", "length": "length"}  # anything else ("abort", None) is an error


def vllm_dtype(dtype: str) -> str:
    """Our dtype names to vLLM's; auto means bf16 here (vLLM's own auto keeps fp32 weights)."""
    return "bfloat16" if dtype == "auto" else dtype


class VLLMEngine:
    """`Engine` over `vllm.LLM` (see lema.engines.Engine for the contract)."""

    def __init__(self, cfg: EngineConfig):
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise EngineError(
                "the vllm backend needs vLLM: pip install 'lema[gpu]' (on a CUDA machine)"
            ) from e
        from lema.models import resolve_model

        if cfg.device == "cpu":
            raise EngineError("the vllm backend runs on GPU; use backend=transformers for cpu")
        opts = cfg.vllm
        kwargs = {
            "model": resolve_model(cfg.model),
            "tensor_parallel_size": opts.tensor_parallel_size,
            "gpu_memory_utilization": opts.gpu_memory_utilization,
            "dtype": vllm_dtype(cfg.dtype),
            "enforce_eager": opts.enforce_eager,
        }
        if opts.max_model_len is not None:
            kwargs["max_model_len"] = opts.max_model_len
        self._lora = None
        if cfg.adapter is not None:
            kwargs.update(enable_lora=True, max_lora_rank=opts.max_lora_rank)
            self._lora = LoRARequest("adapter", 1, cfg.adapter)
        self.name = cfg.label
        self.llm = LLM(**kwargs)
        self._stats = new_stats()

    def _params(self, sampling: SamplingConfig, json_schema: dict | None):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=json_schema) if json_schema is not None else None
        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            structured_outputs=structured,
        )

    def _chat(self, requests: list[Messages], params) -> list[RequestOutput]:
        outs = self.llm.chat(
            requests,
            sampling_params=params,
            use_tqdm=False,
            lora_request=self._lora,
            add_generation_prompt=True,
        )
        results = []
        for out in outs:
            completions = [
                Completion(
                    text=c.text,
                    tokens=len(c.token_ids),
                    finish_reason=_FINISH.get(c.finish_reason, "error"),
                )
                for c in sorted(out.outputs, key=lambda c: c.index)
            ]
            prompt_tokens = len(out.prompt_token_ids or [])
            results.append(RequestOutput(completions=completions, prompt_tokens=prompt_tokens))
        return results

    def generate(
        self,
        requests: list[Messages],
        sampling: SamplingConfig,
        json_schema: dict | None = None,
    ) -> list[RequestOutput]:
        """See `Engine.generate`. A batch vLLM rejects (e.g. one prompt longer than
        max_model_len) is retried request by request, so only the bad ones fail."""
        start = time.perf_counter()
        params = self._params(sampling, json_schema)
        try:
            outputs = self._chat(requests, params)
        except ValueError:
            outputs = []
            for messages in requests:
                try:
                    outputs.extend(self._chat([messages], params))
                except ValueError as e:
                    outputs.append(RequestOutput(error=f"vLLM rejected the request: {e}"))
        add_output_stats(self._stats, outputs, time.perf_counter() - start)
        return outputs

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    def close(self) -> None:
        self.llm = None
        release_torch_memory()
