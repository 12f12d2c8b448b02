"""Dataset/artifact manifests."""

import hashlib

import pandas as pd
import pytest
from pydantic import ValidationError

from landing.data_contracts.manifest import (
    DatasetManifest,
    LogitsFileManifest,
    LogitsManifest,
    ModelManifest,
    RawTableManifest,
)
from landing.files import sha256_file


def test_sha256_file_streams(tmp_path):
    p = tmp_path / "f.bin"
    data = b"x" * 3_000_001
    p.write_bytes(data)
    assert sha256_file(p, chunk_size=4096) == hashlib.sha256(data).hexdigest()


def test_dataset_manifest_from_frame(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text("whatever\n")
    frame = pd.DataFrame({"id": ["a", "b", "c"], "text": ["x", "y", "z"], "label": ["1", "0", "1"]})
    m = DatasetManifest.from_frame(frame, "s3://b/train.jsonl", p, "text:str:1,label:str:1", "train", rejects=2, rejects_uri="s3://b/rej.jsonl")
    assert m.rows == 3 and m.label_counts == {"0": 1, "1": 2}
    assert m.sha256 == sha256_file(p) and m.rejects == 2 and m.name == "train"
    assert DatasetManifest.model_validate_json(m.model_dump_json()) == m
    unl = DatasetManifest.from_frame(frame.drop(columns="label"), "u", p, "text:str:1", "test")
    assert unl.label_counts == {} and unl.rejects_uri is None


def test_artifact_manifests_are_typed_per_kind_and_refuse_unknown_fields():
    model = ModelManifest(uri="s3://b/m", sha256="s", role="teacher", labels=["0", "1"], max_seq_length=64)
    assert (model.kind, model.eval_batch_size, model.word_student) == ("model", 128, None)
    assert ModelManifest.model_validate_json(model.model_dump_json()) == model
    pruned = model.model_copy(update={"role": "pruned", "pruning": {"params_after": 3}})
    assert pruned.labels == ["0", "1"] and pruned.pruning == {"params_after": 3}
    logits = LogitsManifest(uri="u", sha256="s", teacher_id="teacher@sha256:1", rows=3, num_labels=2)
    assert logits.kind == "teacher_logits" and LogitsFileManifest(uri="u", sha256="s").role == "easynlp-logits"
    with pytest.raises(ValidationError, match="metadata"):  # the free-form dict is gone: a typo is refused
        ModelManifest(uri="u", sha256="s", role="teacher", metadata={"labels": []})
    with pytest.raises(ValidationError, match="source"):
        RawTableManifest(uri="u", sha256="s", suffix=".tsv")

