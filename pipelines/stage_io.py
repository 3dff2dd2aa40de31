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

    def read_rows(self) -> list[dict[str, Any]]:
        """All rows of all parts, in part-name order."""
        rows: list[dict[str, Any]] = []
        for part in sorted(self.done_parts()):
            table = pq.read_table(pa.BufferReader(self.part(part).read_bytes()))
            if "_empty" not in table.column_names:
                rows.extend(table.to_pylist())
        return rows

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
    config hashes, and the records of finished stages (read once, on first use)."""

    cfg: LemaConfig
    run_dir: Storage
    hashes: dict[str, str] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, cfg: LemaConfig, run_dir: Storage | str | os.PathLike,
                  **rows: list[dict[str, Any]]) -> RunContext:
        """A context whose named stages' records are the given rows (a stage run on its own,
        as in tests and benchmarks)."""
        ctx = cls(cfg, Storage(run_dir))
        ctx._cache.update({f"rows:{k}": v for k, v in rows.items()})
        return ctx

    def dir(self, stage: str) -> StageDir:
        return StageDir(self.run_dir, stage)

    def rows(self, stage: str) -> list[dict[str, Any]]:
        """The records of a finished stage."""
        return self.cached(f"rows:{stage}", self.dir(stage).read_rows)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]
