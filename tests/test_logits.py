"""Teacher logits file format and id-keyed alignment."""

import json

import numpy as np
import pytest

from landing.data_contracts.logits import LogitsMismatchError, TeacherLogits, align_logits, read_logits, write_logits


def make(n: int = 6, teacher: str = "bert-base@abc") -> TeacherLogits:
    rng = np.random.default_rng(0)
    return TeacherLogits([f"id{i}" for i in range(n)], rng.normal(size=(n, 2)).astype(np.float32), teacher, 2, ["0", "1"])


def test_roundtrip_atomic(tmp_path):
    t = make()
    p = tmp_path / "sub" / "logits.npz"
    write_logits(p, t)
    back = read_logits(p)
    assert back.ids == t.ids and back.teacher_id == t.teacher_id and back.num_labels == 2 and back.label_names == ["0", "1"]
    assert back.logits.dtype == np.float32 and np.array_equal(back.logits, t.logits)
    assert [x.name for x in p.parent.iterdir()] == ["logits.npz"]


def test_align_by_id_not_position(tmp_path):
    t = make()
    p = tmp_path / "l.npz"
    write_logits(p, t)
    loaded = read_logits(p)
    table_ids = ["id4", "id0", "id5", "id2"]  # shuffled subset; file has extra ids
    got = align_logits(table_ids, loaded, expected_teacher_id="bert-base@abc", expected_num_labels=2, expected_label_names=["0", "1"])
    assert got.shape == (4, 2) and got.dtype == np.float32
    for row, i in zip(got, table_ids):
        assert np.array_equal(row, t.logits[int(i[2:])])
    assert align_logits([], loaded, expected_teacher_id=None, expected_num_labels=2).shape == (0, 2)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(expected_teacher_id="other"), "teacher id mismatch: expected 'other', logits file has 'bert-base@abc'"),
        (dict(expected_num_labels=3), "num_labels mismatch: expected 3, logits file has 2"),
        (dict(expected_label_names=["neg", "pos"]), "label names mismatch: expected ['neg', 'pos'], logits file has ['0', '1']"),
    ],
)
def test_align_mismatches(kw, msg):
    args = dict(expected_teacher_id="bert-base@abc", expected_num_labels=2) | kw
    with pytest.raises(LogitsMismatchError) as e:
        align_logits(["id0"], make(), **args)
    assert msg in str(e.value)


def test_align_missing_ids():
    ids = ["id1"] + [f"new{i}" for i in range(7)]
    with pytest.raises(LogitsMismatchError, match=r"7 of 8 table id\(s\) have no teacher logits .* e.g. \['new0', 'new1', 'new2', 'new3', 'new4'\]$"):
        align_logits(ids, make(), expected_teacher_id=None, expected_num_labels=2)


@pytest.mark.parametrize(
    "change, msg",
    [
        (lambda t: setattr(t, "ids", t.ids[:-1]), "expected logits shape (5, 2), found (6, 2)"),
        (lambda t: setattr(t, "num_labels", 3), "expected logits shape (6, 3)"),
        (lambda t: setattr(t, "ids", ["a"] * 6), "expected unique ids, found 1 duplicate(s), e.g. ['a']"),
        (lambda t: t.logits.__setitem__((2, 1), np.nan), "non-finite values in 1 row(s), e.g. ids ['id2']"),
        (lambda t: setattr(t, "label_names", ["x"]), "expected 2 label names"),
    ],
)
def test_write_validates(tmp_path, change, msg):
    t = make()
    change(t)
    with pytest.raises(ValueError) as e:
        write_logits(tmp_path / "l.npz", t)
    assert msg in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_read_errors_name_file(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, ids=np.array(["a"]))
    with pytest.raises(ValueError, match=rf"{p}: not a teacher logits file: missing key\(s\) \['logits', 'meta'\]"):
        read_logits(p)
    q = tmp_path / "v2.npz"
    meta = {"format_version": 2, "teacher_id": "t", "num_labels": 1, "label_names": ["a"]}
    np.savez(q, ids=np.array(["a"]), logits=np.zeros((1, 1), np.float32), meta=np.array([json.dumps(meta)]))
    with pytest.raises(ValueError, match=rf"{q}: unknown logits format_version: expected 1, found 2"):
        read_logits(q)
