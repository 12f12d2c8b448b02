"""Dataset/artifact manifests."""

import hashlib

import pandas as pd

from landing.data_contracts.manifest import ArtifactManifest, DatasetManifest
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


def test_artifact_manifest(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(b"abc")
    m = ArtifactManifest.from_file("s3://b/model.bin", p, "model", {"params": 5})
    assert m.sha256 == hashlib.sha256(b"abc").hexdigest() and m.metadata == {"params": 5}
    assert ArtifactManifest(uri="u", sha256="s", kind="logits").metadata == {}
