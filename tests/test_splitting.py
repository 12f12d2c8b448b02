"""Dedup, stratified seeded splits, overlap removal, disjointness."""

import pandas as pd
import pytest

from landing.data_contracts.splitting import (
    ConflictingLabelsError,
    assert_disjoint,
    deduplicate,
    remove_overlap,
    stratified_split,
)


def frame(n0: int = 300, n1: int = 100) -> pd.DataFrame:
    labels = ["0"] * n0 + ["1"] * n1
    return pd.DataFrame({"id": [f"i{i}" for i in range(n0 + n1)], "text": [f"t{i}" for i in range(n0 + n1)], "label": labels})


CONFLICTED = pd.DataFrame({"text": ["a", "b", "a", "c", "b", "a", "d", "d"],
                           "label": ["1", "0", "1", "1", "1", "0", "0", "0"]})  # fmt: skip


def test_deduplicate_drops_every_row_of_a_conflicting_input_by_default():
    res = deduplicate(CONFLICTED)
    out, removed = res
    assert out.text.tolist() == ["c", "d"] and removed == 6  # 'a' and 'b' occur with two labels; 'd' is a repeat
    assert res.conflicts == 2 and sorted(res.conflict_rows.text) == ["a", "a", "a", "b", "b"]
    assert not res.conflict_rows.kept.any()
    assert res.conflict_rows.labels_seen.map(tuple).tolist() == [("0", "1")] * 5


def test_deduplicate_first_keeps_each_inputs_first_row_and_still_lists_conflicts():
    res = deduplicate(CONFLICTED, conflicts="first")
    assert res.frame.text.tolist() == ["a", "b", "c", "d"] and res.frame.label.tolist() == ["1", "0", "1", "0"]
    assert res.removed == 4 and res.conflicts == 2
    assert res.conflict_rows.kept.tolist() == [True, True, False, False, False]


def test_deduplicate_fail_names_the_table_and_the_inputs():
    with pytest.raises(ConflictingLabelsError, match=r"train\.tsv: 2 input\(s\) occur with different labels, e\.g\. 'a' has labels \['0', '1'\]"):
        deduplicate(CONFLICTED, conflicts="fail", where="train.tsv")
    assert deduplicate(CONFLICTED.drop_duplicates("text"), conflicts="fail").removed == 0  # no conflict, no error


def test_deduplicate_without_labels_has_no_conflicts():
    res = deduplicate(CONFLICTED.drop(columns="label"), conflicts="fail")
    assert res.conflicts == 0 and res.frame.text.tolist() == ["a", "b", "c", "d"]


def test_deduplicate_pairs_use_both_texts():
    f = pd.DataFrame({"text": ["p", "p", "p"], "text_pair": ["h1", "h2", "h1"], "label": ["0", "1", "0"]})
    res = deduplicate(f)
    assert res.removed == 1 and res.frame.text_pair.tolist() == ["h1", "h2"] and res.conflicts == 0
    res = deduplicate(f.assign(label=["0", "1", "1"]))  # same pair ("p", "h1") with two labels
    assert res.conflicts == 1 and res.frame.text_pair.tolist() == ["h2"]


def test_stratified_proportions_and_disjoint():
    f = frame()
    splits = stratified_split(f, {"train": 0.6, "dev": 0.2, "test": 0.2}, seed=1)
    assert {k: len(v) for k, v in splits.items()} == {"train": 240, "dev": 80, "test": 80}
    for name, part in splits.items():
        share = (part.label == "1").sum()
        assert abs(share - len(part) / 4) <= 1, name
    assert_disjoint(splits)
    assert set(pd.concat(splits.values()).text) == set(f.text)


def test_stratified_counts_leave_rest_out():
    splits = stratified_split(frame(), {"dev": 40, "test": 20}, seed=0)
    assert len(splits["dev"]) == 40 and (splits["dev"].label == "1").sum() == 10
    assert len(splits["test"]) == 20 and (splits["test"].label == "1").sum() == 5


def test_seed_reproducible_and_different_seeds_differ():
    f = frame()
    a = stratified_split(f, {"train": 0.5, "dev": 0.5}, seed=7)
    b = stratified_split(f, {"train": 0.5, "dev": 0.5}, seed=7)
    c = stratified_split(f, {"train": 0.5, "dev": 0.5}, seed=8)
    pd.testing.assert_frame_equal(a["dev"], b["dev"])
    assert set(a["dev"].text) != set(c["dev"].text)


def test_unlabelled_split():
    f = frame().drop(columns="label")
    s = stratified_split(f, {"a": 10, "b": 0.5}, seed=3)
    assert len(s["a"]) == 10 and len(s["b"]) == 200
    assert_disjoint(s)
    assert s["a"].text.tolist() != f.text.head(10).tolist()


