"""Where a stage keeps its records: `<output_dir>/<run>/<stage>/`, on any pyarrow filesystem.

A stage writes its output in parts, one Parquet file per input chunk, each written whole
(temporary name, then rename), and a `manifest.json` last. A killed stage re-run skips the
parts it has; a stage whose manifest carries the same config hash is skipped outright.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

MANIFEST = "manifest.json"


class StageDir:
    """One stage's directory: parts, manifest, and side files (plots, adapters, JSON)."""

    def __init__(self, output_dir: str, run: str, stage: str):
        self.fs, root = pafs.FileSystem.from_uri(output_dir) if "://" in output_dir else (
            pafs.LocalFileSystem(), _abs(output_dir)
        )
        self.uri_root = output_dir
        self.path = f"{root.rstrip('/')}/{run}/{stage}"
        self.stage = stage
        self.fs.create_dir(self.path, recursive=True)

    # ------------------------------------------------------------ parts
    def part_path(self, part: str) -> str:
        return f"{self.path}/part-{part}.parquet"

    def has_part(self, part: str) -> bool:
        return self.fs.get_file_info(self.part_path(part)).type == pafs.FileType.File

    def done_parts(self) -> set[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.path))
        return {
            i.base_name[len("part-") : -len(".parquet")]
            for i in infos
            if i.base_name.startswith("part-") and i.base_name.endswith(".parquet")
        }

    def write_part(self, part: str, rows: list[dict[str, Any]]) -> None:
        """Write one part whole: readers never see half of it."""
        table = pa.Table.from_pylist(rows) if rows else pa.table({"_empty": pa.array([], pa.int8())})
        tmp = f"{self.path}/.tmp-{uuid.uuid4().hex}.parquet"
        with self.fs.open_output_stream(tmp) as f:
            pq.write_table(table, f)
        self.fs.move(tmp, self.part_path(part))

    def read_rows(self) -> list[dict[str, Any]]:
        """All rows of all parts, in part-name order."""
        rows: list[dict[str, Any]] = []
        for part in sorted(self.done_parts()):
            with self.fs.open_input_file(self.part_path(part)) as f:
                table = pq.read_table(f)
            if "_empty" not in table.column_names:
                rows.extend(table.to_pylist())
        return rows

    # ------------------------------------------------------------ side files
    def file_path(self, name: str) -> str:
        return f"{self.path}/{name}"

    def write_json(self, name: str, data: Any) -> None:
        tmp = f"{self.path}/.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(data, indent=2, sort_keys=True, default=str).encode())
        self.fs.move(tmp, self.file_path(name))

    def read_json(self, name: str) -> Any | None:
        if self.fs.get_file_info(self.file_path(name)).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(self.file_path(name)) as f:
            return json.loads(f.read().decode())

    # ------------------------------------------------------------ manifest
    def manifest(self) -> dict[str, Any] | None:
        return self.read_json(MANIFEST)

    def is_complete(self, config_hash: str) -> bool:
        m = self.manifest()
        return bool(m) and m.get("config_hash") == config_hash and m.get("complete", False)

    def write_manifest(self, config_hash: str, **figures: Any) -> dict[str, Any]:
        manifest = {
            "stage": self.stage,
            "config_hash": config_hash,
            "complete": True,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **figures,
        }
        self.write_json(MANIFEST, manifest)
        return manifest

    def clear(self) -> None:
        """Remove everything (used when the config changed or `--from` redoes this stage)."""
        self.fs.delete_dir_contents(self.path, missing_dir_ok=True)


def _abs(path: str) -> str:
    import os

    return os.path.abspath(path)
