"""The loop's own cost at scale: problems -> sample -> correct -> data with the null engine.

    .venv/bin/python benchmarks/scale.py --quick     # 1K and 10K problems (make bench)
    .venv/bin/python benchmarks/scale.py             # 1K, 10K, 100K
    .venv/bin/python benchmarks/scale.py --full      # and 1M

Synthetic problems, the `scripted` engine (no model: right with probability 0.5, else one wrong
step) and the reference corrector, so what is measured is the pipeline itself: reading and
writing parts, chunking, Ray Data, grading, correcting, building the training set. Each size
runs in a driver process of its own (a fresh local Ray), whose peak RSS and peak private memory
(RssAnon: without the object store's pages it maps while reading blocks) are read per stage; the
object store is polled every second. Per size and stage: wall time and items/s; then the slope
of each against size on a log-log fit (1.0: time grows as the size; 0: flat), side by side in
one run, and a plot of time and driver memory against problems. Targets (issue 23): driver RSS
within 2x from 10K to 1M, time per item flat or falling. The last line printed is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STAGES = ["problems", "sample", "correct", "data"]
ITEMS = {"problems": "problems", "sample": "problems", "correct": "inaccurate_paths", "data": "train"}


def config_overrides(problems: int, samples: int, output_dir: str) -> list[str]:
    """The run: null engine, reference corrector, two actors a stage, big chunks, no evaluation."""
    pool = "{min_actors: 2, max_actors: 2, num_cpus: 1, batch_size: 1024}"
    return [
        f"output_dir={output_dir}", "run=scale", "ray.num_cpus=4",
        f"problems={{kind: synthetic, count: {problems}, levels: [2, 3, 4]}}",
        "sample.generators=[{engine: {backend: scripted, name: scripted}, "
        f"sampling: {{n: {samples}, temperature: 1.0, max_tokens: 256, seed: 0}}}}]",
        f"sample.pool={pool}",
        "correct.corrector=reference", f"correct.pool={pool}",
        "data={eval_fraction: 0.01}",
        "evaluate.datasets=[{kind: synthetic, split: test, count: 16, levels: [2]}]",
    ]


class Peak:
    """The largest value `read()` gives (MiB; None: nothing to read), polled every `every_s` seconds
    in a thread until `stop` is set."""

    def __init__(self, read: Any, every_s: float):
        self.read, self.every_s, self.peak_mb = read, every_s, 0.0
        self.stop = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                value = self.read()
            except Exception:  # the cluster is going down
                return
            if value is not None:
                self.peak_mb = max(self.peak_mb, value)


def store_mb(address: str) -> float | None:
    """The object store's use (Ray's memory summary)."""
    from ray._private.internal_api import memory_summary

    found = re.search(r"Plasma memory usage (\d+) MiB", memory_summary(address=address, stats_only=True))
    return float(found.group(1)) if found else None


def private_mb() -> float | None:
    """This process's private memory (RssAnon): its RSS also counts the object store's pages the
    driver maps while it reads blocks zero-copy (RssShmem), which are the store's, not the driver's."""
    found = re.search(r"RssAnon:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(found.group(1)) / 1024 if found else None


def reset_peak_rss() -> None:
    """Start this process's peak RSS (VmHWM) afresh (Linux: "5" into clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the stage peaks are then peaks since the start


