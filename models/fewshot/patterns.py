"""Prompt patterns and verbalizers: what PET, P-tuning and CPT turn a classification row into.

A pattern is a sequence of parts: the row's text fields, literal strings, the label slot (the mask
tokens) and pseudo tokens (P-tuning). Two spellings, both parsed into the same parts:

* EasyNLP's ``pattern=``: comma-separated items, ``text,是一条商品,label,评。``. An item naming a text
  field (``text``/``text_a``/the contract's ``first_sequence``; ``text_pair``/``text_b``/its
  ``second_sequence``) is that field, ``label`` (or ``mask``) is the label slot, ``<pseudo>`` a pseudo
  token, anything else a literal. Unlike EasyNLP, a literal may hold a comma, written ``\\,``.
* A template string: ``{text} It was {mask}.`` with ``{text}``, ``{text_pair}``, ``{mask}`` (or
  ``{label}``) and ``<pseudo>``/``{pseudo}``; everything else is literal, commas included.

The verbalizer maps each label (in the run's label order, never sorted) to its word: from
``label_desc`` (EasyNLP, one word per label in order) or a label file of ``label==word`` lines
(PaddleNLP). Words may have different token lengths: the slot holds as many masks as the longest.

This module is plain Python (no torch), so configs validate cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from landing.errors import UserError

TEXT, TEXT_PAIR, MASK, PSEUDO, LITERAL = "text", "text_pair", "mask", "pseudo", "literal"
_FIELD_ALIASES = {"text": TEXT, "text_a": TEXT, "sent1": TEXT, "text_pair": TEXT_PAIR, "text_b": TEXT_PAIR,
                  "sent2": TEXT_PAIR, "label": MASK, "mask": MASK, "<pseudo>": PSEUDO}  # fmt: skip
_PLACEHOLDER = re.compile(r"\{(text|text_pair|mask|label|pseudo)\}|<pseudo>")


class PatternError(UserError, ValueError):
    """A pattern, verbalizer or label file that cannot be used; the message names the offending value."""


@dataclass(frozen=True)
class Part:
    kind: str  # TEXT, TEXT_PAIR, MASK, PSEUDO or LITERAL
    text: str = ""  # the literal string (LITERAL only)


def is_template(pattern: str) -> bool:
    return "{" in pattern


def parse_pattern(pattern: str, *, require_text: bool = True) -> list[Part]:
    """The pattern's parts, its fields spelled ``text``/``text_pair`` (``canonical_pattern`` renames the contract's
    columns so); ``require_text=False`` checks the rest only, for a pattern not yet read against its contract."""
    parts = _parse_template(pattern) if is_template(pattern) else _parse_easynlp(pattern)
    _check_parts(pattern, parts, require_text)
    return parts


def canonical_pattern(pattern: str, first_sequence: str, second_sequence: str | None = None) -> str:
    """``pattern`` with the items naming the contract's columns spelled ``text``/``text_pair``: it then reads the
    same without the contract, so the model code never needs the column names. Idempotent; a template is kept."""
    if is_template(pattern):
        return pattern
    if second_sequence == TEXT or first_sequence == TEXT_PAIR:
        name, role = (second_sequence, "second_sequence") if second_sequence == TEXT else (first_sequence, "first_sequence")
        raise PatternError(f"pattern {pattern!r}: the contract's {role} is named {name!r}, which the comma form reads "
                           "as the other text field; write the pattern as a template ({text} … {text_pair})")  # fmt: skip
    names = {first_sequence: TEXT, **({second_sequence: TEXT_PAIR} if second_sequence else {})}
    return ",".join(names.get(item.strip(), item) for item in re.split(r"(?<!\\),", pattern))


def _parse_template(pattern: str) -> list[Part]:
    parts, at = [], 0
    for match in _PLACEHOLDER.finditer(pattern):
        if match.start() > at:
            parts.append(Part(LITERAL, pattern[at : match.start()]))
        name = match.group(1) or "pseudo"
        parts.append(Part(MASK if name in ("mask", "label") else name))
        at = match.end()
    if at < len(pattern):
        parts.append(Part(LITERAL, pattern[at:]))
    stray = [p.text for p in parts if p.kind == LITERAL and re.search(r"\{[^}]*\}", p.text)]
    if stray:
        found = re.search(r"\{[^}]*\}", stray[0]).group(0)
        raise PatternError(f"pattern {pattern!r}: unknown placeholder {found}; expected {{text}}, {{text_pair}}, "
                           "{mask} or <pseudo>")  # fmt: skip
    return parts


def _parse_easynlp(pattern: str) -> list[Part]:
    items = [item.replace("\\,", ",") for item in re.split(r"(?<!\\),", pattern)]
    return [Part(_FIELD_ALIASES[item.strip()]) if item.strip() in _FIELD_ALIASES else Part(LITERAL, item)
            for item in items if item]  # fmt: skip


def _check_parts(pattern: str, parts: Sequence[Part], require_text: bool) -> None:
    kinds = [p.kind for p in parts]
    if kinds.count(MASK) != 1:
        what = "no label slot" if MASK not in kinds else f"{kinds.count(MASK)} label slots"
        raise PatternError(f"pattern {pattern!r}: {what}; give exactly one ({{mask}} in a template, label in "
                           "EasyNLP's comma form)")  # fmt: skip
    if require_text and TEXT not in kinds:
        raise PatternError(f"pattern {pattern!r}: the text field does not appear ({{text}}, or text/the "
                           "first_sequence column in EasyNLP's form)")  # fmt: skip
    for field in (TEXT, TEXT_PAIR):
        if kinds.count(field) > 1:
            raise PatternError(f"pattern {pattern!r}: {field} appears {kinds.count(field)} times; at most once")


def verbalizer(
    labels: Sequence[str], *, label_desc: Sequence[str] | str | None = None, label_words: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Label → word, in ``labels`` order: from ``label_desc`` (one word per label, in order; EasyNLP's
    comma string accepted) or ``label_words`` (as read from a label file)."""
    if (label_desc is None) == (label_words is None):
        raise PatternError("give the verbalizer as label_desc (one word per label) or label_file, not both")
    if label_words is None:
        words = label_desc.split(",") if isinstance(label_desc, str) else list(label_desc)
        if len(words) != len(labels):
            raise PatternError(f"label_desc {list(words)!r}: {len(words)} words for {len(labels)} labels "
                               f"{list(labels)!r}; give one word per label, in that order")  # fmt: skip
        return dict(zip(labels, (w.strip() for w in words), strict=True))
    unknown = [label for label in label_words if label not in labels]
    if unknown:
        raise PatternError(f"label words name unknown label(s) {unknown!r}; the labels are {list(labels)!r}")
    missing = [label for label in labels if label not in label_words]
    if missing:
        raise PatternError(f"label words: no word for label(s) {missing!r}")
    return {label: label_words[label] for label in labels}


def read_label_file(path: Path) -> dict[str, str]:
    """PaddleNLP's label file: one ``label==word`` per line (blank lines skipped); errors name the line."""
    words: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, sep, word = line.partition("==")
        if not sep or not label.strip() or not word.strip():
            raise PatternError(f"{path}:{n}: expected label==word, found {line!r}")
        if label.strip() in words:
            raise PatternError(f"{path}:{n}: label {label.strip()!r} is given twice")
        words[label.strip()] = word.strip()
    if not words:
        raise PatternError(f"{path}: no label==word lines")
    return words
