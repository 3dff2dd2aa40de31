"""Files on any pyarrow filesystem, addressed by one URI: a local path, file://, s3://, gs://.

Everything the loop writes or reads goes through `Storage`, so the same run works on a local
disk, a shared mount or an object store. A location keeps its whole URI, query included
(`s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http`), so a URI handed to another
node or actor reaches the same place there. Credentials come from the environment (for S3 the
usual AWS variables), never from the URI.

    runs = Storage("s3://bucket/runs")
    runs.join("demo", "config.yaml").write_text("...")
    local = runs.join("demo", "train", "adapter").local_dir()   # downloaded once, cached
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs


def is_remote(uri: str) -> bool:
    """True for a URI whose filesystem is not the local one (s3://, gs://, ...)."""
    return "://" in uri and not uri.startswith("file://")


class Storage:
    """One file or directory location on a pyarrow filesystem (nothing is touched until used)."""

    def __init__(self, uri: str | os.PathLike | Storage):
        uri = uri.uri if isinstance(uri, Storage) else os.fspath(uri)
        if "://" not in uri:
            uri = os.path.abspath(uri)
        self.uri = uri
        if "://" in uri:
            self.fs, path = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, path = pafs.LocalFileSystem(), uri
        self.path = path.rstrip("/") or "/"

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    def __str__(self) -> str:
        return self.uri

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    # ------------------------------------------------------------ locations
    def join(self, *names: str) -> Storage:
        """A location below this one (the URI's scheme, host and query are kept)."""
        tail = "/".join(n.strip("/") for n in names if n)
        if "://" not in self.uri:
            return Storage(os.path.join(self.uri, tail))
        parts = urlsplit(self.uri)
        return Storage(urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + tail)))

    @property
    def parent(self) -> Storage:
        if "://" not in self.uri:
            return Storage(os.path.dirname(self.uri))
        parts = urlsplit(self.uri)
        return Storage(urlunsplit(parts._replace(path=parts.path.rstrip("/").rsplit("/", 1)[0])))

    # ------------------------------------------------------------ queries
    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def list(self) -> list[str]:
        """Names directly inside this directory (empty when it does not exist)."""
        if not self.is_dir():
            return []
        return sorted(i.base_name for i in self.fs.get_file_info(pafs.FileSelector(self.path)))

    # ------------------------------------------------------------ reading and writing
    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def read_json(self) -> Any | None:
        """The parsed JSON file, or None when there is no file."""
        return json.loads(self.read_text()) if self.is_file() else None

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file at once: a temporary name, then a rename (readers never see half)."""
        with self.open_output() as f:
            f.write(data)

    @contextlib.contextmanager
    def open_output(self) -> Iterator[pa.NativeFile]:
        """A binary stream writing this file piece by piece (bounded memory, any filesystem): the
        file appears whole under its name when the block ends (a temporary name, then a rename),
        and not at all when the block raises."""
        self.parent.mkdir()
        tmp = f"{self.parent.path}/.tmp-{uuid.uuid4().hex}-{self.name}"
        try:
            with self.fs.open_output_stream(tmp) as f:
                yield f
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise
        self.fs.move(tmp, self.path)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_json(self, data: Any) -> None:
        self.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def delete_contents(self) -> None:
        self.fs.delete_dir_contents(self.path, missing_dir_ok=True)

    def fingerprint(self) -> str | None:
        """A short hash of what is here now (every file's path, size and modification time), or
        None when nothing is: it changes when the files are written again."""
        if not self.exists():
            return None
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True)) if self.is_dir() else [
            self.fs.get_file_info(self.path)]
        entries = sorted(f"{i.path[len(self.path):]}:{i.size}:{i.mtime_ns}" for i in infos
                         if i.type == pafs.FileType.File)
        return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]

    # ------------------------------------------------------------ whole directories
    def copy_to(self, dest: Storage) -> None:
        """Copy this directory's contents into `dest` (any filesystem)."""
        dest.mkdir()
        pafs.copy_files(self.path, dest.path, source_filesystem=self.fs, destination_filesystem=dest.fs)

    def local_dir(self, cache: str | os.PathLike | None = None) -> str:
        """This directory on the local disk: itself when local, else a copy downloaded once into
        `cache` (default: the lema cache), named by the URI's hash, so each node fetches it once."""
        if self.local:
            return self.path
        from lema.models import cache_dir

        root = Path(cache) if cache is not None else cache_dir() / "remote"
        target = root / hashlib.sha256(self.uri.encode()).hexdigest()[:24]
        if target.is_dir():
            return str(target)
        if not self.is_dir():
            raise FileNotFoundError(f"{self.uri} is not a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            pafs.copy_files(self.path, str(tmp), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
            try:
                os.rename(tmp, target)
            except OSError:  # another process on this node finished first
                pass
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return str(target)


def local_path(uri: str | None) -> str | None:
    """A directory URI as a local path (downloaded once when remote); None stays None."""
    if uri is None or not is_remote(uri):
        return uri if uri is None or "://" not in uri else Storage(uri).path
    return Storage(uri).local_dir()
