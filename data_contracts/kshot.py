"""The k-shot protocol (FewCLUE style): k labelled rows per class to train on, a validation split of the
same size for every choice, and the rest of the labelled rows left untouched (usable as unlabelled text).

The draw depends only on the rows (sorted by id first), ``k`` and the seed, not on the table's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from landing.errors import UserError


class KShotError(UserError, ValueError):
    """The labelled pool cannot give k rows per class for training and for validation."""


def kshot_split(
    frame: pd.DataFrame, k: int, seed: int, validation_k: int | None = None, labels: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """``train`` (k per label), ``validation`` (``validation_k``, default k, per label) and ``rest`` (every
    other row, labels kept: the caller decides whether they become unlabelled text). ``labels``: every label
    that must be drawn (a label absent from the pool is an error, not a smaller problem)."""
    if k < 1:
        raise KShotError(f"k-shot: k must be at least 1, found {k}")
    per_label_validation = k if validation_k is None else validation_k
    counts = frame["label"].value_counts()
    counts = pd.concat([counts, pd.Series(0, index=[label for label in labels or [] if label not in counts.index])])
    short = {str(label): int(n) for label, n in counts.items() if n < k + per_label_validation}
    if short:
        raise KShotError(f"k-shot: k={k} (+{per_label_validation} for validation) rows per label, but the labelled "
                         f"pool has fewer for {short}")  # fmt: skip
    rng = np.random.default_rng(seed)
    train_ids, validation_ids = [], []
    for label in sorted(counts.index, key=str):  # a pool of every label with enough rows, checked above
        ids = np.sort(frame.loc[frame["label"] == label, "id"].astype(str).to_numpy())
        drawn = rng.permutation(ids)[: k + per_label_validation]
        train_ids.extend(drawn[:k])
        validation_ids.extend(drawn[k:])
    ids = frame["id"].astype(str)
    train, validation = ids.isin(set(train_ids)), ids.isin(set(validation_ids))
    return {"train": frame[train], "validation": frame[validation], "rest": frame[~(train | validation)]}
