"""Quantization-aware training (QAT) that simulates onnxruntime's dynamic INT8 inference.

The ``dynamic_int8`` / ``int8_embeddings`` variants are quantized after training by
onnxruntime (``models/quantize.py``); at run time its ``DynamicQuantizeMatMul`` kernel computes
each MatMul with

- weights: INT8, symmetric, one scale per output channel (``per_channel=True``), range ±127,
  or ±64 with ``reduce_range`` (what onnxruntime's quantizer stores for MatMul/Attention weights
  then);
- inputs: UINT8, asymmetric, one scale/zero point per call computed from the input's own
  min/max (range always including 0), i.e. per example at batch 1.

QAT fine-tunes the FP32 model while its forward pass sees exactly that rounding, so the weights
move to where the INT8 model loses least. Weights are fake-quantized with a
``torch.nn.utils.parametrize`` parametrization and inputs with a forward pre-hook; both use
``torch.fake_quantize_*`` whose backward is the straight-through estimator (gradient passed
through unchanged inside the quantization range). ``remove_qat`` takes both off again, leaving a
plain FP32 model that exports and is quantized by onnxruntime as usual; by default its weights
are the rounded ones (``rounded=True``), so the exported FP32 model computes what the INT8 one
does up to activation rounding, and the INT8 parity check compares like with like. onnxruntime
re-quantizes such weights losslessly (the largest |w| of a row is on the grid, so the scale is
the same), hence the INT8 model is the same either way.

Optionally the embedding tables are fake-quantized per row (symmetric INT8, one scale per
token), matching the ``int8_embeddings`` quantizer's per-row tables (always ±127: a lookup, no
integer GEMM).

``reduce_range``: onnxruntime's u8s8 GEMM on x86 without VNNI (``vpmaddubsw``) adds pairs of
u8·s8 products in int16 with saturation (255·127·2 > 32767), so with full-range weights the INT8
model is not the exact integer arithmetic simulated here. 7-bit weights (±64: 255·64·2 = 32640)
cannot saturate, so the caller passes ``reduce_range=True`` on such CPUs (tasks decide, from
``infra.provenance.int8_dot_product_exact``) and the same value to the quantizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

# onnxruntime's symmetric INT8 weight range, [-127, 127] with scale = max|w| / 127, for MatMul and
# (in a fused graph) QAttention's Q/K/V weights alike.
INT8_SYMMETRIC = 127
# onnxruntime's reduce_range INT8 weight range, [-64, 64] with scale = max|w| / 64.
INT8_REDUCED = 64
UINT8 = (0, 255)  # DynamicQuantizeLinear's activation range
_EPS = 1e-8


def fake_quantize_rows(w: torch.Tensor, qmax: int = INT8_SYMMETRIC) -> torch.Tensor:
    """Symmetric INT8 in [-qmax, qmax] per row of ``w`` (output channel of a Linear, token of an embedding table)."""
    scale = (w.detach().abs().amax(dim=1) / qmax).clamp_min(_EPS).float()
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -qmax, qmax)


def fake_quantize_dynamic_uint8(x: torch.Tensor) -> torch.Tensor:
    """UINT8 with a scale/zero point per example (dim 0), as DynamicQuantizeLinear does at batch 1."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.detach().amin(dim=1).clamp(max=0)
    hi = flat.detach().amax(dim=1).clamp(min=0)
    scale = ((hi - lo) / UINT8[1]).clamp_min(_EPS).float()
    zero = (-lo / scale).round().clamp(*UINT8).to(torch.int32)
    return torch.fake_quantize_per_channel_affine(flat, scale, zero, 0, *UINT8).reshape(x.shape)


class _RowInt8(nn.Module):
    """Parametrization: the weight as the INT8 model will see it."""

    def __init__(self, qmax: int = INT8_SYMMETRIC) -> None:
        super().__init__()
        self.qmax = qmax

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quantize_rows(w, self.qmax)


def weight_qmax(reduce_range: bool) -> int:
    """The symmetric INT8 weight range onnxruntime's dynamic quantizer uses for MatMul/Attention."""
    return INT8_REDUCED if reduce_range else INT8_SYMMETRIC


def _quantize_input_hook(module: nn.Module, args: tuple) -> tuple:
    return (fake_quantize_dynamic_uint8(args[0]), *args[1:])


def onnxruntime_quantized_linears(model: nn.Module) -> list[nn.Linear]:
    """The Linears onnxruntime's dynamic quantizer turns into INT8 MatMuls: all of them (encoder
    MatMuls, and the pooler/classifier Gemms, which its pre-processing splits into MatMul + Add)."""
    if getattr(getattr(model, "bert", None), "encoder", None) is None:
        raise ValueError(f"QAT expects a BERT-style classifier with model.bert.encoder, not {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@dataclass
class QATHandle:
    """What :func:`prepare_qat` attached, so :func:`remove_qat` can take exactly that off."""

    linears: list[nn.Linear]
    embeddings: list[nn.Embedding]
    hooks: list[RemovableHandle] = field(default_factory=list)


def prepare_qat(
    model: nn.Module,
    *,
    embeddings: bool = False,
    reduce_range: bool = False,
    select: Callable[[nn.Module], list[nn.Linear]] = onnxruntime_quantized_linears,
) -> QATHandle:
    """Fake-quantize (in place) the weights and inputs of ``select(model)``, and optionally the
    embedding tables per row (as the per-channel ``int8_embeddings`` quantizer stores them).
    ``reduce_range`` must be the value the model will be quantized with. Returns the handle for :func:`remove_qat`."""
    linears = select(model)
    if not linears:
        raise ValueError("QAT found no Linear layers to quantize")
    handle = QATHandle(linears=linears, embeddings=[])
    for linear in linears:
        parametrize.register_parametrization(linear, "weight", _RowInt8(weight_qmax(reduce_range)))
        handle.hooks.append(linear.register_forward_pre_hook(_quantize_input_hook))
    if embeddings:  # word, position and token-type tables: all are Gathers on initializers in ONNX
        handle.embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
        for table in handle.embeddings:
            parametrize.register_parametrization(table, "weight", _RowInt8())
    return handle


def remove_qat(handle: QATHandle, *, rounded: bool = True) -> None:
    """Back to a plain FP32 model holding the fine-tuned weights, rounded to the INT8 grid
    (``rounded=True``) or the unrounded master copy; onnxruntime quantizes both to the INT8
    values the fake quantizer trained against."""
    for hook in handle.hooks:
        hook.remove()
    for module in (*handle.linears, *handle.embeddings):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=rounded)
    handle.hooks.clear()


def is_qat_prepared(model: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in model.modules())
