"""lema.storage on a local disk, file:// and a local S3-compatible server."""

from __future__ import annotations

import pytest

from lema.storage import Storage, is_remote, local_path


@pytest.fixture(params=["path", "file", "s3"])
def root(request, tmp_path) -> Storage:
    if request.param == "path":
        return Storage(tmp_path / "root")
    if request.param == "file":
        return Storage(f"file://{tmp_path}/root")
    return Storage(request.getfixturevalue("s3_server")("lema-storage")).join(tmp_path.name)


def test_round_trip_and_listing(root):
    f = root.join("run", "stage", "manifest.json")
    assert not f.exists() and f.read_json() is None and root.join("run").list() == []
    f.write_json({"a": 1})
    assert f.is_file() and f.read_json() == {"a": 1}
    root.join("run", "stage", "part-0.parquet").write_bytes(b"xyz")
    assert root.join("run", "stage").list() == ["manifest.json", "part-0.parquet"]  # no temporary left
    assert root.join("run").is_dir() and f.name == "manifest.json"
    root.join("run", "stage").delete_contents()
    assert root.join("run", "stage").list() == []


def test_uri_keeps_scheme_and_query(root):
    child = root.join("a", "b.txt")
    assert child.uri.startswith(root.uri.split("?")[0].rstrip("/") + "/a/b.txt")
    if "?" in root.uri:
        assert child.uri.endswith("?" + root.uri.split("?", 1)[1])
    assert Storage(child.uri).path == child.path and child.parent.join("b.txt").uri == child.uri


def test_directories_upload_and_download_once(root, tmp_path):
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    remote = root.join("ckpt", "adapter")
    Storage(src).copy_to(remote)
    local = remote.local_dir(tmp_path / "cache")
    assert open(f"{local}/adapter_config.json").read() == "{}"
    assert remote.local_dir(tmp_path / "cache") == local
    assert is_remote(remote.uri) == (not root.local)


def test_local_path_of_plain_and_file_uris(tmp_path):
    assert local_path(None) is None
    assert local_path(str(tmp_path)) == str(tmp_path)
    assert local_path(f"file://{tmp_path}") == str(tmp_path)
