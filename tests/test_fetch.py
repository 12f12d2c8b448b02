from __future__ import annotations

import functools
import hashlib
import threading
import uuid
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from landing.infra.fetch import FetchError, Source, fetch, source_fingerprint
from landing.infra.object_store import open_store
from landing.infra.s3_server import S3Server, free_port


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """Local HTTP server serving a temp folder: (folder, base URL)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_plain_relative_path_used_in_place(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "data.tsv").write_bytes(b"a\tb\n")
    r = fetch(Source("data.tsv"), tmp_path / "cache", base_dir=tmp_path / "cfg")
    assert r.path == tmp_path / "cfg" / "data.tsv"
    assert r.sha256 == _sha(b"a\tb\n") and not r.from_cache and r.uri == "data.tsv"


def test_http_download_and_cache_reuse(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    root, base = http_root
    data = b"x" * 5000
    (root / "train.tsv").write_bytes(data)
    src = Source(f"{base}/train.tsv", sha256=_sha(data))
    r1 = fetch(src, tmp_path / "cache")
    assert r1.path.read_bytes() == data and not r1.from_cache and r1.path.name == "train.tsv"
    (root / "train.tsv").unlink()  # the source is gone: only the cache can answer
    r2 = fetch(src, tmp_path / "cache")
    assert r2.from_cache and r2.path == r1.path and r2.sha256 == _sha(data)
    assert not any(".part-" in p.name for p in (tmp_path / "cache").rglob("*"))


def test_cache_by_sha_survives_deleted_file_source(tmp_path: Path) -> None:
    f = tmp_path / "src.bin"
    f.write_bytes(b"payload")
    src = Source(f.as_uri(), sha256=_sha(b"payload"))
    r1 = fetch(src, tmp_path / "cache")
    assert not r1.from_cache and r1.path != f
    f.unlink()
    r2 = fetch([Source("file:///nonexistent/x"), src], tmp_path / "cache")
    assert r2.from_cache and r2.path.read_bytes() == b"payload"


def test_sha_mismatch_falls_through(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    root, base = http_root
    (root / "bad.txt").write_bytes(b"corrupt")
    good = tmp_path / "good.txt"
    good.write_bytes(b"good")
    sha = _sha(b"good")
    r = fetch([Source(f"{base}/bad.txt", sha256=sha), Source(str(good), sha256=sha)], tmp_path / "c")
    assert r.uri == str(good) and r.path.read_bytes() == b"good"


def test_s3_source(tmp_path: Path, s3_env: S3Server) -> None:
    st = open_store(f"s3://f-{uuid.uuid4().hex[:10]}/data")
    (tmp_path / "m.bin").write_bytes(b"model")
    uri = st.put_file(tmp_path / "m.bin", "m.bin")
    r = fetch(Source(uri, sha256=_sha(b"model")), tmp_path / "cache")
    assert r.path.read_bytes() == b"model" and r.uri == uri and not r.from_cache


def test_zip_member_extraction(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    root, base = http_root
    with zipfile.ZipFile(root / "SST-2.zip", "w") as zf:
        zf.writestr("SST-2/train.tsv", "sentence\tlabel\nok\t1\n")
        zf.writestr("SST-2/dev.tsv", "sentence\tlabel\nbad\t0\n")
    train = fetch(Source(f"{base}/SST-2.zip", member="SST-2/train.tsv"), tmp_path / "cache")
    assert train.path.name == "train.tsv" and train.path.read_text().endswith("ok\t1\n")
    dev = fetch(Source(f"{base}/SST-2.zip", member="SST-2/dev.tsv"), tmp_path / "cache")
    assert dev.path.read_text().endswith("bad\t0\n")
    with pytest.raises(FetchError, match="not in archive"):
        fetch(Source(f"{base}/SST-2.zip", member="SST-2/test.tsv"), tmp_path / "cache")
    (root / "SST-2.zip").unlink()  # the server is gone: each member's last fetched copy still answers
    assert fetch(Source(f"{base}/SST-2.zip", member="SST-2/train.tsv"), tmp_path / "cache").from_cache


def test_all_sources_fail_lists_each(tmp_path: Path, s3_env: S3Server) -> None:
    dead = f"http://127.0.0.1:{free_port()}/x.tsv"
    missing_s3 = f"s3://f-{uuid.uuid4().hex[:10]}/nope.tsv"
    srcs = [Source(dead), Source("file:///definitely/not/here.tsv"), Source(missing_s3), Source("gs://b/x")]
    with pytest.raises(FetchError) as ei:
        fetch(srcs, tmp_path / "cache", timeout_s=3)
    msg = str(ei.value)
    assert f"{dead}: connection refused" in msg
    assert "file:///definitely/not/here.tsv: no such file" in msg
    assert f"{missing_s3}: no such bucket 'f-" in msg  # the bucket, not only the object, is missing
    assert "gs://b/x: unsupported scheme" in msg


def test_http_file_changed_on_the_server_is_downloaded_again(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    """No pinned sha256: the cache entry follows the server's validators, so it can never go stale."""
    root, base = http_root
    src = Source(f"{base}/train.tsv")
    (root / "train.tsv").write_bytes(b"text\tlabel\ngood\t1\n")
    first = fetch(src, tmp_path / "cache")
    again = fetch(src, tmp_path / "cache")
    assert not first.from_cache and again.from_cache and again.sha256 == first.sha256
    (root / "train.tsv").write_bytes(b"text\tlabel\ngood\t0\nbad\t0\n")  # new bytes, new Content-Length
    changed = fetch(src, tmp_path / "cache")
    assert not changed.from_cache and changed.path.read_bytes().endswith(b"bad\t0\n")
    assert source_fingerprint(src, tmp_path / "cache") != source_fingerprint(
        Source(f"{base}/other.tsv"), tmp_path / "cache"
    )


def test_unreachable_server_falls_back_to_the_last_fetched_copy(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    root, base = http_root
    (root / "train.tsv").write_bytes(b"v1\n")
    fetch(Source(f"{base}/train.tsv"), tmp_path / "cache")
    (root / "train.tsv").write_bytes(b"v2, longer\n")
    fetch(Source(f"{base}/train.tsv"), tmp_path / "cache")
    (root / "train.tsv").unlink()  # now every source fails
    offline = fetch(Source(f"{base}/train.tsv"), tmp_path / "cache")
    assert offline.from_cache and offline.path.read_bytes() == b"v2, longer\n"


def test_member_of_a_changed_local_archive_is_extracted_again(tmp_path: Path) -> None:
    archive = tmp_path / "data.zip"
    for text in ("v1\n", "v2, longer\n"):
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("train.tsv", text)
        got = fetch(Source(str(archive), member="train.tsv"), tmp_path / "cache")
        assert got.path.read_text() == text
