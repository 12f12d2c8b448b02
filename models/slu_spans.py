"""Slot spans of BIO tags, conlleval-style, with character offsets, and where each word's first sub-word is:
pure Python, so the ONNX predictor serves them without torch."""

from __future__ import annotations

from collections.abc import Sequence


def tag_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(slot, first word, end word) of each span, conlleval-style: a span starts at B-, or at an I- whose type
    differs from the tag before (an I- after O opens a span too)."""
    found: list[list] = []
    current = None
    for index, tag in enumerate(tags):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if current is not None and tag.startswith("I-") and kind == current[0]:
            current[2] = index + 1
            continue
        current = [kind, index, index + 1] if kind is not None else None
        if current is not None:
            found.append(current)
    return [(slot, start, end) for slot, start, end in found]


def slot_spans(text: str, tags: Sequence[str]) -> list[dict]:
    """The slot spans (:func:`tag_spans`) of whitespace-separated ``text``, with character offsets into it."""
    words, offsets, start = text.split(), [], 0
    for word in words:
        start = text.index(word, start)
        offsets.append((start, start + len(word)))
        start += len(word)
    if len(tags) != len(words):
        raise ValueError(f"{len(tags)} tags for {len(words)} words")
    return [{"slot": slot, "text": text[offsets[first][0]:offsets[end - 1][1]], "start": offsets[first][0],
             "end": offsets[end - 1][1]} for slot, first, end in tag_spans(tags)]  # fmt: skip


def first_subwords(word_ids: Sequence[int | None]) -> dict[int, int]:
    """Word index → the position of its first sub-word (special tokens have no word; a cut word has no entry)."""
    first: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = position
    return first
