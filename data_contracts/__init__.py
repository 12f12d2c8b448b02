"""Data contracts: schemas, validated reading, manifests, leakage-free splits and id-keyed teacher logits."""

from .logits import LogitsMismatchError, TeacherLogits, align_logits, read_logits, write_logits
from .manifest import (
    ArtifactManifest,
    DatasetManifest,
    LogitsFileManifest,
    LogitsManifest,
    ModelManifest,
    RawTableManifest,
)
from .schema import SchemaError, SchemaField, TableContract, parse_input_schema
from .splitting import (
    ConflictingLabelsError,
    ConflictPolicy,
    DedupResult,
    assert_disjoint,
    deduplicate,
    remove_overlap,
    stratified_split,
)
from .validation import (
    DataValidationError,
    ValidatedTable,
    ValidationIssue,
    canonical_frame_schema,
    example_id,
    read_canonical,
    read_table,
    write_canonical,
)

__all__ = [
    "ArtifactManifest", "LogitsFileManifest", "LogitsManifest", "ModelManifest", "RawTableManifest", "ConflictPolicy", "ConflictingLabelsError", "DataValidationError", "DatasetManifest", "DedupResult", "LogitsMismatchError",
    "SchemaError", "SchemaField", "TableContract", "TeacherLogits", "ValidatedTable", "ValidationIssue",
    "align_logits", "assert_disjoint", "canonical_frame_schema", "deduplicate", "example_id",
    "parse_input_schema", "read_canonical", "read_logits", "read_table", "remove_overlap",
    "stratified_split", "write_canonical", "write_logits",
]
