"""input_schema parsing and TableContract validation."""

import pytest
from pydantic import ValidationError

from landing.data_contracts.schema import SchemaError, SchemaField, TableContract, parse_input_schema


def test_parse_basic():
    assert parse_input_schema("text:str:1, label:str:1,logits:float:2") == [
        SchemaField("text", "str", 1), SchemaField("label", "str", 1), SchemaField("logits", "float", 2)
    ]


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("text:str:1,label:string:1", "input_schema entry 2 'label:string:1': type must be one of str, int, float, found 'string'"),
        ("", "input_schema is empty"),
        ("   ", "input_schema is empty"),
        ("text:str:1,text:int:1", "entry 2 'text:int:1': duplicate field name 'text' (already entry 1)"),
        ("text:str:0", "entry 1 'text:str:0': count must be >= 1, found 0"),
        ("text:str:x", "entry 1 'text:str:x': count must be an integer, found 'x'"),
        ("text:str", "entry 1 'text:str': expected 'name:type:count'"),
        ("text:str:1,", "entry 2 '': expected 'name:type:count'"),
        (":str:1", "name must be non-empty"),
    ],
)
def test_parse_errors(spec, fragment):
    with pytest.raises(SchemaError) as e:
        parse_input_schema(spec)
    assert fragment in str(e.value)
    assert isinstance(e.value, ValueError)


def _c(**kw):
    base = dict(input_schema="uid:str:1,sentence:str:1,label:str:1", first_sequence="sentence", label_column="label")
    return TableContract(**{**base, **kw})


def test_contract_ok_and_fields():
    c = _c(id_column="uid", label_enumerate_values="0, 1")
    assert [f.name for f in c.fields] == ["uid", "sentence", "label"]
    assert c.label_enumerate_values == ["0", "1"]
    assert c.resolve_format("x/train.tsv") == "tsv" and c.resolve_format("a.TXT") == "tsv"
    assert c.resolve_format("a.json") == "jsonl" and c.resolve_format("a.csv") == "csv"
    assert _c(format="csv").resolve_format("a.tsv") == "csv"
    with pytest.raises(SchemaError, match="cannot infer format"):
        c.resolve_format("a.parquet")


@pytest.mark.parametrize("key", ["first_sequence", "second_sequence", "label_column", "id_column"])
def test_contract_role_not_in_schema(key):
    with pytest.raises(ValidationError) as e:
        _c(**{key: "nope"})
    assert f"{key}='nope' is not a field of input_schema" in str(e.value)
    assert "['uid', 'sentence', 'label']" in str(e.value)


def test_contract_rejects_bad_schema_extra_keys_and_collisions():
    with pytest.raises(ValidationError, match="found 'string'"):
        _c(input_schema="sentence:string:1")
    with pytest.raises(ValidationError, match="extra"):
        _c(bogus=1)
    with pytest.raises(ValidationError, match="collide"):
        _c(input_schema="sentence:str:1,label:str:1,text:str:1")
    with pytest.raises(ValidationError, match="duplicates"):
        _c(label_enumerate_values=["0", "0"])


def test_without_label():
    c = _c(label_enumerate_values=["0", "1"]).without_label()
    assert c.label_column is None
    assert c.input_schema == "uid:str:1,sentence:str:1"
    unlabelled = _c(input_schema="uid:str:1,sentence:str:1,y:str:1", label_column=None)
    assert unlabelled.without_label() is unlabelled


def test_contract_passthrough_field_named_id_rejected():
    with pytest.raises(ValidationError, match=r"\['id'\] collide"):
        _c(input_schema="id:str:1,sentence:str:1,label:str:1")
    assert _c(input_schema="id:str:1,sentence:str:1,label:str:1", id_column="id").id_column == "id"
