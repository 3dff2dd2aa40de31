"""The image's packages: requirements/image.lock against pyproject.toml and the Dockerfile, and what
pip resolves for the gpu extra from the package index (a loose pin once let pip walk back to old
vLLM releases).

The lock is written by scripts/lock_image.sh (uv pip compile); rerun it after changing a dependency.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent.parent
LOCK = ROOT / "requirements" / "image.lock"
# The torch each vLLM release pins (its requires_dist: torch==...); the slow test checks the entry
# for the pinned vLLM against the index. Add a line when the gpu extra moves to another vLLM.
VLLM_TORCH = {"0.33.0": "2.14.0"}
# The image's platform (Dockerfile FROM rayproject/ray:...-py311-gpu), for pyproject's markers.
IMAGE_ENV = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
             "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}
# What pip prints when it cannot reach the index (urllib3's errors, DNS, proxies).
CONNECTION_ERROR = re.compile(r"NewConnectionError|ConnectTimeout|ReadTimeout|Max retries exceeded|ProxyError"
                              r"|Temporary failure in name resolution|Network is unreachable|Connection refused")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _image_requirements() -> list[Requirement]:
    """pyproject's dependencies plus the gpu extra, those whose markers hold on the image."""
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["gpu"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({**IMAGE_ENV, "extra": ""})]


def _gpu_requirement(name: str) -> Requirement:
    """The gpu extra's requirement on `name` (one per name there)."""
    (req,) = [r for r in map(Requirement, _pyproject()["project"]["optional-dependencies"]["gpu"])
              if canonicalize_name(r.name) == name]
    return req


def _exact_pin(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req}: the image needs an exact pin"
    return spec.version


def _lock_pins() -> dict[str, str]:
    """The lock's packages, PEP 503 names to versions; every requirement line must be `name==version`."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        assert match, f"{LOCK.name}: not an exact pin: {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def _requirement_on(requires_dist: list[str], name: str) -> Requirement:
    """A package's own requirement on `name` (its metadata's requires_dist), for this platform."""
    reqs = [Requirement(r) for r in requires_dist]
    (req,) = [r for r in reqs if canonicalize_name(r.name) == name
              and (r.marker is None or r.marker.evaluate({"extra": ""}))]
    return req


# ---------------------------------------------------------------- the lock (offline)
def test_lock_pins_the_gpu_extras_vllm_and_pyprojects_ray():
    pins = _lock_pins()
    stale = "rerun scripts/lock_image.sh"
    assert pins["vllm"] == _exact_pin(_gpu_requirement("vllm")), stale
    (ray,) = [r for r in _image_requirements() if r.name == "ray"]
    assert pins["ray"] == _exact_pin(ray), stale
    assert Version(pins["transformers"]) in _gpu_requirement("transformers").specifier, stale


def test_lock_has_the_torch_vllm_pins():
    vllm = _lock_pins()["vllm"]
    assert vllm in VLLM_TORCH, f"vLLM {vllm}: add its torch pin to VLLM_TORCH"
    assert _lock_pins()["torch"] == VLLM_TORCH[vllm], f"vLLM {vllm} pins torch=={VLLM_TORCH[vllm]}"


@pytest.mark.parametrize("req", _image_requirements(), ids=str)
def test_lock_satisfies_every_pyproject_requirement(req):
    pins = _lock_pins()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is not in {LOCK.name}: rerun scripts/lock_image.sh"
    assert Version(pins[name]) in req.specifier, f"{LOCK.name} has {name}=={pins[name]}, pyproject wants {req}"


def test_lock_leaves_out_lema_and_says_how_to_remake_it():
    assert "lema" not in _lock_pins()  # installed after the lock, with --no-deps
    assert not re.search(r"^\s*-e\b", LOCK.read_text(), re.M)
    header = "\n".join(itertools.takewhile(lambda line: line.startswith("#"), LOCK.read_text().splitlines()))
    assert "scripts/lock_image.sh" in header
    command = re.search(r"^#\s+(uv pip compile .*)$", header, re.M)
    assert command, "the lock's header names the uv command that wrote it"
    python = re.search(r"^FROM rayproject/ray:[\d.]+-py(\d)(\d+)-gpu", (ROOT / "Dockerfile").read_text(), re.M)
    assert f"--python-version {python[1]}.{python[2]} " in command[1]  # the image's Python
    options = command[1].removeprefix("uv ").split(" -o ")[0]  # pip compile pyproject.toml --extra gpu ...
    assert "--extra gpu " in options and options in (ROOT / "scripts" / "lock_image.sh").read_text()


def test_dockerfile_installs_the_lock_then_lema_without_deps():
    dockerfile = (ROOT / "Dockerfile").read_text()
    runs = re.findall(r"^RUN pip install (.*)$", dockerfile, re.M)
    lock = "-r requirements/image.lock"
    assert any(r.endswith(lock) for r in runs), runs
    (lema,) = [i for i, r in enumerate(runs) if re.search(r"-e \.(\s|$)", r)]
    assert "--no-deps" in runs[lema] and lema > [i for i, r in enumerate(runs) if r.endswith(lock)][0]
    assert not any("[gpu]" in r for r in runs)  # a second resolve would not follow the lock
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not any(p.strip("/*") in ("requirements", "requirements/image.lock") for p in ignored)


# ---------------------------------------------------------------- what pip resolves (network)
@pytest.mark.slow  # 1-2 minutes: pip reads the metadata of ~240 packages from the index
def test_pip_resolves_the_pinned_vllm_and_its_ranges(tmp_path):
    report_path = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--report", str(report_path),
         "-q", ".[gpu]"],
        cwd=ROOT, capture_output=True, text=True, timeout=540,
    )
    if proc.returncode != 0 and CONNECTION_ERROR.search(proc.stderr):
        pytest.skip(f"package index unreachable: {CONNECTION_ERROR.search(proc.stderr)[0]}")
    assert proc.returncode == 0, f"pip install --dry-run '.[gpu]' failed:\n{proc.stderr[-4000:]}"
    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]
                for i in json.loads(report_path.read_text())["install"]}

    vllm = resolved["vllm"]
    assert Version(vllm["version"]) >= Version(_exact_pin(_gpu_requirement("vllm"))), "pip walked back vLLM"
    for name in ("transformers", "fastapi", "torch"):
        wants = _requirement_on(vllm["requires_dist"], name)
        assert Version(resolved[name]["version"]) in wants.specifier, f"pip: {name} {resolved[name]['version']}"
        if vllm["version"] == _lock_pins()["vllm"]:  # the lock's pins meet the same vLLM's ranges
            assert Version(_lock_pins()[name]) in wants.specifier, f"{LOCK.name}: {name}, vLLM wants {wants}"
    if vllm["version"] in VLLM_TORCH:
        assert str(_requirement_on(vllm["requires_dist"], "torch").specifier) == f"=={VLLM_TORCH[vllm['version']]}"
