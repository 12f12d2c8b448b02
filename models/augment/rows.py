"""What every augmentation strategy shares: the result type, input-row checks and progress bars."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple


class AugmentResult(NamedTuple):
    rows: list[dict]
    stats: dict


def validate_rows(rows: Sequence[Mapping[str, Any]], strategy: str) -> None:
    """Each input row has a unique ``id`` and string ``text`` (and ``text_pair``, when given)."""
    seen: set = set()
    for n, row in enumerate(rows):
        missing = [k for k in ("id", "text") if k not in row]
        if missing:
            raise ValueError(f"{strategy}: row {n} has no {', '.join(missing)}")
        if not isinstance(row["text"], str) or not (row.get("text_pair") is None or isinstance(row["text_pair"], str)):
            raise ValueError(f"{strategy}: row {row['id']!r}: text and text_pair must be strings")
        if row["id"] in seen:
            raise ValueError(f"{strategy}: duplicate row id {row['id']!r}")
        seen.add(row["id"])


def check_output_ids(rows: Sequence[Mapping[str, Any]], strategy: str) -> None:
    """A copy's id must not collide with an input's: teacher logits are joined to rows by id."""
    seen: set = set()
    for row in rows:
        if row["id"] in seen:
            raise ValueError(f"{strategy}: output id {row['id']!r} collides with an input id; rename the input rows")
        seen.add(row["id"])


def progress_bar(total: int, desc: str, unit: str, enabled: bool | None = None):
    """A tqdm bar, drawn when asked or (``enabled=None``) when stderr is a terminal."""
    from tqdm.auto import tqdm  # imported on use: the params modules stay light for config validation

    return tqdm(total=total, desc=desc, unit=unit, disable=not (sys.stderr.isatty() if enabled is None else enabled))
