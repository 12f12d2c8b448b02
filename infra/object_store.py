"""One object-store interface over ``file://`` and ``s3://`` so flows can hand large
intermediates (checkpoints, datasets) between steps/machines by URI.

Writes are atomic (no reader ever sees a partial object under its final key) and
directories are published with a ``_COMPLETE`` marker written last."""

from __future__ import annotations

import functools
import json
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from landing.errors import UserError
from landing.files import atomic_path
from landing.infra.uris import uri_to_path

if TYPE_CHECKING:
    from landing.infra.settings import LandingSettings

COMPLETE_MARKER = "_COMPLETE"
STORE_ID_KEY = ".landing-store-id"
SUPPORTED_SCHEMES = ("file://", "s3://")
_TMP_TAG = ".landing-tmp-"


class ObjectStoreError(UserError, RuntimeError):
    """Store unreachable, misconfigured or refusing the credentials: something the user fixes (start the
    server, correct the endpoint or key), so the message, which names the endpoint and operation, is enough."""


class NoSuchBucketError(FileNotFoundError):
    """The bucket itself is missing (not only the object)."""


# S3 error codes meaning "these credentials are not accepted here".
CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden",
                     "InvalidToken", "ExpiredToken"}  # fmt: skip
CREDENTIALS_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or LANDING_AWS_ACCESS_KEY_ID / "
                    "LANDING_AWS_SECRET_ACCESS_KEY) to a key this endpoint accepts")  # fmt: skip


class IncompleteDirectoryError(ObjectStoreError):
    """Directory exists but has no ``_COMPLETE`` marker (writer crashed or still writing)."""


def _is_tmp(name: str) -> bool:
    return _TMP_TAG in name


class ObjectStore(ABC):
    """Common API. Methods taking ``uri`` accept a full URI or a key relative to the root."""

    @abstractmethod
    def uri_for(self, key: str) -> str: ...

    @abstractmethod
    def put_file(self, local_path: str | os.PathLike[str], key: str) -> str: ...

    @abstractmethod
    def get_file(self, uri: str, local_path: str | os.PathLike[str]) -> Path: ...

    @abstractmethod
    def exists(self, uri: str) -> bool: ...

    @abstractmethod
    def list(self, uri_prefix: str) -> list[str]:
        """Full URIs of all objects under ``uri_prefix`` treated as a directory, sorted."""

    def version(self, uri: str) -> str | None:
        """What identifies the object's current bytes without reading them (S3: its ETag); None if unknown."""
        return None

    @abstractmethod
    def check(self) -> None:
        """Cheap reachability probe; raises ObjectStoreError."""

    @abstractmethod
    def _put_bytes(self, data: bytes, key: str) -> str: ...

    @abstractmethod
    def _read_bytes(self, uri: str) -> bytes: ...

    @abstractmethod
    def _delete(self, uri: str) -> None: ...

    def _join(self, uri: str, rel: str) -> str:
        return uri.rstrip("/") + "/" + rel

    def put_dir(self, local_dir: str | os.PathLike[str], key_prefix: str) -> str:
        """Upload every file, then the ``_COMPLETE`` marker (a manifest) last."""
        root = Path(local_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"not a directory: {root}")
        prefix = key_prefix.strip("/")
        # Unpublish first so a re-upload is never seen as complete while half-overwritten.
        self._delete(self.uri_for(f"{prefix}/{COMPLETE_MARKER}"))
        files = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.name != COMPLETE_MARKER and not _is_tmp(p.name)
        )
        for rel in files:
            self.put_file(root / rel, f"{prefix}/{rel}")
        manifest = json.dumps({"files": files}, indent=1).encode()
        self._put_bytes(manifest, f"{prefix}/{COMPLETE_MARKER}")
        return self.uri_for(prefix)

    def store_id(self) -> str:
        """A random id written once at the store's root: a wiped (or new) store gets a new one, so cache
        keys that include it never point at artifacts that are gone."""
        try:
            return self._read_bytes(self.uri_for(STORE_ID_KEY)).decode().strip()
        except FileNotFoundError:
            new_id = uuid.uuid4().hex
            self._put_bytes(new_id.encode(), STORE_ID_KEY)
            return new_id

    def is_complete_dir(self, uri: str) -> bool:
        return self.exists(self._join(uri, COMPLETE_MARKER))

    def get_dir(self, uri: str, local_dir: str | os.PathLike[str]) -> Path:
        """Download a directory published by ``put_dir``; refuses unfinished ones."""
        marker = self._join(uri, COMPLETE_MARKER)
        try:
            manifest = json.loads(self._read_bytes(marker))
        except FileNotFoundError:
            if self.list(uri):
                raise IncompleteDirectoryError(
                    f"{uri} has no {COMPLETE_MARKER} marker: it is incomplete "
                    "(writer crashed or still uploading); refusing to read it"
                ) from None
            raise FileNotFoundError(f"no such directory in object store: {uri}") from None
        dest = Path(local_dir)
        dest.mkdir(parents=True, exist_ok=True)
        for rel in manifest["files"]:
            self.get_file(self._join(uri, rel), dest / rel)
        return dest


