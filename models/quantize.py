"""INT8 variants of an exported ONNX classifier, via onnxruntime.quantization.

Each function writes ``onnx_out`` atomically, records its precision in the bundle's
``landing_model.json`` (copying tokenizer + metadata when ``onnx_out`` is in another
directory) and returns ``onnx_out``. Check the result with
:func:`models.onnx_export.check_parity_argmax`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from models.onnx_export import register_variant
from models.onnx_predictor import BundleTokenizer, read_bundle_meta

# Dynamic (IntegerOps) mode: MatMul becomes MatMulInteger/DynamicQuantizeMatMul. Gemm has no
# dynamic kernel, so the pooler/classifier Gemms (2 small matrices) stay FP32.
_DYNAMIC_OPS = ["MatMul"]
# Gather on an initializer = embedding lookup (word, position, token-type): stored as uint8 +
# scale/zero point and dequantized after the lookup. Word embeddings are most of a small BERT.
_EMBEDDING_OPS = ["MatMul", "Gather"]


@contextmanager
def _atomic_target(onnx_out: Path) -> Iterator[Path]:
    """A temp path beside ``onnx_out`` that is renamed onto it only if the block succeeds."""
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=onnx_out.parent, prefix=f".{onnx_out.name}.", suffix=".onnx")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, onnx_out)
    finally:
        Path(tmp).unlink(missing_ok=True)


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


def _dynamic(onnx_in: Path, onnx_out: Path, op_types: list[str], per_channel: bool, precision: str) -> Path:
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    with _preprocessed(onnx_in) as pre, _atomic_target(onnx_out) as tmp:
        quantize_dynamic(
            pre, tmp, op_types_to_quantize=op_types, per_channel=per_channel, weight_type=QuantType.QInt8
        )
    return _finish(onnx_in, onnx_out, precision)


def quantize_dynamic_int8(onnx_in: Path, onnx_out: Path, *, per_channel: bool = False) -> Path:
    """INT8 weights for every MatMul, activations quantized on the fly: no calibration data,
    the usual best accuracy/speed trade-off for transformers on CPU. Embeddings stay FP32."""
    return _dynamic(onnx_in, onnx_out, _DYNAMIC_OPS, per_channel, "int8_dynamic")


def quantize_embeddings_int8(onnx_in: Path, onnx_out: Path, *, per_channel: bool = False) -> Path:
    """Dynamic INT8 MatMuls plus INT8 embedding tables (Gather): about 4x smaller file."""
    return _dynamic(onnx_in, onnx_out, _EMBEDDING_OPS, per_channel, "int8_dynamic_embeddings")


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
    path. Pass ``reduce_range=True`` (7-bit weights) for x86 CPUs without VNNI to avoid
    saturation. Only MatMul/Gemm are quantized: INT8 LayerNorm/Softmax inputs cost accuracy
    for little speed.
    """
    onnx_in, onnx_out, tokenizer_dir = Path(onnx_in), Path(onnx_out), Path(tokenizer_dir)
    meta = read_bundle_meta(tokenizer_dir) | {"max_length": max_length}
    reader = TextCalibrationReader(calibration_texts, BundleTokenizer(tokenizer_dir, meta))
    with _preprocessed(onnx_in) as pre, _atomic_target(onnx_out) as tmp:
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


def _no_calibration(fn: Callable[[Path, Path], Path]) -> Quantizer:
    """Adapt a calibration-free quantizer to the registry's common call signature."""

    def run(
        onnx_in: Path,
        onnx_out: Path,
        calibration_texts: Sequence[str] | None = None,
        tokenizer_dir: Path | None = None,
        *,
        max_length: int = 128,
        per_channel: bool = False,
    ) -> Path:
        return fn(onnx_in, onnx_out, per_channel=per_channel)

    run.__doc__, run.__name__ = fn.__doc__, fn.__name__
    return run


# Common call: QUANTIZERS[name](onnx_in, onnx_out, calibration_texts, tokenizer_dir, max_length=..., per_channel=...);
# only "static_int8" uses the calibration arguments.
QUANTIZERS: dict[str, Quantizer] = {
    "dynamic_int8": _no_calibration(quantize_dynamic_int8),
    "static_int8": quantize_static_int8,
    "int8_embeddings": _no_calibration(quantize_embeddings_int8),
}

