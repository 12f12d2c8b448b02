"""The one place that turns ``file://`` URIs into local paths and back.

Slicing off ``file://`` keeps percent-escapes (``%20``) literally, so a state directory
with a space or ``%`` in its name breaks; ``urllib`` decodes exactly once.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

FILE_SCHEME = "file://"


def is_local(uri: str) -> bool:
    """True for a ``file://`` URI or a plain path (no scheme)."""
    return uri.startswith(FILE_SCHEME) or "://" not in uri


def uri_to_path(uri: str) -> Path:
    """``file:///a/b%20c`` → ``Path('/a/b c')``; a plain path is returned as a ``Path`` unchanged.

    Raises ValueError for other schemes and for ``file://host/...`` (a remote host cannot be a local path).
    """
    if not uri.startswith(FILE_SCHEME):
        if "://" in uri:
            raise ValueError(f"not a local path or file:// URI: {uri!r}")
        return Path(uri)
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"file URI {uri!r} names host {parsed.netloc!r}; expected file:///absolute/path")
    return Path(url2pathname(parsed.path))


def path_to_uri(path: str | Path) -> str:
    """Absolute, percent-encoded ``file://`` URI of a local path (relative paths resolved against the cwd)."""
    return Path(path).expanduser().resolve().as_uri()
