"""The one line between a user's mistake and a bug (the bottom layer; imports nothing of ours).

Exceptions about the user's input (config, data, model files, sources, CLI arguments) derive from
:class:`UserError`: the CLI prints their message alone and exits non-zero, Prefect and MLflow record
the same message, and no traceback is shown unless ``--debug`` (or ``LANDING_DEBUG=1``). Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator

DEBUG_VARIABLE = "LANDING_DEBUG"


class UserError(Exception):
    """A mistake in the user's input; the message names their file, line or key, what was expected and found."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and what it was raised from (``raise ... from`` / context chains; Prefect wraps some)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def user_error_in(exc: BaseException | None) -> UserError | None:
    """The UserError behind ``exc``."""
    return next((e for e in exception_chain(exc) if isinstance(e, UserError)), None)


# How libraries word a full disk (OSError ENOSPC, safetensors, sqlite, torch), rarely with the path.
DISK_FULL_WORDS = ("no space left on device", "os error 28", "database or disk is full", "disk quota exceeded",
                   "file write failed", "basic_ios::clear: iostream error")  # the last two: torch.save


def disk_full_in(exc: BaseException | None) -> BaseException | None:
    """The exception behind ``exc`` that reports a full disk (something the user fixes, not a bug)."""
    for e in exception_chain(exc):
        if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
            word in str(e).lower() for word in DISK_FULL_WORDS
        ):
            return e
    return None


class QuietUserErrors(logging.Filter):
    """Drops console log records about a UserError, or about anything ``explained`` turns into one (a full
    disk, a server gone: see ``landing.infra.failures``): Prefect logs each failed task and flow, with the
    traceback, up to four times per error, and the CLI prints the error once itself."""

    def __init__(self, explained: Callable[[BaseException], UserError | None] | None = None) -> None:
        super().__init__()
        self.explained = explained or (lambda exc: None)
        self.seen: set[str] = set()  # the start of each error's text, to know its later "Failed(...)" records

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        known = (user_error_in(exc) or disk_full_in(exc) or self.explained(exc)) if exc is not None else None
        if known is not None:
            self.seen |= {_quotable_start(str(known)), _quotable_start(str(exc))} - {""}
            return False
        if not self.seen:
            return True
        message = record.getMessage()  # e.g. the flow's "Finished in state Failed(...)", at INFO
        return not any(start in message for start in self.seen)


def _quotable_start(text: str) -> str:
    """The error text up to its first quote (a state's repr escapes quotes), if long enough to be specific."""
    start = text.split("'")[0].split('"')[0].splitlines()[0] if text else ""
    return start if len(start) >= 20 else ""
