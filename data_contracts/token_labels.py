"""Token-labelled utterances (joint intent + slot filling) under a contract, in three layouts:

- ``jointbert``: a folder with ``seq.in`` (tokens separated by spaces), ``seq.out`` (one BIO tag per token) and
  ``label`` (the intent), line for line; its ``intent_label.txt`` / ``slot_label.txt`` give the label sets;
- ``conll``: one ``token<TAB or space>tag`` line per token, a blank line between utterances, and the intent on a
  ``# intent = NAME`` line before the tokens (optional without intents);
- ``jsonl``: one object a line with ``tokens``, ``tags`` and ``intent``;
- ``easynlp``: EasyNLP's sequence_labeling table: tab-separated ``columns``, the tokens (separated by spaces) in
  ``tokens_column`` and their tags in ``tags_column`` (none for rows to predict); no intent, so every row has the
  one intent ``NO_INTENT`` (the joint model's one-class intent head then adds nothing to the loss).

Every problem names its file, line and token, and all of them are reported at once (``DataValidationError``).
An utterance's id is the content id of its token sequence, so dedup and leak-free splits work on the tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from landing.errors import UserError

from .splitting import ConflictPolicy, DedupResult, deduplicate, stratified_split
from .validation import DataFileNotFoundError, DataValidationError, ValidationIssue, example_id

JOINTBERT_FILES = ("seq.in", "seq.out", "label")
JOINTBERT_RESERVED = frozenset({"PAD", "UNK"})  # that repository's own entries in its label files
NO_INTENT = "-"  # the one intent of tag-only tables (easynlp)


class TokenLabelContract(BaseModel):
    """What a token-labelled table must hold. The label sets are optional; given, anything outside them is an error."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["jointbert", "conll", "jsonl", "easynlp"]
    slot_labels: list[str] | None = Field(None, description="the BIO tags allowed, e.g. O, B-city, I-city")
    intents: list[str] | None = Field(None, description="the intents allowed (single intents, never joined ones)")
    multi_intent: Literal["first", "multi"] = Field(
        "first", description="an intent 'a#b' (ATIS): 'first' keeps a (the default: one intent head, as ERNIE's "
        "case), 'multi' keeps every intent, for a multi-label intent head",
    )
    intent_separator: str = "#"
    undeclared_tags: Literal["error", "keep"] = Field(
        "error", description="a well-formed BIO tag outside slot_labels: an error, or kept (for an eval table: ATIS "
        "dev has a tag its train set lacks, which a model then cannot predict and which counts as missed)",
    )
    columns: list[str] | None = Field(None, description="easynlp: the tab-separated columns in order (input_schema)")
    tokens_column: str | None = Field(None, description="easynlp: the column of space-separated tokens")
    tags_column: str | None = Field(None, description="easynlp: the column of space-separated tags; none: unlabelled")
    skip_first_line: bool = Field(False, description="easynlp: the first line is a header")

    @model_validator(mode="after")
    def _easynlp_columns(self) -> TokenLabelContract:
        if self.format == "easynlp":
            named = [c for c in (self.tokens_column, self.tags_column) if c is not None]
            if not self.columns or self.tokens_column is None or any(c not in self.columns for c in named):
                raise ValueError(f"format easynlp: tokens_column (and tags_column) must be among columns; found "
                                 f"columns {self.columns}, tokens_column {self.tokens_column!r}, tags_column "
                                 f"{self.tags_column!r}")  # fmt: skip
        return self


class TokenLabelError(UserError, ValueError):
    """A token-labelled table that cannot be read as asked (not a row's problem: those are DataValidationError)."""


@dataclass
class _Utterance:
    file: str
    line: int
    tokens: list[str]
    tags: list[str]
    intent: str | None
    issues: list[ValidationIssue] = field(default_factory=list)


