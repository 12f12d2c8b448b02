"""Fetch datasets/models from an ordered list of mirrors (http(s), s3, local) into a
content-addressed cache, so runs are reproducible and survive a dead mirror or no network."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlparse

from landing.errors import UserError
from landing.files import sha256_file
from landing.infra.object_store import NoSuchBucketError, ObjectStoreError, store_for_uri
from landing.infra.uris import uri_to_path

if TYPE_CHECKING:
    from landing.infra.settings import LandingSettings

_CHUNK = 1 << 20
log = logging.getLogger(__name__)


@dataclass
class Source:
    """One place to get a file. ``sha256`` is of the returned file (the extracted member
    when ``member`` is set); ``member`` is a path inside a .zip archive."""

    uri: str
    sha256: str | None = None
    member: str | None = None

    def label(self) -> str:
        return f"{self.uri}!{self.member}" if self.member else self.uri


@dataclass
class FetchResult:
    path: Path
    uri: str
    sha256: str
    from_cache: bool


class FetchError(UserError, RuntimeError):
    """Every source failed; the message lists each source and why."""


class _SourceFailed(Exception):
    pass


def _copy_hashing(src: IO[bytes], dest: Path) -> str:
    """Stream ``src`` into a temp sibling of ``dest``, os.replace it in; return sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return h.hexdigest()


def _basename(src: Source) -> str:
    name = Path(src.member or urlparse(src.uri).path or src.uri).name
    return name or "download"


def _cache_key(src: Source, version: str | None = None) -> str:
    """A pinned sha256 names its entry; otherwise the URI plus the version of the bytes behind it."""
    if src.sha256:
        return src.sha256.lower()
    return hashlib.sha256(f"{src.uri}\0{src.member or ''}\0{version or ''}".encode()).hexdigest()


def remote_version(src: Source, *, timeout_s: float, settings: LandingSettings | None = None) -> str | None:
    """What identifies the bytes at a remote URI now, without downloading them: an http(s) server's
    ETag / Last-Modified / Content-Length, an S3 object's ETag; None when unknown (unreachable,
    a server that sends no validators, another scheme)."""
    scheme = urlparse(src.uri).scheme
    if scheme in ("http", "https"):
        found = _http_validators(src.uri, timeout_s)
        return json.dumps(found, sort_keys=True) if found else None
    if scheme == "s3":
        try:
            return store_for_uri(src.uri, settings).version(src.uri)
        except (ObjectStoreError, OSError, ValueError):
            return None
    return None


def _latest_pointer(src: Source, cache_dir: Path) -> Path:
    """Records the cache entry of the last successful fetch of a remote URI (for offline re-runs)."""
    return cache_dir / "latest" / hashlib.sha256(f"{src.uri}\0{src.member or ''}".encode()).hexdigest()


def _cached(src: Source, cache_dir: Path, version: str | None = None) -> tuple[Path, str] | None:
    """A cache entry for ``src`` (at ``version``) whose content matches the expected hash (if any)."""
    entry = cache_dir / _cache_key(src, version)
    files = [p for p in entry.glob("*") if p.is_file() and ".part-" not in p.name] if entry.is_dir() else []
    for p in files:
        digest = sha256_file(p)
        if src.sha256 is None or digest == src.sha256.lower():
            return p, digest
    return None


def _local_path(uri: str, base_dir: Path | None) -> Path | None:
    if uri.startswith("file://"):
        return uri_to_path(uri)
    if "://" in uri:
        return None
    p = Path(uri).expanduser()
    return p if p.is_absolute() else (base_dir or Path.cwd()) / p


def _http_reason(e: BaseException, timeout_s: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, socket.gaierror):
        return f"could not resolve host ({reason})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout_s}s"
    return f"{type(reason).__name__}: {reason}"


