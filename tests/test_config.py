"""Config loading: YAML, dotted overrides, every bad key named before any work starts."""

from pathlib import Path

import pytest

from lema.config import ConfigError, LemaConfig, config_hash, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, LemaConfig)
    assert cfg.problems.kind == "synthetic"


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("run: x\nproblems:\n  count: 10\nsample:\n  generators:\n    - engine: {model: tiny}\n")
    cfg = load_config(f, ["problems.count=5", "sample.generators.0.sampling.n=3", "train.lora.r=4",
                          "evaluate.k=[1, 4]", "output_dir=/tmp/out"])
    assert cfg.run == "x"
    assert cfg.problems.count == 5
    assert cfg.sample.generators[0].engine.model == "tiny"
    assert cfg.sample.generators[0].sampling.n == 3
    assert cfg.train.lora.r == 4
    assert cfg.evaluate.k == [1, 4]
    assert cfg.output_dir == "/tmp/out"


def test_unknown_keys_and_bad_values_all_reported(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("problems:\n  kind: nowhere\n  cont: 3\nsample:\n  pool: {min_actors: 0}\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, ["train.lora.rank=8"])
    msg = str(e.value)
    assert "problems.kind" in msg and "synthetic" in msg  # names the valid choices
    assert "problems.cont: unknown key" in msg
    assert "sample.pool.min_actors" in msg
    assert "train.lora.rank: unknown key" in msg


@pytest.mark.parametrize("override,needle", [
    ("noequals", "key.sub=value"),
    ("sample.generators.5.engine.model=x", "not an index"),
    ("run.sub=1", "not a mapping"),
])
def test_bad_overrides(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, [override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_hash_changes_with_config():
    a, b = load_config(), load_config(None, ["problems.seed=1"])
    assert config_hash(a) == config_hash(load_config())
    assert config_hash(a) != config_hash(b)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    load_config(path)


def test_stage_hash_covers_results_not_scaling():
    base = load_config(None, ["sample.generators.0.engine.backend=openai"])
    rescaled = load_config(None, [
        "sample.generators.0.engine.backend=openai", "sample.pool.max_actors=8", "sample.pool.batch_size=3",
        "sample.generators.0.engine.openai.max_concurrency=64", "sample.generators.0.engine.batch_size=2",
        "sample.generators.0.engine.openai.requests_per_minute=100", "sample.pool.max_failure_rate=0.5"])
    changed = load_config(None, ["sample.generators.0.engine.backend=openai",
                                 "sample.generators.0.sampling.temperature=0.3"])
    assert config_hash(base.sample) == config_hash(rescaled.sample) != config_hash(changed.sample)
    assert config_hash({"s": base.sample}) == config_hash({"s": rescaled.sample})
    assert config_hash(base.train) != config_hash(base.train.model_copy(update={"num_workers": 2}))
    assert config_hash(base.train) == config_hash(base.train.model_copy(update={"checkpoint_every": 7}))


@pytest.mark.parametrize("overrides, message", [
    (["sample.generators.0.engine.backend=vllm", "sample.generators.0.engine.vllm.tensor_parallel_size=2",
      "sample.pool.num_gpus=1"], "tensor_parallel_size is 2 but sample.pool.num_gpus is 1"),
    (["evaluate.engine.backend=vllm", "evaluate.pool.num_gpus=1", "evaluate.pool.calls_per_actor=2"],
     "calls_per_actor must be 1"),
    (["correct.pool.min_actors=3", "correct.pool.max_actors=2"], "min_actors \\(3\\) > max_actors \\(2\\)"),
    (["sample.generators.0.engine.backend=vllm", "sample.generators.0.engine.device=cpu", "sample.pool.num_gpus=1"],
     "device is cpu: set sample.pool.num_gpus to 0"),
    (["evaluate.engine.backend=vllm", "evaluate.pool.num_gpus=1", "train.lora.r=128"],
     "train.lora.r is 128 but evaluate.engine.vllm.max_lora_rank is 64.*\\[128, 256, 320, 512\\]"),
    (["evaluate.engine.backend=vllm", "evaluate.pool.num_gpus=1", "evaluate.engine.vllm.max_lora_rank=100"],
     "max_lora_rank 100 is not one vLLM serves"),
])
def test_pool_settings_checked_against_the_engine(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    load_config(None, ["sample.generators.0.engine.backend=vllm", "sample.pool.num_gpus=1"])
    load_config(None, ["sample.generators.0.engine.backend=vllm", "sample.generators.0.engine.device=cpu"])
    load_config(None, ["evaluate.engine.backend=vllm", "evaluate.pool.num_gpus=1", "train.lora.r=128",
                       "evaluate.engine.vllm.max_lora_rank=128"])

