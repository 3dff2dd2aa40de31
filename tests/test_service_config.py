"""The service config: defaults, overrides, every bad key named; the serve_config.yaml for `serve deploy`."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import yaml
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.schema import ServeDeploySchema
from ray.serve.scripts import import_attr

from lema.config import ConfigError
from lema.prompts import CORRECTOR_VARIANTS
from services.app import AppArgs
from services.auth import parse_api_keys
from services.config import DEFAULT_CONFIG, CorrectorPrompt, load_service_config

SERVE_CONFIG = Path(__file__).resolve().parent.parent / "services" / "serve_config.yaml"


def test_default_config_serves_the_packaged_model_on_two_cores():
    cfg = load_service_config()
    assert cfg.corrector.engine.model == "smollm2-135m" and cfg.corrector.engine.backend == "transformers"
    deployments = (cfg.ingress, cfg.grader.deployment, cfg.corrector.deployment)
    assert sum(d.num_cpus * d.autoscaling_config.max_replicas for d in deployments) <= 2
    options = cfg.grader.deployment.deployment_options()
    assert options["max_ongoing_requests"] == 64 and options["backpressure_config"].status_code == 429
    assert cfg.model_dump() == load_service_config(DEFAULT_CONFIG, []).model_dump()


def test_overrides_reach_deployment_options():
    cfg = load_service_config(None, ["corrector.deployment.num_gpus=1", "corrector.engine.backend=vllm",
                                     "ingress.autoscaling_config.max_replicas=4", "ingress.env_vars={A: b}"])
    assert cfg.corrector.deployment.deployment_options()["ray_actor_options"]["num_gpus"] == 1
    ingress = cfg.ingress.deployment_options()
    assert ingress["autoscaling_config"]["max_replicas"] == 4
    assert ingress["ray_actor_options"]["runtime_env"] == {"env_vars": {"A": "b"}}


def test_every_bad_key_is_named_at_once():
    with pytest.raises(ConfigError) as err:
        load_service_config(None, ["ingress.autoscaling_config.max_replica=3",  # Serve would accept it silently
                                   "grader.deployment.backpressure_config.status_code=500",
                                   "corrector.prompt=../../etc/passwd", "limits.max_body_bytes=0"])
    message = str(err.value)
    for key in ("ingress.autoscaling_config.max_replica: unknown key", "backpressure_config.status_code",
                "corrector.prompt", "limits.max_body_bytes"):
        assert key in message


def test_unusable_combinations_are_named():
    with pytest.raises(ConfigError) as err:
        load_service_config(None, ["corrector.timeout_s=200", "corrector.engine.backend=vllm",
                                   "corrector.max_batch_size=32"])
    lines = str(err.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "corrector.timeout_s", "corrector.deployment.num_gpus", "corrector.deployment.max_ongoing_requests"]


def test_app_args_turn_extra_keys_into_overrides():
    args = AppArgs.model_validate({"config": None, "corrector.k": "2", "limits": {"max_batch_items": 3}})
    assert args.overrides() == ["corrector.k=2", 'limits={"max_batch_items": 3}']
    cfg = load_service_config(args.config, args.overrides())
    assert cfg.corrector.k == 2 and cfg.limits.max_batch_items == 3


def test_serve_config_file_deploys_the_default_service():
    """What `serve deploy` does with the file: validate it, import the builder, build with its args."""
    config = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    (app,) = config.applications
    built = call_user_app_builder_with_args_if_necessary(import_attr(app.import_path), app.args)
    assert type(built).__name__ == "Application"
    args = AppArgs.model_validate(app.args)
    service = load_service_config(args.config, args.overrides())
    assert config.http_options.request_timeout_s > service.request_timeout_s  # the app's 408 comes first


@pytest.mark.parametrize("value, keys", [(None, []), ("", []), (" a , ,b ", ["a", "b"]), ("k1,k2", ["k1", "k2"])])
def test_api_keys_are_comma_separated(value, keys):
    assert parse_api_keys(value) == keys


def test_requests_may_pick_every_corrector_prompt_and_nothing_else():
    assert set(get_args(CorrectorPrompt)) == set(CORRECTOR_VARIANTS)


def test_a_vllm_corrector_builds_its_correct_configs():
    """The correct stage's pool check (pool.num_gpus = tensor_parallel_size) is the pipeline's: a
    vLLM Corrector replica reserves its GPU through its deployment, and its requests still run."""
    from lema.config import EngineConfig
    from lema.engines import build_engine
    from services.serving import CorrectionService

    cfg = load_service_config(None, ["corrector.engine.backend=vllm", "corrector.deployment.num_gpus=1",
                                     "corrector.sampling.max_tokens=8"])
    service = CorrectionService(build_engine(EngineConfig(model="tiny")), cfg.corrector)  # vLLM needs a GPU
    request = {"question": "Ann has 3 boxes of 4 pens. How many pens?",
               "solution": "Step 1: 3 + 4 = 7.\nThe answer is 7."}
    results = service.correct([request, {**request, "answer": "12", "prompt": "paper"}])
    assert [r["status"] in ("unverified", "unparseable", "failed", "verified") for r in results] == [True, True]
    assert results[0]["verified"] is None and results[1]["verified"] is False
