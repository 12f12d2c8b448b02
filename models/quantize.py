"""INT8 variants of an exported ONNX classifier, via onnxruntime.quantization.

Each function writes ``onnx_out`` atomically, records its precision in the bundle's
``landing_model.json`` (copying tokenizer + metadata when ``onnx_out`` is in another
directory) and returns ``onnx_out``. Check the result with
:func:`models.onnx_export.check_parity_argmax`.

``reduce_range`` (7-bit MatMul/Attention weights, ±64 instead of ±127) is for x86 CPUs without
VNNI: their u8s8 kernel sums pairs of u8·s8 products in int16 with saturation, which 7-bit
weights cannot reach. The caller decides (``infra.provenance.int8_dot_product_exact``); QAT must
be told the same value (``models.qat.prepare_qat``). Embedding tables are always ±127 (a lookup).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from landing.files import atomic_path
from landing.models.onnx_predictor import BundleTokenizer, read_bundle_meta, register_variant

# Dynamic (IntegerOps) mode: MatMul becomes MatMulInteger/DynamicQuantizeMatMul (the pooler and
# classifier Gemms too: the quantizer splits them into MatMul + Add), and the fused Attention op of
# a graph optimised by models.onnx_fusion becomes QAttention.
_DYNAMIC_OPS = ["MatMul", "Attention"]
# Gather on an initializer = embedding lookup (word, position, token-type). Word embeddings are
# most of a small BERT. Per-tensor (onnxruntime's own Gather quantization): one uint8 scale for
# the whole table; per row (``per_channel``): see ``_int8_embedding_rows``.
_EMBEDDING_OPS = ["MatMul", "Attention", "Gather"]


@contextmanager
def _preprocessed(onnx_in: Path) -> Iterator[Path]:
    """``quant_pre_process``: symbolic shape inference + ORT basic graph optimisation, which the
    quantizer needs to know tensor ranks (it skips tensors of unknown shape) and to fold the
    exporter's Constant/Identity chains."""
    with tempfile.TemporaryDirectory(dir=onnx_in.parent, prefix=".quant.") as tmp:
        out = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(onnx_in), str(out), skip_symbolic_shape=False, auto_merge=True)
        yield out


def _finish(onnx_in: Path, onnx_out: Path, precision: str) -> Path:
    if (onnx_in.parent / "landing_model.json").is_file():
        register_variant(onnx_out, precision, source_bundle=onnx_in.parent)
    return onnx_out


def _dynamic(
    onnx_in: Path, onnx_out: Path, op_types: list[str], per_channel: bool, precision: str,
    rewrite: Callable[[onnx.ModelProto], int] | None = None, reduce_range: bool = False,
) -> Path:  # fmt: skip
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    with _preprocessed(onnx_in) as pre, atomic_path(onnx_out, suffix=".onnx") as tmp:
        quantize_dynamic(
            pre, tmp, op_types_to_quantize=op_types, per_channel=per_channel, weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            # Contrib ops of a fused graph (Attention, SkipLayerNormalization) have no ONNX shape
            # inference; their outputs are FP32 like everything the quantizer looks at.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip
        if rewrite is not None:
            model = onnx.load(tmp)
            if not rewrite(model):
                raise ValueError(f"{onnx_in.name}: no embedding table (Gather on a 2-D FP32 initializer) to quantize")
            onnx.save(model, tmp)
    return _finish(onnx_in, onnx_out, precision)


def _gather_axis(node: onnx.NodeProto) -> int:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)


