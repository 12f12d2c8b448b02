"""Input and output of ``landing predict``, streamed: memory stays bounded by one chunk, not the input.

The input table is read ``CHUNK_ROWS`` rows at a time; each chunk is labelled and appended to a
temporary file beside the output, which is renamed onto the output name only when every row is
done, so a reader never sees a half-written prediction table (on any error it is removed).

Line numbers in messages are the file's: the header is line 1 of a CSV/TSV and blank lines are
kept as rows (an empty text), so they are counted; a JSONL file has no header (pandas skips its
blank lines, which JSONL files seldom have, so its numbers are record numbers).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pandas as pd

from landing.errors import UserError
from landing.files import atomic_path

if TYPE_CHECKING:
    from landing.models.onnx_predictor import OnnxClassifier

CHUNK_ROWS = 4096  # rows read, labelled and written at a time
SHOWN_LINES = 10  # empty-text lines named in the message; the rest are counted
FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


class PredictInputError(UserError):
    """The table given to ``landing predict`` cannot be labelled as it is."""


class UnsupportedTableError(PredictInputError):
    """An extension that names no table format we read or write (a usage error: exit 2)."""


class MissingColumnError(PredictInputError):
    """A column the command was told to use is not in the input (a usage error: exit 2)."""


@dataclass(frozen=True)
class Columns:
    text: str
    pair: str | None = None
    id: str | None = None

    def names(self) -> list[str]:
        return [name for name in (self.text, self.pair, self.id) if name]


@dataclass
class InputTable:
    """An input being read: its path, format and the chunks still to come (the first already read)."""

    path: Path
    format: str
    columns: Columns
    chunks: Iterator[pd.DataFrame]  # indexed by the file line each row was read from


def table_format(path: Path) -> str:
    """The table format (csv, tsv or jsonl) the extension names."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UnsupportedTableError(f"{path}: unsupported extension {suffix!r}; expected .csv, .tsv or .jsonl")
    return FORMATS[suffix]


def open_input(path: Path, columns: Columns, *, chunk_rows: int = CHUNK_ROWS) -> InputTable:
    """The input, its first chunk read and its columns checked, so a wrong file or column name
    is reported before a model is downloaded or loaded."""
    fmt = table_format(path)
    chunks = _read_chunks(path, fmt, chunk_rows)
    first = next(chunks, None)
    if first is None:  # a JSONL file without records
        first = pd.DataFrame()
    for name in columns.names():
        if name not in first.columns:
            raise MissingColumnError(f"{path}: no column {name!r}; found {list(first.columns)}")
    return InputTable(path, fmt, columns, chain([first], chunks))


