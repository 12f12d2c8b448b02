"""Leakage-free data splits: dedup first, then seeded stratified splits, then prove disjointness."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from landing.errors import UserError

Key = str | Sequence[str]


def _key_columns(frame: pd.DataFrame, key: Key | None) -> list[str]:
    if key is None:
        return ["text", "text_pair"] if "text_pair" in frame.columns else ["text"]
    cols = [key] if isinstance(key, str) else list(key)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"key column(s) {missing} not in frame columns {list(frame.columns)}")
    return cols


def _keys(frame: pd.DataFrame, cols: list[str]) -> pd.Series:
    """One hashable key per row (a tuple when several columns)."""
    if len(cols) == 1:
        return frame[cols[0]]
    return pd.Series(list(frame[cols].itertuples(index=False, name=None)), index=frame.index)


ConflictPolicy = Literal["drop", "first", "fail"]


class ConflictingLabelsError(UserError, ValueError):
    """The same input occurs with different labels and the policy is ``fail``."""


class DedupResult(tuple[pd.DataFrame, int]):
    """(frame, removed) that also carries the conflicting rows (same input, different labels).

    ``removed`` counts every row dropped (repeats and, under ``drop``, all rows of a conflicting input);
    ``conflicts`` counts conflicting inputs and ``conflict_rows`` holds all their rows, kept or not,
    with the labels seen, so they can be listed in a rejects file.
    """

    conflict_rows: pd.DataFrame
    conflicts: int

    def __new__(cls, frame: pd.DataFrame, removed: int, conflict_rows: pd.DataFrame, conflicts: int) -> DedupResult:
        obj = super().__new__(cls, (frame, removed))
        obj.conflict_rows, obj.conflicts = conflict_rows, conflicts
        return obj

    @property
    def frame(self) -> pd.DataFrame:
        return self[0]

    @property
    def removed(self) -> int:
        return self[1]


def deduplicate(
    frame: pd.DataFrame,
    key_columns: Key | None = None,
    label_column: str = "label",
    conflicts: ConflictPolicy = "drop",
    where: str = "table",
) -> DedupResult:
    """One row per input key, so an input can never land in two splits.

    Exact repeats keep their first row. Inputs seen with different labels follow ``conflicts``:
    ``drop`` removes all their rows (no evidence which label is right, and keeping one would make
    the data depend on row order), ``first`` keeps the first row, ``fail`` raises
    :class:`ConflictingLabelsError` naming ``where`` and examples.
    """
    cols = _key_columns(frame, key_columns)
    keys = _keys(frame, cols)
    keep = ~keys.duplicated(keep="first")
    conflict_rows, n_conflicts = frame.iloc[0:0].assign(labels_seen=[], kept=[]), 0
    if label_column in frame.columns and not keep.all():
        codes = pd.factorize(keys)[0]
        labels_by_key = frame[label_column].astype(str).groupby(codes).agg(lambda s: sorted(set(s)))
        labels_seen = pd.Series(labels_by_key.to_numpy()[codes], index=frame.index)
        conflicting = labels_seen.map(len) > 1
        n_conflicts = int((labels_by_key.map(len) > 1).sum())
        if n_conflicts and conflicts == "fail":
            first_rows = frame.loc[conflicting & ~keys.duplicated(keep="first")].head(3)
            examples = "; ".join(
                f"{tuple(r[c] for c in cols) if len(cols) > 1 else r[cols[0]]!r} has labels {labels_seen[i]}"
                for i, r in first_rows.iterrows()
            )
            raise ConflictingLabelsError(
                f"{where}: {n_conflicts} input(s) occur with different labels, e.g. {examples}; fix the labels, "
                "or set data.split.conflicts to 'drop' (remove those rows) or 'first' (keep each input's first row)"
            )
        if conflicts == "drop":
            keep &= ~conflicting
        conflict_rows = frame.loc[conflicting].assign(labels_seen=labels_seen[conflicting], kept=keep[conflicting])
    out = frame.loc[keep].reset_index(drop=True)
    return DedupResult(out, int((~keep).sum()), conflict_rows.reset_index(drop=True), n_conflicts)


def _target_counts(sizes: dict[str, int | float], n: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    used, frac = 0, 0.0
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, float)):
            raise ValueError(f"split {name!r}: size must be an int count or a float fraction, found {size!r}")
        if isinstance(size, float):
            if not 0.0 < size <= 1.0:
                raise ValueError(f"split {name!r}: fraction must be in (0, 1], found {size}")
            if frac + size > 1.0 + 1e-9:
                raise ValueError(f"split {name!r}: fractions sum to {frac + size:g} > 1")
            # cumulative rounding: fractions summing to <= 1 never over-allocate
            count = int(round((frac + size) * n)) - int(round(frac * n))
            frac += size
        else:
            if size < 1:
                raise ValueError(f"split {name!r}: count must be >= 1, found {size}")
            count = size
        if used + count > n:
            raise ValueError(f"split {name!r} needs {count} rows but only {n - used} of {n} remain after earlier splits")
        counts[name] = count
        used += count
    return counts


def stratified_split(
    frame: pd.DataFrame, sizes: dict[str, int | float], seed: int, label_column: str = "label"
) -> dict[str, pd.DataFrame]:
    """Seeded split keeping label proportions (each label within ±1 row of exact) in every split.

    Sizes are counts (int) or fractions of all rows (float); rows not requested are left out.
    Each label's rows are shuffled and spread evenly over [0, 1); the merged order is cut into
    consecutive chunks, so every chunk is stratified. Unlabelled frames get a plain seeded shuffle.
    """
    cols = _key_columns(frame, None)
    dup = _keys(frame, cols).duplicated()
    if dup.any():
        example = frame.loc[dup, cols[0]].iloc[0]
        raise ValueError(f"frame has {int(dup.sum())} repeated {cols} key(s) (e.g. {example!r}); run deduplicate() first")
    counts = _target_counts(sizes, len(frame))
    rng = np.random.default_rng(seed)
    n = len(frame)
    if label_column in frame.columns:
        codes, _ = pd.factorize(frame[label_column], use_na_sentinel=False)
        position = np.empty(n, dtype=float)
        for code in np.unique(codes):
            idx = np.flatnonzero(codes == code)
            position[rng.permutation(idx)] = (np.arange(len(idx)) + rng.random()) / len(idx)
        order = np.lexsort((rng.random(n), position))
    else:
        order = rng.permutation(n)
    out: dict[str, pd.DataFrame] = {}
    start = 0
    for name, count in counts.items():
        chunk = rng.permutation(order[start : start + count])
        out[name] = frame.iloc[chunk].reset_index(drop=True)
        start += count
    return out


def remove_overlap(frame: pd.DataFrame, reference: pd.DataFrame, key: Key | None = None) -> tuple[pd.DataFrame, int]:
    """Drop rows of frame whose key occurs in reference (keeps a held-out set free of training texts).

    The default key is the one ``deduplicate`` uses: (text, text_pair) for pair tasks, text otherwise.
    """
    cols = _key_columns(frame, key)
    ref: set[Hashable] = set(_keys(reference, _key_columns(reference, key)))
    hit = _keys(frame, cols).isin(ref) if len(cols) == 1 else _keys(frame, cols).map(lambda k: k in ref).astype(bool)
    return frame.loc[~hit].reset_index(drop=True), int(hit.sum())


def assert_disjoint(splits: dict[str, pd.DataFrame], key: Key | None = None) -> None:
    """Raise ValueError naming both splits and an example if any key is shared."""
    keysets = {name: set(_keys(df, _key_columns(df, key))) for name, df in splits.items()}
    names = list(keysets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = keysets[a] & keysets[b]
            if shared:
                example = sorted(shared, key=str)[0]
                cols = _key_columns(splits[a], key)
                raise ValueError(f"splits {a!r} and {b!r} share {len(shared)} {cols} key(s), e.g. {example!r}")


def word_counts(frame: pd.DataFrame) -> np.ndarray:
    """Words per row, both texts of a pair counted."""
    return np.array([len(t.split()) for t in _joined_text(frame)], dtype=int)


def _joined_text(frame: pd.DataFrame) -> list[str]:
    """Each row's text (both texts of a pair), lower-cased and space-padded so a search matches whole words."""
    text = frame["text"].astype(str)
    if "text_pair" in frame.columns:
        text = text + " " + frame["text_pair"].astype(str)
    return [f" {' '.join(t.lower().split())} " for t in text]


