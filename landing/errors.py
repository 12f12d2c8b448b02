"""The one line between a user's mistake and a bug (the bottom layer; imports nothing of ours).

Exceptions about the user's input (config, data, model files, sources, CLI arguments) derive from
:class:`UserError`: the CLI prints their message alone and exits non-zero, Prefect and MLflow record
the same message, and no traceback is shown unless ``--debug`` (or ``LANDING_DEBUG=1``). Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os

DEBUG_VARIABLE = "LANDING_DEBUG"


class UserError(Exception):
    """A mistake in the user's input; the message names their file, line or key, what was expected and found."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def user_error_in(exc: BaseException | None) -> UserError | None:
    """The UserError behind ``exc``, following ``raise ... from`` / context chains (Prefect wraps some)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class HideUserErrorTracebacks(logging.Filter):
    """Drops the traceback from log records about a UserError (Prefect logs each failed task and flow
    with its traceback); the record's message, which carries the error text, stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and user_error_in(record.exc_info[1]) is not None:
            record.exc_info, record.exc_text = None, None
        return True
