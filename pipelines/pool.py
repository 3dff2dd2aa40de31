"""Run chunks of work through a Ray Data actor pool, writing each chunk's part as it arrives.

Every stage that holds a model (sample, correct, evaluate) uses this one runner. Input items
(problems, paths) are cut into chunks; the actor returns one row per chunk `{"chunk_id",
"records", "side"}` (JSON strings). Each finished chunk leaves a part and a side file naming
the items it covered, so a killed stage resumes with exactly the items not yet done, however
the items are chunked on the re-run: nothing is lost or written twice. An actor that dies is
replaced by Ray Data and its chunk retried.

Each chunk also reports its requests and failed requests: past `pool.max_failure_rate` the
stage stops (`StageFailed`) before that chunk's part is written, naming the engine, the counts
and the first error, so a dead engine never yields a "complete" stage of failures.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from typing import Any

from lema.config import PoolConfig
from lema.records import stable_id
from pipelines.stage_io import StageDir

MIN_REQUESTS_FOR_RATE = 10  # the failure rate decides once this many requests are in


class StageFailed(RuntimeError):
    """A stage stopped because its engine failed too often (or died)."""


class FailureGate:
    """Counts a stage's requests and failures chunk by chunk; raises past the threshold."""

    def __init__(self, stage: str, max_rate: float, sides: list[dict[str, Any]]):
        self.stage, self.max_rate = stage, max_rate
        self.requests = sum(s.get("requests", 0) for s in sides)
        self.failures = sum(s.get("failures", 0) for s in sides)

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
                       "payload": json.dumps(part), "items": ids})
    return chunks


def done_items(stage: StageDir, prefix: str = "") -> set[str]:
    """The items covered by the finished parts whose ids start with `prefix`."""
    return {item for side in read_sides(stage, prefix) for item in side.get("items", [])}


def run_chunks(
    stage: StageDir,
    items: list[dict[str, Any]],
    key: str,
    actor_cls: type,
    ctor_kwargs: dict[str, Any],
    pool: PoolConfig,
    desc: str,
    prefix: str = "",
) -> Iterator[dict[str, Any]]:
    """Process the items not yet done; yield each chunk's side figures as its part lands.

    Args:
        stage: where parts go (`part-<chunk_id>.parquet`, side figures in `chunk-<id>.json`).
        items: dicts with a unique `key`, in a stable order.
        actor_cls: a callable class built once per actor, called with a batch of one chunk.
        ctor_kwargs: plain-data arguments for the actor's constructor.
        pool: actor counts, CPUs/GPUs per actor, restarts, chunk size, failure threshold.
        prefix: part-name prefix (one stage may run several item sets, e.g. per generator).
    Raises:
        StageFailed: the engine failed past `pool.max_failure_rate`.
    """
    import ray
    from tqdm import tqdm

    done = done_items(stage, prefix)
    pending = [x for x in items if str(x.get(key)) not in done]
    if not pending:
        return
    chunks = chunk_items(pending, key, pool.batch_size, prefix)
    items_of = {c["chunk_id"]: c["items"] for c in chunks}
    gate = FailureGate(stage.stage, pool.max_failure_rate, read_sides(stage, prefix))
    ds = ray.data.from_items([{k: c[k] for k in ("chunk_id", "payload")} for c in chunks],
                             override_num_blocks=len(chunks))
    with warnings.catch_warnings():  # Ray 2.60 has no named parameter for actor restarts yet
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        out = _map(ds, actor_cls, ctor_kwargs, pool)
    with tqdm(total=len(pending), desc=desc, unit="item") as bar:
        # no prefetch: each part is written as soon as its chunk is done (resume loses less)
        for batch in out.iter_batches(batch_size=None, batch_format="pandas", prefetch_batches=0):
            for row in batch.to_dict("records"):
                side = {**json.loads(row["side"]), "items": items_of[row["chunk_id"]]}
                gate.check(side)  # before the part: a failed chunk is redone on the next run
                stage.file(f"chunk-{row['chunk_id']}.json").write_json(side)  # before the part marks it done
                stage.write_part(row["chunk_id"], json.loads(row["records"]))
                bar.update(len(side["items"]))
                yield side


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
        max_restarts=pool.max_restarts,  # a dead actor is replaced, its chunk retried
        max_task_retries=pool.max_restarts,
    )


def read_sides(stage: StageDir, prefix: str = "") -> list[dict[str, Any]]:
    """The side figures of every finished chunk whose id starts with `prefix`."""
    return [stage.file(f"chunk-{c}.json").read_json() or {}
            for c in sorted(stage.done_parts()) if c.startswith(prefix)]


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
