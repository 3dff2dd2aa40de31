"""Run chunks of work through a Ray Data actor pool, writing each chunk's part as it arrives.

Every stage that holds a model (sample, correct, evaluate) uses this one runner. Input items
(problems, paths) stream from an earlier stage's parts and are cut into chunks by Ray tasks
(`part_chunks`; a small list the driver holds, an evaluation set, by `list_chunks`); the actor
returns one row per chunk `{"chunk_id", "records", "side", "items"}` (JSON strings). Each
finished chunk leaves a part and a side file naming the items it covered, so a killed stage
resumes with exactly the items not yet done, however the items are chunked on the re-run:
nothing is lost or written twice. An actor that dies is replaced by Ray Data and its chunk
retried. The driver holds one chunk at a time, names and counts: its memory does not grow with
the stage.

Each chunk also reports its requests and failed requests: past `pool.max_failure_rate` the
stage stops (`StageFailed`) before that chunk's part is written, naming the engine, the counts
and the first error, so a dead engine never yields a "complete" stage of failures.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from lema.config import PoolConfig
from lema.records import stable_id
from pipelines.stage_io import StageDir, log

MIN_REQUESTS_FOR_RATE = 10  # the failure rate decides once this many requests are in
PROGRESS_EVERY_S = 5.0  # seconds between progress lines
CUT_TASKS = 4  # input parts cut into chunks at once (each task reads one part)


class StageFailed(RuntimeError):
    """A stage stopped because its engine failed too often (or died)."""


class FailureGate:
    """Counts a stage's requests and failures chunk by chunk; raises past the threshold."""

    def __init__(self, stage: str, max_rate: float, sides: Iterable[dict[str, Any]]):
        """Start from the figures of the chunks already finished (`sides`, read once); `items`
        counts the items they covered."""
        self.stage, self.max_rate = stage, max_rate
        self.requests = self.failures = self.items = 0
        for side in sides:
            self.requests += side.get("requests", 0)
            self.failures += side.get("failures", 0)
            self.items += len(side.get("items", []))

    def check(self, side: dict[str, Any]) -> None:
        """Count one chunk; raise StageFailed when the stage should stop."""
        requests, failures = side.get("requests", 0), side.get("failures", 0)
        self.requests += requests
        self.failures += failures
        whole_chunk = requests > 0 and failures == requests
        over = (self.requests >= MIN_REQUESTS_FOR_RATE
                and self.failures > self.max_rate * self.requests)
        if failures and (whole_chunk or over):
            raise StageFailed(
                f"{self.stage} stage stopped: engine {side.get('engine', '?')!r} failed "
                f"{failures} of {requests} requests in one chunk ({self.failures} of {self.requests} "
                f"so far; pool.max_failure_rate {self.max_rate:g}); first error: {side.get('first_error')}")


def chunk_items(items: list[dict[str, Any]], key: str, size: int, prefix: str = "") -> list[dict[str, Any]]:
    """Cut items into chunks of `size`; a chunk's id names its first position and its items."""
    chunks = []
    for i in range(0, len(items), size):
        part = items[i : i + size]
        ids = [str(x.get(key)) for x in part]
        chunks.append({"chunk_id": f"{prefix}{i:05d}-{stable_id(*ids, length=8)}",
                       "payload": json.dumps(part), "items": json.dumps(ids)})
    return chunks


def done_items(stage: StageDir, prefix: str = "") -> set[str]:
    """The items covered by the finished parts whose ids start with `prefix`."""
    return {item for side in read_sides(stage, prefix) for item in side.get("items", [])}


def list_chunks(stage: StageDir, items: list[dict[str, Any]], key: str, size: int, prefix: str = "") -> Any:
    """The chunks of a list the driver holds (an evaluation set) not yet done, as a dataset."""
    import ray

    done = done_items(stage, prefix)
    chunks = chunk_items([x for x in items if str(x.get(key)) not in done], key, size, prefix)
    return ray.data.from_items(chunks, override_num_blocks=max(1, len(chunks)))


