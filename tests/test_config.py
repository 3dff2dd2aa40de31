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
    a, b = load_config(), load_config(None, ["seed=1"])
    assert config_hash(a) == config_hash(load_config())
    assert config_hash(a) != config_hash(b)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    load_config(path)
