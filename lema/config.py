"""Typed configuration: one pydantic model per concern, loaded from YAML with `a.b=val` overrides.

Every field has a default and its doc once, in the docstring under it. Unknown keys and bad
values are reported all at once, by dotted key, before any work starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every bad key."""


GradingMode = Literal["robust", "lema_compat"]
"""robust (ours) or lema_compat (the LeMa paper's evaluation rules): lema.grading.MODES."""
CorrectorPrompt = Literal["zero_shot", "few_shot", "json", "paper"]
"""The corrector prompts: ours (zero_shot, few_shot, json) or the LeMa paper's layout (paper);
lema.prompts.CORRECTOR_VARIANTS."""


OPERATIONAL = {"operational": True}
"""`json_schema_extra` of fields that change how a stage runs, not what it produces (actors,
batch sizes, API limits, prices): they stay out of stage hashes, so re-scaling a finished
stage does not redo it."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _result_value(value: Any) -> Any:
    """What in a config (or in lists and dicts of configs) decides results: OPERATIONAL fields left out."""
    if isinstance(value, StrictModel):
        return {name: _result_value(getattr(value, name)) for name, info in type(value).model_fields.items()
                if not (info.json_schema_extra or {}).get("operational")}
    if isinstance(value, (list, tuple)):
        return [_result_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _result_value(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- problems
class ProblemSourceConfig(StrictModel):
    kind: Literal["synthetic", "hf", "local"] = "synthetic"
    """Where problems come from: the built-in generator, a Hugging Face dataset, or a file."""
    name: str = "synthetic"
    """hf: `gsm8k`, `math`, `math500` or a hub id; local: a label for the records."""
    split: str = "train"
    """Dataset split (hf) or the split label written on the records (local, synthetic)."""
    path: str | None = None
    """local: a .jsonl or .parquet file. hf: optional local dir/file in the hub's layout."""
    fields: dict[str, str] = Field(default_factory=dict)
    """local/hf: record field -> column, e.g. {question: problem, answer: final}."""
    answer_format: Literal["auto", "gsm8k", "math", "plain"] = "auto"
    """How the gold column is read: `#### n` solutions, `\\boxed{}` solutions, or a bare answer."""
    count: int = 64
    """synthetic: how many problems."""
    levels: list[int] = Field(default_factory=lambda: [2, 3, 4])
    """synthetic: difficulty levels (number of reasoning steps), cycled over the problems."""
    seed: int = 0
    """synthetic: generator seed (the split label is mixed in, so train and test differ)."""
    max_samples: int | None = None
    """Keep only the first N problems (after loading)."""


# ---------------------------------------------------------------- engines
class SamplingConfig(StrictModel):
    n: int = Field(1, ge=1)
    """Completions per request."""
    temperature: float = Field(0.0, ge=0.0)
    """0 is greedy."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = 0
    """Sampling seed; with a seed, the same request gives the same completions."""


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The LoRA ranks vLLM accepts for `max_lora_rank` (vllm.config.lora.LoRAConfig)."""


class VLLMOptions(StrictModel):
    tensor_parallel_size: int = Field(1, ge=1, json_schema_extra=OPERATIONAL)
    """GPUs one engine spans; the actor pool must reserve as many (`pool.num_gpus`)."""
    gpu_memory_utilization: float = Field(0.9, json_schema_extra=OPERATIONAL)
    max_model_len: int | None = None
    """Longest prompt + completion in tokens; a longer prompt fails alone with its reason."""
    max_lora_rank: int = Field(64, json_schema_extra=OPERATIONAL)
    """Largest LoRA rank the engine serves: one of VLLM_LORA_RANKS, at least the adapter's `r`."""
    enforce_eager: bool = Field(False, json_schema_extra=OPERATIONAL)
    """No CUDA graphs / torch.compile: a faster start (about 1 min instead of 3 on a CPU)."""
    cpu_kvcache_gb: int = Field(1, ge=1, json_schema_extra=OPERATIONAL)
    """device cpu: the KV cache in GiB (vLLM's own default takes 4, a third of a small node)."""

    @model_validator(mode="after")
    def _rank(self) -> VLLMOptions:
        if self.max_lora_rank not in VLLM_LORA_RANKS:
            raise ValueError(f"max_lora_rank {self.max_lora_rank} is not one vLLM serves: "
                             f"choose one of {list(VLLM_LORA_RANKS)}")
        return self


