"""GPU actor pools on an autoscaling cluster: a fixed-size pool vs an autoscaling one (ray#59144).

    .venv/bin/python benchmarks/pool_scaling.py --quick     # about 2 minutes here
    .venv/bin/python benchmarks/pool_scaling.py             # a longer stage: the autoscaling pool has time to grow

A fake autoscaling cluster (tests/fakes/autoscaling_cluster.py: a head without CPUs, a worker type
advertising a fake GPU with min_workers 0) runs the sample stage twice, the tiny model on CPU
inside actors that reserve a GPU each: with a fixed pool (min_actors = max_actors = N) and with an
autoscaling pool (min_actors 1, max_actors N). Between the runs the GPU nodes go (idle timeout).
Per run: GPU nodes over time, the share of the N GPU nodes it ever got, and seconds from the
stage's start until the first and until N GPU nodes were up. Wall times say nothing about
throughput here (the fake GPU nodes share this machine's cores), and a node starts in seconds
here but boots in minutes on a cloud, so every wait the autoscaling pool adds is longer there.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

from lema.config import load_config  # noqa: E402
from lema.models import TINY_MODEL, resolve_model  # noqa: E402
from lema.synthetic import generate_problems  # noqa: E402
from pipelines.sample import run_sample  # noqa: E402
from pipelines.stage_io import RunContext, StageDir  # noqa: E402
from tests.fakes.autoscaling_cluster import FakeAutoscalingCluster, NodeTimeline  # noqa: E402

IDLE_TIMEOUT_S = 6.0


def run_pool(cluster: FakeAutoscalingCluster, model: str, problems: list, min_actors: int, max_actors: int,
             label: str) -> dict[str, Any]:
    """The sample stage with one pool setting; GPU node counts from its start until they are back to 0."""
    cfg = load_config(None, [
        f"sample.generators=[{{engine: {{model: {model}, name: tiny, device: cpu}},"
        " sampling: {n: 2, temperature: 1.0, max_tokens: 16}}]",
        f"sample.pool={{min_actors: {min_actors}, max_actors: {max_actors}, num_cpus: 1, num_gpus: 1, batch_size: 2}}",
    ])
    timeline, stop = cluster.watch()
    with tempfile.TemporaryDirectory(prefix="lema-bench-pool-") as tmp:
        ctx = RunContext.from_rows(cfg, tmp, problems=[p.to_dict() for p in problems])
        start = timeline.elapsed()
        manifest = run_sample(ctx, StageDir(tmp, "sample"), "bench")
        end = timeline.elapsed()
    timeline.wait_until(lambda: timeline.last("gpu_nodes") == 0, cluster.idle_wait_s)
    stop.set()
    print(f"-- {label} (min_actors {min_actors}, max_actors {max_actors}): stage {end - start:.1f} s, "
          f"{manifest['paths']} paths\n{timeline.table(every_s=4.0)}")
    return {"timeline": timeline, "wall_s": end - start, "start": start, "end": end,
            "first_gpu_s": _first_reaching(timeline, 1, start),
            "all_gpus_s": _first_reaching(timeline, max_actors, start),
            "gpus_reached": timeline.max("gpu_nodes") / max_actors, "paths": manifest["paths"]}


def _first_reaching(timeline: NodeTimeline, nodes: int, start: float) -> float | None:
    """Seconds from `start` until `nodes` GPU nodes were up (None: never)."""
    return next((round(s["t"] - start, 1) for s in timeline.samples if s["gpu_nodes"] >= nodes), None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short stage (48 problems)")
    ap.add_argument("--problems", type=int, default=None, help="problems sampled (default 48 quick, else 160)")
    ap.add_argument("--gpus", type=int, default=2, help="N: the pools' max_actors, the GPU nodes' max")
    ap.add_argument("--plot", default=None, help="write a PNG of both timelines here")
    args = ap.parse_args(argv)
    problems = generate_problems(args.problems or (48 if args.quick else 160), [2, 3], seed=7)
    model = resolve_model(TINY_MODEL)

    import ray

    cluster = FakeAutoscalingCluster.with_gpu_workers(args.gpus, idle_timeout_s=IDLE_TIMEOUT_S)
    cluster.start()
    try:
        cluster.connect()
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        fixed = run_pool(cluster, model, problems, args.gpus, args.gpus, "fixed")
        auto = run_pool(cluster, model, problems, 1, args.gpus, "autoscaling")
    finally:
        ray.shutdown()
        left = cluster.stop()
    if args.plot:
        _plot(Path(args.plot), {"fixed": fixed, "autoscaling": auto}, args.gpus)
    figures = {
        **{f"{name}_{key}": run[key] for name, run in (("fixed", fixed), ("autoscaling", auto))
           for key in ("gpus_reached", "first_gpu_s", "all_gpus_s", "wall_s")},
        "gpus": args.gpus, "problems": len(problems), "idle_timeout_s": IDLE_TIMEOUT_S,
        "processes_left": len(left),
    }
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}))
    return figures


def _plot(path: Path, runs: dict[str, dict[str, Any]], gpus: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(11, 3.2), sharey=True)
    for ax, (name, run) in zip(axes, runs.items()):
        samples = [s for s in run["timeline"].samples if s["t"] >= run["start"]]
        t = [s["t"] - run["start"] for s in samples]
        ax.step(t, [s["gpu_nodes"] for s in samples], where="post", label="GPU worker nodes")
        ax.step(t, [s["gpus_used"] for s in samples], where="post", linestyle="--", label="GPUs in use")
        ax.axvline(run["end"] - run["start"], color="grey", linewidth=0.8)
        ax.set_title(f"{name} pool: up to {run['gpus_reached'] * gpus:.0f} of {gpus} GPU nodes", fontsize=9)
        ax.set_xlabel("seconds from the stage's start (grey: stage done)")
        ax.set_ylim(-0.1, gpus + 0.6)
        ax.yaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("count")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
