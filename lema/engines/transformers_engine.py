"""The transformers backend: batched `model.generate` on CPU or GPU, optional peft LoRA adapter.

Requests are rendered with the model's chat template (or as plain text for a model without
one, see `EngineConfig.prompt_format`), sorted by prompt length (less padding) and generated
`batch_size` prompts at a time; outputs come back in request order. With per-request seeds,
each generate() batch is seeded from the seeds of its requests: a request samples the same
whenever it meets the same batch.
"""

from __future__ import annotations

import logging
import time
import zlib

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

log = logging.getLogger(__name__)


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest occurrence of any stop string.

    Returns:
        (text before the stop string, whether one was found).
    """
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def batch_seed(seeds: list[int | None]) -> int | None:
    """One torch seed for a generate() batch from its requests' seeds (None when all are None)."""
    if all(s is None for s in seeds):
        return None
    return zlib.crc32(",".join(str(s) for s in seeds).encode()) % (2**31)


def _eos_ids(model, tok) -> set[int]:
    ids = model.generation_config.eos_token_id
    if ids is None:
        ids = tok.eos_token_id
    return set(ids) if isinstance(ids, list) else {ids}


class TransformersEngine:
    """`Engine` over a Hugging Face causal LM (see lema.engines.Engine for the contract)."""

    def __init__(self, cfg: EngineConfig):
        import torch

        from lema.models import load_model_and_tokenizer

        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.name = cfg.label
        self.batch_size = cfg.batch_size
        try:
            model, tok = load_model_and_tokenizer(cfg.model, cfg.dtype, cfg.device)
        except OSError as e:
            raise EngineError(f"cannot load model {cfg.model!r}: {e}") from e
        if cfg.adapter is not None:
            model = self._apply_adapter(model, cfg.adapter)
        self.model, self.tok = model, tok
        self.prompt_format = resolve_prompt_format(cfg.prompt_format, tok, cfg.model)
        self._eos = _eos_ids(model, tok)
        self._end_ids = self._eos | {tok.pad_token_id}  # where a row's completion ends
        self._stats = new_stats()

    @staticmethod
    def _apply_adapter(model, adapter: str):
        from peft import PeftModel

        try:
            peft_model = PeftModel.from_pretrained(model, local_path(adapter))
        except (OSError, ValueError) as e:
            raise EngineError(f"cannot load LoRA adapter {adapter!r}: {e}") from e
        merged = peft_model.merge_and_unload()  # plain model: faster generation
        merged.eval()
        return merged

    # ------------------------------------------------------------ prompts
    def _generation_config(self, sampling: SamplingConfig, n: int):
        from transformers import GenerationConfig

        greedy = sampling.temperature == 0
        kwargs = {
            "max_new_tokens": sampling.max_tokens,
            "do_sample": not greedy,
            "num_return_sequences": n,
            "pad_token_id": self.tok.pad_token_id,
            "eos_token_id": sorted(self._eos),
            "stop_strings": list(sampling.stop) or None,
        }
        if not greedy:  # top_k=0: no top-k cut, as vLLM and the OpenAI API sample
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        return GenerationConfig(**kwargs)

    # ------------------------------------------------------------ generate
    def generate(
        self,
        requests: list[Messages],
        sampling: SamplingConfig,
        json_schema: dict | None = None,
        seeds: list[int | None] | None = None,
    ) -> list[RequestOutput]:
        """See `Engine.generate`; `json_schema` is not enforced by this backend."""
        import torch

        start = time.perf_counter()
        seeds = seeds if seeds is not None else [sampling.seed] * len(requests)
        encoded, outputs = encode_requests(self.tok, self.prompt_format, requests)
        if self.prompt_format == "plain":  # a base model goes on past its answer: stop it
            extra = sorted({s for i in encoded for s in plain_stops(requests[i])} - set(sampling.stop))
            sampling = sampling.model_copy(update={"stop": [*sampling.stop, *extra]})
        order = sorted(encoded, key=lambda i: len(encoded[i]), reverse=True)
        for b in range(0, len(order), self.batch_size):
            chunk = order[b : b + self.batch_size]
            seed = batch_seed([seeds[i] for i in chunk])
            if sampling.temperature > 0 and seed is not None:
                torch.manual_seed(seed)
            for i, out in zip(chunk, self._generate_batch([encoded[i] for i in chunk], sampling)):
                outputs[i] = out
        result = [o for o in outputs if o is not None]
        add_output_stats(self._stats, result, time.perf_counter() - start)
        return result

    def _generate_batch(
        self, prompts: list[list[int]], sampling: SamplingConfig
    ) -> list[RequestOutput]:
        import torch

        greedy = sampling.temperature == 0
        n = 1 if greedy else sampling.n  # greedy samples are all the same: generate once
        batch = self.tok.pad({"input_ids": prompts}, return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                generation_config=self._generation_config(sampling, n),
                tokenizer=self.tok if sampling.stop else None,
            )
        new = out[:, batch["input_ids"].shape[1] :].tolist()
        results = []
        for j, prompt in enumerate(prompts):
            rows = new[j * n : (j + 1) * n]
            completions = [self._completion(row, sampling) for row in rows]
            if greedy:
                completions = [Completion(**vars(completions[0])) for _ in range(sampling.n)]
            results.append(RequestOutput(completions=completions, prompt_tokens=len(prompt)))
        return results

    def _completion(self, row: list[int], sampling: SamplingConfig) -> Completion:
        end = next((k for k, t in enumerate(row) if t in self._end_ids), None)
        ids = row if end is None else row[:end]
        text = self.tok.decode(ids, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, sampling.stop)
        if stopped or (end is not None and row[end] in self._eos):
            reason = "stop"
        else:
            reason = "length" if len(ids) >= sampling.max_tokens else "stop"
        return Completion(text=text, tokens=len(ids), finish_reason=reason)

    # ------------------------------------------------------------ bookkeeping
    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    def close(self) -> None:
        self.model = None
        release_torch_memory()