class OpenAIOptions(StrictModel):
    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (None: the official API)."""
    api_key_env: str = Field("OPENAI_API_KEY", json_schema_extra=OPERATIONAL)
    """Environment variable holding the key (never put keys in configs)."""
    max_concurrency: int = Field(16, ge=1, json_schema_extra=OPERATIONAL)
    requests_per_minute: float | None = Field(None, json_schema_extra=OPERATIONAL)
    tokens_per_minute: float | None = Field(None, json_schema_extra=OPERATIONAL)
    timeout_s: float = Field(120.0, json_schema_extra=OPERATIONAL)
    """Per-request timeout."""
    max_retries: int = Field(6, json_schema_extra=OPERATIONAL)
    """Retries on 429, 5xx and timeouts, with jittered exponential backoff."""
    backoff_s: float = Field(1.0, json_schema_extra=OPERATIONAL)
    """First backoff; doubles each retry, capped at 60 s."""
    cache_dir: str | None = Field(None, json_schema_extra=OPERATIONAL)
    """On-disk response cache; a re-run pays nothing twice (None: no cache)."""
    price_per_1m_input: float = Field(0.0, json_schema_extra=OPERATIONAL)
    """USD per million prompt tokens (for cost accounting)."""
    price_per_1m_output: float = Field(0.0, json_schema_extra=OPERATIONAL)
    """USD per million completion tokens."""
    structured_output: bool = False
    """Ask for JSON through `response_format` (the corrector's JSON variant)."""


class ScriptedOptions(StrictModel):
    p_correct: float = Field(0.5, ge=0.0, le=1.0)
    """Chance that a sampled solution of a synthetic question is right; otherwise one step gets
    a wrong value that the later steps carry on to a wrong answer (see lema.engines.scripted_engine)."""


class EngineConfig(StrictModel):
    backend: Literal["transformers", "vllm", "openai", "scripted"] = "transformers"
    """scripted: the null engine (no model; replies by rule, see lema.engines.scripted_engine)."""
    model: str = "smollm2-135m"
    """Hub id or local dir; `smollm2-135m` is the packaged offline model; `tiny` builds a
    random tiny model (tests)."""
    name: str | None = None
    """Label written on records (default: the model)."""
    adapter: str | None = None
    """A LoRA adapter directory to apply (transformers/peft, vLLM LoRA)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    """How chat messages become the model's input: `chat` through the tokenizer's chat
    template, `plain` as plain text (`lema.prompts.render_plain`, for base models without a
    template; the openai backend then calls the completions endpoint); `auto`: chat when the
    tokenizer has a template, else plain (openai: chat)."""
    batch_size: int = Field(8, ge=1, json_schema_extra=OPERATIONAL)
    """transformers: prompts per generate() call."""
    threads: int | None = Field(None, json_schema_extra=OPERATIONAL)
    """transformers on CPU: torch threads (None: leave as is)."""
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)
    openai: OpenAIOptions = Field(default_factory=OpenAIOptions)
    scripted: ScriptedOptions = Field(default_factory=ScriptedOptions)

    @property
    def label(self) -> str:
        return self.name or self.model


class GeneratorConfig(StrictModel):
    engine: EngineConfig = Field(default_factory=EngineConfig)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(n=4, temperature=0.8))


class PoolConfig(StrictModel):
    """How a model stage runs on the cluster; nothing here changes its results."""

    min_actors: int = Field(1, ge=1)
    """Actors started at once: on an autoscaling cluster, the demand that brings nodes up. For
    GPU pools set it to max_actors (Ray Data grows a pool past it only slowly there; see
    configs/gsm8k_lema.yaml)."""
    max_actors: int = Field(1, ge=1)
    """Most actors. Ray Data adds actors past min_actors only while every actor has two chunks in
    flight and its resource budget allows: never with calls_per_actor > 1 (its utilisation then
    stays under the 1.75 threshold)."""
    num_cpus: float = 1.0
    """CPUs per actor (fractional is fine)."""
    num_gpus: float = 0.0
    """GPUs per actor (1 for a vLLM actor on a GPU worker; = tensor_parallel_size)."""
    batch_size: int = Field(16, ge=1)
    """Rows per chunk: one chunk is one actor call and one Parquet part."""
    max_restarts: int = 3
    """How often a dead actor is replaced (its batch is retried)."""
    calls_per_actor: int = Field(1, ge=1)
    """Chunks one actor works on at once. >1 suits API-backed actors: one chunk is parsed and
    verified while the next is in flight (the engine's concurrency bound is shared)."""
    max_failure_rate: float = Field(0.2, ge=0.0, le=1.0)
    """Past this fraction of failed requests (over the stage, once 10 are in, or a whole chunk
    failing) the stage stops with an error naming the engine and the first error; below it
    failures are recorded with their reasons."""

    @model_validator(mode="after")
    def _sizes(self) -> PoolConfig:
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) > max_actors ({self.max_actors})")
        return self


def _check_vllm_gpus(engines: list[tuple[str, EngineConfig]], pool: PoolConfig, where: str) -> None:
    """A vLLM engine spans `tensor_parallel_size` GPUs: its actor must reserve exactly those (none
    on the CPU, where it runs on the actor's CPUs)."""
    for key, engine in engines:
        if engine.backend != "vllm":
            continue
        tp = engine.vllm.tensor_parallel_size
        if engine.device == "cpu" and (pool.num_gpus != 0 or tp != 1):
            raise ValueError(f"{key}.device is cpu: set {where}.pool.num_gpus to 0 and "
                             f"vllm.tensor_parallel_size to 1 (got {pool.num_gpus:g} and {tp})")
        if engine.device != "cpu" and pool.num_gpus != tp:
            raise ValueError(f"{key}.vllm.tensor_parallel_size is {tp} but {where}.pool.num_gpus is "
                             f"{pool.num_gpus:g}: set num_gpus to {tp} (one actor holds the whole engine)")
        if pool.calls_per_actor > 1:
            raise ValueError(f"{where}.pool.calls_per_actor must be 1 for a vllm engine "
                             "(one offline engine per actor is not thread-safe)")


# ---------------------------------------------------------------- stages
class SampleConfig(StrictModel):
    generators: list[GeneratorConfig] = Field(default_factory=lambda: [GeneratorConfig()])
    prompt: str = "cot"
    """Prompt file in lema/prompts (without .yaml) or a path to one."""
    pool: PoolConfig = Field(default_factory=PoolConfig, json_schema_extra=OPERATIONAL)

    @model_validator(mode="after")
    def _gpus(self) -> SampleConfig:
        _check_vllm_gpus([(f"generators.{i}.engine", g.engine) for i, g in enumerate(self.generators)],
                         self.pool, "sample")
        return self


class CorrectConfig(StrictModel):
    corrector: Literal["llm", "reference"] = "llm"
    """llm: a model on an engine; reference: rebuilds synthetic problems' gold steps (offline)."""
    engine: EngineConfig = Field(default_factory=EngineConfig)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_tokens=512))
    prompt: CorrectorPrompt = "few_shot"
    k: int = Field(1, ge=1)
    """Corrections tried per path; the first verified one is kept."""
    max_paths: int | None = None
    """Correct at most N inaccurate paths (None: all)."""
    pool: PoolConfig = Field(default_factory=PoolConfig, json_schema_extra=OPERATIONAL)

    @model_validator(mode="after")
    def _gpus(self) -> CorrectConfig:
        if self.corrector == "llm":
            _check_vllm_gpus([("engine", self.engine)], self.pool, "correct")
        return self