def part_chunks(source: StageDir, stage: StageDir, key: str, size: int, prefix: str = "",
                select: Callable[[dict[str, Any]], bool] | None = None) -> Any:
    """The chunks of an earlier stage's parts not yet done, cut by Ray tasks, as a dataset.

    Each input part is read by one task, its rows kept by `select` (a picklable function),
    the items its finished chunks cover left out, the rest cut into chunks named
    `<prefix><input part>-<position>-<hash of items>`: the same input cuts into the same chunks,
    so a retried task redoes a chunk under its own name. The driver holds part and chunk names,
    never items.
    """
    import ray

    done: dict[str, list[str]] = defaultdict(list)
    for chunk in stage.done_parts():
        if chunk.startswith(prefix):
            done[chunk[len(prefix):].rsplit("-", 2)[0]].append(chunk)
    rows = [{"part": p, "done": json.dumps(done.get(p, []))} for p in sorted(source.done_parts())]
    parts = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    # A block per chunk, so chunks spread over the actors: the smallest block size makes each row
    # its own block (a repartition would be a task of its own that needs a CPU).
    parts.context.target_max_block_size = 1
    # No CPU held: a pool whose actors hold every CPU (a head without CPUs, GPU nodes whose CPUs the
    # actors take) would otherwise never get its chunks cut, and the stage would wait forever. So no
    # CPU bounds them either: at most CUT_TASKS at once (without it, a worker process per part starts).
    return parts.flat_map(
        _chunk_part, fn_kwargs={"source": source.dir.uri, "stage": stage.dir.uri, "key": key, "size": size,
                                "prefix": prefix, "select": select}, num_cpus=0, concurrency=CUT_TASKS,
    )


def _chunk_part(row: dict[str, Any], source: str, stage: str, key: str, size: int, prefix: str,
                select: Callable[[dict[str, Any]], bool] | None) -> list[dict[str, Any]]:
    """One input part's pending items as chunks (a Ray task of `part_chunks`)."""
    out = StageDir.at(stage)
    done = {item for chunk in json.loads(row["done"])
            for item in (out.file(f"chunk-{chunk}.json").read_json() or {}).get("items", [])}
    items = [x for x in StageDir.at(source).read_part(row["part"])
             if (select is None or select(x)) and str(x.get(key)) not in done]
    return chunk_items(items, key, size, f"{prefix}{row['part']}-")


def run_chunks(
    stage: StageDir,
    chunks: Any,
    total: int,
    actor_cls: type,
    ctor_kwargs: dict[str, Any],
    pool: PoolConfig,
    desc: str,
    prefix: str = "",
) -> Iterator[dict[str, Any]]:
    """Process the chunks; yield each chunk's side figures as its part lands.

    Args:
        stage: where parts go (`part-<chunk_id>.parquet`, side figures in `chunk-<id>.json`).
        chunks: a dataset of chunks (`list_chunks`, `part_chunks`) of this stage's pending items.
        total: the items of the whole stage, finished ones included (for progress).
        actor_cls: a `ChunkWorker` class, built once per actor, called with one chunk at a time.
        ctor_kwargs: plain-data arguments for the actor's constructor.
        pool: actor counts, CPUs/GPUs per actor, restarts, failure threshold.
        prefix: the chunks' name prefix (one stage may run several item sets, e.g. per generator).
    Raises:
        StageFailed: the engine failed past `pool.max_failure_rate`.
    """
    gate = FailureGate(stage.stage, pool.max_failure_rate, read_sides(stage, prefix))
    if gate.items >= total:
        return
    with warnings.catch_warnings():  # Ray 2.60 has no named parameter for actor restarts yet
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        out = _map(chunks, actor_cls, ctor_kwargs, pool)
    progress = Progress(desc, total, gate.items)
    # no prefetch: each part is written as soon as its chunk is done (resume loses less)
    for batch in out.iter_batches(batch_size=None, batch_format="pandas", prefetch_batches=0):
        for row in batch.to_dict("records"):
            side = {**json.loads(row["side"]), "items": json.loads(row["items"])}
            gate.check(side)  # before the part: a failed chunk is redone on the next run
            stage.file(f"chunk-{row['chunk_id']}.json").write_json(side)  # before the part marks it done
            stage.write_part(row["chunk_id"], json.loads(row["records"]))
            progress.update(len(side["items"]))
            yield side
    progress.close()