def _int8_embedding_rows(model: onnx.ModelProto) -> int:
    """Each embedding lookup (Gather on a 2-D FP32 initializer used only by axis-0 Gathers) becomes a
    lookup in an INT8 table with one symmetric scale per row, dequantized after the lookup:

        Gather(table_int8, ids) -> Cast(float) -> Mul(Gather(row_scales, ids))

    One scale per token instead of one per table (onnxruntime's Gather quantization) keeps rare
    tokens with small vectors from being rounded to a few levels; same INT8 size (+4 bytes a
    row). Returns how many tables were rewritten.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    nodes, rewritten = [], 0
    for node in graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if (table is None or len(table.dims) != 2 or table.data_type != onnx.TensorProto.FLOAT
                or any(u.op_type != "Gather" or _gather_axis(u) != 0 for u in users[table.name])):  # fmt: skip
            nodes.append(node)
            continue
        if f"{table.name}_int8" not in inits:
            w = numpy_helper.to_array(table)
            scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-8) / 127.0
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            for array, name in ((q, f"{table.name}_int8"), (scale.astype(np.float32), f"{table.name}_scale")):
                inits[name] = numpy_helper.from_array(array, name)
                graph.initializer.append(inits[name])
            rewritten += 1
        ids, out = node.input[1], node.output[0]
        tag = node.name or out
        nodes += [
            helper.make_node("Gather", [f"{table.name}_int8", ids], [f"{out}_int8"], name=f"{tag}_int8", axis=0),
            helper.make_node("Cast", [f"{out}_int8"], [f"{out}_cast"], name=f"{tag}_cast", to=onnx.TensorProto.FLOAT),
            helper.make_node("Gather", [f"{table.name}_scale", ids], [f"{out}_scale"], name=f"{tag}_scale", axis=0),
            helper.make_node("Mul", [f"{out}_cast", f"{out}_scale"], [out], name=f"{tag}_dequant"),
        ]
    dropped = {n for n in inits if f"{n}_int8" in inits}
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def quantize_dynamic_int8(
    onnx_in: Path, onnx_out: Path, *, per_channel: bool = False, reduce_range: bool = False
) -> Path:
    """INT8 weights for every MatMul, activations quantized on the fly: no calibration data,
    the usual best accuracy/speed trade-off for transformers on CPU. Embeddings stay FP32."""
    return _dynamic(onnx_in, onnx_out, _DYNAMIC_OPS, per_channel, "int8_dynamic", reduce_range=reduce_range)


def quantize_embeddings_int8(
    onnx_in: Path, onnx_out: Path, *, per_channel: bool = False, reduce_range: bool = False
) -> Path:
    """Dynamic INT8 MatMuls plus INT8 embedding tables (Gather): about 4x smaller file.

    ``per_channel``: per-channel MatMul weights and one scale per embedding row (see
    ``_int8_embedding_rows``); otherwise per-tensor everywhere (onnxruntime's Gather quantization).
    """
    if per_channel:
        return _dynamic(onnx_in, onnx_out, _DYNAMIC_OPS, True, "int8_dynamic_embeddings", _int8_embedding_rows,
                        reduce_range=reduce_range)  # fmt: skip
    return _dynamic(onnx_in, onnx_out, _EMBEDDING_OPS, False, "int8_dynamic_embeddings", reduce_range=reduce_range)


class TextCalibrationReader(CalibrationDataReader):
    """Batches of the bundle's own tokenization (same truncation/padding as serving)."""

    def __init__(self, texts: Sequence[str], tokenizer: BundleTokenizer, batch_size: int = 16) -> None:
        if not texts:
            raise ValueError("static quantization needs calibration texts")
        self._batches = [tokenizer(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        self._iter = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def __len__(self) -> int:
        return len(self._batches)

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def quantize_static_int8(
    onnx_in: Path,
    onnx_out: Path,
    calibration_texts: Sequence[str],
    tokenizer_dir: Path,
    *,
    max_length: int = 128,
    per_channel: bool = False,
    reduce_range: bool = False,
) -> Path:
    """Static INT8 (activation ranges calibrated with MinMax on ``calibration_texts``).

    QDQ format, uint8 activations / int8 weights: onnxruntime's CPU kernels are optimised for
    QDQ (its graph optimiser fuses Q/DQ pairs into QLinearMatMul / MatMulIntegerToFloat), which
    the quantize_static docs recommend over QOperator since ORT 1.11, and U8S8 is the fast x86
    path (``reduce_range``: see the module docstring). Only MatMul/Gemm are quantized: INT8 LayerNorm/Softmax inputs cost accuracy
    for little speed.
    """
    onnx_in, onnx_out, tokenizer_dir = Path(onnx_in), Path(onnx_out), Path(tokenizer_dir)
    meta = read_bundle_meta(tokenizer_dir) | {"max_length": max_length}
    reader = TextCalibrationReader(calibration_texts, BundleTokenizer(tokenizer_dir, meta))
    with _preprocessed(onnx_in) as pre, atomic_path(onnx_out, suffix=".onnx") as tmp:
        quantize_static(
            pre,
            tmp,
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return _finish(onnx_in, onnx_out, "int8_static")


Quantizer = Callable[..., Path]


def _no_calibration(fn: Callable[..., Path]) -> Quantizer:
    """Adapt a calibration-free quantizer to the registry's common call signature."""

    def run(
        onnx_in: Path,
        onnx_out: Path,
        calibration_texts: Sequence[str] | None = None,
        tokenizer_dir: Path | None = None,
        *,
        max_length: int = 128,
        per_channel: bool = False,
        reduce_range: bool = False,
    ) -> Path:
        return fn(onnx_in, onnx_out, per_channel=per_channel, reduce_range=reduce_range)

    run.__doc__, run.__name__ = fn.__doc__, fn.__name__
    return run


# Common call: QUANTIZERS[name](onnx_in, onnx_out, calibration_texts, tokenizer_dir, max_length=..., per_channel=...,
# reduce_range=...);
# only "static_int8" uses the calibration arguments.
# Each quantizer once, with the precision the report shows for its variants.
_REGISTERED: dict[str, tuple[Quantizer, str]] = {
    "dynamic_int8": (_no_calibration(quantize_dynamic_int8), "int8"),
    "static_int8": (quantize_static_int8, "int8"),
    "int8_embeddings": (_no_calibration(quantize_embeddings_int8), "int8+int8-emb"),
}
QUANTIZERS: dict[str, Quantizer] = {name: quantize for name, (quantize, _) in _REGISTERED.items()}
PRECISION: dict[str, str] = {name: precision for name, (_, precision) in _REGISTERED.items()}
