"""Interleaved timing: round-robin over variants, several rounds, median of per-round p50s.

Timing each variant once, in sequence, lets machine drift (thermal state, neighbours) look like
a speed-up; interleaving spreads the drift over every variant and the spread shows its size.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping


def round_robin_schedule(names: list[str], rounds: int) -> list[list[str]]:
    """Every round times every variant once; the start rotates so no variant is always first."""
    return [names[r % len(names):] + names[: r % len(names)] for r in range(rounds)]


def interleaved_p50s(
    measure: Mapping[str, Callable[[], dict[str, float]]], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Per variant and sequence length, the p50 of each round; ``measure[name]()`` returns {seq: p50_ms}."""
    out: dict[str, dict[str, list[float]]] = {name: {} for name in measure}
    for order in round_robin_schedule(list(measure), rounds):
        for name in order:
            for seq, p50 in measure[name]().items():
                out[name].setdefault(str(seq), []).append(p50)
    return out


def summarise_rounds(per_round: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """{seq: {median_ms, min_ms, max_ms, rounds}}: the median of per-round p50s and their range."""
    return {
        seq: {"median_ms": statistics.median(p50s), "min_ms": min(p50s), "max_ms": max(p50s), "rounds": len(p50s)}
        for seq, p50s in per_round.items()
    }
