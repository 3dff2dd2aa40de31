"""`ray job submit` of the pipeline against a local head started by the test, as the README says
to: the client with RAY_AUTH_MODE=token, the entrypoint naming the venv's python (the entrypoint
runs with the head's PATH, where `python` may be any interpreter)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a Ray head of its own and two jobs: about 90 s

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head on loopback with a dashboard (job API); only its own processes are stopped."""
    port, dash, agent, client = _free_port(), _free_port(), _free_port(), _free_port()
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
           "RAY_AUTH_MODE": "token"}  # Ray 2.60 turns token auth on for a local head once ~/.ray/auth_token exists
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=4", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}",  # 52365 may be taken
         f"--ray-client-server-port={client}",  # and 10001
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 180
    while time.time() < deadline:  # ready when a trivial job runs (the job agent registers late)
        ok = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--",
                             sys.executable, "-c", "print('ready')"], capture_output=True, env=env).returncode == 0
        if ok:
            break
        time.sleep(3)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the Ray head did not come up")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)  # the head and everything it started share its group
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # agents that outlived the head
    except ProcessLookupError:
        pass


def _submit(address: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
         sys.executable, "-m", "pipelines.lema", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


def test_job_submit_runs_the_pipeline(head, tmp_path):
    address, env = head
    res = _submit(address, env, "configs/smoke.yaml", f"output_dir={tmp_path}", "train.max_steps=2",
                  "problems.count=4", "evaluate.datasets.0.count=2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "report:" in res.stdout  # the driver's log is streamed back
    manifest = json.loads((tmp_path / "smoke" / "evaluate" / "manifest.json").read_text())
    assert {r["variant"] for r in manifest["results"]} == {"base", "tuned"}


def test_job_submit_exit_code_is_honest(head, tmp_path):
    address, env = head
    res = _submit(address, env, "configs/smoke.yaml", f"output_dir={tmp_path}", "problems.kind=nowhere")
    assert res.returncode != 0
    assert "problems.kind" in res.stdout + res.stderr