class EvolveConfig(StrictModel):
    """Correction-centric question evolution (LeMa §2.2): new questions grown from seeds, labelled
    by a majority of votes, then sampled and corrected like the others (see lema.evolution)."""

    enabled: bool = False
    """Run the evolve stage; its verified corrections join the correction data only."""
    strategy: Literal["correction_centric", "general"] = "correction_centric"
    """correction_centric: seeds drawn with replacement from the questions of verified
    corrections, one entry per correction (a question corrected 3 times is drawn 3x as often);
    general (the paper's control): as many draws, uniformly from all training questions."""
    seeds: int = Field(64, ge=1)
    """Draws: one new question is written per draw (a question drawn twice gives two)."""
    seed: int = 0
    """Seed of the draws and of the reference evolver's changes."""
    evolver: Literal["llm", "reference"] = "llm"
    """llm: a model on `engine` writes and labels the questions; reference: synthetic problems
    changed by construction (new numbers, a step added or changed, two seeds combined), exact
    labels, offline."""
    engine: EngineConfig = Field(default_factory=EngineConfig)
    """The evolver and labeller model (llm): a strong model, as the corrector."""
    write_sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=512))
    """Writing a new question: one completion per seed (n stays 1)."""
    answer_sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=512))
    """Answering a new question for its label: `votes` completions in one request (n stays 1;
    the votes set it); temperature > 0, so the votes are independent answers."""
    votes: int = Field(3, ge=2)
    """Answers per new question; the label is the most common one if at least 2 agree and no
    other answer is as common (all different: dropped)."""
    dedup_ngram: int = Field(3, ge=1)
    """Near-duplicate check: word n-grams of this size (shorter texts count whole)."""
    dedup_threshold: float = Field(0.6, gt=0.0, le=1.0)
    """Drop a new question whose n-gram Jaccard similarity with its seed, an earlier new question
    or an eval question reaches this."""
    generator_adapter: str | None = None
    """Round 2: sample the new questions' mistakes from this LoRA adapter (the first round's
    fine-tuned model) on the generators' models; None: the sample stage's generators as they are."""
    pool: PoolConfig = Field(default_factory=PoolConfig, json_schema_extra=OPERATIONAL)

    @model_validator(mode="after")
    def _checks(self) -> EvolveConfig:
        errors = [f"{key}.n is {s.n}: leave it 1 ({why})" for key, s, why in (
            ("write_sampling", self.write_sampling, "one question per seed"),
            ("answer_sampling", self.answer_sampling, "`votes` sets the answers per question")) if s.n != 1]
        if self.evolver == "llm" and self.answer_sampling.temperature == 0:
            errors.append("answer_sampling.temperature is 0: the votes would all be one greedy answer; "
                          "set it above 0 (e.g. 0.7)")
        if errors:
            raise ValueError("; ".join(errors))
        if self.evolver == "llm":
            _check_vllm_gpus([("engine", self.engine)], self.pool, "evolve")
        return self


