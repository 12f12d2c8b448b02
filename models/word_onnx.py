"""Export a saved word student (models/word_students.py) to an ONNX bundle the existing predictor serves.

The bundle is the same as :func:`models.onnx_export.export_onnx` writes: the ``.onnx`` file (inputs
``input_ids`` and ``attention_mask``, int64 with dynamic batch and sequence axes; output ``logits``),
``tokenizer.json`` and ``landing_model.json`` with the same fields, plus ``pre_segment`` for a
Chinese (jieba) student, which :class:`models.onnx_predictor.BundleTokenizer` applies to raw text, and
``student`` (kind and sizes) for information. ``OnnxClassifier.load(bundle_dir)`` serves it unchanged.

Before ``landing_model.json`` is written, the texts are encoded by the bundle's own ``BundleTokenizer``
and onnxruntime's logits are compared with PyTorch's on the same ids: above ``atol`` it is a
:class:`ParityError` and the directory is not a bundle (no metadata).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from landing.files import atomic_path
from landing.models.onnx_export import OUTPUT_NAME, ParityError, trace_to_onnx
from landing.models.onnx_predictor import TOKENIZER_FILE, BundleTokenizer, make_session, write_bundle_meta
from landing.models.word_students import PAD_ID, PAD_TOKEN, WordTokenizer, load_word_student

INPUT_NAMES = ["input_ids", "attention_mask"]


def parity_texts(tokenizer: WordTokenizer, rows: int = 24) -> list[str]:
    """Texts of varied length made of the vocabulary's words (plus an unseen word and an empty text),
    so the check runs real embeddings, [UNK], padding and a row without words."""
    vocab = sorted(tokenizer.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    words = [w for w, i in vocab if i > PAD_ID + 1] or ["word"]
    joiner = "" if tokenizer.language == "zh" else " "
    texts = [joiner.join(words[(r * 7 + k) % len(words)] for k in range(1 + (r * 5) % 23)) for r in range(rows)]
    return [*texts, "", "qzxv unseen-word " + words[0]]


def export_word_student(
    model_dir: Path, bundle_dir: Path, max_length: int = 128, *, opset: int = 17, onnx_name: str = "model.onnx",
    texts: Sequence[str] | None = None, atol: float = 1e-4,
) -> Path:  # fmt: skip
    """Export ``model_dir`` (save_word_student) into ``bundle_dir``; returns the ``.onnx`` path.

    ``texts``: the parity check's texts (default :func:`parity_texts`); ``max_length`` is the bundle's
    truncation, as for transformer bundles.
    """
    model_dir, bundle_dir = Path(model_dir), Path(bundle_dir)
    model, tokenizer = load_word_student(model_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = bundle_dir / onnx_name
    # A padded two-row example so the masking path is traced with a real mask, not specialised away.
    example = tokenizer.encode(["a short example", "a somewhat longer example sentence so the batch pads"],
                               max_length)  # fmt: skip
    trace_to_onnx(model, INPUT_NAMES, tuple(example[name] for name in INPUT_NAMES), onnx_path, opset)
    with atomic_path(bundle_dir / TOKENIZER_FILE) as tmp:
        shutil.copyfile(model_dir / TOKENIZER_FILE, tmp)

    meta = {
        "format": "landing-onnx/1",
        "onnx": onnx_path.name,
        "precision": "fp32",
        "labels": list(model.config["labels"]),
        "max_length": max_length,
        "input_names": INPUT_NAMES,
        "output_names": [OUTPUT_NAME],
        "opset": opset,
        "pad_token": PAD_TOKEN,
        "pad_token_id": PAD_ID,
        "pad_token_type_id": 0,
        "variants": {onnx_path.name: {"precision": "fp32"}},
        "student": {k: v for k, v in model.config.items() if k != "labels"},
    }
    if tokenizer.segmenter is not None:
        meta["pre_segment"] = tokenizer.segmenter
    check_parity(model, onnx_path, BundleTokenizer(bundle_dir, meta),
                 parity_texts(tokenizer) if texts is None else texts, atol=atol)  # fmt: skip
    write_bundle_meta(bundle_dir, meta)
    return onnx_path


@torch.no_grad()
def check_parity(
    model: nn.Module, onnx_path: Path, bundle_tokenizer: BundleTokenizer, texts: Sequence[str], *,
    atol: float = 1e-4, batch_size: int = 16,
) -> dict:  # fmt: skip
    """PyTorch vs onnxruntime logits on the bundle tokenizer's batches; ParityError above ``atol``."""
    session = make_session(onnx_path, threads=1)
    model.eval()
    diff, texts = 0.0, list(texts)
    for start in range(0, len(texts), batch_size):
        feeds = bundle_tokenizer(texts[start : start + batch_size])
        ort_logits = session.run([OUTPUT_NAME], feeds)[0]
        torch_logits = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        diff = max(diff, float(np.abs(ort_logits - torch_logits).max(initial=0.0)))
    if not diff <= atol:
        raise ParityError(f"{onnx_path.name}: max |Δlogits| = {diff:.3g} vs PyTorch exceeds atol {atol:g} "
                          f"on {len(texts)} texts")  # fmt: skip
    return {"max_abs_diff": diff, "rows": len(texts)}
