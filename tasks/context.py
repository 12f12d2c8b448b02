"""What every step needs to know about the flow run it belongs to, and artifact I/O by manifest.

Steps exchange manifests (URI + sha256), never tensors or frames: any worker
that can reach the object store can run any step, and a cached copy whose hash
matches is reused instead of downloaded again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from prefect.cache_policies import CacheKeyFnPolicy
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from landing.data_contracts.logits import TeacherLogits, read_logits
from landing.data_contracts.manifest import ArtifactManifest, DatasetManifest, LogitsManifest, ModelManifest
from landing.data_contracts.validation import read_canonical
from landing.files import sha256_file
from landing.infra.object_store import open_store, store_for_uri
from landing.infra.settings import LandingSettings, get_settings


class RunContext(BaseModel):
    parent_run_id: str
    flow_run_id: str
    run_key: str  # object-store prefix of this flow run's artifacts
    seed: int

    def key(self, *parts: str) -> str:
        return "/".join((self.run_key, *parts))


# Subpackages first: in a wheel they sit inside landing/, and each file is hashed once.
CODE_PACKAGES = ("landing.models", "landing.data_contracts", "landing.tasks", "landing.infra", "landing.flows", "landing")
KEYED_LIBRARIES = ("torch", "transformers", "onnxruntime", "onnx")


def package_roots() -> dict[str, Path]:
    """Each code package and the folder its sources are read from: found, not imported (a task must not
    import the flows above it to hash their files)."""
    return {pkg: Path(importlib.util.find_spec(pkg).origin).resolve().parent for pkg in CODE_PACKAGES}


@functools.cache
def code_digest() -> str:
    """sha256 over this project's source files (sorted module paths + bytes), once per process.

    A step's result depends on everything it imports, not only on its own function, so a
    fix in models/kd.py must re-run the KD student; this supersedes Prefect's TASK_SOURCE.
    The same files give the same digest in an editable and a wheel install.
    """
    files: dict[Path, str] = {}
    for package, root in package_roots().items():
        for path in root.rglob("*.py"):
            files.setdefault(path.resolve(), f"{package}:{path.relative_to(root).as_posix()}")
    h = hashlib.sha256()
    for path, name in sorted(files.items(), key=lambda item: item[1]):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def environment_digest() -> str:
    """Code digest plus the versions of the libraries that compute the numbers."""
    from landing.infra.provenance import package_versions

    blob = json.dumps({"code": code_digest(), "libraries": package_versions(KEYED_LIBRARIES)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _step_cache_key(_context: Any, parameters: dict[str, Any]) -> str:
    """What defines a step's result: its manifests (URI + sha256), parameters, seed, code and library versions.

    The run-specific ids in ``RunContext`` are left out, so a re-run with the same inputs
    reuses the result; the object store (its URI and the id at its root) is put in, so a hit
    always points at artifacts that live where this run reads from, also after the store was
    wiped. A ``download`` step's table is keyed on the bytes behind its sources
    (``infra.fetch.source_fingerprint``), not on their URIs.
    """
    stable = {k: (v.seed if isinstance(v, RunContext) else v) for k, v in parameters.items()}
    stable["__object_store__"] = _store_identity(get_settings().resolved_object_store_uri())
    stable["__environment__"] = environment_digest()
    if "table" in parameters and "base_dir" in parameters:
        stable["__content__"] = _table_content(parameters["table"], Path(parameters["base_dir"]))
    jsonable = to_jsonable_python(stable)
    jsonable["__models__"] = {path: _model_dir_digest(path) for path in sorted(_local_model_dirs(jsonable))}
    blob = json.dumps(jsonable, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


MODEL_KEYS = ("name_or_path", "mlm_model", "mlm_base", "tokenizer", "base")  # where a spec names a model


def _local_model_dirs(node: Any) -> set[str]:
    """Every local model directory a step's parameters name (offline aliases resolved): its files, not its
    path, are what the result depends on, so a model replaced in place re-runs the step."""
    from landing.models.pretrained import resolve_name_or_path

    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in MODEL_KEYS and isinstance(value, str):
                path = Path(resolve_name_or_path(value)).expanduser()
                if path.is_dir():
                    found.add(str(path.resolve()))
            else:
                found |= _local_model_dirs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _local_model_dirs(value)
    return found


def _model_dir_digest(path: str) -> str:
    """sha256 over the directory's files (names and bytes), memoised on their sizes and modification times."""
    files = sorted(p for p in Path(path).iterdir() if p.is_file())
    return _files_digest(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.cache
def _files_digest(files: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in files:
        h.update(Path(name).name.encode() + b"\0")
        with open(name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@functools.cache
def _store_identity(store_uri: str) -> str:
    """The store's URI and the id written at its root, read once per process."""
    return f"{store_uri}#{open_store(store_uri).store_id()}"


def _table_content(table: Any, base_dir: Path) -> list[str]:
    from landing.infra.fetch import Source, source_fingerprint

    settings = get_settings()
    return [
        source_fingerprint(Source(uri=s.uri, sha256=s.sha256, member=s.member), settings.cache_dir, base_dir=base_dir)
        for s in table.sources
    ]


# Re-running a flow with the same inputs skips finished steps; changing one input, parameter or
# source file re-runs that step and, through the new manifests it returns, the steps downstream.
STEP_CACHE = CacheKeyFnPolicy(cache_key_fn=_step_cache_key)


class IntegrityError(RuntimeError):
    """An artifact whose bytes do not match the sha256 its manifest promised."""


def _cache(settings: LandingSettings, *parts: str) -> Path:
    path = Path(settings.cache_dir, *parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def publish_file(local_path: Path, key: str) -> tuple[str, str]:
    """Upload atomically; returns (uri, sha256)."""
    return open_store(settings=get_settings()).put_file(local_path, key), sha256_file(local_path)


def publish_dir(local_dir: Path, key: str) -> str:
    return open_store(settings=get_settings()).put_dir(local_dir, key)


def fetch_file(manifest: ArtifactManifest | DatasetManifest, suffix: str = "") -> Path:
    """Local copy of a manifest's file, checked against its sha256 and cached by it."""
    settings = get_settings()
    target = _cache(settings, "objects", manifest.sha256 + suffix)
    if target.exists() and sha256_file(target) == manifest.sha256:
        return target
    store_for_uri(manifest.uri, settings=settings).get_file(manifest.uri, target)
    found = sha256_file(target)
    if found != manifest.sha256:
        target.unlink(missing_ok=True)
        raise IntegrityError(f"{manifest.uri}: sha256 {found} does not match the manifest's {manifest.sha256}")
    return target


def fetch_dataset(manifest: DatasetManifest) -> pd.DataFrame:
    return read_canonical(fetch_file(manifest, ".jsonl"))


def fetch_logits(manifest: LogitsManifest) -> TeacherLogits:
    return read_logits(fetch_file(manifest, ".npz"))


def fetch_model_dir(manifest: ModelManifest) -> Path:
    """Local copy of a saved model directory, cached by its weights' sha256."""
    from landing.models.loading import weights_sha256

    settings = get_settings()
    target = _cache(settings, "models", manifest.sha256)
    if target.is_dir() and weights_sha256(target) == manifest.sha256:
        return target
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    store_for_uri(manifest.uri, settings=settings).get_dir(manifest.uri, staging)
    found = weights_sha256(staging)
    if found != manifest.sha256:
        shutil.rmtree(staging, ignore_errors=True)
        raise IntegrityError(f"{manifest.uri}: weights sha256 {found} does not match the manifest's {manifest.sha256}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def scratch_dir(*parts: str) -> Path:
    path = Path(get_settings().state_dir, "work", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
