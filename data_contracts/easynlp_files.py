"""EasyNLP's prediction and teacher-logits files, byte for byte, plus the ids this project keeps beside them.

EasyNLP's predict writes no header and one tab-separated line per input row: the ``--output_schema``
columns (``predictions`` = the label name, ``probabilities`` / ``logits`` = comma-joined float32 values,
``output`` = every label with its probability and logit, most likely first), then the ``--append_cols``.
A KD command of EasyNLP appends the teacher file's line *n* to table row *n*, so a file from real EasyNLP
carries no ids. Ours write a sidecar (``<file>.ids.json``: the example id of every line, the model and the
file's sha256) so a KD command joins logits by id; a file without a matching sidecar is positional and is
accepted only with exactly one line per table row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landing.data_contracts.logits import LogitsFileError
from landing.files import sha256_file, write_bytes_atomic

OUTPUT_COLUMNS = ("predictions", "probabilities", "logits", "output")
SIDECAR_SUFFIX = ".ids.json"
SIDECAR_FORMAT = "landing-easynlp-ids/1"


def _joined(values: np.ndarray) -> str:
    return ",".join(str(v) for v in np.asarray(values, dtype=np.float32))  # numpy's shortest float32 repr


def prediction_columns(logits: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> list[dict[str, str]]:
    """Per row, every output column as EasyNLP writes it. ``probabilities``: torch's float32 softmax of the
    logits, as EasyNLP's models output them (numpy's differs in the last digit now and then)."""
    logits = np.asarray(logits, dtype=np.float32)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    rows = []
    for row_logits, row_probs in zip(logits, probabilities, strict=True):
        ranked = np.argsort(-row_probs, kind="stable")
        output = [{"pred": labels[i], "prob": float(row_probs[i]), "logit": float(row_logits[i])} for i in ranked]
        rows.append({"predictions": labels[int(ranked[0])], "probabilities": _joined(row_probs),
                     "logits": _joined(row_logits), "output": str(output)})  # fmt: skip
    return rows


def prediction_lines(logits: np.ndarray, probabilities: np.ndarray, labels: list[str], output_schema: list[str],
                     appended: list[list[str]]) -> list[str]:  # fmt: skip
    """The lines of a predict ``--outputs`` file (newline included): output columns, then appended columns."""
    columns = prediction_columns(logits, probabilities, labels)
    return ["\t".join([row[c] for c in output_schema] + extra) + "\n" for row, extra in zip(columns, appended, strict=True)]


def sidecar_path(path: str | Path) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def write_sidecar(outputs: Path, ids: list[str], model: str, labels: list[str], output_schema: list[str]) -> Path:
    """The ids of ``outputs``' lines, bound to its bytes by sha256 (an edited file no longer matches)."""
    payload = {"format": SIDECAR_FORMAT, "sha256": sha256_file(outputs), "model": model, "labels": labels,
               "output_schema": output_schema, "ids": ids}  # fmt: skip
    path = sidecar_path(outputs)
    write_bytes_atomic(path, json.dumps(payload).encode())
    return path


@dataclass(frozen=True)
class LogitsColumns:
    """Where the teacher file's columns are: ``names`` in order, ``logits_name`` among them with ``width`` values."""

    names: list[str]
    logits_name: str
    width: int


@dataclass(frozen=True)
class TeacherFile:
    logits: np.ndarray  # [lines, width], float32
    ids: list[str] | None  # None: positional (no sidecar matching the file)
    model: str | None
    labels: list[str] | None


def read_teacher_file(path: Path, columns: LogitsColumns, source: str | None = None) -> TeacherFile:
    """Read a predict file's logits column; with our sidecar (matching the file's bytes) also its ids."""
    src = source or str(path)
    if not path.is_file():
        raise LogitsFileError(f"logits_saved_path={src}: no such file")
    rows: list[np.ndarray] = []
    where = columns.names.index(columns.logits_name)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != len(columns.names):
                raise LogitsFileError(f"{src}, line {lineno}: expected {len(columns.names)} tab-separated column(s) "
                                      f"({','.join(columns.names)}), found {len(fields)}")  # fmt: skip
            try:
                values = [float(v) for v in fields[where].split(",")]
            except ValueError:
                raise LogitsFileError(f"{src}, line {lineno}, column {columns.logits_name}: expected {columns.width} "
                                      f"comma-separated floats, found {fields[where][:80]!r}") from None  # fmt: skip
            if len(values) != columns.width or not np.all(np.isfinite(values)):
                raise LogitsFileError(f"{src}, line {lineno}, column {columns.logits_name}: expected {columns.width} "
                                      f"finite floats, found {fields[where][:80]!r}")  # fmt: skip
            rows.append(np.asarray(values, dtype=np.float32))
    if not rows:
        raise LogitsFileError(f"{src}: no lines; expected one line of logits per training row")
    logits = np.stack(rows)
    side = sidecar_path(path)
    if side.is_file():
        meta = json.loads(side.read_text())
        if meta.get("format") == SIDECAR_FORMAT and meta.get("sha256") == sha256_file(path):
            if len(meta["ids"]) != len(rows):
                raise LogitsFileError(f"{side}: {len(meta['ids'])} ids for the {len(rows)} lines of {src}")
            return TeacherFile(logits, list(meta["ids"]), meta.get("model"), meta.get("labels"))
    return TeacherFile(logits, None, None, None)
