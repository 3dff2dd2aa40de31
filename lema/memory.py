"""Peak GPU memory of one training worker (pipelines/train.py on a Llama-style decoder: peft LoRA
or QLoRA under DDP, or a full fine-tune under DDP or FSDP2; the forward under bf16 autocast on
CUDA as lema/sft.py runs it), estimated from the model's shapes, so a config can be checked
before it meets a GPU.

The method is Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models" (arXiv:2205.05198, section 4.1): add up every tensor autograd keeps for the backward pass.
Their 34*s*b*h + 5*n*s^2*b bytes a layer is for a GPT layer trained in full; counted the same way
for a Llama layer it is, in bytes per token (one position of one example) and layer, with h
hidden, i intermediate, n heads, s sequence length and `a` the bytes of the residual stream (2 in
bf16; 4 in QLoRA, whose prepared model keeps embeddings and norms in fp32, and so the stream and
the MLP between 4-bit matmuls; 4 in a full fine-tune under DDP, whose fp32 embeddings start an
fp32 stream; 2 under FSDP, which computes with bf16 copies of the weights). Under LoRA, with r
the rank, D the sum of the input widths of the adapted linears (q, k, v, o, gate, up take h, down
takes i: 6h + i for all-linear) and T their number:

    2*(4h + 4)          the two RMSNorms' inputs, upcast to fp32, and their 1/rms
    (2 + m)*D + 2*r*T   the adapters (fp32 weights, bf16 matmuls): a bf16 copy of each one's input,
                        its dropout mask (m = 1 byte on CUDA; 0 without dropout), its r-wide middle
    8h + 4n + 2s        q, k, v and the attention output in bf16 and the log-sum-exp: sdpa/flash
                        attention keep no s^2 scores (Korthikanti's 5*n*s), only the additive mask
                        that sdpa makes from a padding mask, per layer. With grouped-query attention
                        k and v are still h wide here: transformers repeats the kv heads for sdpa
                        whenever there is a mask, as the collator's padding makes
    3*a*i               SwiGLU: gate, silu(gate), up (frozen linears keep no input)

In a full fine-tune every weight is trained, so every linear keeps its input and each norm the
normalised input its weight multiplies; no adapter terms:

    2*(4h + 4 + a*h)    the norms: fp32 input, 1/rms and the normalised input (for the weight)
    2*c*h + 2*i         the linears' bf16 inputs: on a bf16 stream q, k, v share one and gate, up
                        one (c = 2); on an fp32 stream autocast casts one for each (c = 5); o_proj's
                        is the attention output (counted there), down_proj's the SwiGLU product
    8h + 4n + 2s        attention, as above
    6*i                 SwiGLU: gate, silu(gate), up, bf16 as autocast's linears return them

tests/test_gpu_memory.py checks both counts against the tensors autograd saves for a tiny Llama
with grouped-query attention. With gradient checkpointing a layer keeps only its input (a*h) and
one layer is recomputed at a time in the backward pass (the full count once). The loss over the
vocabulary V, per token: the final norm's input (4h), the bf16 logits (2V) and, in fp32, the
log-softmax output and in the backward its gradient and the logits' (12V); a full fine-tune adds
the final norm's 1/rms and normalised input (4 + a*h) and the lm_head's bf16 input (2h).

On top, the model's state:
  LoRA: weights in bf16 (2 B/param), or QLoRA's 4-bit NF4 with double quantisation (0.5 B + an
    8-bit absmax per 64 + an fp32 one per 64*256 for the linears, the rest fp32, and autocast's
    bf16 copy of the lm_head); the adapters' fp32 weights, gradients and two AdamW states and
    autocast's bf16 copies (18 B/param, plus 4 B for DDP's gradient buckets with several workers).
  Full, DDP: fp32 weights, gradients and two AdamW states (16 B/param), DDP's fp32 gradient
    buckets with several workers (4 B), and autocast's bf16 copies of the linears' and lm_head's
    weights, cached from their first use until the forward pass ends (2 B).
  Full, FSDP over W workers: the 16 B/param of weights, gradients and AdamW states, sharded
    (16/W B); unsharded, the all-gathered bf16 parameters of the layer in compute and of the one
    prefetched, that layer's bf16 gradients and the fp32 reduce-scatter input of the layer before
    it, still in flight (10 B per parameter of a layer); the root unit (embeddings, final norm,
    lm_head) gathered in bf16 from the forward to the end of the backward (FSDP2 does not reshard
    the root after forward) with the lm_head's bf16 gradient (2 B). With grad_accum > 1 every
    micro-batch reduce-scatters (lema.sft.train_step), so gradients accumulate sharded.

The parts are summed as if all live at once: an upper bound, as gradients grow while activations
are freed in the backward pass. Sequences are taken at max_seq_len (the collator pads to the
longest in a batch, so real batches are often shorter). Not counted: the CUDA context, NCCL's
buffers and allocator fragmentation, left to a margin by the caller; optimizer-step temporaries
(foreach AdamW's, the gradient norm's); and under DDP the transient bf16 gradients autocast's
copies get before they are cast back to fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

from lema.config import TrainConfig

GIB = 2**30


@dataclass(frozen=True)
class LlamaShape:
    """A Llama-style decoder's sizes (the model's config.json), untied lm_head."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    kv_heads: int | None = None  # grouped-query attention's key/value heads (None: as many as heads)

    @property
    def kv_width(self) -> int:
        """Output width of k_proj and v_proj: h * kv_heads / heads."""
        return self.hidden * (self.kv_heads or self.heads) // self.heads

    def linears(self) -> dict[str, tuple[int, int]]:
        """Each decoder layer's linears: {name: (in, out)}, the names peft's target_modules match."""
        h, i, kv = self.hidden, self.intermediate, self.kv_width
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_params(self) -> int:  # the linears and two norms: one FSDP unit
        return sum(n_in * n_out for n_in, n_out in self.linears().values()) + 2 * self.hidden

    @property
    def root_params(self) -> int:  # embeddings, untied lm_head, the final norm: FSDP's root unit
        return 2 * self.vocab * self.hidden + self.hidden

    @property
    def linear_params(self) -> int:
        return self.layers * (self.layer_params - 2 * self.hidden)

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.root_params


