"""The k-shot protocol: k rows per label to train, validation_k per label to validate, the rest untouched."""

from __future__ import annotations

import pandas as pd
import pytest

from landing.data_contracts.kshot import KShotError, kshot_split

COUNTS = {"neg": 12, "pos": 9, "mid": 7}


def _frame(counts: dict[str, int] = COUNTS) -> pd.DataFrame:
    rows = [(f"{label}-{i:03d}", f"text {label} {i}", label) for label, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["id", "text", "label"])


def _ids(frame: pd.DataFrame) -> set[str]:
    return set(frame["id"])


@pytest.mark.parametrize(("k", "validation_k"), [(2, None), (3, 1), (1, 4)])
def test_k_per_label_and_nothing_lost(k, validation_k):
    frame = _frame()
    parts = kshot_split(frame, k, seed=0, validation_k=validation_k)
    assert set(parts) == {"train", "validation", "rest"}
    per_validation = k if validation_k is None else validation_k
    assert parts["train"]["label"].value_counts().to_dict() == dict.fromkeys(COUNTS, k)
    assert parts["validation"]["label"].value_counts().to_dict() == dict.fromkeys(COUNTS, per_validation)
    train, validation, rest = (_ids(parts[name]) for name in ("train", "validation", "rest"))
    assert not train & validation and not train & rest and not validation & rest
    assert train | validation | rest == _ids(frame)
    assert sum(len(p) for p in parts.values()) == len(frame)
    assert parts["rest"]["label"].value_counts().to_dict() == {
        label: n - k - per_validation for label, n in COUNTS.items() if n > k + per_validation
    }
    for part in parts.values():  # rows kept whole: every column, the text still matching its id
        assert list(part.columns) == ["id", "text", "label"]
        merged = part.merge(frame, on="id", suffixes=("", "_orig"))
        assert (merged["text"] == merged["text_orig"]).all() and (merged["label"] == merged["label_orig"]).all()


def test_reproducible_and_independent_of_row_order():
    frame = _frame()
    first = kshot_split(frame, 3, seed=7)
    again = kshot_split(frame, 3, seed=7)
    shuffled = kshot_split(frame.sample(frac=1.0, random_state=123).reset_index(drop=True), 3, seed=7)
    reversed_ = kshot_split(frame.iloc[::-1], 3, seed=7)
    for name in ("train", "validation", "rest"):
        assert _ids(first[name]) == _ids(again[name]) == _ids(shuffled[name]) == _ids(reversed_[name])


def test_different_seeds_draw_differently():
    frame = _frame()
    draws = {frozenset(_ids(kshot_split(frame, 2, seed=seed)["train"])) for seed in range(5)}
    assert len(draws) > 1
    a, b = kshot_split(frame, 2, seed=1), kshot_split(frame, 2, seed=2)
    assert _ids(a["train"]) | _ids(a["validation"]) != _ids(b["train"]) | _ids(b["validation"])


def test_a_label_short_of_rows_is_named_with_its_count():
    frame = _frame({"neg": 10, "pos": 5, "mid": 10})
    with pytest.raises(KShotError, match=r"'pos': 5") as caught:
        kshot_split(frame, 3, seed=0)  # needs 3 + 3 per label
    assert "neg" not in str(caught.value) and "mid" not in str(caught.value)
    with pytest.raises(KShotError, match=r"'pos': 5"):
        kshot_split(frame, 2, seed=0, validation_k=4)
    assert len(kshot_split(frame, 2, seed=0, validation_k=3)["rest"]) == 25 - 3 * 5  # exactly enough is fine


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_is_refused(k):
    with pytest.raises(KShotError, match=f"k must be at least 1, found {k}"):
        kshot_split(_frame(), k, seed=0)


def test_draws_from_a_pool_without_eval_rows_never_touch_eval():
    frame = _frame()
    eval_frame = frame.groupby("label", group_keys=False).head(3)  # held out first
    pool = frame[~frame["id"].isin(eval_frame["id"])]
    for seed in range(3):
        parts = kshot_split(pool, 2, seed=seed)
        assert not (_ids(parts["train"]) | _ids(parts["validation"]) | _ids(parts["rest"])) & _ids(eval_frame)


def test_a_label_absent_from_the_pool_is_named():
    with pytest.raises(KShotError, match=r"'maybe': 0"):
        kshot_split(_frame(), 2, seed=0, labels=[*COUNTS, "maybe"])