def test_split_errors():
    f = frame(10, 10)
    with pytest.raises(ValueError, match="split 'test' needs 5 rows but only 2 of 20 remain"):
        stratified_split(f, {"train": 18, "test": 5}, seed=0)
    with pytest.raises(ValueError, match="split 'x': fraction must be in"):
        stratified_split(f, {"x": 1.5}, seed=0)
    with pytest.raises(ValueError, match="deduplicate"):
        stratified_split(pd.concat([f, f.head(1)]), {"x": 2}, seed=0)


def test_remove_overlap():
    f = pd.DataFrame({"text": ["a", "b", "c"], "label": ["0", "1", "0"]})
    out, n = remove_overlap(f, pd.DataFrame({"text": ["b", "z"]}))
    assert n == 1 and out.text.tolist() == ["a", "c"]
    pairs = pd.DataFrame({"text": ["p", "p"], "text_pair": ["h1", "h2"]})
    out, n = remove_overlap(pairs, pairs.head(1))
    assert n == 1 and out.text_pair.tolist() == ["h2"], "pair tasks key on (text, text_pair) by default"


def test_pair_splits_sharing_a_premise_are_disjoint():
    assert_disjoint({"train": pd.DataFrame({"text": ["p"], "text_pair": ["h1"]}),
                     "eval": pd.DataFrame({"text": ["p"], "text_pair": ["h2"]})})  # fmt: skip
    with pytest.raises(ValueError, match=r"\['text', 'text_pair'\] key"):
        assert_disjoint({"train": pd.DataFrame({"text": ["p"], "text_pair": ["h1"]}),
                         "eval": pd.DataFrame({"text": ["p"], "text_pair": ["h1"]})})  # fmt: skip


def test_assert_disjoint_names_splits_and_example():
    splits = {"train": pd.DataFrame({"text": ["a", "b"]}), "dev": pd.DataFrame({"text": ["c"]}), "test": pd.DataFrame({"text": ["b"]})}
    with pytest.raises(ValueError, match=r"splits 'train' and 'test' share 1 \['text'\] key\(s\), e.g. 'b'"):
        assert_disjoint(splits)


def test_fraction_rounding_never_overallocates():
    s = stratified_split(frame(2, 1), {"a": 0.5, "b": 0.5}, seed=0)
    assert len(s["a"]) + len(s["b"]) == 3
    with pytest.raises(ValueError, match="split 'b': fractions sum to 1.1 > 1"):
        stratified_split(frame(), {"a": 0.6, "b": 0.5}, seed=0)


def test_validation_split_is_stratified_and_disjoint(step_context, publish_table, tmp_path):
    from landing.config import SplitConfig
    from landing.tasks.context import fetch_dataset
    from landing.tasks.data import split_tables

    ctx = step_context("splits", 5)
    train = publish_table(ctx, "train", [f"s{i}" for i in range(400)], ["0"] * 300 + ["1"] * 100)
    held_out = publish_table(ctx, "eval", [f"s{i}" for i in range(390, 440)], ["0"] * 25 + ["1"] * 25)
    out = split_tables.fn(train, held_out, None, SplitConfig(train_size=100, transfer_size=150), ctx)
    # 10 rows of eval overlap training and are removed first: 10% of the 390 labelled rows left.
    assert out["validation"].rows == 39 and abs(out["validation"].label_counts["1"] - 39 * 90 / 390) <= 1
    frames = {name: fetch_dataset(m) for name, m in out.items()}
    assert_disjoint(frames)
    assert set(out) == {"train", "validation", "eval", "transfer"}



def test_a_validation_split_like_eval_takes_the_eval_lengths_from_the_labelled_rows(step_context, publish_table):
    from landing.config import SplitConfig
    from landing.data_contracts.splitting import word_counts
    from landing.tasks.context import fetch_dataset
    from landing.tasks.data import split_tables

    ctx = step_context("splits-like-eval", 5)
    phrases, sentences = [f"p{i}" for i in range(300)], [f"a full sentence number {i} here" for i in range(100)]
    train = publish_table(ctx, "train", phrases + sentences, ["0", "1"] * 200)
    held_out = publish_table(ctx, "eval", [f"another full sentence {i} ends" for i in range(50)], ["0", "1"] * 25)
    cfg = SplitConfig(train_size=100, validation_size=40, validation_like="eval")
    out = split_tables.fn(train, held_out, None, cfg, ctx)
    frames = {name: fetch_dataset(m) for name, m in out.items()}
    assert out["validation"].rows == 40 and set(word_counts(frames["validation"])) == {6}  # sentences only
    assert out["validation"].label_counts == {"0": 20, "1": 20}
    assert_disjoint(frames)
    assert out["train"].rows == 100

