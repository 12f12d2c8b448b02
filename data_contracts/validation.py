"""Read a data file under a TableContract into the canonical frame, reporting every bad row precisely."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa

from landing.errors import UserError
from landing.files import atomic_write

from .schema import SchemaField, TableContract

MAX_LISTED_ISSUES = 20
_MISSING = object()


@dataclass
class ValidationIssue:
    """One problem, located precisely enough to fix the file by hand."""

    file: str
    line: int | None
    column: str | None
    expected: str
    found: str

    def __str__(self) -> str:
        loc = self.file if self.line is None else f"{self.file}:{self.line}"
        col = f" column '{self.column}':" if self.column is not None else ""
        return f"{loc}:{col} expected {self.expected}, found {self.found}"


class DataFileNotFoundError(UserError, FileNotFoundError):
    """The table named by a config or a command line does not exist."""


class DataValidationError(UserError, ValueError):
    """Raised with all issues collected, so one run shows everything wrong with a file."""

    def __init__(self, issues: list[ValidationIssue]):
        self.issues = list(issues)
        groups: dict[tuple, list[ValidationIssue]] = {}  # the same problem on many rows: one line with its count
        for issue in self.issues:
            groups.setdefault((issue.file, issue.column, issue.expected, issue.found), []).append(issue)
        shown = "\n  ".join(_grouped(same) for same in list(groups.values())[:MAX_LISTED_ISSUES])
        more = len(groups) - MAX_LISTED_ISSUES
        tail = f"\n  ... and {more} more kind(s) of issue" if more > 0 else ""
        super().__init__(f"{len(self.issues)} data validation issue(s):\n  {shown}{tail}")


def _grouped(same: list[ValidationIssue], lines_shown: int = 5) -> str:
    """One issue as it is, or the same issue on several rows: its first lines and how many rows have it."""
    first = same[0]
    if len(same) == 1 or first.line is None:
        return str(first)
    lines = ", ".join(str(i.line) for i in same[:lines_shown]) + (", ..." if len(same) > lines_shown else "")
    col = f" column '{first.column}':" if first.column is not None else ""
    return f"{first.file} lines {lines} ({len(same)} rows):{col} expected {first.expected}, found {first.found}"


@dataclass
class ValidatedTable:
    """A file read under a contract: canonical frame plus what was rejected."""

    frame: pd.DataFrame
    source: str
    rejects: int
    rejects_path: str | None
    contract: TableContract


def example_id(text: str, text_pair: str | None = None) -> str:
    """Content id (join key for teacher logits): stable across files, formats and row order."""
    key = text if text_pair is None else f"{text}\t{text_pair}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass
class _Record:
    """One logical row as parsed, before field checks."""

    line: int
    raw: str
    values: dict[str, Any] | None
    issues: list[ValidationIssue] = field(default_factory=list)


_Line = tuple[int, str, bytes, "ValidationIssue | None"]


def _decoded_lines(path: Path, src: str, encoding: str) -> Iterator[_Line]:
    """Decode line by line so an undecodable byte is reported with its line and offset."""
    offset = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            issue = None
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as e:
                text = raw.decode(encoding, errors="replace")
                issue = ValidationIssue(
                    src, lineno, None, f"valid {encoding} text",
                    f"byte 0x{raw[e.start]:02x} at byte offset {offset + e.start} (byte {e.start} of the line)",
                )
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            offset += len(raw)
            yield lineno, text, raw, issue


def _raw_text(lines: list[_Line]) -> str:
    if any(iss is not None for _, _, _, iss in lines):
        return repr(b"".join(r for _, _, r, _ in lines))
    return "".join(t for _, t, _, _ in lines).rstrip("\r\n")


class _Feed:
    """Iterator over decoded text that remembers which physical lines csv.reader consumed."""

    def __init__(self, lines: Iterator[_Line]):
        self._it = lines
        self.consumed: list[_Line] = []

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        item = next(self._it)
        self.consumed.append(item)
        return item[1]

    def take(self) -> list[_Line]:
        out, self.consumed = self.consumed, []
        return out


def _delimited_rows(
    lines: Iterator[_Line], fmt: str, strip: bool = True
) -> Iterator[tuple[list[_Line], list[str] | None, str | None]]:
    """Yield (physical lines, fields, csv error) per logical row; blank lines are skipped."""
    clean = str.strip if strip else (lambda f: f)
    if fmt == "tsv":
        for item in lines:
            text = item[1].rstrip("\r\n")
            if text.strip():
                yield [item], [clean(f) for f in text.split("\t")], None
        return
    feed = _Feed(lines)
    reader = csv.reader(feed)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield feed.take(), None, str(e)
            continue
        consumed = feed.take()
        if row:
            yield consumed, [clean(f) for f in row], None


def _parse_delimited(path: Path, src: str, contract: TableContract, fmt: str, require_label: bool) -> Iterator[_Record]:
    names = [f.name for f in contract.fields]
    rows = _delimited_rows(_decoded_lines(path, src, contract.encoding), fmt, contract.strip)
    columns = names
    if contract.skip_first_line:
        next(rows, None)
    if contract.has_header:
        first = next(rows, None)
        if first is None:
            raise DataValidationError([ValidationIssue(src, None, None, "a header line", "an empty file")])
        lines, header, err = first
        header_line = lines[0][0]
        bad = [iss for _, _, _, iss in lines if iss is not None]
        if bad or header is None:
            raise DataValidationError(bad or [ValidationIssue(src, header_line, None, "a readable header", str(err))])
        optional = {contract.label_column} if not require_label else set()
        missing = [n for n in names if n not in header and n not in optional]
        dupes = sorted({h for h in header if h in names and header.count(h) > 1})
        issues = [ValidationIssue(src, header_line, n, "column in header", f"header {header}") for n in missing]
        issues += [ValidationIssue(src, header_line, n, "column once in header", f"it {header.count(n)} times") for n in dupes]
        if issues:
            raise DataValidationError(issues)
        columns = header
    for lines, values, err in rows:
        rec = _Record(lines[0][0], _raw_text(lines), None)
        rec.issues += [iss for _, _, _, iss in lines if iss is not None]
        if values is None:
            rec.issues.append(ValidationIssue(src, rec.line, None, "well-formed CSV", repr(err)))
        elif len(values) != len(columns):
            what = "header" if contract.has_header else "input_schema"
            rec.issues.append(ValidationIssue(src, rec.line, None, f"{len(columns)} fields (as in {what})", f"{len(values)} fields"))
        else:
            rec.values = dict(zip(columns, values))
        yield rec


def _parse_jsonl(path: Path, src: str, contract: TableContract) -> Iterator[_Record]:
    for item in _decoded_lines(path, src, contract.encoding):
        lineno, text, _, decode_issue = item
        if not text.strip():
            continue
        rec = _Record(lineno, _raw_text([item]), None)
        if decode_issue is not None:
            rec.issues.append(decode_issue)
        else:
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                rec.issues.append(ValidationIssue(src, lineno, None, "a JSON object", f"invalid JSON ({e.msg} at char {e.pos})"))
            else:
                if isinstance(obj, dict):
                    rec.values = obj
                else:
                    rec.issues.append(ValidationIssue(src, lineno, None, "a JSON object", f"JSON {type(obj).__name__}"))
        yield rec


def _as_str(v: Any, strip: bool = True) -> str | None:
    """Scalar → (stripped) string; None for values that cannot be text (lists, dicts, bools)."""
    if isinstance(v, str):
        return v.strip() if strip else v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return str(v)


def _scalar(v: Any, dtype: str) -> tuple[Any, str | None]:
    """Parse one value to dtype; returns (value, expected-description on failure)."""
    if dtype == "str":
        s = _as_str(v)
        return (s, None) if s is not None else (None, "a string")
    if isinstance(v, bool):
        return None, f"an {dtype}" if dtype == "int" else "a finite float"
    if dtype == "int":
        if isinstance(v, int):
            return v, None
        try:
            return int(str(v).strip()), None
        except ValueError:
            return None, "an int"
    try:
        f = float(v) if isinstance(v, (int, float)) else float(str(v).strip())
    except ValueError:
        return None, "a finite float"
    return (f, None) if math.isfinite(f) else (None, "a finite float")


def _typed(v: Any, spec: SchemaField) -> tuple[Any, str | None]:
    """Parse a field value; count > 1 fields are one comma-separated column (or a JSON list)."""
    if spec.count == 1:
        return _scalar(v, spec.dtype)
    items = v if isinstance(v, list) else str(v).split(",") if isinstance(v, str) else None
    expected = f"{spec.count} comma-separated {spec.dtype} values"
    if items is None or len(items) != spec.count:
        return None, expected
    out = []
    for item in items:
        val, err = _scalar(item, spec.dtype)
        if err is not None:
            return None, f"{expected} ({err} each)"
        out.append(val)
    return out, None


def _check(rec: _Record, src: str, contract: TableContract, require_label: bool, labels: list[str] | None) -> dict[str, Any]:
    """Validate one parsed record's fields; append issues; return the canonical row."""
    assert rec.values is not None
    row: dict[str, Any] = {}
    role = {contract.first_sequence: "text", contract.second_sequence: "text_pair", contract.label_column: "label", contract.id_column: "id"}
    for spec in contract.fields:
        name = role.get(spec.name, spec.name)
        if name == "label" and not require_label:
            continue

        def issue(expected: str, found: str, col: str = spec.name) -> None:
            rec.issues.append(ValidationIssue(src, rec.line, col, expected, found))

        v = rec.values.get(spec.name, _MISSING)
        if v is _MISSING or v is None:
            issue("a value" if name not in ("text", "text_pair") else "non-empty text", "no value" if v is None else "no such key")
            continue
        if name in ("text", "text_pair", "label", "id"):
            s = _as_str(v, contract.strip)
            if s is None:
                issue("a string", repr(v))
            elif not s.strip():
                issue({"text": "non-empty text", "text_pair": "non-empty text", "label": "a label", "id": "an id"}[name], repr(s))
            elif "\x00" in s:  # a binary file read as text, or a broken export; no tokenizer wants it
                issue("text without NUL (\\x00) characters", f"one at character {s.index(chr(0)) + 1}")
            elif name == "label" and labels is not None and s not in labels:
                issue(f"one of {labels!r}", repr(s))
            elif spec.dtype != "str" and (err := _typed(s, spec)[1]) is not None:
                issue(err, repr(s))
            else:
                row[name] = s
            continue
        val, err = _typed(v, spec)
        if err is not None:
            issue(err, repr(v))
        else:
            row[name] = val
    return row


