"""The compression pipeline as plain functions on models, texts and local paths (no Prefect, no MLflow).

PaddleNLP-style strategies composed by name, e.g. ``vocab+width+dynamic_int8+int8_embeddings``.
Pruning strategies (``vocab``, ``depth``, ``width``) build one pruned FP32 model, recovered by
distilling from the unpruned one; each quantizer (``models/quantize.py``) adds an INT8 variant of it.
``qat`` fine-tunes that model once more with INT8 fake quantization (``models/qat.py``) and adds
a ``*_qat_<quantizer>`` variant per dynamic quantizer next to the post-training ones.
tasks/compress.py fetches the inputs, calls these, logs and publishes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from landing.models.data import EncodedTable
from landing.models.loading import count_parameters, keep_encoder_layers
from landing.models.metrics import classification_metrics
from landing.models.onnx_export import check_parity_argmax, check_parity_fp32, convert_to_ort, export_onnx
from landing.models.onnx_fusion import fuse_exported_model
from landing.models.onnx_predictor import OnnxClassifier
from landing.models.params import CompressionParams, TrainerParams
from landing.models.qat import prepare_qat, remove_qat
from landing.models.quantize import QUANTIZERS
from landing.models.training import TrainResult, layer_teacher, train_classifier
from landing.models.vocab_pruning import prune_vocabulary
from landing.models.width_pruning import make_importance_batches, prune_width


def distil_from_soft_targets(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], labels: list[int],
    soft: np.ndarray, training: TrainerParams, cfg: CompressionParams, checkpoint_dir: Path, *, seed: int,
    callbacks: list[TrainerCallback] | None = None, teacher_dir: Path | None = None,
) -> TrainResult:  # fmt: skip
    """KD (``cfg.recover_distillation``) from precomputed soft targets on labelled + transfer rows, in place.
    Intermediate-layer losses also run the saved unpruned model (``teacher_dir``) alongside."""
    data = EncodedTable(tokenizer, texts, cfg.max_seq_length, labels=labels, teacher_logits=soft)
    teacher = None
    if cfg.recover_distillation.needs_teacher_model:
        teacher = layer_teacher(None if teacher_dir is None else str(teacher_dir), tokenizer)
    return train_classifier(model, tokenizer, data, training, checkpoint_dir, seed=seed,
                            distillation=cfg.recover_distillation, callbacks=callbacks, teacher_model=teacher)  # fmt: skip


def prune(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], soft: np.ndarray,
    cfg: CompressionParams,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:  # fmt: skip
    """Vocabulary, depth and/or width pruning (``cfg.pruning``); ``soft`` ranks heads and neurons."""
    stats: dict = {"params_before": count_parameters(model)}
    if "vocab" in cfg.pruning:
        model, tokenizer, vocab = prune_vocabulary(
            model, tokenizer, texts, max_vocab_size=cfg.max_vocab_size, max_seq_length=cfg.max_seq_length,
            keep_characters=cfg.keep_characters and cfg.dropped_tokens == "pieces",
            remap_dropped=cfg.dropped_tokens == "nearest",
        )  # fmt: skip
        stats |= {f"vocab.{k}": v for k, v in vocab.items()}
    if "depth" in cfg.pruning:
        stats["depth.layers_before"] = model.config.num_hidden_layers
        model = keep_encoder_layers(model, cfg.keep_layers, field="compression.keep_layers")
        stats["depth.layers_after"] = model.config.num_hidden_layers
    if "width" in cfg.pruning:
        rows = min(cfg.importance_rows, len(texts))
        batches = make_importance_batches(
            tokenizer, texts[:rows], teacher_logits=soft[:rows], max_length=cfg.max_seq_length
        )
        model, width = prune_width(model, cfg.width_multiplier, batches)
        stats |= {f"width.{k}": v for k, v in width.items() if not isinstance(v, list | dict)}
    stats["params_after"] = count_parameters(model)
    return model, tokenizer, stats


def quantization_aware_training(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], labels: list[int],
    soft: np.ndarray, cfg: CompressionParams, checkpoint_dir: Path, *, reduce_range: bool, seed: int,
    callbacks: list[TrainerCallback] | None = None, teacher_dir: Path | None = None,
) -> TrainResult:  # fmt: skip
    """Fine-tune under INT8 fake quantization, distilling as recovery does; the model ends FP32 again,
    rounded to the INT8 grid (the FP32 reference of the INT8 parity check is then what INT8 computes)."""
    handle = prepare_qat(model, embeddings=cfg.qat_embeddings_on, reduce_range=reduce_range)
    result = distil_from_soft_targets(model, tokenizer, texts, labels, soft, cfg.qat, cfg, checkpoint_dir,
                                      seed=seed, callbacks=callbacks, teacher_dir=teacher_dir)  # fmt: skip
    remove_qat(handle, rounded=True)
    return result


@dataclass(frozen=True)
class OnnxVariant:
    model: Path  # the .onnx file that passed every parity check
    ort: Path  # its mobile (.ort) conversion
    parity: dict


def qat_reference(quantizer: str, *, reduce_range: bool) -> Callable[[nn.Module], object]:
    """A QAT model's INT8 export is checked against the fake-quantized model it was trained as.

    Its FP32 form is not the reference: QAT optimises the quantized network, so the FP32 one
    (no activation rounding) may disagree with it more than a post-training model's does.
    """
    return functools.partial(prepare_qat, embeddings=quantizer == "int8_embeddings", reduce_range=reduce_range)


def build_onnx_variant(
    model_dir: Path, work: Path, quantizer: str | None, cfg: CompressionParams, *, gate_texts: Sequence[str],
    calibration_texts: Sequence[str], max_length: int, reduce_range: bool, from_qat: bool,
) -> OnnxVariant:  # fmt: skip
    """Export → (fuse → quantize) → parity against the PyTorch model on ``gate_texts`` → .ort.

    Raises (``ParityError``) when a check fails, so a variant that did not pass is never returned.
    """
    fp32 = export_onnx(model_dir, work / "fp32" / "model.onnx", max_length=max_length)
    parity = {"fp32": check_parity_fp32(model_dir, fp32, gate_texts, max_length=max_length, atol=cfg.fp32_max_abs_diff)}
    final = fp32
    if quantizer is not None:
        source = fp32
        if cfg.graph_fusion:  # INT8 is faster fused, FP32 slower (benchmarks/results), so only before quantizing
            source = fp32.with_name("model.fused.onnx")
            fused = fuse_exported_model(fp32, model_dir, source)
            parity["fp32_fused"] = check_parity_fp32(model_dir, source, gate_texts, max_length=max_length,
                                                     atol=cfg.fp32_max_abs_diff) | {"fused_ops": fused}  # fmt: skip
        final = QUANTIZERS[quantizer](source, work / "int8" / "model.onnx", list(calibration_texts), fp32.parent,
                                      max_length=max_length, per_channel=cfg.per_channel,
                                      reduce_range=reduce_range)  # fmt: skip
        reference = qat_reference(quantizer, reduce_range=reduce_range) if from_qat else None
        parity["int8"] = check_parity_argmax(model_dir, final, gate_texts, max_length=max_length,
                                             min_agreement=cfg.int8_min_agreement,
                                             prepare_reference=reference)  # fmt: skip
        parity["int8"]["reduce_range"] = reduce_range
        if from_qat:
            parity["int8"]["reference"] = "fake-quantized model (QAT)"
    return OnnxVariant(final, convert_to_ort(final), parity)


def score_onnx(model: Path, texts: Sequence[str], label_ids: Sequence[int], num_labels: int) -> dict:
    """Accuracy and macro-F1 of an ONNX bundle's argmax on ``texts``."""
    logits = OnnxClassifier.load(model).logits(list(texts))
    return classification_metrics(list(label_ids), logits.argmax(-1), num_labels)