def _download(
    src: Source, dest: Path, *, base_dir: Path | None, timeout_s: float,
    settings: LandingSettings | None,
) -> None:
    """Fetch the raw bytes at ``src.uri`` into ``dest`` (atomically) or raise _SourceFailed."""
    scheme = urlparse(src.uri).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(src.uri, timeout=timeout_s) as resp:
                _copy_hashing(resp, dest)
        except (urllib.error.URLError, OSError) as e:
            raise _SourceFailed(_http_reason(e, timeout_s)) from e
    elif scheme == "s3":
        try:
            store_for_uri(src.uri, settings).get_file(src.uri, dest)
        except NoSuchBucketError as e:
            raise _SourceFailed(str(e)) from None
        except FileNotFoundError:
            raise _SourceFailed("no such object") from None
        except ObjectStoreError as e:
            raise _SourceFailed(str(e)) from e
    else:
        raise _SourceFailed(f"unsupported scheme {scheme!r} (use http, https, s3, file or a path)")


def _extract(archive: Path, member: str, dest: Path) -> str:
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as f:
            return _copy_hashing(f, dest)
    except KeyError:
        raise _SourceFailed(f"member {member!r} not in archive") from None
    except zipfile.BadZipFile as e:
        raise _SourceFailed(f"not a valid zip archive: {e}") from e


def _try_source(
    src: Source, cache_dir: Path, *, base_dir: Path | None, timeout_s: float,
    settings: LandingSettings | None, version: str | None = None,
) -> FetchResult:
    expected = src.sha256.lower() if src.sha256 else None
    local = _local_path(src.uri, base_dir)
    if local is not None and not local.is_file():
        raise _SourceFailed("no such file" + ("" if local.as_posix() in src.uri else f" ({local})"))

    # Raw bytes at the URI: local files are used in place; remote ones are downloaded once.
    if local is not None:
        raw = local
    else:
        raw_key = hashlib.sha256(f"{src.uri}\0{version or uuid.uuid4().hex}".encode()).hexdigest()
        raw = cache_dir / "raw" / raw_key / _basename(Source(src.uri))  # an unknown version is never reused
        if not raw.is_file():
            _download(src, raw, base_dir=base_dir, timeout_s=timeout_s, settings=settings)

    final = cache_dir / _cache_key(src, version) / _basename(src)
    if src.member:
        try:
            digest = _extract(raw, src.member, final)
        except _SourceFailed as e:
            if local is None and "not in archive" not in str(e):
                raw.unlink(missing_ok=True)  # corrupt download: don't keep it cached
            raise
        finally:
            if local is None and version is None:  # an archive of unknown version is never reused
                shutil.rmtree(raw.parent, ignore_errors=True)
    elif local is not None and expected is None:
        return FetchResult(local, src.uri, sha256_file(local), from_cache=False)
    elif local is not None:
        with local.open("rb") as f:  # copy so the cache survives the source disappearing
            digest = _copy_hashing(f, final)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        digest = sha256_file(raw)
        os.replace(raw, final)
        shutil.rmtree(raw.parent, ignore_errors=True)

    if expected and digest != expected:
        final.unlink(missing_ok=True)
        raise _SourceFailed(f"sha256 mismatch: expected {expected}, got {digest}")
    if local is None:
        pointer = _latest_pointer(src, cache_dir)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        tmp = pointer.with_name(f".{pointer.name}.part-{uuid.uuid4().hex[:8]}")
        tmp.write_text(str(final))
        os.replace(tmp, pointer)
    return FetchResult(final, src.uri, digest, from_cache=False)


def _last_fetched(src: Source, cache_dir: Path) -> tuple[Path, str] | None:
    """The copy from the last successful fetch of a remote source, when it cannot be reached now."""
    pointer = _latest_pointer(src, cache_dir)
    path = Path(pointer.read_text()) if pointer.is_file() else None
    if path is None or not path.is_file():
        return None
    return path, sha256_file(path)