def canonical_frame_schema(has_pair: bool, has_label: bool, labels: list[str] | None) -> pa.DataFrameSchema:
    """Output contract of the canonical frame passed between pipeline steps (extra columns allowed)."""

    def text_col(what: str) -> pa.Column:
        return pa.Column(None, pa.Check(lambda v: isinstance(v, str) and v != "", element_wise=True, error=f"non-empty string {what}"))

    cols: dict[str, pa.Column] = {"id": text_col("id"), "text": text_col("text")}
    if has_pair:
        cols["text_pair"] = text_col("text_pair")
    if has_label:
        checks = [pa.Check(lambda v: isinstance(v, str) and v != "", element_wise=True, error="non-empty string label")]
        if labels is not None:
            checks.append(pa.Check.isin(labels))
        cols["label"] = pa.Column(None, checks)
    return pa.DataFrameSchema(cols, strict=False, name="canonical")


def read_table(
    path: str | Path,
    contract: TableContract,
    *,
    quarantine_path: str | Path | None = None,
    require_label: bool = True,
    source: str | None = None,
) -> ValidatedTable:
    """Read and validate a CSV/TSV/JSONL file; raise on any bad row, or quarantine bad rows if asked.

    ``source`` is how messages name the file (the user's own path or URI when ``path`` is a cached copy).
    """
    p, src = Path(path), source or str(path)
    if not p.is_file():
        raise DataFileNotFoundError(f"data file not found: {src}")
    fmt = contract.resolve_format(p)
    require_label = require_label and contract.label_column is not None
    labels = contract.label_enumerate_values
    records = _parse_jsonl(p, src, contract) if fmt == "jsonl" else _parse_delimited(p, src, contract, fmt, require_label)

    good: list[dict[str, Any]] = []
    bad: list[_Record] = []
    seen_ids: dict[str, int] = {}
    for rec in records:
        row = _check(rec, src, contract, require_label, labels) if rec.values is not None else {}
        if contract.id_column is not None and not rec.issues:
            first = seen_ids.setdefault(row["id"], rec.line)
            if first != rec.line:
                rec.issues.append(ValidationIssue(src, rec.line, contract.id_column, "a unique id", f"{row['id']!r} (first on line {first})"))
        if rec.issues:
            bad.append(rec)
        else:
            good.append(row)

    issues = [i for rec in bad for i in rec.issues]
    if not good and not bad:
        raise DataValidationError([ValidationIssue(src, None, None, "at least one data row", "none")])
    if bad and (quarantine_path is None or not good):
        raise DataValidationError(issues)

    rejects_path = None
    if quarantine_path is not None:
        rejects_path = str(quarantine_path)
        with atomic_write(quarantine_path) as fh:
            for rec in bad:
                fh.write(json.dumps({"line": rec.line, "issues": [str(i) for i in rec.issues], "raw": rec.raw}, ensure_ascii=False) + "\n")

    has_pair = contract.second_sequence is not None
    for row in good:
        if "id" not in row:
            row["id"] = example_id(row["text"], row.get("text_pair"))
    order = ["id", "text"] + (["text_pair"] if has_pair else []) + (["label"] if require_label else []) + contract.extra_field_names
    frame = pd.DataFrame(good, columns=order)
    return ValidatedTable(frame, src, len(bad), rejects_path, contract)


def write_canonical(frame: pd.DataFrame, path: str | Path, *, labels: list[str] | None = None) -> None:
    """Validate against the canonical schema, then write JSONL atomically (never a partial file)."""
    schema = canonical_frame_schema("text_pair" in frame.columns, "label" in frame.columns, labels)
    schema.validate(frame, lazy=True)
    records = frame.to_dict(orient="records")
    with atomic_write(path) as fh:
        for rec in records:
            fh.write(json.dumps({k: _jsonable(v) for k, v in rec.items()}, ensure_ascii=False) + "\n")


def _jsonable(v: Any) -> Any:
    """numpy scalars/arrays → plain Python for json."""
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def read_canonical(path: str | Path) -> pd.DataFrame:
    """Read canonical JSONL; ids/texts/labels stay strings (no numeric inference)."""
    p = Path(path)
    with open(p, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    frame = pd.DataFrame(rows)
    for col in ("id", "text", "text_pair", "label"):
        if col in frame.columns:
            frame[col] = frame[col].astype(str)
    return frame
