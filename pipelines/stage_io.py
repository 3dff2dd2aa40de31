"""Where a stage keeps its records, `<output_dir>/<run>/<stage>/` on any filesystem, and what a
stage reads from the run (`RunContext`).

A stage writes its output in parts, one Parquet file per chunk of input items, each written
whole (temporary name, then rename), then a `manifest.json`. When it begins it records its
config hash in `started.json`: a re-run under the same hash resumes from the finished parts; a
re-run under another hash starts the stage over, so no part of an old config survives.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lema.config import LemaConfig
from lema.storage import Storage

MANIFEST = "manifest.json"
STARTED = "started.json"


def log(msg: str) -> None:
    """One line of the loop's log, time-stamped."""
    print(f"[lema {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class StageDir:
    """One stage's directory: parts, manifest, the started marker and side files."""

    def __init__(self, run_dir: Storage | str | os.PathLike, stage: str):
        self.dir = Storage(run_dir).join(stage)
        self.stage = stage

    @property
    def uri(self) -> str:
        return self.dir.uri

    def file(self, name: str) -> Storage:
        return self.dir.join(name)

    # ------------------------------------------------------------ parts
    def part(self, part: str) -> Storage:
        return self.dir.join(f"part-{part}.parquet")

    def done_parts(self) -> set[str]:
        return {n[len("part-"): -len(".parquet")] for n in self.dir.list()
                if n.startswith("part-") and n.endswith(".parquet")}

    def write_part(self, part: str, rows: list[dict[str, Any]]) -> None:
        """Write one part whole: readers never see half of it."""
        table = pa.Table.from_pylist(rows) if rows else pa.table({"_empty": pa.array([], pa.int8())})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.part(part).write_bytes(buf.getvalue())

    def read_part(self, part: str) -> list[dict[str, Any]]:
        """The rows of one part."""
        table = pq.read_table(pa.BufferReader(self.part(part).read_bytes()))
        return [] if "_empty" in table.column_names else table.to_pylist()

    def read_rows(self) -> list[dict[str, Any]]:
        """All rows of all parts, in part-name order (small stages only: evaluation sets, tests;
        the loop's own stages stream with `dataset`)."""
        return [row for part in sorted(self.done_parts()) for row in self.read_part(part)]

    def dataset(self, prefix: str = "") -> Any:
        """The rows of the parts whose names start with `prefix` as a Ray Data dataset, read part by
        part by Ray tasks (parts may differ in schema: a column empty in one part is typed in
        another, so they are read as rows, not unified as one Parquet table); the driver holds
        only the part names."""
        import ray

        parts = sorted(p for p in self.done_parts() if p.startswith(prefix))
        uri = self.dir.uri
        return ray.data.from_items([{"part": p} for p in parts], override_num_blocks=max(1, len(parts))
                                   ).flat_map(lambda row: StageDir.at(uri).read_part(row["part"]))

    @classmethod
    def at(cls, uri: str) -> StageDir:
        """The stage directory at a URI (as handed to a Ray task)."""
        storage = Storage(uri)
        return cls(storage.parent, storage.name)

    # ------------------------------------------------------------ markers
    def manifest(self) -> dict[str, Any] | None:
        return self.file(MANIFEST).read_json()

    def is_complete(self, config_hash: str) -> bool:
        m = self.manifest()
        return bool(m) and m.get("config_hash") == config_hash and m.get("complete", False)

    def started_hash(self) -> str | None:
        """The config hash this stage last began under (None: never began, or an old run)."""
        started = self.file(STARTED).read_json()
        return started.get("config_hash") if started else None

    def mark_started(self, config_hash: str) -> None:
        self.file(STARTED).write_json({"config_hash": config_hash,
                                       "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def write_manifest(self, config_hash: str, **figures: Any) -> dict[str, Any]:
        manifest = {
            "stage": self.stage,
            "config_hash": config_hash,
            "complete": True,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **figures,
        }
        self.file(MANIFEST).write_json(manifest)
        return manifest

    def clear(self) -> None:
        """Remove everything (the config changed, or `--from` redoes this stage)."""
        self.dir.delete_contents()


@dataclass
class RunContext:
    """One run of the loop as its stages see it: the config, the run's directory, the stages'
    config hashes, and values computed once per run (the evaluation sets)."""

    cfg: LemaConfig
    run_dir: Storage
    hashes: dict[str, str] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, cfg: LemaConfig, run_dir: Storage | str | os.PathLike,
                  **rows: list[dict[str, Any]]) -> RunContext:
        """A context whose named stages hold the given rows, written as one part with the
        manifest figures later stages read (a stage run on its own, as in tests and benchmarks)."""
        ctx = cls(cfg, Storage(run_dir))
        for stage, stage_rows in rows.items():
            out = ctx.dir(stage)
            out.write_part("00000", stage_rows)
            inaccurate = sum(1 for r in stage_rows if not r.get("correct") and not r.get("error"))
            out.write_manifest("given", rows=len(stage_rows), problems=len(stage_rows), inaccurate=inaccurate)
        return ctx

    def dir(self, stage: str) -> StageDir:
        return StageDir(self.run_dir, stage)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]