def fetch(
    sources: Source | Sequence[Source],
    cache_dir: Path,
    *,
    base_dir: Path | None = None,
    timeout_s: float = 15.0,
    settings: LandingSettings | None = None,
) -> FetchResult:
    """Return the first source that yields a (hash-verified) file; a valid cache hit for
    any source wins before anything is downloaded.

    A remote source without a pinned sha256 is cached per version of its bytes (``remote_version``),
    so a file changed on the server is downloaded again; when its version cannot be known it is
    downloaded again, and only when every source fails is the last fetched copy of one used.
    """
    srcs = [sources] if isinstance(sources, Source) else list(sources)
    if not srcs:
        raise ValueError("fetch() needs at least one Source")
    cache_dir = Path(cache_dir)
    versions: dict[int, str | None] = {}
    for i, src in enumerate(srcs):
        remote = not src.sha256 and _local_path(src.uri, base_dir) is None
        versions[i] = remote_version(src, timeout_s=timeout_s, settings=settings) if remote else None
        # Reusable: a pinned sha256, or a remote copy of a known version. A local file (or a member of a
        # local archive) is read again, since it may have changed since it was cached.
        reusable = bool(src.sha256) or (remote and versions[i] is not None)
        if reusable and (hit := _cached(src, cache_dir, versions[i])) is not None:
            return FetchResult(hit[0], src.uri, hit[1], from_cache=True)
    failures: list[str] = []
    for i, src in enumerate(srcs):
        try:
            return _try_source(src, cache_dir, base_dir=base_dir, timeout_s=timeout_s, settings=settings,
                               version=versions[i])  # fmt: skip
        except _SourceFailed as e:
            failures.append(f"  - {src.label()}: {e}")
        except Exception as e:  # a broken mirror must not hide the next one
            failures.append(f"  - {src.label()}: {type(e).__name__}: {e}")
    for src in srcs:  # nothing reachable: the last copy fetched is better than no run (and says so)
        if not src.sha256 and (hit := _last_fetched(src, cache_dir)) is not None:
            log.warning("every source failed; using the copy of %s fetched earlier:\n%s", src.label(), "\n".join(failures))
            return FetchResult(hit[0], src.uri, hit[1], from_cache=True)
    raise FetchError(f"all {len(srcs)} source(s) failed:\n" + "\n".join(failures))



_RACY_NS = 2_000_000_000  # a file modified this recently may change again within the same mtime tick


def local_sha256(path: Path, memo_dir: Path) -> str:
    """sha256 of a local file, memoised by (path, size, mtime_ns) so an unchanged big file is hashed once.

    A file modified less than 2 s before hashing is not memoised (git's "racy" rule): a second
    write within the same timestamp tick would otherwise keep its old hash.
    """
    st = path.stat()
    memo = memo_dir / hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    if memo.is_file():
        return memo.read_text().strip()
    digest = sha256_file(path)
    if time.time_ns() - st.st_mtime_ns > _RACY_NS:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.part-{uuid.uuid4().hex[:8]}")
        tmp.write_text(digest)
        os.replace(tmp, memo)
    return digest


def _http_validators(uri: str, timeout_s: float) -> dict | None:
    """ETag / Last-Modified / Content-Length from a HEAD request; None when the server gives neither."""
    try:
        with urllib.request.urlopen(urllib.request.Request(uri, method="HEAD"), timeout=timeout_s) as resp:
            found = {k: resp.headers.get(k) for k in ("ETag", "Last-Modified", "Content-Length")}
    except (urllib.error.URLError, OSError):
        return None
    return found if found["ETag"] or found["Last-Modified"] else None


def source_fingerprint(src: Source, cache_dir: Path, *, base_dir: Path | None = None, timeout_s: float = 15.0) -> str:
    """What identifies the bytes behind ``src``, for cache keys: an explicit sha256 wins; a local file's
    sha256; a remote source's ``remote_version``. Otherwise (unreachable or validator-less servers)
    the URI, so the key is only as fresh as that source allows."""
    suffix = f"!{src.member}" if src.member else ""
    if src.sha256:
        return f"sha256:{src.sha256.lower()}{suffix}"
    local = _local_path(src.uri, base_dir)
    if local is not None:
        return f"sha256:{local_sha256(local, Path(cache_dir) / 'hash-memo')}{suffix}" if local.is_file() else src.uri
    if (version := remote_version(src, timeout_s=timeout_s)) is not None:
        return json.dumps({"uri": src.uri, "member": src.member, "version": version}, sort_keys=True)
    return src.uri + suffix
