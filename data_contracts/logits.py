"""Teacher logits keyed by example id: joined to tables by id, never by row position."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landing.errors import UserError
from landing.files import atomic_write

FORMAT_VERSION = 1


class LogitsMismatchError(UserError, ValueError):
    """Logits file does not fit the table/teacher/label space it is being used with."""


class LogitsFileError(UserError, ValueError):
    """A logits file that cannot be read (truncated, not an .npz, wrong keys or version, bad values)."""


@dataclass
class TeacherLogits:
    """Logits of one teacher over a set of examples; row i belongs to ids[i]."""

    ids: list[str]
    logits: np.ndarray
    teacher_id: str
    num_labels: int
    label_names: list[str]

    def validate(self, where: str = "teacher logits") -> None:
        """Shape/uniqueness/finiteness checks shared by write and read."""
        arr = np.asarray(self.logits)
        if arr.ndim != 2 or arr.shape[0] != len(self.ids) or arr.shape[1] != self.num_labels:
            raise ValueError(f"{where}: expected logits shape ({len(self.ids)}, {self.num_labels}), found {arr.shape}")
        if len(self.label_names) != self.num_labels:
            raise ValueError(f"{where}: expected {self.num_labels} label names, found {len(self.label_names)}: {self.label_names}")
        if len(set(self.ids)) != len(self.ids):
            dupes = [i for i, c in Counter(self.ids).items() if c > 1]
            raise ValueError(f"{where}: expected unique ids, found {len(dupes)} duplicate(s), e.g. {dupes[:5]}")
        if not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
            raise ValueError(f"{where}: expected finite logits, found non-finite values in {len(bad)} row(s), e.g. ids {[self.ids[i] for i in bad[:5]]}")


def write_logits(path: str | Path, logits: TeacherLogits) -> None:
    """Validate, then write .npz atomically (readers never see a partial file)."""
    logits.validate(f"logits for {path}")
    meta = {
        "format_version": FORMAT_VERSION,
        "teacher_id": logits.teacher_id,
        "num_labels": int(logits.num_labels),
        "label_names": list(logits.label_names),
    }
    with atomic_write(path, "wb") as fh:
        np.savez(
            fh,
            ids=np.array(logits.ids, dtype=np.str_),
            logits=np.asarray(logits.logits, dtype=np.float32),
            meta=np.array([json.dumps(meta)], dtype=np.str_),
        )


def read_logits(path: str | Path) -> TeacherLogits:
    """Load and validate a logits .npz written by write_logits (no pickle)."""
    src = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = sorted({"ids", "logits", "meta"} - set(npz.files))
            if missing:
                raise LogitsFileError(f"{src}: not a teacher logits file: missing key(s) {missing}, found {sorted(npz.files)}")
            ids = [str(i) for i in npz["ids"].tolist()]
            arr = npz["logits"].astype(np.float32)
            meta = json.loads(str(npz["meta"][0]))
    except LogitsFileError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:  # cut short, or not an .npz at all
        raise LogitsFileError(f"{src}: not a readable logits .npz ({type(exc).__name__}: {exc})") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise LogitsFileError(f"{src}: unknown logits format_version: expected {FORMAT_VERSION}, found {version!r}")
    try:
        out = TeacherLogits(ids, arr, str(meta["teacher_id"]), int(meta["num_labels"]), list(meta["label_names"]))
    except KeyError as e:
        raise LogitsFileError(f"{src}: logits meta is missing key {e.args[0]!r}") from None
    try:
        out.validate(src)
    except ValueError as exc:
        raise LogitsFileError(str(exc)) from None
    return out


def align_logits(
    table_ids: Sequence[str],
    logits: TeacherLogits,
    *,
    expected_teacher_id: str | None,
    expected_num_labels: int,
    expected_label_names: list[str] | None = None,
) -> np.ndarray:
    """Rows of logits in table_ids order ([len(table_ids), num_labels] float32); extra file ids are ignored."""
    if expected_teacher_id is not None and logits.teacher_id != expected_teacher_id:
        raise LogitsMismatchError(f"teacher id mismatch: expected {expected_teacher_id!r}, logits file has {logits.teacher_id!r}")
    if logits.num_labels != expected_num_labels:
        raise LogitsMismatchError(f"num_labels mismatch: expected {expected_num_labels}, logits file has {logits.num_labels}")
    if expected_label_names is not None and list(logits.label_names) != list(expected_label_names):
        raise LogitsMismatchError(f"label names mismatch: expected {list(expected_label_names)}, logits file has {list(logits.label_names)}")
    row_of = {i: r for r, i in enumerate(logits.ids)}
    missing = [i for i in table_ids if i not in row_of]
    if missing:
        raise LogitsMismatchError(
            f"{len(missing)} of {len(table_ids)} table id(s) have no teacher logits (teacher {logits.teacher_id!r}), e.g. {missing[:5]}"
        )
    rows = np.fromiter((row_of[i] for i in table_ids), dtype=np.int64, count=len(table_ids))
    return np.asarray(logits.logits, dtype=np.float32).reshape(-1, logits.num_labels)[rows]