class DataConfig(StrictModel):
    cot_source: Literal["gold", "sampled", "both"] = "gold"
    """CoT examples from gold solutions, verified-correct sampled paths, or both."""
    correction_ratio: float | None = None
    """Correction examples per CoT example (None: keep all verified corrections)."""
    include_corrections: bool = True
    """False builds the CoT-only baseline."""
    max_cot: int | None = Field(None, ge=1)
    """Keep at most N CoT examples, gold solutions first, then sampled correct paths: within each,
    the N with the smallest seeded hash of their id (a random choice that is the same on every
    run, whatever the order the records arrive in). With cot_source both and no corrections: CoT
    enlarged to a given size, the paper's same-size control."""
    max_examples: int | None = Field(None, ge=1)
    """Keep at most N examples in all (before the held-out split), by dropping CoT examples as
    max_cot does (corrections too only if they alone exceed N): LeMa's data trimmed to the CoT
    set's size, the paper's LeMa-32K control. Applied after max_cot and correction_ratio."""
    corrections_as: Literal["correction", "cot"] = "correction"
    """What a verified correction becomes: a correction example (LeMa), or a CoT example of its
    question answered by its corrected solution, the CoT prompt and format (the paper's CoT-45K
    control: LeMa's size by construction, as the same corrections are kept, deduplicated and
    split alike)."""
    correction_prompt: str = "zero_shot"
    """The corrector prompt whose instructions and layout correction examples take, without its
    few-shot examples: zero_shot (ours), paper (the LeMa paper's), or a prompt file."""
    decontaminate_ngram: int = Field(13, ge=3)
    """Drop training examples sharing an n-gram of this many words with an eval question."""
    eval_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    """Held out for eval loss, by problem (a seeded hash of the problem id): every example of a
    held-out problem is held out, so about this fraction of the problems, and of the examples."""
    seed: int = 0