# Word-level containment is written by hand: a plain substring search over one joined string is fast enough
# for tables of 10^5 rows (CPython's two-way search) and needs no automaton library.
def inside_rows(frame: pd.DataFrame, containers: pd.DataFrame) -> np.ndarray:
    """Whether each row of ``frame`` occurs word for word inside a row of ``containers`` (or equals one).

    SST-2's training table holds phrases cut from the same parsed sentences, so a held-out phrase is often a
    piece of a kept one: deduplication does not catch it, and such a row is partly seen in training."""
    corpus = "\n".join(_joined_text(containers))
    return np.array([t in corpus for t in _joined_text(frame)], dtype=bool)


def whole_text_rows(frame: pd.DataFrame) -> np.ndarray:
    """Whether each row occurs inside no other row of ``frame`` (SST-2: the full sentences, not their phrases).

    Longest first, each row is searched in the whole rows found so far: a row inside a longer one is
    inside a whole row, so the corpus searched stays as small as the whole rows."""
    texts = _joined_text(frame)
    whole, corpus = np.zeros(len(texts), dtype=bool), ""
    for i in sorted(range(len(texts)), key=lambda i: -len(texts[i])):
        if texts[i] not in corpus:
            whole[i] = True
            corpus += "\n" + texts[i]
    return whole


