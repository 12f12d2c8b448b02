"""EasyNLP-style table contracts: which columns a data file has and what role each plays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from landing.errors import UserError

Dtype = Literal["str", "int", "float"]
_DTYPES: tuple[str, ...] = get_args(Dtype)
_EXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
#: Column names of the canonical frame; extra schema fields must not collide with them.
RESERVED_NAMES = frozenset({"id", "text", "text_pair", "label"})


class SchemaError(UserError, ValueError):
    """An input_schema string or table contract is malformed."""


@dataclass(frozen=True)
class SchemaField:
    """One column of an EasyNLP input_schema (count > 1: one column of comma-separated values)."""

    name: str
    dtype: Dtype
    count: int


def parse_input_schema(spec: str) -> list[SchemaField]:
    """Parse ``"text:str:1,label:str:1"``; errors name the entry, its position, expected and found."""
    if not spec or not spec.strip():
        raise SchemaError("input_schema is empty: expected 'name:type:count' entries separated by ','")
    fields: list[SchemaField] = []
    seen: dict[str, int] = {}
    for pos, raw in enumerate(spec.split(","), start=1):
        entry = raw.strip()
        where = f"input_schema entry {pos} {entry!r}"
        parts = entry.split(":")
        if len(parts) != 3:
            raise SchemaError(f"{where}: expected 'name:type:count' (3 parts separated by ':'), found {len(parts)} part(s)")
        name, dtype, count_s = (p.strip() for p in parts)
        if not name:
            raise SchemaError(f"{where}: name must be non-empty, found ''")
        if dtype not in _DTYPES:
            raise SchemaError(f"{where}: type must be one of {', '.join(_DTYPES)}, found {dtype!r}")
        try:
            count = int(count_s)
        except ValueError:
            raise SchemaError(f"{where}: count must be an integer, found {count_s!r}") from None
        if count < 1:
            raise SchemaError(f"{where}: count must be >= 1, found {count}")
        if name in seen:
            raise SchemaError(f"{where}: duplicate field name {name!r} (already entry {seen[name]})")
        seen[name] = pos
        fields.append(SchemaField(name, dtype, count))  # type: ignore[arg-type]
    return fields


class TableContract(BaseModel):
    """How to read one data file and map its columns onto the canonical frame."""

    model_config = ConfigDict(extra="forbid")

    input_schema: str
    first_sequence: str
    second_sequence: str | None = None
    label_column: str | None = None
    label_enumerate_values: list[str] | None = None
    id_column: str | None = None
    format: Literal["csv", "tsv", "jsonl"] | None = None
    has_header: bool = True
    skip_first_line: bool = Field(
        False, description="EasyNLP's --skip_first_line: columns by input_schema order, the first line ignored"
    )
    strip: bool = Field(True, description="strip spaces around each field (EasyNLP keeps them: the easynlp command "
                        "reads tables with strip off)")
    encoding: str = "utf-8"

    @field_validator("input_schema")
    @classmethod
    def _schema_parses(cls, v: str) -> str:
        parse_input_schema(v)
        return v

    @field_validator("label_enumerate_values", mode="before")
    @classmethod
    def _split_labels(cls, v: object) -> object:
        """EasyNLP configs give labels as one comma-separated string; accept that too."""
        if isinstance(v, str):
            return [s.strip() for s in v.split(",")]
        return v

    @field_validator("label_enumerate_values")
    @classmethod
    def _labels_ok(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v or any(not s for s in v):
                raise ValueError(f"label_enumerate_values must be non-empty strings, found {v!r}")
            if len(set(v)) != len(v):
                raise ValueError(f"label_enumerate_values has duplicates: {v!r}")
        return v

    @model_validator(mode="after")
    def _roles_in_schema(self) -> TableContract:
        names = [f.name for f in self.fields]
        roles = {
            "first_sequence": self.first_sequence,
            "second_sequence": self.second_sequence,
            "label_column": self.label_column,
            "id_column": self.id_column,
        }
        for key, col in roles.items():
            if col is not None and col not in names:
                raise ValueError(f"{key}={col!r} is not a field of input_schema; schema fields are {names}")
        used = [c for c in roles.values() if c is not None]
        if len(set(used)) != len(used):
            raise ValueError(f"first_sequence/second_sequence/label_column/id_column must be distinct, found {used}")
        if self.skip_first_line and self.has_header:
            raise ValueError("skip_first_line reads columns by input_schema order; set has_header to false with it")
        clash = [n for n in self.extra_field_names if n in RESERVED_NAMES]
        if clash:
            raise ValueError(f"schema fields {clash} collide with canonical column names {sorted(RESERVED_NAMES)}")
        return self

    @property
    def fields(self) -> list[SchemaField]:
        """The parsed input_schema."""
        return parse_input_schema(self.input_schema)

    @property
    def extra_field_names(self) -> list[str]:
        """Schema fields with no role; they pass through to the canonical frame under their own names."""
        roles = {self.first_sequence, self.second_sequence, self.label_column, self.id_column}
        return [f.name for f in self.fields if f.name not in roles]

    def resolve_format(self, path: str | Path) -> Literal["csv", "tsv", "jsonl"]:
        """Explicit format wins; otherwise infer from the extension."""
        if self.format is not None:
            return self.format
        ext = Path(path).suffix.lower()
        if ext not in _EXT_FORMATS:
            raise SchemaError(f"cannot infer format of {str(path)!r}: expected extension one of {sorted(_EXT_FORMATS)}, found {ext!r}; set 'format'")
        return _EXT_FORMATS[ext]  # type: ignore[return-value]

    def without_label(self) -> TableContract:
        """Contract for an unlabelled copy of the table (e.g. a GLUE test file)."""
        if self.label_column is None:
            return self
        kept = [f for f in self.fields if f.name != self.label_column]
        schema = ",".join(f"{f.name}:{f.dtype}:{f.count}" for f in kept)
        return TableContract.model_validate({**self.model_dump(), "input_schema": schema, "label_column": None})
