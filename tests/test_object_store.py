from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from landing.infra.object_store import (
    COMPLETE_MARKER,
    FileObjectStore,
    IncompleteDirectoryError,
    ObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    check_reachable,
    open_store,
    store_for_uri,
)
from landing.infra.s3_server import S3Server, find_rclone, free_port, s3_server
from landing.infra.settings import get_settings


@pytest.fixture(scope="module")
def rclone_endpoint() -> Iterator[S3Server]:
    if find_rclone() is None:
        pytest.skip("rclone binary not found")
    with s3_server("rclone") as srv:
        yield srv


@pytest.fixture(params=["file", "moto", "rclone"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path / "state"))
    if request.param == "file":
        return open_store((tmp_path / "objects").as_uri())
    srv: S3Server = request.getfixturevalue(
        "s3_endpoint" if request.param == "moto" else "rclone_endpoint"
    )
    for k, v in srv.env().items():
        monkeypatch.setenv(k, v)
    st = open_store(f"s3://b-{uuid.uuid4().hex[:12]}/runs")
    assert isinstance(st, S3ObjectStore)
    return st


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


def test_put_get_exists_list(store: ObjectStore, tmp_path: Path) -> None:
    check_reachable(store)
    src = tmp_path / "a.txt"
    src.write_text("hello")
    uri = store.put_file(src, "exp/a.txt")
    assert uri == store.uri_for("exp/a.txt")
    assert store.exists(uri) and store.exists("exp/a.txt")
    assert not store.exists("exp/missing.txt")
    store.put_file(src, "exp/sub/b.txt")
    store.put_file(src, "expx/c.txt")  # sibling with same string prefix must not be listed
    assert store.list("exp") == sorted([uri, store.uri_for("exp/sub/b.txt")])
    out = store.get_file(uri, tmp_path / "dl" / "a.txt")
    assert out.read_text() == "hello"
    assert [p.name for p in out.parent.iterdir()] == ["a.txt"]  # no temp leftovers
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        store.get_file("exp/missing.txt", tmp_path / "x")
    # store_for_uri reads the same object from its URI alone
    assert store_for_uri(uri).get_file(uri, tmp_path / "again").read_text() == "hello"


def test_put_dir_get_dir_and_marker(store: ObjectStore, tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    (d / "sub").mkdir(parents=True)
    (d / "weights.bin").write_text("w")
    (d / "sub" / "cfg.json").write_text("{}")
    uri = store.put_dir(d, "runs/1/ckpt")
    assert store.is_complete_dir(uri)
    assert store.uri_for(f"runs/1/ckpt/{COMPLETE_MARKER}") in store.list(uri)
    out = store.get_dir(uri, tmp_path / "restored")
    assert _tree(out) == _tree(d)

    # A half-written directory (files but no marker) is refused.
    store.put_file(d / "weights.bin", "runs/2/ckpt/weights.bin")
    with pytest.raises(IncompleteDirectoryError, match=COMPLETE_MARKER):
        store.get_dir(store.uri_for("runs/2/ckpt"), tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        store.get_dir(store.uri_for("runs/3/none"), tmp_path / "nope")


def test_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    st = S3ObjectStore("bucket", "p", endpoint_url=url)
    t0 = time.monotonic()
    with pytest.raises(ObjectStoreError, match=url):
        check_reachable(st)
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(ObjectStoreError, match="put_file|head_bucket") as ei:
        st.put_file(src, "k")
    assert url in str(ei.value)
    assert time.monotonic() - t0 < 10


def test_file_store_atomic_and_check(tmp_path: Path) -> None:
    st = FileObjectStore(tmp_path / "root")
    check_reachable(st)
    assert (tmp_path / "root").is_dir()
    src = tmp_path / "f"
    src.write_text("v1")
    st.put_file(src, "k")
    src.write_text("v2")
    st.put_file(src, "k")  # overwrite via replace, no temp siblings left
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["k"]
    assert (tmp_path / "root" / "k").read_text() == "v2"


def test_marker_written_last(tmp_path: Path) -> None:
    order: list[str] = []

    class Recording(FileObjectStore):
        def put_file(self, local_path, key):  # type: ignore[no-untyped-def]
            order.append(key)
            return super().put_file(local_path, key)

        def _put_bytes(self, data, key):  # type: ignore[no-untyped-def]
            order.append(key)
            return super()._put_bytes(data, key)

    d = tmp_path / "d"
    d.mkdir()
    for name in ("a", "b", "c"):
        (d / name).write_text(name)
    Recording(tmp_path / "root").put_dir(d, "x")
    assert order[-1] == f"x/{COMPLETE_MARKER}" and len(order) == 4


def test_unsupported_scheme() -> None:
    with pytest.raises(ValueError, match=r"gs://b/x.*file://.*s3://"):
        open_store("gs://b/x")
    with pytest.raises(ValueError, match="ftp://h/x"):
        store_for_uri("ftp://h/x")


def test_open_store_default_is_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("LANDING_OBJECT_STORE_URI", raising=False)
    st = open_store()
    assert isinstance(st, FileObjectStore)
    assert st.root == tmp_path / "objects"
    assert get_settings().resolved_object_store_uri() == st.uri_for("")


def test_store_id_is_stable_and_changes_when_the_store_is_wiped(store: ObjectStore) -> None:
    """Cache keys include it (tasks.context): a wiped store must never satisfy a cached step."""
    first = store.store_id()
    assert store.store_id() == first and len(first) == 32
    store._delete(store.uri_for(".landing-store-id"))  # what wiping the store's root amounts to
    assert store.store_id() != first