class FileObjectStore(ObjectStore):
    """Local-filesystem store (default; also works on shared mounts)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"FileObjectStore({self.root.as_uri()})"

    def _path(self, uri_or_key: str) -> Path:
        if uri_or_key.startswith("file://"):
            return uri_to_path(uri_or_key)
        if "://" in uri_or_key:
            raise ValueError(f"{self!r} cannot handle {uri_or_key!r}")
        return self.root / uri_or_key.lstrip("/")

    def uri_for(self, key: str) -> str:
        return (self.root / key.strip("/")).as_uri() if key.strip("/") else self.root.as_uri()

    def _atomic_write(self, dest: Path, writer: Any) -> None:
        with atomic_path(dest, suffix=_TMP_TAG) as tmp:  # listings skip names with the tag
            writer(tmp)

    def put_file(self, local_path: str | os.PathLike[str], key: str) -> str:
        src = Path(local_path)
        if not src.is_file():
            raise FileNotFoundError(f"no such local file: {src}")
        dest = self._path(key)
        self._atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
        return dest.as_uri()

    def _put_bytes(self, data: bytes, key: str) -> str:
        dest = self._path(key)
        self._atomic_write(dest, lambda tmp: tmp.write_bytes(data))
        return dest.as_uri()

    def get_file(self, uri: str, local_path: str | os.PathLike[str]) -> Path:
        src, dest = self._path(uri), Path(local_path)
        if not src.is_file():
            raise FileNotFoundError(f"no such object: {src.as_uri()}")
        self._atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
        return dest

    def _read_bytes(self, uri: str) -> bytes:
        path = self._path(uri)
        if not path.is_file():
            raise FileNotFoundError(f"no such object: {path.as_uri()}")
        return path.read_bytes()

    def _delete(self, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def list(self, uri_prefix: str) -> list[str]:
        base = self._path(uri_prefix)
        if not base.is_dir():
            return []
        return sorted(
            p.as_uri() for p in base.rglob("*") if p.is_file() and not _is_tmp(p.name)
        )

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ObjectStoreError(
                f"object store {self.root.as_uri()} is not usable (check): {e}"
            ) from e
        if not os.access(self.root, os.W_OK):
            raise ObjectStoreError(f"object store {self.root.as_uri()} is not writable (check)")


@functools.cache
def transfer_config():
    """Multipart above 64 MiB in 16 MiB parts, 4 at a time (boto3 is imported only when S3 is used)."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20, max_concurrency=4)