def peak_rss_mb() -> float:
    """This process's peak RSS since the last reset (VmHWM; ru_maxrss off Linux)."""
    try:
        found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        found = None
    return round(int(found.group(1)) / 1024 if found else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def one_size(problems: int, samples: int, output_dir: str) -> dict[str, Any]:
    """Run the stages for one size in this process; their wall times, items, peaks."""
    import ray

    from lema.config import load_config
    from pipelines.lema import main_pipeline
    from pipelines.ray_setup import init_ray
    from pipelines.stage_io import StageDir

    cfg = load_config(None, config_overrides(problems, samples, output_dir))
    init_ray(cfg)
    address = ray.get_runtime_context().gcs_address
    store, private = Peak(lambda: store_mb(address), 1.0), Peak(private_mb, 0.1)
    out: dict[str, Any] = {"problems": problems, "stages": {}}
    for stage in STAGES:
        reset_peak_rss()
        private.peak_mb = 0.0
        start = time.perf_counter()
        main_pipeline(cfg, until=stage)
        wall = time.perf_counter() - start
        rss = peak_rss_mb()
        manifest = StageDir(Path(output_dir) / "scale", stage).manifest() or {}
        items = manifest.get(ITEMS[stage], 0)
        out["stages"][stage] = {"wall_s": round(wall, 2), "items": items,
                                "items_per_s": round(items / wall, 1) if wall else 0.0, "driver_rss_mb": rss,
                                "driver_private_mb": round(private.peak_mb, 1)}
    store.stop.set()
    private.stop.set()
    out["driver_rss_mb"] = max(s["driver_rss_mb"] for s in out["stages"].values())
    out["driver_private_mb"] = max(s["driver_private_mb"] for s in out["stages"].values())
    out["object_store_peak_mb"] = store.peak_mb
    out["total_s"] = round(sum(s["wall_s"] for s in out["stages"].values()), 2)
    out["items_per_s"] = round(problems / out["total_s"], 1)
    ray.shutdown()
    return out


def slope(xs: list[float], ys: list[float]) -> float | None:
    """The slope of log(y) against log(x), least squares (None with fewer than 2 points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / den, 3) if den else None


def label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"


def plot(results: list[dict[str, Any]], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["problems"] for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for stage in STAGES:
        a.plot(sizes, [r["stages"][stage]["wall_s"] for r in results], marker="o", label=stage)
    a.set(xscale="log", yscale="log", xlabel="problems", ylabel="wall time, s", title="time per stage")
    a.legend()
    b.plot(sizes, [r["driver_rss_mb"] for r in results], marker="o", label="driver peak RSS (with mapped store pages)")
    b.plot(sizes, [r["driver_private_mb"] for r in results], marker="^", label="driver peak private (RssAnon)")
    b.plot(sizes, [r["object_store_peak_mb"] for r in results], marker="s", label="object store peak")
    b.set(xscale="log", xlabel="problems", ylabel="MiB", title="memory", ylim=(0, None))
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1K and 10K problems only")
    ap.add_argument("--full", action="store_true", help="up to 1M problems")
    ap.add_argument("--sizes", type=int, nargs="*", help="problem counts to run instead")
    ap.add_argument("--samples", type=int, default=2, help="paths per problem")
    ap.add_argument("--out", default=None, help="where runs and the plot go (default: a temp dir)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a size in this process (the child)
    args = ap.parse_args(argv)
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="lema-scale-"))
    if args.one:
        result = one_size(args.one, args.samples, str(out_dir))
        print("RESULT " + json.dumps(result), flush=True)
        return result

    sizes = args.sizes or ([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])
    if args.full and not args.sizes:
        sizes.append(1_000_000)
    results = []
    for n in sizes:
        run_dir = out_dir / label(n)
        print(f"--- {n:,} problems ({run_dir})", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--samples", str(args.samples),
                               "--out", str(run_dir)], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "TQDM_DISABLE": "1"})
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            raise SystemExit(f"the {n:,}-problem run failed (exit {proc.returncode})")
        results.append(json.loads(lines[-1][len("RESULT "):]))
        r = results[-1]
        print(f"{n:>9,} problems: {r['total_s']:8.1f} s, {r['items_per_s']:8.1f} problems/s, driver RSS "
              f"{r['driver_rss_mb']:7.1f} MiB, object store peak {r['object_store_peak_mb']:7.1f} MiB", flush=True)

    header = f"{'problems':>10} " + " ".join(f"{s + ' s':>10} {s + ' /s':>11}" for s in STAGES) + \
        f" {'RSS MiB':>8} {'store MiB':>9}"
    print("\n" + header)
    for r in results:
        cells = " ".join(f"{r['stages'][s]['wall_s']:>10.1f} {r['stages'][s]['items_per_s']:>11.1f}" for s in STAGES)
        print(f"{r['problems']:>10,} {cells} {r['driver_rss_mb']:>8.1f} {r['object_store_peak_mb']:>9.1f}")
    per_stage = (f"{r['problems']:,}: " + ", ".join(f"{s} {r['stages'][s]['driver_rss_mb']:g}/"
                                                     f"{r['stages'][s]['driver_private_mb']:g}" for s in STAGES)
                 for r in results)
    print("driver peak RSS / private (RssAnon) per stage, MiB: " + "; ".join(per_stage))
    sizes_done = [r["problems"] for r in results]
    slopes = {f"{s}_time": slope(sizes_done, [r["stages"][s]["wall_s"] for r in results]) for s in STAGES}
    slopes["driver_rss"] = slope(sizes_done, [r["driver_rss_mb"] for r in results])
    slopes["driver_private"] = slope(sizes_done, [r["driver_private_mb"] for r in results])
    slopes["object_store"] = slope(sizes_done, [r["object_store_peak_mb"] + 1 for r in results])
    print("log-log slopes against problems (1: grows as the size, 0: flat): "
          + ", ".join(f"{k} {v}" for k, v in slopes.items()))
    summary: dict[str, Any] = {"plot": plot(results, out_dir / "scale.png"), "slopes": slopes,
                               "samples_per_problem": args.samples}
    for r in results:
        summary[f"driver_rss_mb_{label(r['problems'])}"] = r["driver_rss_mb"]
        summary[f"driver_private_mb_{label(r['problems'])}"] = r["driver_private_mb"]
        summary[f"items_per_s_{label(r['problems'])}"] = r["items_per_s"]
        summary[f"object_store_peak_mb_{label(r['problems'])}"] = r["object_store_peak_mb"]
    for key in ("driver_rss_mb", "driver_private_mb"):
        values = [r[key] for r in results if r["problems"] >= 10_000]
        if len(values) >= 2:
            summary[f"{key.removesuffix('_mb')}_ratio_largest_to_10k"] = round(values[-1] / values[0], 3)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
