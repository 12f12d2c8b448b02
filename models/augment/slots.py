"""Augmentation that keeps the slot tags of token-labelled utterances (SLU), so every new utterance comes with
its tags and intent and can be labelled by a teacher like any other:

- :func:`substitute_slot_values`: each slot span is replaced, with probability ``p``, by another value of the
  same slot type seen in the training set (its tags re-written B-, I-, ... for the new length);
- :func:`eda_on_outside_tokens`: EDA's random swap and deletion, on O tokens only, so no slot span moves
  relative to its own words or changes.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from ..slu_spans import tag_spans as spans

Tagged = tuple[list[str], list[str]]  # (tokens, tags)


class SlotValues:
    """Each slot type's values in the training set (token tuples), to draw substitutes from."""

    def __init__(self, utterances: Sequence[Tagged]) -> None:
        values: dict[str, dict[tuple[str, ...], None]] = defaultdict(dict)
        for tokens, tags in utterances:
            for slot, start, end in spans(tags):
                values[slot][tuple(tokens[start:end])] = None
        self.values = {slot: list(found) for slot, found in values.items()}

    def draw(self, slot: str, rng: random.Random, other_than: tuple[str, ...]) -> tuple[str, ...] | None:
        choices = [v for v in self.values.get(slot, []) if v != other_than]
        return rng.choice(choices) if choices else None


def substitute_slot_values(tokens: Sequence[str], tags: Sequence[str], values: SlotValues, rng: random.Random,
                           p: float = 0.5) -> Tagged:  # fmt: skip
    out_tokens, out_tags, position = [], [], 0
    for slot, start, end in spans(tags):
        out_tokens += tokens[position:start]
        out_tags += tags[position:start]
        original = tuple(tokens[start:end])
        new = values.draw(slot, rng, original) if rng.random() < p else None
        value = list(new) if new is not None else list(original)
        out_tokens += value
        out_tags += [f"B-{slot}"] + [f"I-{slot}"] * (len(value) - 1)
        position = end
    return out_tokens + list(tokens[position:]), out_tags + list(tags[position:])


def eda_on_outside_tokens(tokens: Sequence[str], tags: Sequence[str], rng: random.Random, p_swap: float = 0.1,
                          p_delete: float = 0.1) -> Tagged:  # fmt: skip
    """Swap pairs of O tokens and delete O tokens (each with its probability per O token); spans stay whole."""
    tokens, tags = list(tokens), list(tags)
    outside = [i for i, t in enumerate(tags) if t == "O"]
    for i in outside:
        if len(outside) > 1 and rng.random() < p_swap:
            j = rng.choice([k for k in outside if k != i])
            tokens[i], tokens[j] = tokens[j], tokens[i]
    keep = [t != "O" or rng.random() >= p_delete for t in tags]
    if not any(keep):
        keep[0] = True
    return [w for w, k in zip(tokens, keep, strict=True) if k], [t for t, k in zip(tags, keep, strict=True) if k]