def length_matched_rows(frame: pd.DataFrame, reference: pd.DataFrame, count: int, seed: int,
                        bins: int = 5) -> pd.DataFrame:  # fmt: skip
    """``count`` rows of ``frame`` whose length distribution is ``reference``'s, each length bin stratified by label.

    The bins are the reference's word-count quantiles; each takes the reference's share of ``count``, and rows
    shorter or longer than every reference row get none. A bin with too few rows gives all it has and the
    shortfall goes to the nearest bins, so the count is always met; ``attrs["length_shortfall"]`` says by how
    many rows the result is off the reference's shares.
    Why: a validation split drawn like the training rows (SST-2's are mostly phrases) does not predict what is
    reported on full sentences."""
    if count > len(frame):
        raise ValueError(f"length-matched validation needs {count} rows; the labelled table has {len(frame)}")
    ref_lengths = word_counts(reference)
    edges = np.unique(np.quantile(ref_lengths, np.linspace(0, 1, bins + 1)[1:-1]))
    # Bin 0: shorter than any reference row; the last: longer than any; the ones between follow the quantiles.
    boundaries = [ref_lengths.min(), *edges, ref_lengths.max() + 1]
    row_bin, n_bins = np.digitize(word_counts(frame), boundaries), len(boundaries) + 1
    share = np.bincount(np.digitize(ref_lengths, boundaries), minlength=n_bins) / len(reference)
    want = np.floor(share * count).astype(int)
    want[np.argsort(-(share * count - want))[: count - want.sum()]] += 1  # largest remainders
    have = np.bincount(row_bin, minlength=n_bins)
    take = np.minimum(want, have)
    shortfall = int(count - take.sum())
    short_bins = np.flatnonzero(want > have)
    for b in sorted(range(len(take)), key=lambda b: min((abs(b - s) for s in short_bins), default=0)):
        take[b] += min(have[b] - take[b], count - take.sum())  # the shortfall from the nearest bins with rows
    picked = [stratified_split(frame[row_bin == b].reset_index(drop=True), {"validation": int(n)}, seed=seed + b)["validation"]
              for b, n in enumerate(take) if n]  # fmt: skip
    out = pd.concat(picked, ignore_index=True)
    out.attrs["length_shortfall"] = shortfall
    return out
