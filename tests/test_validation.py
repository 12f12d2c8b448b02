"""read_table checks, quarantine, canonical frame round-trip."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pytest

from landing.data_contracts.schema import TableContract
from landing.data_contracts.validation import (
    DataValidationError,
    ValidationIssue,
    canonical_frame_schema,
    example_id,
    read_canonical,
    read_table,
    write_canonical,
)

SST2_DEV = Path(__file__).resolve().parents[2] / "shared/data/sst2/dev.tsv"


def contract(**kw) -> TableContract:
    base = dict(input_schema="sentence:str:1,label:str:1", first_sequence="sentence", label_column="label", label_enumerate_values=["0", "1"])
    return TableContract(**{**base, **kw})


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return p


def errors(path: Path, c: TableContract, **kw) -> DataValidationError:
    with pytest.raises(DataValidationError) as e:
        read_table(path, c, **kw)
    return e.value


def test_issue_str():
    i = ValidationIssue("data/train.tsv", 17, "label", "one of ['0', '1']", "'2'")
    assert str(i) == "data/train.tsv:17: column 'label': expected one of ['0', '1'], found '2'"
    assert str(ValidationIssue("f.tsv", None, None, "a", "b")) == "f.tsv: expected a, found b"


def test_example_id_stable():
    assert example_id("a") == example_id("a") != example_id("a", "b")
    assert example_id("a", "b") == hashlib.sha256(b"a\tb").hexdigest()[:16]


def test_glue_tsv_trailing_spaces(tmp_path):
    p = write(tmp_path, "train.tsv", "sentence\tlabel\nit 's a charming and often affecting journey . \t1\nhide new secretions from the parental units \t0\n")
    t = read_table(p, contract())
    assert list(t.frame.columns) == ["id", "text", "label"]
    assert t.frame.text[0] == "it 's a charming and often affecting journey ."
    assert t.frame.label.tolist() == ["1", "0"]
    assert t.frame.id[0] == example_id("it 's a charming and often affecting journey .")
    assert t.rejects == 0 and t.rejects_path is None and t.source == str(p)


def test_tsv_has_no_quoting(tmp_path):
    p = write(tmp_path, "q.tsv", 'sentence\tlabel\n"quoted, text\t1\n')
    assert read_table(p, contract()).frame.text[0] == '"quoted, text'


def test_all_issues_collected_with_file_line_column(tmp_path):
    p = write(tmp_path, "train.tsv", "sentence\tlabel\ngood\t1\nbad label\t2\n\t0\nno label\t\ntoo\tmany\tfields\n")
    e = errors(p, contract())
    msg = str(e)
    assert f"{p}:3: column 'label': expected one of ['0', '1'], found '2'" in msg
    assert f"{p}:4: column 'sentence': expected non-empty text, found ''" in msg
    assert f"{p}:5: column 'label': expected a label, found ''" in msg
    assert f"{p}:6: expected 2 fields (as in header), found 3 fields" in msg
    assert [(i.line, i.column) for i in e.issues] == [(3, "label"), (4, "sentence"), (5, "label"), (6, None)]


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no/such/file.tsv"):
        read_table("no/such/file.tsv", contract())


def test_empty_file_and_header_only(tmp_path, ):
    e = errors(write(tmp_path, "empty.tsv", ""), contract())
    assert "empty.tsv: expected a header line, found an empty file" in str(e)
    e = errors(write(tmp_path, "hdr.tsv", "sentence\tlabel\n"), contract())
    assert "hdr.tsv: expected at least one data row, found none" in str(e)
    e = errors(write(tmp_path, "e.jsonl", "\n"), contract())
    assert "e.jsonl: expected at least one data row" in str(e)


def test_missing_header_column_raises_even_with_quarantine(tmp_path):
    p = write(tmp_path, "train.tsv", "text\tlabel\nhello\t1\n")
    e = errors(p, contract(), quarantine_path=tmp_path / "rej.jsonl")
    assert f"{p}:1: column 'sentence': expected column in header, found header ['text', 'label']" in str(e)
    assert not (tmp_path / "rej.jsonl").exists()


def test_extra_header_columns_ignored_and_label_optional(tmp_path):
    p = write(tmp_path, "t.tsv", "idx\tsentence\n0\thello\n1\tworld\n")
    t = read_table(p, contract(), require_label=False)
    assert list(t.frame.columns) == ["id", "text"] and t.frame.text.tolist() == ["hello", "world"]
    e = errors(p, contract())
    assert "column 'label': expected column in header" in str(e)


def test_non_utf8_bytes_reported_with_line_and_offset(tmp_path):
    p = write(tmp_path, "bad.tsv", b"sentence\tlabel\nfine\t1\ncaf\xe9\t0\n")
    e = errors(p, contract())
    assert f"{p}:3: expected valid utf-8 text, found byte 0xe9 at byte offset 25 (byte 3 of the line)" in str(e)
    rej = tmp_path / "rej.jsonl"
    t = read_table(p, contract(), quarantine_path=rej)
    assert t.rejects == 1 and json.loads(rej.read_text())["raw"] == repr(b"caf\xe9\t0\n")


def test_no_header_positional(tmp_path):
    p = write(tmp_path, "t.tsv", "hello\t1\nworld\t0\nshort\n")
    e = errors(p, contract(has_header=False))
    assert f"{p}:3: expected 2 fields (as in input_schema), found 1 fields" in str(e)
    ok = write(tmp_path, "ok.tsv", "hello\t1\n")
    assert read_table(ok, contract(has_header=False)).frame.label.tolist() == ["1"]


def test_typed_fields_counts_and_pairs_csv(tmp_path):
    c = TableContract(
        input_schema="a:str:1,b:str:1,label:str:1,score:float:1,n:int:1,logits:float:2",
        first_sequence="a", second_sequence="b", label_column="label",
    )
    p = write(tmp_path, "d.csv", 'a,b,label,score,n,logits\n"hi, there",yo,x,0.5,3,"0.1,0.9"\nq,,y,abc,1.5,"1,2,3"\nq,r,y,nan,2,"1,z"\n')
    e = errors(p, c)
    got = {(i.line, i.column, i.expected) for i in e.issues}
    assert got == {
        (3, "b", "non-empty text"), (3, "score", "a finite float"), (3, "n", "an int"), (3, "logits", "2 comma-separated float values"),
        (4, "score", "a finite float"), (4, "logits", "2 comma-separated float values (a finite float each)"),
    }
    assert f"{p}:3: column 'n': expected an int, found '1.5'" in str(e)
    good = write(tmp_path, "g.csv", 'a,b,label,score,n,logits\n"hi, there",yo,x,0.5,3,"0.1,0.9"\n')
    f = read_table(good, c).frame
    assert list(f.columns) == ["id", "text", "text_pair", "label", "score", "n", "logits"]
    assert f.iloc[0].to_dict() | {"id": None} == {"id": None, "text": "hi, there", "text_pair": "yo", "label": "x", "score": 0.5, "n": 3, "logits": [0.1, 0.9]}
    assert f.id[0] == example_id("hi, there", "yo")


def test_csv_multiline_record_line_numbers(tmp_path):
    p = write(tmp_path, "m.csv", 'sentence,label\n"two\nlines",1\nbad,7\n')
    e = errors(p, contract())
    assert [(i.line, i.column) for i in e.issues] == [(4, "label")]
    t = read_table(write(tmp_path, "ok.csv", 'sentence,label\n"two\nlines",1\n'), contract())
    assert t.frame.text[0] == "two\nlines"


def test_jsonl(tmp_path):
    c = TableContract(input_schema="text:str:1,label:str:1,logits:float:2", first_sequence="text", label_column="label", label_enumerate_values=["0", "1"])
    lines = [
        json.dumps({"text": "good", "label": 1, "logits": [0.1, 0.2], "extra": True}),
        "{not json",
        json.dumps({"text": "x", "label": "0", "logits": "0.1,0.2,0.3"}),
        json.dumps(["a list"]),
        json.dumps({"label": "0", "logits": [1, 2]}),
        "",
        json.dumps({"text": "also good", "label": "0", "logits": "1,2"}),
    ]
    p = write(tmp_path, "d.jsonl", "\n".join(lines) + "\n")
    e = errors(p, c)
    assert f"{p}:2: expected a JSON object, found invalid JSON" in str(e)
    assert f"{p}:3: column 'logits': expected 2 comma-separated float values, found '0.1,0.2,0.3'" in str(e)
    assert f"{p}:4: expected a JSON object, found JSON list" in str(e)
    assert f"{p}:5: column 'text': expected non-empty text, found no such key" in str(e)
    t = read_table(p, c, quarantine_path=tmp_path / "r.jsonl")
    assert t.rejects == 4 and t.frame.text.tolist() == ["good", "also good"]
    assert t.frame.label.tolist() == ["1", "0"] and t.frame.logits.tolist() == [[0.1, 0.2], [1.0, 2.0]]


def test_duplicate_ids(tmp_path):
    c = contract(input_schema="id:str:1,sentence:str:1,label:str:1", id_column="id")
    p = write(tmp_path, "d.tsv", "id\tsentence\tlabel\na\tx\t1\nb\ty\t0\na\tz\t1\n")
    e = errors(p, c)
    assert f"{p}:4: column 'id': expected a unique id, found 'a' (first on line 2)" in str(e)
    t = read_table(p, c, quarantine_path=tmp_path / "r.jsonl")
    assert t.frame.id.tolist() == ["a", "b"] and t.rejects == 1


def test_quarantine_writes_rejects_atomically(tmp_path):
    p = write(tmp_path, "train.tsv", "sentence\tlabel\ngood\t1\nbad\t2\n\t0\nfine\t0\n")
    rej = tmp_path / "out" / "rejects.jsonl"
    t = read_table(p, contract(), quarantine_path=rej)
    assert t.rejects == 2 and t.rejects_path == str(rej)
    assert t.frame.text.tolist() == ["good", "fine"]
    rows = [json.loads(line) for line in rej.read_text().splitlines()]
    assert [r["line"] for r in rows] == [3, 4]
    assert rows[0]["raw"] == "bad\t2" and rows[0]["issues"] == [f"{p}:3: column 'label': expected one of ['0', '1'], found '2'"]
    assert sorted(x.name for x in rej.parent.iterdir()) == ["rejects.jsonl"]  # no temp files left


def test_quarantine_all_bad_still_raises(tmp_path):
    p = write(tmp_path, "train.tsv", "sentence\tlabel\nbad\t2\n")
    errors(p, contract(), quarantine_path=tmp_path / "r.jsonl")


def test_error_message_truncates_at_20_kinds_of_issue(tmp_path):
    p = write(tmp_path, "t.tsv", "sentence\tlabel\n" + "".join(f"x{i}\t9{i}\n" for i in range(25)))
    msg = str(errors(p, contract()))
    assert msg.startswith("25 data validation issue(s)") and "... and 5 more kind(s) of issue" in msg
    assert f"{p}:21:" in msg and f"{p}:22:" not in msg


def test_the_same_issue_on_many_rows_is_one_line_with_its_count_and_first_rows(tmp_path):
    p = write(tmp_path, "t.tsv", "sentence\tlabel\n" + "x\t9\n" * 25 + "y\t8\n")
    msg = str(errors(p, contract()))
    assert msg.splitlines() == ["26 data validation issue(s):",
                                f"  {p} lines 2, 3, 4, 5, 6, ... (25 rows): column 'label': expected one of ['0', '1'], found '9'",
                                f"  {p}:27: column 'label': expected one of ['0', '1'], found '8'"]  # fmt: skip


def test_canonical_roundtrip_and_schema(tmp_path):
    frame = pd.DataFrame({"id": ["007", "2"], "text": ["a", "b"], "label": ["0", "1"], "logits": [[0.1, 0.2], [0.3, 0.4]]})
    out = tmp_path / "c.jsonl"
    write_canonical(frame, out, labels=["0", "1"])
    back = read_canonical(out)
    assert back.id.tolist() == ["007", "2"] and back.label.tolist() == ["0", "1"]
    assert back.logits.tolist() == [[0.1, 0.2], [0.3, 0.4]]
    with pytest.raises(pa.errors.SchemaErrors):
        write_canonical(frame.assign(text=["a", ""]), tmp_path / "bad.jsonl")
    with pytest.raises(pa.errors.SchemaErrors):
        write_canonical(frame, tmp_path / "bad.jsonl", labels=["0"])
    with pytest.raises(pa.errors.SchemaErrors):
        canonical_frame_schema(True, False, None).validate(frame, lazy=True)  # text_pair missing
    assert not (tmp_path / "bad.jsonl").exists()


@pytest.mark.shared_data("sst2/dev.tsv")
def test_real_sst2_dev():
    t = read_table(SST2_DEV, contract())
    assert len(t.frame) == 872 and set(t.frame.label) == {"0", "1"} and t.rejects == 0
    assert (t.frame.text.str.strip() == t.frame.text).all()
    canonical_frame_schema(False, True, ["0", "1"]).validate(t.frame)
