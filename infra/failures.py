"""Failures of the machine or a service, said as such: what ran out or went away, and what to do.

They are not bugs, and the user fixes them (free space, start the server), so they become
:class:`UserError` s with one message instead of a library's traceback:

- a full disk: libraries word it in their own ways and rarely with the path
  (``landing.errors.disk_full_in`` recognises them), so the directory is found by looking at the
  filesystems a run writes to: the state directory, the output directory, a local object store
  and the temp dir;
- the MLflow tracking server gone: MLflow raises ``MlflowException("API request to ... failed")``
  once its HTTP retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``) are spent.

An unreachable S3 endpoint is already an ``ObjectStoreError`` naming it (``infra.object_store``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from landing.errors import DISK_FULL_WORDS, UserError, disk_full_in, exception_chain
from landing.infra.settings import get_settings
from landing.infra.uris import uri_to_path


class DiskFullError(UserError):
    """A write failed because a filesystem is full; names the directory and the free space."""


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def run_directories(output_dir: str | Path | None = None) -> dict[str, Path]:
    """What a run writes to, by the name a user knows it by."""
    settings = get_settings()
    found = {"state directory (LANDING_STATE_DIR)": settings.state_dir, "temp directory (TMPDIR)": Path(tempfile.gettempdir())}
    store = settings.resolved_object_store_uri()
    if store.startswith("file://"):
        found["object store (LANDING_OBJECT_STORE_URI)"] = uri_to_path(store)
    if output_dir is not None:
        found["output directory (--output-dir)"] = Path(output_dir)
    return found


class TrackingUnavailableError(UserError):
    """The MLflow tracking server stopped answering during a run."""


def explain_failure(exc: BaseException, output_dir: str | Path | None = None) -> UserError | None:
    """The UserError saying what went wrong with the machine or a service, when that is what ``exc`` is."""
    return disk_full_error(exc, output_dir) or tracking_unavailable_error(exc)


def tracking_unavailable_error(exc: BaseException) -> TrackingUnavailableError | None:
    for e in exception_chain(exc):
        if isinstance(e, TrackingUnavailableError):
            return e
        text = str(e)
        if type(e).__name__ == "MlflowException" and text.startswith("API request to") and (
            "Max retries exceeded" in text or "Connection" in text
        ):
            uri = get_settings().resolved_tracking_uri()
            return TrackingUnavailableError(
                f"the MLflow tracking server {uri} stopped answering ({_connection_reason(text)}); start it again "
                "(make up) or point LANDING_TRACKING_URI at a running one, then run the same command again: "
                "finished steps are reused"
            )
    return None


def _connection_reason(text: str) -> str:
    for reason in ("Connection refused", "timed out", "Name or service not known", "Connection reset"):
        if reason.lower() in text.lower():
            return reason.lower()
    return text.splitlines()[0][:160]


def disk_full_error(exc: BaseException, output_dir: str | Path | None = None) -> DiskFullError | None:
    """A DiskFullError naming the fullest of the run's directories, when ``exc`` is a full disk; else None."""
    if isinstance(exc, DiskFullError):
        return exc
    if (cause := disk_full_in(exc)) is None:
        return None
    said = next((line for line in str(cause).splitlines() if any(w in line.lower() for w in DISK_FULL_WORDS)), "")
    usage = {name: shutil.disk_usage(_existing(Path(path).resolve())) for name, path in run_directories(output_dir).items()}
    name = min(usage, key=lambda n: usage[n].free)
    path, free = run_directories(output_dir)[name], usage[name]
    return DiskFullError(
        f"no space left on the filesystem of the {name}, {path} ({free.free / 2**20:.1f} MiB of "
        f"{free.total / 2**20:.0f} MiB free after the failed write); free space there or point it at a larger disk, "
        f"then run the same command again: finished steps are reused. ({type(cause).__name__}: {said.strip()[:200]})",
    )