class S3ObjectStore(ObjectStore):
    """S3-protocol store (AWS, MinIO, rclone serve s3, moto...)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: Any | None = None,
        *,
        region: str = "us-east-1",
        settings: LandingSettings | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._bucket_ready = False
        self.client = client if client is not None else self._make_client(region, settings)

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.uri_for('')}, endpoint={self.endpoint_url or 'aws-default'})"

    def _make_client(self, region: str, settings: LandingSettings | None) -> Any:
        import boto3
        from botocore.config import Config

        # botocore's "standard" retry mode: 3 attempts in all per request (each multipart part on its own),
        # exponential backoff with jitter, on throttling, 5xx and connection errors; with a 3 s connect
        # timeout a dead endpoint fails in seconds, while a blip or a busy server is ridden out.
        cfg = Config(
            region_name=region,
            connect_timeout=3,
            read_timeout=settings.http_timeout_s * 4 if settings else 60,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if self.endpoint_url else {},
        )
        creds: dict[str, str] = {}
        if settings and settings.aws_access_key_id and settings.aws_secret_access_key:
            creds = {
                "aws_access_key_id": settings.aws_access_key_id.get_secret_value(),
                "aws_secret_access_key": settings.aws_secret_access_key.get_secret_value(),
            }
        return boto3.client("s3", endpoint_url=self.endpoint_url, config=cfg, **creds)

    @property
    def _where(self) -> str:
        return self.endpoint_url or "default AWS S3 endpoint"

    def _bk(self, uri_or_key: str) -> tuple[str, str]:
        """(bucket, key) for a full s3:// URI or a key relative to this store's prefix."""
        if uri_or_key.startswith("s3://"):
            p = urlparse(uri_or_key)
            return p.netloc, p.path.lstrip("/")
        if "://" in uri_or_key:
            raise ValueError(f"{self!r} cannot handle {uri_or_key!r}")
        key = uri_or_key.strip("/")
        return self.bucket, "/".join(x for x in (self.prefix, key) if x)

    def uri_for(self, key: str) -> str:
        bucket, k = self._bk(key)
        return f"s3://{bucket}/{k}"

    def _call(self, op: str, uri: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a boto3 call, translating errors into FileNotFoundError / ObjectStoreError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                raise NoSuchBucketError(f"no such bucket {urlparse(uri).netloc!r} at {self._where}") from None
            if code in {"404", "NoSuchKey", "NotFound"}:
                raise FileNotFoundError(f"no such object: {uri}") from None
            if code in {"403", "Forbidden"} and op != "list_buckets":  # a HEAD's bare 403: say which it is
                self._explain_forbidden(uri)
            if code in CREDENTIAL_ERRORS:
                raise ObjectStoreError(
                    f"S3 {op} {uri}: {self._where} refused the credentials ({code}); {CREDENTIALS_HINT}"
                ) from None
            raise ObjectStoreError(f"S3 {op} {uri} at {self._where} failed: {e}") from e
        except BotoCoreError as e:
            raise ObjectStoreError(
                f"S3 {op} {uri}: endpoint {self._where} unreachable or failing: {e}"
            ) from e

    def _ensure_bucket(self, bucket: str) -> None:
        if self._bucket_ready and bucket == self.bucket:
            return
        try:
            self._call("head_bucket", f"s3://{bucket}", self.client.head_bucket, Bucket=bucket)
        except FileNotFoundError:
            self._create_bucket(bucket)
        if bucket == self.bucket:
            self._bucket_ready = True

    def _create_bucket(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        region = self.client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._call("create_bucket", f"s3://{bucket}", self.client.create_bucket, **kwargs)
        except ObjectStoreError as e:
            cause = e.__cause__
            if not (
                isinstance(cause, ClientError)
                and cause.response.get("Error", {}).get("Code")
                in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
            ):
                raise

    def put_file(self, local_path: str | os.PathLike[str], key: str) -> str:
        src = Path(local_path)
        if not src.is_file():
            raise FileNotFoundError(f"no such local file: {src}")
        bucket, k = self._bk(key)
        uri = f"s3://{bucket}/{k}"
        self._ensure_bucket(bucket)
        # The transfer manager: one PUT, or a multipart upload above transfer_config()'s threshold whose parts are
        # retried one by one and which is aborted on failure; either way the object appears whole or not at all.
        self._call("put_file", uri, self.client.upload_file, str(src), bucket, k, Config=transfer_config())
        return uri

    def _put_bytes(self, data: bytes, key: str) -> str:
        bucket, k = self._bk(key)
        uri = f"s3://{bucket}/{k}"
        self._ensure_bucket(bucket)
        self._call("put_object", uri, self.client.put_object, Bucket=bucket, Key=k, Body=data)
        return uri

    def get_file(self, uri: str, local_path: str | os.PathLike[str]) -> Path:
        bucket, k = self._bk(uri)
        full = f"s3://{bucket}/{k}"
        dest = Path(local_path)
        try:
            with atomic_path(dest, suffix=_TMP_TAG) as tmp:
                self._call("get_file", full, self.client.download_file, bucket, k, str(tmp), Config=transfer_config())
        except FileNotFoundError:
            if not self._bucket_exists(bucket):  # S3 answers a bare 404 for both
                raise NoSuchBucketError(f"no such bucket {bucket!r} at {self._where}") from None
            raise
        return dest

    def _explain_forbidden(self, uri: str) -> None:
        """A HEAD request's 403 has no body: bad credentials, or (some servers) a bucket that does not exist.
        Listing the buckets tells them apart; returns when it cannot (the caller then reports the 403)."""
        try:
            listed = self._call("list_buckets", uri, self.client.list_buckets)
        except (ObjectStoreError, FileNotFoundError):
            return
        bucket = urlparse(uri).netloc
        if bucket not in {b["Name"] for b in listed.get("Buckets", [])}:
            raise NoSuchBucketError(f"no such bucket {bucket!r} at {self._where}")
        raise ObjectStoreError(f"S3 access to {uri} denied at {self._where} (403): the key is valid but "
                               "lacks permission for this bucket or object")  # fmt: skip

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self._call("head_bucket", f"s3://{bucket}", self.client.head_bucket, Bucket=bucket)
        except FileNotFoundError:
            return False
        return True

    def _read_bytes(self, uri: str) -> bytes:
        bucket, k = self._bk(uri)
        full = f"s3://{bucket}/{k}"
        resp = self._call("get_object", full, self.client.get_object, Bucket=bucket, Key=k)
        return resp["Body"].read()

    def _delete(self, uri: str) -> None:
        bucket, k = self._bk(uri)
        try:
            self._call("delete", f"s3://{bucket}/{k}", self.client.delete_object, Bucket=bucket, Key=k)
        except FileNotFoundError:
            pass

    def exists(self, uri: str) -> bool:
        bucket, k = self._bk(uri)
        try:
            self._call("head_object", f"s3://{bucket}/{k}", self.client.head_object, Bucket=bucket, Key=k)
        except FileNotFoundError:
            return False
        return True

    def version(self, uri: str) -> str | None:
        bucket, k = self._bk(uri)
        try:
            head = self._call("head_object", f"s3://{bucket}/{k}", self.client.head_object, Bucket=bucket, Key=k)
        except (FileNotFoundError, ObjectStoreError):
            return None
        return f"etag:{head.get('ETag')}:{head.get('ContentLength')}" if head.get("ETag") else None

    def list(self, uri_prefix: str) -> list[str]:
        bucket, k = self._bk(uri_prefix)
        prefix = k.rstrip("/") + "/" if k else ""
        out: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in self._call("list", f"s3://{bucket}/{prefix}", list, pages):
                out.extend(f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []))
        except FileNotFoundError:  # bucket does not exist yet → nothing under it
            return []
        return sorted(out)

    def check(self) -> None:
        try:
            self._call("head_bucket", self.uri_for(""), self.client.head_bucket, Bucket=self.bucket)
        except FileNotFoundError:
            pass  # reachable; the bucket is created on first write


def _split_s3(uri: str) -> tuple[str, str]:
    p = urlparse(uri)
    if not p.netloc:
        raise ValueError(f"S3 URI without bucket: {uri!r}")
    return p.netloc, p.path.strip("/")


def _unsupported(uri: str) -> ValueError:
    return ValueError(
        f"unsupported object store URI {uri!r}; supported schemes: {', '.join(SUPPORTED_SCHEMES)} "
        "(or a plain local path)"
    )


def _s3_store(bucket: str, prefix: str, settings: LandingSettings) -> S3ObjectStore:
    return S3ObjectStore(
        bucket, prefix, settings.s3_endpoint_url, region=settings.s3_region, settings=settings
    )


def open_store(root_uri: str | None = None, settings: LandingSettings | None = None) -> ObjectStore:
    """Store rooted at ``root_uri`` (default: the configured ``object_store_uri``)."""
    from landing.infra.settings import get_settings

    settings = settings or get_settings()
    uri = root_uri or settings.resolved_object_store_uri()
    if uri.startswith("s3://"):
        return _s3_store(*_split_s3(uri), settings)
    if uri.startswith("file://"):
        return FileObjectStore(uri_to_path(uri))
    if "://" in uri:
        raise _unsupported(uri)
    return FileObjectStore(Path(uri))


def store_for_uri(uri: str, settings: LandingSettings | None = None) -> ObjectStore:
    """Store able to read an arbitrary object URI (bucket root / filesystem root)."""
    from landing.infra.settings import get_settings

    if uri.startswith("s3://"):
        return _s3_store(_split_s3(uri)[0], "", settings or get_settings())
    if uri.startswith("file://") or "://" not in uri:
        return FileObjectStore(Path("/"))
    raise _unsupported(uri)


def check_reachable(store: ObjectStore) -> None:
    """Fail fast at flow start instead of after an hour of training."""
    store.check()