class LoraConfig(StrictModel):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


class TrainConfig(StrictModel):
    base_model: str | None = None
    """Model to fine-tune (None: the first generator's model)."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    init_adapter: str | None = None
    """Start from this LoRA adapter's weights (any storage URI; same rank and target modules as
    `lora`), e.g. continue a CoT-tuned adapter on CoT + corrections."""
    method: Literal["lora", "qlora", "full"] = "lora"
    """lora: a LoRA adapter on the frozen base; qlora: the same on a base in 4-bit NF4 with double
    quantisation (bitsandbytes, on CUDA or the CPU; imported only then); full: every weight trained
    (fp32 master weights, bf16 autocast on CUDA), the result a whole model directory."""
    parallelism: Literal["ddp", "fsdp"] = "ddp"
    """ddp: every worker holds the whole model; fsdp (full only): PyTorch FSDP2 shards parameters,
    gradients and optimizer state over the workers (7B-70B), checkpoints as sharded state."""
    checkpoints: int = Field(0, ge=0)
    """Keep this many evenly spaced snapshots of the tuned model for checkpoint selection: the
    evaluate stage scores each on a dev split of training problems and reports the chosen one's test
    pass@1 beside the paper's protocol (best of N on test, mean of the top 3). 0: the last only."""
    optimizer: Literal["adamw", "paged_adamw_32bit"] = "adamw"
    """adamw (torch), or bitsandbytes' paged AdamW with 32-bit states (the paper's QLoRA runs)."""
    lr_scheduler: Literal["cosine", "constant"] = "cosine"
    """Cosine decay after the warmup, or constant after it (the paper's)."""
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None
    """Stop after N optimizer steps (overrides epochs)."""
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_len: int = 1024
    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    """How examples become token sequences; match the engine that samples and evaluates the
    model (see EngineConfig.prompt_format): auto = chat when the tokenizer has a template."""
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: far less memory (7B models), ~30% slower."""
    eval_every: int = Field(50, json_schema_extra=OPERATIONAL)
    checkpoint_every: int = Field(50, json_schema_extra=OPERATIONAL)
    """Optimizer steps between checkpoints (and Ray Train reports)."""
    num_workers: int = Field(1, ge=1)
    """Data-parallel workers (DDP); each takes `batch_size` examples a micro-batch."""
    use_gpu: bool = False
    placement_strategy: Literal["STRICT_PACK", "PACK", "SPREAD"] = Field("STRICT_PACK", json_schema_extra=OPERATIONAL)
    """Where Ray puts the workers: STRICT_PACK all on one node (one gpu-4x node, not four gpu-1x
    nodes left idle by sampling: NVLink instead of the network for DDP); PACK for a job larger
    than a node."""
    cpus_per_worker: float = Field(1.0, json_schema_extra=OPERATIONAL)
    accelerator_type: str | None = Field(None, json_schema_extra=OPERATIONAL)
    """Only on nodes with this GPU (Ray Train's ScalingConfig accelerator_type: each worker asks
    for a little of the resource `accelerator_type:<this>`, which the node type must offer, e.g.
    A100-80G: cluster.yaml's gpu-8x). None: any GPU node."""
    max_failures: int = Field(2, json_schema_extra=OPERATIONAL)
    """Worker failures tolerated; training resumes from the last checkpoint."""
    merge: bool = False
    """Also save the adapter merged into the base weights (with qlora: into the base loaded again
    unquantised, never re-quantised)."""
    seed: int = 0
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm to this (None: no clipping)."""
    torch_threads: int | None = Field(1, json_schema_extra=OPERATIONAL)
    """CPU threads per training worker (None: torch's default; 1 is fastest here, RAY-NOTES)."""
    crash_at_step: int | None = Field(None, json_schema_extra=OPERATIONAL)
    """Testing only: the worker kills its own process once, after this step (fault tolerance)."""

    @model_validator(mode="after")
    def _method(self) -> TrainConfig:
        if self.parallelism == "fsdp" and self.method != "full":
            raise ValueError("train.parallelism fsdp shards a full fine-tune: set train.method: full "
                             "(LoRA's trainable weights are small enough for ddp)")
        if self.method == "full" and (self.init_adapter or self.merge):
            raise ValueError("train.init_adapter and train.merge are for LoRA; a full fine-tune starts "
                             "from base_model (a directory of an earlier full run works) and saves a model")
        return self

    @property
    def load_in_4bit(self) -> bool:
        return self.method == "qlora"


class EvaluateConfig(StrictModel):
    datasets: list[ProblemSourceConfig] = Field(
        default_factory=lambda: [ProblemSourceConfig(split="test", count=32)]
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    """n=1, temperature 0 gives greedy pass@1; n>1 adds pass@k and majority vote."""
    k: list[int] = Field(default_factory=lambda: [1])
    base: bool = True
    """Also evaluate the base model (for the base vs tuned table), and the start adapter when
    train.init_adapter is set (base -> start -> tuned)."""
    dev_count: int = Field(64, ge=1)
    """Checkpoint selection (train.checkpoints): the dev split, at most this many training problems
    held out of training (data.eval_fraction, by problem), never test problems."""
    engine: EngineConfig = Field(default_factory=EngineConfig)
    """Engine settings for evaluation (model and adapter are filled in by the pipeline)."""
    pool: PoolConfig = Field(default_factory=PoolConfig, json_schema_extra=OPERATIONAL)

    @model_validator(mode="after")
    def _gpus(self) -> EvaluateConfig:
        _check_vllm_gpus([("engine", self.engine)], self.pool, "evaluate")
        return self


class RayConfig(StrictModel):
    address: str | None = None
    """None: join a running cluster if there is one (ray job submit), else start locally."""
    num_cpus: int | None = None
    """Logical CPUs when starting locally (more than cores keeps read tasks from starving)."""


class TrackingConfig(StrictModel):
    enabled: bool = True
    """Log every run of the loop as an MLflow run (pipelines/tracking.py); a tracker that fails or
    cannot be reached turns itself off with one warning and never fails the job."""
    uri: str | None = None
    """MLflow tracking URI, e.g. http://mlflow.team:5000 (None: $MLFLOW_TRACKING_URI, else the embedded
    store sqlite:///<output_dir>/mlflow.db with artifacts in <output_dir>/mlartifacts; with a remote
    output_dir and no URI, tracking is off with a warning)."""
    experiment: str = "lema"
    """MLflow experiment the runs go to."""
    log_adapter: bool = False
    """Copy the trained adapter's weights into the run's artifacts (otherwise only its URI, as a tag)."""
    parent_run: str | None = None
    """An MLflow run id this run nests under (the effect benchmark sets it for its arms)."""


class LemaConfig(StrictModel):
    run: str = "demo"
    """Run name: outputs go to <output_dir>/<run>/<stage>/."""
    output_dir: str = "runs"
    """Local path or a pyarrow filesystem URI (s3://...)."""
    dry_run: bool = False
    """Validate the config, print the plan, do nothing."""
    grading_mode: GradingMode = "robust"
    """The grading mode whose pass@1 heads the summary and report. Evaluation scores under both
    modes side by side; sampling and correction always grade `robust` (a path wrongly marked
    wrong would go to a paid corrector)."""
    problems: ProblemSourceConfig = Field(default_factory=ProblemSourceConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    correct: CorrectConfig = Field(default_factory=CorrectConfig)
    evolve: EvolveConfig = Field(default_factory=EvolveConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, json_schema_extra=OPERATIONAL)
    reuse: list[str] = Field(default_factory=list)
    """Other runs under the same output_dir whose finished stages this run takes over (copies)
    when their hashes match, instead of running them again: ablations on the same samples."""

    @model_validator(mode="after")
    def _base_model(self) -> LemaConfig:
        if not self.sample.generators and not self.train.base_model:
            raise ValueError("sample.generators is empty: set train.base_model (the model to tune)")
        return self

    @model_validator(mode="after")
    def _lora_rank_served(self) -> LemaConfig:
        """The adapter the train stage makes must load in the evaluate stage's vLLM engine."""
        engine, r = self.evaluate.engine, self.train.lora.r
        if engine.backend == "vllm" and r > engine.vllm.max_lora_rank:
            raise ValueError(f"train.lora.r is {r} but evaluate.engine.vllm.max_lora_rank is "
                             f"{engine.vllm.max_lora_rank}: vLLM could not load the adapter after training; "
                             f"set max_lora_rank to one of {[x for x in VLLM_LORA_RANKS if x >= r]}")
        return self

    @property
    def base_model(self) -> str:
        """The model the train stage tunes and the evaluate stage scores (train.base_model, else the
        first generator's model)."""
        return self.train.base_model or self.sample.generators[0].engine.model


# ---------------------------------------------------------------- loading
def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.0.c` in a nested dict/list tree, creating dicts on the way."""
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            try:
                idx = int(part)
                node[idx]
            except (ValueError, IndexError) as e:
                raise ConfigError(f"override {dotted!r}: {part!r} is not an index of a list "
                                  f"of {len(node)}") from e
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {'.'.join(parts[:i])!r} is not a mapping")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`key.sub=value` strings to (key, value); values are read as YAML (1, true, [a, b])."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def _defaults_tree(model: type[BaseModel]) -> dict[str, Any]:
    return model().model_dump(mode="python")


def load_config(
    path: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    model: type[StrictModel] = LemaConfig,
) -> Any:
    """Load a YAML config (a file, a dict already read, or the defaults), apply overrides, validate.

    Raises:
        ConfigError: naming every unknown key and bad value at once.
    """
    tree: dict[str, Any] = {}
    if isinstance(path, dict):
        tree, path = path, None
    elif path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top")
    pairs = parse_overrides(overrides or [])
    if pairs:
        # Lists in overrides index into the defaults when the file does not set them.
        merged = _defaults_tree(model)
        _deep_update(merged, tree)
        tree = merged
        for key, value in pairs:
            _set_dotted(tree, key, value)
    try:
        return model.model_validate(tree)
    except ValidationError as e:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}:\n{_format_errors(e)}") from e


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v


def config_hash(cfg: StrictModel | dict[str, Any]) -> str:
    """A stable hash of what in a config (or a dict of configs) decides results."""
    return hashlib.sha256(json.dumps(_result_value(cfg), sort_keys=True).encode()).hexdigest()[:16]