MODELS = {
    "meta-llama/Llama-2-7b-hf": LlamaShape(hidden=4096, layers=32, heads=32, intermediate=11008, vocab=32000),
    "meta-llama/Llama-2-7b-chat-hf": LlamaShape(hidden=4096, layers=32, heads=32, intermediate=11008, vocab=32000),
    "meta-llama/Llama-2-13b-hf": LlamaShape(hidden=5120, layers=40, heads=40, intermediate=13824, vocab=32000),
    "meta-llama/Llama-2-70b-hf": LlamaShape(hidden=8192, layers=80, heads=64, intermediate=28672, vocab=32000,
                                            kv_heads=8),
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


def _attention_bytes(shape: LlamaShape, seq_len: int) -> int:
    """q, k, v (repeated to all heads) and the output in bf16, the log-sum-exp, the additive mask."""
    return 8 * shape.hidden + 4 * shape.heads + 2 * seq_len


def layer_activation_bytes(shape: LlamaShape, seq_len: int, lora_r: int, target_modules: list[str] | str,
                           stream_bytes: int, dropout: bool, mask_bytes: int = 1) -> int:
    """Bytes one LoRA-adapted decoder layer keeps for the backward pass, per token (the module
    docstring's first sum).

    Args:
        stream_bytes: the residual stream's bytes, `a`: 2 (bf16) or 4 (QLoRA's fp32).
        dropout: whether the adapters have dropout (lora.dropout > 0).
        mask_bytes: bytes of a dropout mask element: 1 on CUDA (bool), its input's 4 on the CPU.
    """
    h, i = shape.hidden, shape.intermediate
    targets = adapted_linears(shape, target_modules)
    d_in = sum(n_in for n_in, _ in targets.values())
    norms = 2 * (4 * h + 4)
    adapters = (2 + (mask_bytes if dropout else 0)) * d_in + 2 * lora_r * len(targets)
    return norms + adapters + _attention_bytes(shape, seq_len) + 3 * stream_bytes * i


def full_layer_activation_bytes(shape: LlamaShape, seq_len: int, stream_bytes: int) -> int:
    """Bytes one fully trained decoder layer keeps for the backward pass, per token (the module
    docstring's second sum).

    Args:
        stream_bytes: the residual stream's bytes, `a`: 4 under DDP (fp32 weights), 2 under FSDP.
    """
    h, i = shape.hidden, shape.intermediate
    norms = 2 * (4 * h + 4 + stream_bytes * h)
    inputs = 2 * (2 if stream_bytes == 2 else 5) * h + 2 * i
    return norms + inputs + _attention_bytes(shape, seq_len) + 6 * i


def lora_params(shape: LlamaShape, lora_r: int, target_modules: list[str] | str) -> int:
    """Trainable parameters of the adapters: r * (in + out) for each adapted linear of each layer."""
    return shape.layers * lora_r * sum(n_in + n_out for n_in, n_out in adapted_linears(shape, target_modules).values())


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one training worker's GPU, in bytes, by part."""

    weights: int  # the model's weights as the worker holds them (a shard under FSDP)
    trainable: int  # gradients and AdamW states (LoRA: with the adapters' weights), DDP's buckets
    gathered: int  # FSDP's unsharded bf16 parameters and gradients; autocast's weight copies (DDP)
    activations: int  # what the decoder layers keep for the backward pass
    loss: int  # final norm, logits and the loss's buffers

    @property
    def total(self) -> int:
        return self.weights + self.trainable + self.gathered + self.activations + self.loss


def estimate_train_memory(train: TrainConfig, model: str) -> MemoryEstimate:
    """Peak GPU memory of one worker training `model` with `train` (batch_size x max_seq_len tokens)."""
    shape = model_shape(model)
    tokens = train.batch_size * train.max_seq_len
    h, v = shape.hidden, shape.vocab
    buckets = 4 if train.num_workers > 1 and train.parallelism == "ddp" else 0  # DDP's fp32 gradient buckets
    if train.method == "full":
        stream = 2 if train.parallelism == "fsdp" else 4
        per_layer = full_layer_activation_bytes(shape, train.max_seq_len, stream)
        loss_extra = 4 + stream * h + 2 * h  # final norm's 1/rms and normalised input, lm_head's input
        if train.parallelism == "fsdp":
            shards = train.num_workers
            weights, trainable = 4 * shape.params // shards, 12 * shape.params // shards
            gathered = 10 * shape.layer_params + 2 * shape.root_params + 2 * v * h
        else:
            weights, trainable = 4 * shape.params, (12 + buckets) * shape.params
            gathered = 2 * (shape.linear_params + v * h)  # autocast's cache of bf16 weight copies
    else:
        if train.load_in_4bit:
            quantized = int(shape.linear_params * (0.5 + 1 / 64 + 4 / (64 * 256)))
            weights, stream = quantized + 4 * (shape.params - shape.linear_params) + 2 * v * h, 4
        else:
            weights, stream = 2 * shape.params, 2
        trainable = lora_params(shape, train.lora.r, train.lora.target_modules) * (18 + buckets)
        gathered, loss_extra = 0, 0
        per_layer = layer_activation_bytes(shape, train.max_seq_len, train.lora.r, train.lora.target_modules,
                                           stream, train.lora.dropout > 0)
    if train.gradient_checkpointing:  # layer inputs, and one layer recomputed at a time
        activations = tokens * (shape.layers * stream * h + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    loss = tokens * (4 * h + 14 * v + loss_extra)
    return MemoryEstimate(weights=weights, trainable=trainable, gathered=gathered, activations=activations,
                          loss=loss)