class ChunkWorker:
    """A stage's actor: `process` turns one chunk's items into records and side figures."""

    def process(self, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        raise NotImplementedError

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"chunk_id": [], "records": [], "side": [], "items": []}
        for chunk_id, payload, items in zip(batch["chunk_id"], batch["payload"], batch["items"]):
            records, side = self.process(json.loads(payload))
            out["chunk_id"].append(str(chunk_id))
            out["records"].append(json.dumps(records))
            out["side"].append(json.dumps(side))
            out["items"].append(str(items))
        return out


class Progress:
    """A stage's progress in the log: items done of the total, the rate and an ETA, one line
    every `every_s` seconds (not one per chunk), and a last line when it ends."""

    def __init__(self, desc: str, total: int, done: int = 0, every_s: float = PROGRESS_EVERY_S):
        self.desc, self.total, self.start_done, self.done = desc, total, done, done
        self.every_s = every_s
        self.start = self.last = time.perf_counter()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"ETA {_duration(left / rate)}" if rate > 0 and left > 0 else f"{_duration(elapsed)} elapsed"
        share = self.done / self.total if self.total else 1.0
        return f"{self.desc}: {self.done:,}/{self.total:,} items ({share:.0%}), {rate:,.1f} items/s, {eta}"

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            log(self.line())

    def close(self) -> None:
        log(self.line())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def add_counts(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Add one chunk's counts into `total` (numbers add, dicts merge by key, lists by position)."""
    for key, value in part.items():
        if isinstance(value, dict):
            add_counts(total.setdefault(key, {}), value)
        elif isinstance(value, list):
            have = total.setdefault(key, [0] * len(value))
            total[key] = [a + b for a, b in zip(have, value)]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
    return total


def _map(ds: Any, actor_cls: type, ctor_kwargs: dict[str, Any], pool: PoolConfig) -> Any:
    """The one place pool sizes, CPUs/GPUs and restarts reach `map_batches`."""
    from ray.data import ActorPoolStrategy

    return ds.map_batches(
        actor_cls,
        fn_constructor_kwargs=ctor_kwargs,
        batch_size=1,
        compute=ActorPoolStrategy(
            min_size=pool.min_actors, max_size=pool.max_actors,
            max_tasks_in_flight_per_actor=max(pool.calls_per_actor, 2),
            max_concurrent_calls_per_actor=pool.calls_per_actor,
            enable_true_multi_threading=pool.calls_per_actor > 1,
        ),
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus or None,
        max_restarts=pool.max_restarts,  # a dead actor is replaced,
        max_task_retries=-1,  # and its chunks retried on the new one however often actors die
    )


def read_sides(stage: StageDir, prefix: str = "") -> Iterator[dict[str, Any]]:
    """The side figures of every finished chunk whose id starts with `prefix`, one file at a time
    (the driver never holds them all)."""
    for chunk in sorted(stage.done_parts()):
        if chunk.startswith(prefix):
            yield stage.file(f"chunk-{chunk}.json").read_json() or {}


def failure_side(engine: str, outputs_errors: list[str | None]) -> dict[str, Any]:
    """A chunk's request figures for the failure gate: engine label, requests, failures, the
    first error text."""
    errors = [e for e in outputs_errors if e]
    return {"engine": engine, "requests": len(outputs_errors), "failures": len(errors),
            "first_error": errors[0] if errors else None}


class Timer:
    """Wall time of a stage, for manifests."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 3)
