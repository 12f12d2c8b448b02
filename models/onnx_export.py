"""Export a saved classifier to a self-contained ONNX bundle and check it matches PyTorch.

The bundle (``out_path.parent``) holds the ``.onnx`` file, the tokenizer files and
``landing_model.json`` so :class:`models.onnx_predictor.OnnxClassifier` can serve it without
torch or transformers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from landing.files import atomic_path
from landing.models.loading import register_model_classes
from landing.models.onnx_predictor import (
    BUNDLE_META,
    TOKENIZER_FILE,
    make_session,
    read_bundle_meta,
    register_variant,
    write_bundle_meta,
)

OUTPUT_NAME = "logits"
_EXAMPLE_TEXTS = ["a short example", "a somewhat longer example sentence, so the batch has padding"]


class ParityError(RuntimeError):
    """The exported or quantized model disagrees with its reference beyond the tolerance."""


class _LogitsOnly(nn.Module):
    """Positional inputs in ``input_names`` order -> logits, so ONNX input order is explicit."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.input_names = model, list(input_names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, tensors, strict=True))).logits


def trace_to_onnx(
    model: nn.Module, input_names: Sequence[str], example: tuple[torch.Tensor, ...], out_path: Path, opset: int
) -> None:
    """``model``'s logits as ``out_path`` (written atomically): int64 inputs with dynamic batch and sequence axes."""
    input_names = list(input_names)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names} | {OUTPUT_NAME: {0: "batch"}}
    with atomic_path(out_path) as tmp, warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation, tracer and LSTM batch_first warnings
        # TorchScript exporter (dynamo=False): the dynamo exporter needs onnxscript, which is
        # not a dependency, and the traced graph (MatMul/Gemm/Gather on initializers, opset 17
        # LayerNormalization; ONNX LSTM ops for word students) is what onnxruntime.quantization and
        # the .ort converter expect.
        torch.onnx.export(
            _LogitsOnly(model, input_names).eval(),  # export restores the wrapper's mode, and so the model's
            example,
            str(tmp),
            input_names=input_names,
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _input_names(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    produced = tokenizer(_EXAMPLE_TEXTS[0]).keys()
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in produced]


def export_onnx(model_dir: Path, out_path: Path, *, opset: int = 17, max_length: int = 128) -> Path:
    """Export ``model_dir`` (save_pretrained classifier + tokenizer) to ``out_path``.

    Inputs are those the tokenizer produces (int64, dynamic batch and sequence), output
    ``logits`` (dynamic batch). The bundle's default model is ``out_path``.
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    register_model_classes()
    # Eager attention traces to plain MatMul/Softmax, which every ORT quantizer and the mobile
    # (.ort) runtime handle; behaviour is identical to SDPA.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    input_names = _input_names(tokenizer)
    # A padded two-row example so the attention-mask path is traced, not specialised away.
    example = tokenizer(_EXAMPLE_TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    trace_to_onnx(model, input_names, tuple(example[n] for n in input_names), out_path, opset)

    copy_tokenizer(tokenizer, out_path.parent)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    meta = {
        "format": "landing-onnx/1",
        "onnx": out_path.name,
        "precision": "fp32",
        "labels": labels,
        "max_length": max_length,
        "input_names": input_names,
        "output_names": [OUTPUT_NAME],
        "opset": opset,
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "pad_token_type_id": getattr(tokenizer, "pad_token_type_id", 0),
        "variants": {out_path.name: {"precision": "fp32"}},
    }
    write_bundle_meta(out_path.parent, meta)
    return out_path


def copy_tokenizer(tokenizer: PreTrainedTokenizerBase, bundle_dir: Path) -> None:
    """save_pretrained into a temp dir, then rename each file in (no half-written tokenizer)."""
    with tempfile.TemporaryDirectory(dir=bundle_dir, prefix=".tokenizer.") as tmp:
        tokenizer.save_pretrained(tmp)
        if not (Path(tmp) / TOKENIZER_FILE).is_file():
            raise RuntimeError(f"tokenizer of type {type(tokenizer).__name__} wrote no {TOKENIZER_FILE}")
        for f in Path(tmp).iterdir():
            os.replace(f, bundle_dir / f.name)


def _ort_logits(onnx_path: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    session = make_session(onnx_path, threads=1)
    names = {i.name for i in session.get_inputs()}
    return session.run([OUTPUT_NAME], {k: v for k, v in batch.items() if k in names})[0]


def _batches(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, batch_size: int = 32
) -> list[dict[str, np.ndarray]]:
    kwargs = {"padding": True, "truncation": True, "max_length": max_length, "return_tensors": "np"}
    return [dict(tokenizer(list(texts[i : i + batch_size]), **kwargs)) for i in range(0, len(texts), batch_size)]


@torch.inference_mode()
def _logits(
    source: Path, batches: list[dict[str, np.ndarray]], prepare: Callable[[nn.Module], object] | None = None
) -> np.ndarray:
    """Logits from a saved PyTorch classifier (a directory; ``prepare`` applied to it first) or an ONNX/ORT file."""
    if source.is_dir():
        register_model_classes()
        model = AutoModelForSequenceClassification.from_pretrained(source).eval()
        if prepare is not None:
            prepare(model)
        return np.concatenate(
            [model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.float().numpy() for b in batches]
        )
    return np.concatenate([_ort_logits(source, b) for b in batches])


def _tokenizer_for(*paths: Path) -> PreTrainedTokenizerBase:
    path = next(p if p.is_dir() else p.parent for p in paths)
    return AutoTokenizer.from_pretrained(path)


def check_parity_fp32(
    model_dir: Path, onnx_path: Path, texts: Sequence[str], *, max_length: int, atol: float = 1e-4
) -> dict:
    """PyTorch vs onnxruntime logits on identical padded batches; ParityError above ``atol``."""
    model_dir, onnx_path = Path(model_dir), Path(onnx_path)
    batches = _batches(_tokenizer_for(model_dir), texts, max_length)
    diff = float(np.abs(_logits(model_dir, batches) - _logits(onnx_path, batches)).max())
    if not diff <= atol:
        raise ParityError(f"{onnx_path.name}: max |Δlogits| = {diff:.3g} vs PyTorch exceeds atol {atol:g}")
    return {"max_abs_diff": diff, "rows": len(texts)}


def check_parity_argmax(
    reference_onnx_or_model_dir: Path,
    candidate_onnx: Path,
    texts: Sequence[str],
    *,
    max_length: int,
    min_agreement: float = 0.99,
    prepare_reference: Callable[[nn.Module], object] | None = None,
) -> dict:
    """Fraction of texts where the candidate (e.g. INT8) predicts the reference's label.

    ``prepare_reference``: applied to a PyTorch reference before it runs, e.g.
    ``models.qat.prepare_qat`` to compare a QAT model's INT8 export with the fake-quantized model
    it was trained as.
    """
    reference, candidate = Path(reference_onnx_or_model_dir), Path(candidate_onnx)
    batches = _batches(_tokenizer_for(reference, candidate), texts, max_length)
    ref, cand = _logits(reference, batches, prepare_reference), _logits(candidate, batches)
    agreement = float((ref.argmax(-1) == cand.argmax(-1)).mean())
    result = {"agreement": agreement, "rows": len(texts), "max_abs_diff": float(np.abs(ref - cand).max())}
    if agreement < min_agreement:
        raise ParityError(
            f"{candidate.name}: argmax agreement {agreement:.4f} with {reference.name} "
            f"is below min_agreement {min_agreement:g} on {len(texts)} texts"
        )
    return result


def _run_tool(step: str, module: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise RuntimeError(f"{step} failed (exit {proc.returncode}): {tail}")
    return proc


def convert_to_ort(onnx_path: Path) -> Path:
    """``<name>.ort`` (ORT format, for onnxruntime-mobile / minimal builds) plus
    ``<name>.mobile_usability.txt``, the usability checker's report, next to the model."""
    onnx_path = Path(onnx_path)
    ort_path = onnx_path.with_suffix(".ort")
    report = onnx_path.with_name(f"{onnx_path.stem}.mobile_usability.txt")
    with tempfile.TemporaryDirectory(dir=onnx_path.parent, prefix=".ort.") as tmp:
        # Converted in a scratch dir: the tool processes every .onnx under its input path and
        # writes a required_operators config we keep alongside the .ort.
        src = Path(tmp) / onnx_path.name
        shutil.copy2(onnx_path, src)
        _run_tool(
            "ORT format conversion",
            "onnxruntime.tools.convert_onnx_models_to_ort",
            str(src),
            "--output_dir",
            str(Path(tmp) / "out"),
            "--optimization_style",
            "Fixed",
        )
        produced = Path(tmp) / "out" / ort_path.name
        if not produced.is_file():
            raise RuntimeError(f"ORT format conversion produced no {ort_path.name}")
        os.replace(produced, ort_path)
        for config in (Path(tmp) / "out").glob("*.config"):
            os.replace(config, onnx_path.with_name(config.name))
    proc = _run_tool(
        "mobile usability check", "onnxruntime.tools.check_onnx_model_mobile_usability", str(onnx_path)
    )
    text = (proc.stdout + proc.stderr).strip()
    if not text:
        raise RuntimeError("mobile usability check produced no report")
    report.write_text(text + "\n")
    if (onnx_path.parent / BUNDLE_META).is_file():
        variants = read_bundle_meta(onnx_path.parent).get("variants", {})
        register_variant(ort_path, variants.get(onnx_path.name, {}).get("precision", "unknown"))
    return ort_path