def test_validation_size_default_rule_and_explicit_zero():
    from landing.config import SplitConfig
    from landing.tasks.data import _split_sizes

    assert SplitConfig().validation_rows(500) == 50
    assert SplitConfig().validation_rows(67_000) == 1000  # capped
    assert SplitConfig(validation_size=0.25).validation_rows(400) == 100
    assert SplitConfig(validation_size=7).validation_rows(400) == 7
    assert "validation" not in _split_sizes(SplitConfig(validation_size=0), True, 400)
    assert list(_split_sizes(SplitConfig(train_size=10), True, 400)) == ["validation", "train"]


def test_length_matched_validation_follows_the_reference_lengths_and_keeps_labels_stratified():
    import numpy as np

    from landing.data_contracts.splitting import length_matched_rows, word_counts

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 4, 900), rng.integers(10, 30, 300)])  # mostly phrases
    pool = pd.DataFrame({"id": [f"p{i}" for i in range(len(lengths))], "label": ["0", "1"] * (len(lengths) // 2),
                         "text": [" ".join([f"w{i}"] * n) for i, n in enumerate(lengths)]})  # fmt: skip
    reference = pd.DataFrame({"text": [" ".join(["x"] * n) for n in rng.integers(10, 30, 200)]})  # full sentences
    picked = length_matched_rows(pool, reference, 100, seed=1)
    assert len(picked) == 100 and picked["id"].is_unique and set(picked["id"]) <= set(pool["id"])
    assert word_counts(picked).min() >= 10 and picked.attrs["length_shortfall"] == 0
    assert abs(np.median(word_counts(picked)) - np.median(word_counts(reference))) <= 2
    assert abs((picked["label"] == "1").mean() - 0.5) <= 0.05  # stratified within each length bin
    assert picked.equals(length_matched_rows(pool, reference, 100, seed=1))  # seeded
    # Too few long rows: all of them, the rest from the nearest (longest) bins, and the shortfall said.
    few = length_matched_rows(pool, reference, 400, seed=1)
    assert len(few) == 400 and few.attrs["length_shortfall"] == 100 and (word_counts(few) >= 10).sum() == 300
    with pytest.raises(ValueError, match="needs 2000 rows; the labelled table has 1200"):
        length_matched_rows(pool, reference, 2000, seed=1)


def test_whole_text_rows_and_inside_rows_match_whole_words_only():
    from landing.data_contracts.splitting import inside_rows, whole_text_rows

    rows = pd.DataFrame({"text": ["a great movie , truly", "great movie", "a great", "Great  Movie", "eat", "other one"]})
    assert whole_text_rows(rows).tolist() == [True, False, False, False, True, True]  # "eat" is not a word of "great"
    containers = pd.DataFrame({"text": ["a great movie , truly"]})
    assert inside_rows(rows, containers).tolist() == [True, True, True, True, False, False]  # case and spaces folded


def test_a_validation_split_from_whole_texts_shares_no_phrase_with_training(step_context, publish_table):
    from landing.config import SplitConfig
    from landing.data_contracts.splitting import inside_rows
    from landing.errors import UserError
    from landing.tasks.context import fetch_dataset
    from landing.tasks.data import split_tables

    ctx = step_context("splits-whole-texts", 3)
    sentences = [f"sentence {i} is long and full" for i in range(60)]
    phrases = [f"sentence {i} is long" for i in range(60)] + [f"{i} is long and full" for i in range(60)]  # inside
    train = publish_table(ctx, "train", sentences + phrases, ["0", "1"] * 90)
    cfg = SplitConfig(train_size=60, transfer_size=40, validation_size=20, validation_from="whole_texts")
    out = split_tables.fn(train, None, None, cfg, ctx)
    frames = {name: fetch_dataset(m) for name, m in out.items()}
    assert out["validation"].rows == 20 and set(frames["validation"]["text"]) <= set(sentences)
    assert out["validation"].label_counts == {"0": 10, "1": 10}
    for name in ("train", "transfer"):  # neither inside a validation row nor containing one
        assert not inside_rows(frames[name], frames["validation"]).any()
        assert not inside_rows(frames["validation"], frames[name]).any()
    assert_disjoint(frames)
    with pytest.raises(UserError, match="whole_texts: 60 labelled rows occur inside no other row, and the validation split needs 61"):
        split_tables.fn(train, None, None, cfg.model_copy(update={"validation_size": 61}), ctx)
