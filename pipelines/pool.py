"""Run chunks of work through a Ray Data actor pool, writing each chunk's part as it arrives.

Every stage that holds a model (sample, correct, evaluate) uses this one runner: input rows are
chunks `{"chunk_id", "payload"}`; the actor returns one row per chunk
`{"chunk_id", "records", "side"}` (JSON strings). A chunk whose part already exists is not run
again, so a killed stage resumes where it stopped with nothing lost or written twice; an actor
that dies is replaced by Ray Data and its chunk retried.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from typing import Any

from lema.config import PoolConfig
from pipelines.stage_io import StageDir


def run_chunks(
    stage: StageDir,
    chunks: list[dict[str, Any]],
    actor_cls: type,
    ctor_kwargs: dict[str, Any],
    pool: PoolConfig,
    desc: str,
) -> Iterator[dict[str, Any]]:
    """Process the chunks not yet done; yield each chunk's side figures as its part lands.

    Args:
        stage: where parts go (`part-<chunk_id>.parquet`, side figures in `chunk-<id>.json`).
        chunks: `{"chunk_id": str, "payload": str}` rows, in a stable order.
        actor_cls: a callable class built once per actor, called with a batch of one chunk.
        ctor_kwargs: plain-data arguments for the actor's constructor.
        pool: actor counts, CPUs/GPUs per actor, restarts.
    """
    import ray
    from tqdm import tqdm

    done = stage.done_parts()
    pending = [c for c in chunks if c["chunk_id"] not in done]
    if not pending:
        return
    ds = ray.data.from_items(pending, override_num_blocks=len(pending))
    with warnings.catch_warnings():  # Ray 2.60 has no named parameter for actor restarts yet
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        out = _map(ds, actor_cls, ctor_kwargs, pool)
    with tqdm(total=len(pending), desc=desc, unit="chunk") as bar:
        # no prefetch: each part is written as soon as its chunk is done (resume loses less)
        for batch in out.iter_batches(batch_size=None, batch_format="pandas", prefetch_batches=0):
            for row in batch.to_dict("records"):
                side = json.loads(row["side"])
                stage.write_json(f"chunk-{row['chunk_id']}.json", side)  # before the part marks it done
                stage.write_part(row["chunk_id"], json.loads(row["records"]))
                bar.update(1)
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


def read_sides(stage: StageDir) -> list[dict[str, Any]]:
    """The side figures of every finished chunk (for the manifest, after a resume too)."""
    return [stage.read_json(f"chunk-{c}.json") or {} for c in sorted(stage.done_parts())]


def make_chunks(items: list[dict[str, Any]], size: int, prefix: str = "") -> list[dict[str, Any]]:
    """Split items into stable chunks: the same list gives the same chunk ids."""
    return [
        {"chunk_id": f"{prefix}{i // size:05d}", "payload": json.dumps(items[i : i + size])}
        for i in range(0, len(items), size)
    ]


def chunk_seed(seed: int | None, chunk_id: str) -> int | None:
    """A per-chunk sampling seed: the same chunk samples the same way whichever actor runs it."""
    if seed is None:
        return None
    import zlib

    return (seed * 1_000_003 + zlib.crc32(chunk_id.encode())) % (2**31)


class Timer:
    """Wall time of a stage, for manifests."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 3)
