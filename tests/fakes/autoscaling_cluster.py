"""A fake autoscaling Ray cluster on this machine that starts and stops only its own processes.

Ray's `ray.cluster_utils.AutoscalingCluster` runs `ray stop --force` on start and on shutdown,
which ends every Ray cluster on the machine (other people's test runs included), and in Ray
2.60 it reads a config file the wheel does not ship. This one starts `ray start --head
--block` in a new session with free ports, its own `--temp-dir` and an
inline autoscaling config for Ray's fake multi-node provider: the head's autoscaler monitor
launches "worker nodes" as raylets on this machine (children of the monitor, so in the same
session) that advertise whatever resources their node type names, fake GPUs included.
`stop()` ends the processes of that session and checks nothing of it is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEAD_TYPE = "ray.head.default"  # the fake provider names the head's node type so
NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"  # the fake provider's node id, in the env of a worker node's raylet


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaling_config(port: int, head_resources: dict[str, int], worker_types: dict[str, dict[str, Any]],
                       idle_timeout_s: float) -> dict[str, Any]:
    """The fake provider's cluster config (what the wheel's missing example.yaml held), with
    the GCS address of this head rather than the default port 6379."""
    return {
        "cluster_name": "lema-fake",
        "max_workers": sum(t.get("max_workers", 0) for t in worker_types.values()),
        "idle_timeout_minutes": idle_timeout_s / 60,
        "upscaling_speed": 1.0,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True,
                     "launch_multiple": True,  # n nodes per launch request, as a cloud provider does
                     "gcs_address": f"127.0.0.1:{port}"},
        "available_node_types": {
            HEAD_TYPE: {"resources": head_resources, "node_config": {}, "max_workers": 0},
            **{name: {"node_config": {}, "min_workers": 0, **spec} for name, spec in worker_types.items()},
        },
        "head_node_type": HEAD_TYPE,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


COLUMNS = {"worker_nodes": "worker nodes", "gpu_nodes": "GPU nodes", "gpus_used": "GPUs in use"}


@dataclass
class NodeTimeline:
    """Node counts over time (and any extra counts a watcher adds), sampled by a background thread."""

    samples: list[dict[str, float]] = field(default_factory=list)  # t, worker_nodes, gpu_nodes, gpus_used, extras
    t0: float = field(default_factory=time.time)

    def elapsed(self) -> float:
        """Seconds since the timeline began (the samples' clock)."""
        return round(time.time() - self.t0, 2)

    def max(self, key: str) -> float:
        return max((s[key] for s in self.samples), default=0)

    def last(self, key: str) -> float:
        return self.samples[-1][key] if self.samples else 0

    def wait_until(self, predicate: Callable[[], Any], timeout_s: float) -> bool:
        """Poll `predicate()` every half second until it holds or `timeout_s` passed; whether it held."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if predicate():
                return True
            time.sleep(0.5)
        return bool(predicate())

    def keys(self) -> list[str]:
        """The counts sampled: the node counts, then the extras."""
        return [k for k in self.samples[0] if k != "t"] if self.samples else list(COLUMNS)

    def table(self, every_s: float = 5.0) -> str:
        """One line per `every_s` seconds (and every change of a count)."""
        keys = self.keys()
        names = [COLUMNS.get(k, k.replace("_", " ")) for k in keys]
        lines, last_t, last_row = ["    t/s  " + "  ".join(names)], -every_s, None
        for s in self.samples:
            row = [s[k] for k in keys]
            if s["t"] - last_t >= every_s or row != last_row:
                lines.append(f"  {s['t']:5.1f}  " + "  ".join(f"{v:{len(n)}.0f}" for v, n in zip(row, names)))
                last_t, last_row = s["t"], row
        return "\n".join(lines)

    def plot(self, path: Path, title: str, marks: dict[str, float] | None = None) -> Path:
        """A PNG of GPU nodes, GPUs in use and the extras over time, with labelled moments (e.g. stage done)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = [s["t"] for s in self.samples]
        keys = [k for k in self.keys() if k != "worker_nodes"]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for i, key in enumerate(keys):
            ax.step(t, [s[key] for s in self.samples], where="post", label=COLUMNS.get(key, key.replace("_", " ")),
                    linestyle=("-", "--", ":", "-.")[i % 4])
        for label, at in (marks or {}).items():
            ax.axvline(at, color="grey", linewidth=0.8)
            ax.text(at, ax.get_ylim()[1] * 0.95, f" {label}", fontsize=8, va="top")
        ax.set_xlabel("seconds")
        ax.set_ylabel("count")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(-0.1, max(self.max(k) for k in keys) + 0.6)
        ax.set_title(title, fontsize=10)
        ax.legend(loc="center right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


class FakeAutoscalingCluster:
    """`c.start()` starts the head (`c.address` is its GCS address), `c.connect()` makes this
    process its driver, `c.stop()` ends the cluster (`ray.shutdown()` first).

    Args:
        head_resources: the head's resources ({"CPU": 0}: no work lands on it, as on cluster.yaml's head).
        worker_types: node type -> {"resources": {...}, "max_workers": n, "min_workers": 0}.
        idle_timeout_s: how long a worker node stays idle before the autoscaler removes it.
        env: environment variables for every process of the cluster (e.g. Ray Serve's metric intervals).
    """

    def __init__(self, head_resources: dict[str, int], worker_types: dict[str, dict[str, Any]],
                 idle_timeout_s: float = 6.0, env: dict[str, str] | None = None):
        self.head_resources, self.worker_types = dict(head_resources), worker_types
        self.idle_timeout_s = idle_timeout_s
        self.env = dict(env or {})
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="lema-fc-"))  # short: Ray's socket paths have a length limit

    @classmethod
    def with_gpu_workers(cls, max_workers: int, idle_timeout_s: float = 6.0,
                         env: dict[str, str] | None = None) -> FakeAutoscalingCluster:
        """A head without CPUs (as cluster.yaml's) and one worker type, `gpu_1x`, advertising
        1 CPU and a fake GPU, from 0 up to `max_workers` nodes."""
        return cls(
            head_resources={"CPU": 0},
            worker_types={"gpu_1x": {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": 200 * 1024**2},
                                     "min_workers": 0, "max_workers": max_workers}},
            idle_timeout_s=idle_timeout_s,
            env=env,
        )

    @classmethod
    def with_cpu_workers(cls, workers: int, cpus: int = 2, max_workers: int | None = None,
                         object_store_mb: int = 150, idle_timeout_s: float = 60.0,
                         env: dict[str, str] | None = None) -> FakeAutoscalingCluster:
        """A head without CPUs and one worker type, `cpu_<cpus>x`, of `cpus` CPUs and no GPU, kept at
        `workers` nodes (min_workers; up to `max_workers`, default the same) from the start."""
        return cls(
            head_resources={"CPU": 0},
            worker_types={f"cpu_{cpus}x": {"resources": {"CPU": cpus, "object_store_memory": object_store_mb * 1024**2},
                                          "min_workers": workers, "max_workers": max_workers or workers}},
            idle_timeout_s=idle_timeout_s,
            env=env,
        )

    @property
    def idle_wait_s(self) -> float:
        """How long to wait for idle worker nodes to go: the idle timeout with ample slack."""
        return 60 + 10 * self.idle_timeout_s

    # ------------------------------------------------------------ start / stop
    def start(self, timeout_s: float = 90.0) -> None:
        config = self.dir / "autoscaling.json"
        head = self.head_resources
        config.write_text(json.dumps(autoscaling_config(self.port, head, self.worker_types, self.idle_timeout_s)))
        custom = {k: v for k, v in head.items() if k not in ("CPU", "GPU")}
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
               f"--port={self.port}", "--node-ip-address=127.0.0.1", f"--temp-dir={self.dir / 'ray'}",
               f"--autoscaling-config={config}", f"--num-cpus={head.get('CPU', 0)}", f"--num-gpus={head.get('GPU', 0)}",
               f"--resources={json.dumps(custom)}", "--include-dashboard=false", "--disable-usage-stats",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--object-store-memory={200 * 1024**2}"]
        # RAY_AUTH_MODE: Ray 2.60 turns token auth on for a head when ~/.ray/auth_token exists, and a
        # driver given an explicit address does not; this loopback-only cluster runs without
        env = {**os.environ, **self.env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "RAY_AUTH_MODE": "disabled"}
        env.pop("RAY_ADDRESS", None)
        self.log = open(self.dir / "head.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # a session of its own: stop() ends just that
        deadline = time.time() + timeout_s
        while not (self.dir / "ray" / "ray_current_cluster").exists():
            if self.proc.poll() is not None or time.time() > deadline:
                log = (self.dir / "head.log").read_text()[-3000:]
                self.stop()
                raise RuntimeError(f"the fake cluster's head did not start:\n{log}")
            time.sleep(0.5)

    def processes(self) -> list[int]:
        """The pids of this cluster's session: the head started one (`start_new_session`) and
        everything it spawns stays in it, fake worker nodes and Ray workers included (Ray
        workers get process groups of their own, but keep the session)."""
        import psutil

        if self.proc is None:
            return []
        out = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getsid(p.pid) == self.proc.pid:
                    out.append(p.pid)
            except (ProcessLookupError, PermissionError):
                continue
        return out

    def node_processes(self) -> dict[str, list[int]]:
        """Fake worker node id (as in `ray.nodes()`) -> the pids of its processes: its raylet (the
        object store runs inside it) and the raylet's descendants (dashboard and runtime-env
        agents, Ray workers). The fake provider puts the node id in the raylet's environment
        (`RAY_OVERRIDE_NODE_ID_FOR_TESTING`); the head's raylet has the head's id and is left
        out, and so is each worker node's log monitor (a child of the autoscaler's monitor, which
        names no node)."""
        import psutil
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

        out: dict[str, list[int]] = {}
        for pid in self.processes():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if psutil.Process(pid).name() != "raylet":
                    continue
                children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
            except (FileNotFoundError, ProcessLookupError, PermissionError, psutil.NoSuchProcess):
                continue
            ids = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(NODE_ID_ENV.encode() + b"=")]
            if ids and ids[0] != FAKE_HEAD_NODE_ID:
                out[ids[0]] = [pid, *children]
        return out

    def kill_node(self, node_id: str) -> list[int]:
        """SIGKILL every process of one fake worker node (`node_processes`: raylet, object store,
        agents, Ray workers), as a machine that goes away, not just a worker on it; the GCS then
        marks the node dead. Returns the pids signalled."""
        pids = self.node_processes().get(node_id, [])
        if not pids:
            raise ValueError(f"no processes of fake worker node {node_id} in this cluster")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        return pids

    def stop(self) -> list[int]:
        """End this cluster's processes (SIGTERM, then SIGKILL); return the pids still alive
        afterwards (none, unless something left the session)."""
        if self.proc is None:
            return []
        for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    continue
            deadline = time.time() + wait_s
            while self.processes() and time.time() < deadline:
                time.sleep(0.3)
        self.proc.wait(timeout=5)
        left = self.processes()
        self.log.close()
        if not left:
            shutil.rmtree(self.dir, ignore_errors=True)
        return left

    def connect(self) -> None:
        """Join the started cluster as this process's driver, with Ray Data's progress bars off."""
        import ray

        ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False

    def wait_for_workers(self, n: int, hold_s: float = 15.0, timeout_s: float = 180.0) -> bool:
        """Wait until exactly `n` worker nodes have been alive for `hold_s` seconds on end (from a
        connected driver); whether that happened within `timeout_s`. Launching min_workers nodes,
        the autoscaler overshoots: it launches more while the first are still starting (the fake
        provider lists a node only once its raylet is up), then removes the extra ones
        (max_workers_per_type) a few seconds after they joined; work placed on them would be lost."""
        import ray

        deadline, since = time.time() + timeout_s, None
        while time.time() < deadline:
            workers = [x for x in ray.nodes() if x["Alive"] and "node:__internal_head__" not in x["Resources"]]
            since = (since or time.time()) if len(workers) == n else None
            if since and time.time() - since >= hold_s:
                return True
            time.sleep(0.5)
        return False

    # ------------------------------------------------------------ watching
    def watch(self, every_s: float = 0.5,
              extra: Callable[[], dict[str, float]] | None = None) -> tuple[NodeTimeline, threading.Event]:
        """Sample node counts from a connected driver (`ray.init(address=...)` first) until the
        returned event is set; `extra()` adds counts of its own to each sample (e.g. Serve replicas)."""
        import ray

        timeline, stop = NodeTimeline(), threading.Event()

        def sample() -> None:
            while not stop.is_set():
                nodes = [n for n in ray.nodes() if n["Alive"]]
                workers = [n for n in nodes if "node:__internal_head__" not in n["Resources"]]
                gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
                free = ray.available_resources().get("GPU", 0)
                timeline.samples.append({"t": timeline.elapsed(), "worker_nodes": len(workers),
                                         "gpu_nodes": sum(1 for n in workers if n["Resources"].get("GPU")),
                                         "gpus_used": gpus - free, **(extra() if extra else {})})
                stop.wait(every_s)

        threading.Thread(target=sample, daemon=True).start()
        return timeline, stop