def jointbert_label_sets(folder: str | Path) -> tuple[list[str], list[str]]:
    """(slot tags, single intents) from a JointBERT dataset folder's ``slot_label.txt`` and ``intent_label.txt``
    (without its PAD / UNK entries; a joined intent ``a#b`` counts as a and b)."""
    root = Path(folder)
    slots = [t for t in _lines(root / "slot_label.txt") if t not in JOINTBERT_RESERVED]
    intents = dict.fromkeys(i for joined in _lines(root / "intent_label.txt") for i in joined.split("#"))
    return slots, [i for i in intents if i not in JOINTBERT_RESERVED]


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFileNotFoundError(f"label file not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_token_table(path: str | Path, contract: TokenLabelContract, source: str | None = None) -> pd.DataFrame:
    """One row per utterance: ``id``, ``text`` (the tokens joined by spaces), ``tokens``, ``tags``, ``intent``
    (``intents``, a list, under ``multi_intent: multi``); raises with every issue found."""
    p, src = Path(path), source or str(path)
    readers = {"jointbert": _jointbert, "conll": _conll, "jsonl": _jsonl, "easynlp": partial(_easynlp, contract=contract)}
    utterances = list(readers[contract.format](p, src))
    if not utterances:
        raise DataValidationError([ValidationIssue(src, None, None, "at least one utterance", "none")])
    rows, issues = [], []
    for utterance in utterances:
        row = _checked(utterance, contract)
        issues += utterance.issues
        if not utterance.issues:
            rows.append(row)
    if issues:
        raise DataValidationError(issues)
    return pd.DataFrame(rows)


def _jointbert(folder: Path, src: str) -> Iterator[_Utterance]:
    missing = [name for name in JOINTBERT_FILES if not (folder / name).is_file()]
    if missing:
        raise DataFileNotFoundError(f"{src}: a JointBERT folder needs {', '.join(JOINTBERT_FILES)}; missing: "
                                    f"{', '.join(missing)}")  # fmt: skip
    texts, tags, intents = (_file_lines(folder / name) for name in JOINTBERT_FILES)
    if not len(texts) == len(tags) == len(intents):
        raise TokenLabelError(f"{src}: seq.in, seq.out and label must have one line per utterance; found "
                              f"{len(texts)}, {len(tags)} and {len(intents)} lines")  # fmt: skip
    for number, (text, tag_line, intent) in enumerate(zip(texts, tags, intents, strict=True), start=1):
        utterance = _Utterance(f"{src}/seq.in", number, text.split(), tag_line.split(), intent.strip() or None)
        if len(utterance.tags) != len(utterance.tokens) and utterance.tokens:
            utterance.issues.append(ValidationIssue(f"{src}/seq.out", number, None,
                                                    f"{len(utterance.tokens)} tags (one per token of seq.in)",
                                                    f"{len(utterance.tags)}"))  # fmt: skip
        yield utterance


def _file_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return text.removesuffix("\n").split("\n") if text else []


def _conll(path: Path, src: str) -> Iterator[_Utterance]:
    if not path.is_file():
        raise DataFileNotFoundError(f"data file not found: {src}")
    current: _Utterance | None = None
    intent = None
    for number, line in enumerate(_file_lines(path), start=1):
        stripped = line.strip()
        if not stripped:
            if current is not None:
                yield current
            current, intent = None, None
            continue
        if stripped.startswith("#"):
            key, _, value = stripped.lstrip("# ").partition("=")
            if key.strip() == "intent":
                intent = value.strip() or None
            continue
        if current is None:
            current = _Utterance(src, number, [], [], intent)
        parts = stripped.split()
        if len(parts) != 2:
            current.issues.append(ValidationIssue(src, number, None, "a token and its tag", f"{len(parts)} fields: {stripped!r}"))
            continue
        current.tokens.append(parts[0])
        current.tags.append(parts[1])
    if current is not None:
        yield current


def _jsonl(path: Path, src: str) -> Iterator[_Utterance]:
    if not path.is_file():
        raise DataFileNotFoundError(f"data file not found: {src}")
    for number, line in enumerate(_file_lines(path), start=1):
        if not line.strip():
            continue
        utterance = _Utterance(src, number, [], [], None)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            utterance.issues.append(ValidationIssue(src, number, None, "a JSON object", f"invalid JSON ({exc.msg})"))
            yield utterance
            continue
        for key in ("tokens", "tags"):
            value = record.get(key) if isinstance(record, dict) else None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                utterance.issues.append(ValidationIssue(src, number, key, "a list of strings", repr(value)[:80]))
            else:
                setattr(utterance, key, value)
        intent = record.get("intent") if isinstance(record, dict) else None
        utterance.intent = intent if isinstance(intent, str) and intent.strip() else None
        if len(utterance.tags) != len(utterance.tokens) and not utterance.issues:
            utterance.issues.append(ValidationIssue(src, number, "tags", f"{len(utterance.tokens)} tags (one per token)",
                                                    f"{len(utterance.tags)}"))  # fmt: skip
        yield utterance


def _easynlp(path: Path, src: str, contract: TokenLabelContract) -> Iterator[_Utterance]:
    if not path.is_file():
        raise DataFileNotFoundError(f"data file not found: {src}")
    lines = _file_lines(path)
    for number, line in enumerate(lines, start=1):
        if (number == 1 and contract.skip_first_line) or not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        utterance = _Utterance(src, number, [], [], NO_INTENT)
        if len(fields) != len(contract.columns):
            utterance.issues.append(ValidationIssue(src, number, None, f"{len(contract.columns)} tab-separated columns "
                                                    f"({', '.join(contract.columns)})", f"{len(fields)}"))  # fmt: skip
            yield utterance
            continue
        row = dict(zip(contract.columns, fields, strict=True))
        utterance.tokens = row[contract.tokens_column].split()
        if contract.tags_column is not None:
            utterance.tags = row[contract.tags_column].split()
            if len(utterance.tags) != len(utterance.tokens):
                utterance.issues.append(ValidationIssue(src, number, contract.tags_column, f"{len(utterance.tokens)} tags "
                                                        f"(one per token of {contract.tokens_column})",
                                                        f"{len(utterance.tags)}"))  # fmt: skip
        yield utterance


def _checked(utterance: _Utterance, contract: TokenLabelContract) -> dict:
    issue = lambda column, expected, found: utterance.issues.append(  # noqa: E731
        ValidationIssue(utterance.file, utterance.line, column, expected, found))
    if not utterance.tokens:
        issue(None, "an utterance of at least one token", "an empty one")
    allowed = set(contract.slot_labels) if contract.slot_labels is not None else None
    previous = "O"
    for index, (token, tag) in enumerate(zip(utterance.tokens, utterance.tags, strict=False)):
        where = f"token {index + 1} ({token!r})"
        if allowed is not None and tag not in allowed and contract.undeclared_tags == "error":
            issue("tags", f"a declared slot tag at {where}", repr(tag))
        elif tag != "O" and not tag.startswith(("B-", "I-")):
            issue("tags", f"a BIO tag (O, B-…, I-…) at {where}", repr(tag))
        elif tag.startswith("I-") and previous[2:] != tag[2:]:
            issue("tags", f"B-{tag[2:]} or I-{tag[2:]} before the I-{tag[2:]} at {where}", repr(previous))
        previous = tag
    intents = _intents(utterance, contract, issue)
    row = {"id": example_id(" ".join(utterance.tokens)), "text": " ".join(utterance.tokens),
           "tokens": utterance.tokens, "tags": utterance.tags, "line": utterance.line}  # fmt: skip
    if contract.multi_intent == "multi":
        row["intents"] = intents
    else:
        row["intent"] = intents[0] if intents else None
    return row


def _intents(utterance: _Utterance, contract: TokenLabelContract, issue) -> list[str]:
    if utterance.intent is None:
        if contract.intents is not None:
            issue("intent", "an intent", "none")
        return []
    intents = [i.strip() for i in utterance.intent.split(contract.intent_separator)]
    for intent in intents:
        if contract.intents is not None and intent not in contract.intents:
            issue("intent", "a declared intent", repr(intent))
    return intents[:1] if contract.multi_intent == "first" else intents


def annotation_key(frame: pd.DataFrame) -> pd.Series:
    """What an utterance is labelled with (intent(s) and every tag): two rows of the same tokens disagree when this differs."""
    intents = frame["intents"].map("#".join) if "intents" in frame.columns else frame["intent"].astype(str)
    return intents + "\t" + frame["tags"].map(" ".join)


def deduplicate_utterances(frame: pd.DataFrame, conflicts: ConflictPolicy = "drop", where: str = "table") -> DedupResult:
    """One row per token sequence; the same tokens with other tags or intent follow ``conflicts`` (as for text)."""
    result = deduplicate(frame.assign(annotation=annotation_key(frame)), ["text"], label_column="annotation",
                         conflicts=conflicts, where=where)  # fmt: skip
    return DedupResult(result.frame.drop(columns="annotation"), result.removed, result.conflict_rows, result.conflicts)


def split_utterances(frame: pd.DataFrame, sizes: dict[str, int | float], seed: int) -> dict[str, pd.DataFrame]:
    """Seeded splits stratified by (first) intent; ``frame`` deduplicated first, so no token sequence is in two."""
    strata = frame["intents"].map(lambda i: i[0] if i else "") if "intents" in frame.columns else frame["intent"]
    parts = stratified_split(frame.assign(stratum=strata.astype(str)), sizes, seed, label_column="stratum")
    return {name: part.drop(columns="stratum") for name, part in parts.items()}