def _read_chunks(path: Path, fmt: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The table's chunks, indexed by file line, with read errors turned into messages naming the file
    (only the reading is inside ``try``: an error while a chunk is labelled is not the input's)."""
    try:
        if fmt == "jsonl":
            yield from _jsonl_chunks(path, chunk_rows)
            return
        tsv = fmt == "tsv"
        reader = pd.read_csv(path, sep="\t" if tsv else ",", quoting=3 if tsv else 0, dtype=str,
                             keep_default_na=False, skip_blank_lines=False, encoding="utf-8",
                             chunksize=chunk_rows)  # fmt: skip
        with reader:
            for chunk in reader:  # blank lines are rows here, so row i is line i + 2 (below the header)
                yield chunk.set_axis(chunk.index + 2)
    except FileNotFoundError:
        raise PredictInputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise PredictInputError(_first_undecodable(path)) from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise PredictInputError(f"{path}: not a readable {fmt} table: {exc}") from None


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """JSON Lines records by file line. By hand, not ``pd.read_json(lines=True)``: pandas drops blank lines
    without saying where, so every later row's line number would be off by the blanks above it."""
    records: list[dict] = []
    lines: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PredictInputError(f"{path}:{number}: not valid JSON: {exc.msg} at column {exc.colno}") from None
            if not isinstance(record, dict):
                raise PredictInputError(f"{path}:{number}: expected a JSON object, found {type(record).__name__}")
            records.append(record)
            lines.append(number)
            if len(records) == chunk_rows:
                yield pd.DataFrame.from_records(records, index=lines)
                records, lines = [], []
    if records:
        yield pd.DataFrame.from_records(records, index=lines)


def _first_undecodable(path: Path) -> str:
    """Where the first non-UTF-8 byte is (pandas reports offsets into its read buffer, not the file)."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"{path}:{number}: expected UTF-8 text, found byte 0x{line[exc.start]:02x} at byte {exc.start + 1}"
    return f"{path}: expected UTF-8 text"


def _column(frame: pd.DataFrame, name: str) -> list[str]:
    """A column as strings; a missing JSONL value is an empty text, not the string "nan"."""
    values = frame[name]
    return values.where(values.notna(), "").astype(str).tolist()


class EmptyTexts:
    """File lines whose text is empty, over all chunks: the first few by number, the rest counted,
    so a file of blank lines cannot fill memory with line numbers."""

    def __init__(self) -> None:
        self.lines: list[int] = []
        self.count = 0

    def add(self, texts: list[str], lines: list[int]) -> None:
        for text, line in zip(texts, lines, strict=True):
            if not text.strip():
                self.count += 1
                if len(self.lines) < SHOWN_LINES:
                    self.lines.append(line)

    def error(self, table: InputTable) -> PredictInputError:
        more = self.count - len(self.lines)
        shown = ", ".join(map(str, self.lines)) + (f" and {more} more" if more else "")
        return PredictInputError(f"{table.path}: column {table.columns.text!r}: expected text on every row, "
                                 f"found none on line(s) {shown}")  # fmt: skip


def _append(frame: pd.DataFrame, fh: IO[str], fmt: str, *, header: bool) -> None:
    if fmt == "jsonl":
        if len(frame):  # pandas writes a lone newline for no rows
            frame.to_json(fh, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_csv(fh, sep="\t" if fmt == "tsv" else ",", index=False, header=header)


def write_predictions(classifier: OnnxClassifier, table: InputTable, output: Path, *, batch_size: int = 64,
                      logits: bool = False, on_rows: Callable[[int], None] = lambda rows: None) -> int:  # fmt: skip
    """Label every chunk of ``table`` into ``output`` (format from its extension); the number of rows.

    Once an empty text is seen nothing more is labelled, but the rest is still read, so the
    message names every such line (up to ``SHOWN_LINES``); nothing then appears under ``output``.
    """
    fmt, cols, done, empty = table_format(output), table.columns, 0, EmptyTexts()
    with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        for chunk in table.chunks:
            texts = _column(chunk, cols.text)
            empty.add(texts, chunk.index.tolist())
            if not empty.count:
                pairs = _column(chunk, cols.pair) if cols.pair else None
                ids = _column(chunk, cols.id) if cols.id else None
                labelled = classifier.predict(texts, pairs, batch_size, ids=ids, return_logits=logits)
                _append(labelled, fh, fmt, header=done == 0)
            done += len(chunk)
            on_rows(len(chunk))
        if empty.count:
            raise empty.error(table)
        fh.flush()
        os.fsync(fh.fileno())
    return done


def count_rows(path: Path) -> int:
    """Rows in a table, counted from its newlines (cheap; a quoted newline in a CSV field counts too)."""
    lines, last = 0, b"\n"
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            lines, last = lines + block.count(b"\n"), block[-1:]
    lines += last != b"\n"  # a last line without its newline
    return max(lines - (table_format(path) != "jsonl"), 0)


@contextmanager
def terminal_progress(path: Path, stream: IO[str] | None = None) -> Iterator[Callable[[int], None]]:
    """A rows-done bar on ``stream`` (stderr) when it is a terminal; otherwise nothing is drawn,
    so logs, pipes and captured output get only the command's own lines."""
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        yield lambda rows: None
        return
    from rich import progress as rp
    from rich.console import Console

    columns = (rp.TextColumn("predicting"), rp.BarColumn(), rp.MofNCompleteColumn(), rp.TextColumn("rows"),
               rp.TimeElapsedColumn(), rp.TimeRemainingColumn())  # fmt: skip
    with rp.Progress(*columns, console=Console(file=stream)) as bar:
        task = bar.add_task("predict", total=count_rows(path))
        yield lambda rows: bar.advance(task, rows)
        bar.update(task, total=bar.tasks[0].completed)  # the newline count is an estimate
