"""One flow run at a time per state directory.

Two runs on one state directory would share the sqlite tracking store, the step cache and the
checkpoint folders, and a checkpoint one run is resuming can be one the other is writing. The
second run therefore waits for the first (``lock_timeout_s``; its finished steps are then cached
for it) or, when the wait runs out, stops with a message naming the lock and who holds it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from landing.errors import UserError
from landing.files import write_bytes_atomic
from landing.infra.settings import get_settings

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"


class StateDirLockedError(UserError, TimeoutError):
    """Another run held the state directory for longer than this one would wait."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return "another landing process"
    return f"pid {info['pid']} on {info['host']} since {info['since']} ({info['command']})"


@contextmanager
def state_dir_lock(state_dir: Path | None = None, timeout_s: float | None = None) -> Iterator[None]:
    """Hold ``<state_dir>/run.lock`` for the block; re-entrant in one process (a flow calling a flow)."""
    settings = get_settings()
    state_dir = Path(state_dir or settings.state_dir)
    timeout_s = settings.lock_timeout_s if timeout_s is None else timeout_s
    state_dir.mkdir(parents=True, exist_ok=True)
    lock_path, holder_path = state_dir / LOCK_NAME, state_dir / f"{LOCK_NAME}.holder"
    lock = FileLock(lock_path, is_singleton=True)
    if not lock.is_locked:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("waiting for the run that holds %s: %s (up to %s; LANDING_LOCK_TIMEOUT_S)", lock_path,
                        _holder(holder_path), "no limit" if timeout_s < 0 else f"{timeout_s:g} s")  # fmt: skip
            _wait(lock, lock_path, holder_path, timeout_s)
        _record_holder(holder_path)
    else:
        lock.acquire()  # nested: only counts
    try:
        yield
    finally:
        lock.release()


def _wait(lock: FileLock, lock_path: Path, holder_path: Path, timeout_s: float) -> None:
    holder = _holder(holder_path)
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise StateDirLockedError(
            f"{lock_path}: held by {holder} for more than {timeout_s:g} s; wait for it to finish, raise "
            "LANDING_LOCK_TIMEOUT_S (-1 waits without limit), or give this run its own LANDING_STATE_DIR"
        ) from None


def _record_holder(path: Path) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv[:3])}  # fmt: skip  (not the rest: a --set value may be private)
    write_bytes_atomic(path, json.dumps(info).encode())
