"""Peak GPU memory of one training worker (pipelines/train.py: peft LoRA or QLoRA on a Llama-style
decoder, the forward under bf16 autocast on CUDA as lema/sft.py runs it, DDP), estimated from the
model's shapes, so a config can be checked before it meets a GPU.

The method is Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models" (arXiv:2205.05198, section 4.1): add up every tensor autograd keeps for the backward pass.
Their 34*s*b*h + 5*n*s^2*b bytes a layer is for a GPT layer trained in full; counted the same way
for a Llama layer under LoRA it is, in bytes per token (one position of one example) and layer,
with h hidden, i intermediate, n heads, s sequence length, r the LoRA rank, D the sum of the input
widths of the adapted linears (q, k, v, o, gate, up take h, down takes i: 6h + i for all-linear),
T their number, and `a` the bytes of the residual stream (2 in bf16; 4 in QLoRA, whose prepared
model keeps embeddings and norms in fp32, and so the stream and the MLP between 4-bit matmuls):

    2*(4h + 4)          the two RMSNorms' inputs, upcast to fp32, and their 1/rms
    (2 + m)*D + 2*r*T   the adapters (fp32 weights, bf16 matmuls): a bf16 copy of each one's input,
                        its dropout mask (m = 1 byte on CUDA; 0 without dropout), its r-wide middle
    8h + 4n + 2s        q, k, v and the attention output in bf16 and the log-sum-exp: sdpa/flash
                        attention keep no s^2 scores (Korthikanti's 5*n*s), only the additive mask
                        that sdpa makes from a padding mask, per layer
    3*a*i               SwiGLU: gate, silu(gate), up (frozen linears keep no input)

tests/test_gpu_memory.py checks this count against the tensors autograd saves for a tiny Llama.
With gradient checkpointing a layer keeps only its input (a*h) and one layer is recomputed at a
time in the backward pass (the full count once). On top: weights (bf16: 2 B/param; 4-bit NF4 with
double quantisation: 0.5 B + an 8-bit absmax per 64 + an fp32 one per 64*256 for the linears, the
rest fp32, and autocast's bf16 copy of the lm_head), the adapters' fp32 weights, gradients and two
AdamW states and autocast's bf16 copies (18 B/param, plus 4 B for DDP's gradient buckets with
several workers), and the loss over the vocabulary V, per token: the final norm's input (4h), the
bf16 logits (2V) and, in fp32, the log-softmax output and in the backward its gradient and the
logits' (12V). Sequences are taken at max_seq_len (the collator pads to the longest in a batch,
so real batches are often shorter). Not counted: the CUDA context and allocator fragmentation,
left to a margin by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from lema.config import TrainConfig

GIB = 2**30


@dataclass(frozen=True)
class LlamaShape:
    """A Llama-style decoder's sizes (the model's config.json), multi-head attention, untied head."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int

    def linears(self) -> dict[str, tuple[int, int]]:
        """Each decoder layer's linears: {name: (in, out)}, the names peft's target_modules match."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        return self.layers * sum(n_in * n_out for n_in, n_out in self.linears().values())

    @property
    def params(self) -> int:  # + embeddings, untied lm_head, two norms a layer and the final one
        return self.linear_params + 2 * self.vocab * self.hidden + (2 * self.layers + 1) * self.hidden


MODELS = {
    "meta-llama/Llama-2-7b-hf": LlamaShape(hidden=4096, layers=32, heads=32, intermediate=11008, vocab=32000),
    "meta-llama/Llama-2-7b-chat-hf": LlamaShape(hidden=4096, layers=32, heads=32, intermediate=11008, vocab=32000),
    "meta-llama/Llama-2-13b-hf": LlamaShape(hidden=5120, layers=40, heads=40, intermediate=13824, vocab=32000),
}

GPU_MEMORY_MIB = {"A10G": 23028, "L4": 23034, "L40S": 46068, "A100-80GB": 81920, "H100": 81559}
"""What each GPU reports as total memory (nvidia-smi), in MiB."""


def model_shape(model: str) -> LlamaShape:
    """The shape of a model by hub id; KeyError naming the known ids for any other."""
    if model not in MODELS:
        raise KeyError(f"no shape for model {model!r}: add its config.json sizes to lema.memory.MODELS "
                       f"(known: {sorted(MODELS)})")
    return MODELS[model]


def adapted_linears(shape: LlamaShape, target_modules: list[str] | str) -> dict[str, tuple[int, int]]:
    """The linears a LoRA target_modules setting adapts in each layer (all-linear: all but lm_head)."""
    linears = shape.linears()
    if target_modules == "all-linear":
        return linears
    names = [target_modules] if isinstance(target_modules, str) else target_modules
    unknown = sorted(set(names) - set(linears))
    if unknown:
        raise ValueError(f"target_modules {unknown} are not linears of a Llama layer: choose from {sorted(linears)}")
    return {name: linears[name] for name in names}


def layer_activation_bytes(shape: LlamaShape, seq_len: int, lora_r: int, target_modules: list[str] | str,
                           stream_bytes: int, dropout: bool, mask_bytes: int = 1) -> int:
    """Bytes one decoder layer keeps for the backward pass, per token (the module docstring's sum).

    Args:
        stream_bytes: the residual stream's bytes, `a`: 2 (bf16) or 4 (QLoRA's fp32).
        dropout: whether the adapters have dropout (lora.dropout > 0).
        mask_bytes: bytes of a dropout mask element: 1 on CUDA (bool), its input's 4 on the CPU.
    """
    h, i, n = shape.hidden, shape.intermediate, shape.heads
    targets = adapted_linears(shape, target_modules)
    d_in = sum(n_in for n_in, _ in targets.values())
    norms = 2 * (4 * h + 4)
    adapters = (2 + (mask_bytes if dropout else 0)) * d_in + 2 * lora_r * len(targets)
    attention = 8 * h + 4 * n + 2 * seq_len
    return norms + adapters + attention + 3 * stream_bytes * i


def lora_params(shape: LlamaShape, lora_r: int, target_modules: list[str] | str) -> int:
    """Trainable parameters of the adapters: r * (in + out) for each adapted linear of each layer."""
    return shape.layers * lora_r * sum(n_in + n_out for n_in, n_out in adapted_linears(shape, target_modules).values())


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one training worker's GPU, in bytes, by part."""

    weights: int
    adapters: int  # LoRA weights, gradients, AdamW states (and DDP buckets)
    activations: int  # what the decoder layers keep for the backward pass
    loss: int  # final norm, logits and the loss's buffers

    @property
    def total(self) -> int:
        return self.weights + self.adapters + self.activations + self.loss


def estimate_train_memory(train: TrainConfig, model: str) -> MemoryEstimate:
    """Peak GPU memory of one worker training `model` with `train` (batch_size x max_seq_len tokens)."""
    shape = model_shape(model)
    tokens = train.batch_size * train.max_seq_len
    if train.load_in_4bit:
        quantized = int(shape.linear_params * (0.5 + 1 / 64 + 4 / (64 * 256)))
        weights, stream = quantized + 4 * (shape.params - shape.linear_params) + 2 * shape.vocab * shape.hidden, 4
    else:
        weights, stream = 2 * shape.params, 2
    adapters = lora_params(shape, train.lora.r, train.lora.target_modules) * (18 + (4 if train.num_workers > 1 else 0))
    per_layer = layer_activation_bytes(shape, train.max_seq_len, train.lora.r, train.lora.target_modules,
                                       stream, train.lora.dropout > 0)
    if train.gradient_checkpointing:  # layer inputs, and one layer recomputed at a time
        activations = tokens * (shape.layers * stream * shape.hidden + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    loss = tokens * (4 * shape.hidden + 14 * shape.vocab)
    return MemoryEstimate(weights=weights, adapters=adapters, activations=activations, loss=loss)
