"""Deployable ONNX classifier: onnxruntime + numpy + the Rust ``tokenizers`` library, no torch.

A bundle is one directory holding the ONNX (or ``.ort``) model(s), ``tokenizer.json`` and
``landing_model.json`` (labels, max_length, input names, pad token, precision per model file,
optionally ``pre_segment``: a word segmenter applied to the raw text before ``tokenizer.json``, e.g.
``"jieba"`` for Chinese word-level students, see models/word_students.py), as written by
:func:`models.onnx_export.export_onnx`, the quantizers and :mod:`models.word_onnx`. Deliberately
imports neither torch nor transformers (transformers pulls torch), so a service can ship
``onnxruntime numpy pandas tokenizers`` only.

Prediction table (a pandas DataFrame, one row per input text, in input order):

- ``id``: the caller's ids, only when ``ids`` is given;
- ``label``: the predicted label (argmax of the logits);
- ``probability``: softmax probability of the predicted label;
- ``prob_<label>``: softmax probability of each label, in the bundle's label order;
- ``logits``: the raw logits as a list per row, only when ``return_logits=True``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf
from tokenizers import Tokenizer

from landing.files import write_bytes_atomic
from landing.models.model_files import ModelFilesError

BUNDLE_META = "landing_model.json"
TOKENIZER_FILE = "tokenizer.json"
PredictionTable = pd.DataFrame


class BundleError(ModelFilesError, FileNotFoundError):
    """Not an ONNX bundle (no metadata, or a model file onnxruntime cannot load)."""


def read_bundle_meta(bundle_dir: Path) -> dict:
    path = Path(bundle_dir) / BUNDLE_META
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: no {BUNDLE_META}; expected a bundle written by the compress flow or "
                          "landing.models.onnx_export")  # fmt: skip
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None


def write_bundle_meta(bundle_dir: Path, meta: dict) -> Path:
    path = Path(bundle_dir) / BUNDLE_META
    write_bytes_atomic(path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return path


def register_variant(onnx_path: Path, precision: str, *, source_bundle: Path | None = None) -> None:
    """Record ``onnx_path``'s precision in its bundle, first copying tokenizer + metadata
    from ``source_bundle`` when the variant was written to another directory."""
    bundle = onnx_path.parent
    if source_bundle is not None and not (bundle / BUNDLE_META).is_file():
        for f in source_bundle.iterdir():
            if f.is_file() and f.suffix not in {".onnx", ".ort", ".txt", ".config"}:
                shutil.copy2(f, bundle / f.name)
    meta = read_bundle_meta(bundle)
    meta["variants"] = {k: v for k, v in meta.get("variants", {}).items() if (bundle / k).is_file()}
    meta["variants"][onnx_path.name] = {"precision": precision}
    if meta["onnx"] not in meta["variants"]:
        meta["onnx"], meta["precision"] = onnx_path.name, precision
    write_bundle_meta(bundle, meta)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _jieba_words(texts: Sequence[str]) -> list[str]:
    try:
        import jieba  # lazy: only Chinese word-level bundles need it
    except ImportError:
        raise BundleError("pre_segment 'jieba': this bundle segments Chinese into words with jieba; "
                          "pip install jieba") from None  # fmt: skip

    jieba.setLogLevel(logging.WARNING)  # it logs its dictionary loading to stderr at DEBUG
    return [" ".join(w for w in jieba.lcut(t, cut_all=False, HMM=True) if w.strip()) for t in texts]


# Segmenters a bundle may name in ``pre_segment``: raw texts -> words joined by single spaces, which the
# bundle's tokenizer.json (a whitespace pre-tokenizer) then splits. Training encodes through the same functions.
PRE_SEGMENTERS: dict[str, Callable[[Sequence[str]], list[str]]] = {"jieba": _jieba_words}


def pre_segment(texts: Sequence[str], segmenter: str | None) -> list[str]:
    """``texts`` segmented by the named segmenter (unchanged when None)."""
    if segmenter is None:
        return list(texts)
    if segmenter not in PRE_SEGMENTERS:
        raise BundleError(f"pre_segment: unknown segmenter {segmenter!r}; expected one of {sorted(PRE_SEGMENTERS)}")
    return PRE_SEGMENTERS[segmenter](texts)


class BundleTokenizer:
    """``tokenizer.json`` set up like transformers' ``tokenizer(..., truncation=True, padding=True)``.

    Truncation is longest-first to ``max_length`` (transformers' default for ``truncation=True``),
    padding is on the right to the longest row of the batch, with the exported pad token.
    """

    def __init__(self, bundle_dir: Path, meta: dict | None = None) -> None:
        meta = meta or read_bundle_meta(bundle_dir)
        self.input_names: list[str] = list(meta["input_names"])
        self.max_length = int(meta["max_length"])
        self.segmenter: str | None = meta.get("pre_segment")
        pre_segment([], self.segmenter)  # an unknown or missing segmenter fails at load, not at the first request
        self.tokenizer = Tokenizer.from_file(str(Path(bundle_dir) / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(self.max_length, strategy="longest_first", direction="right")
        self.tokenizer.enable_padding(
            direction="right",
            pad_id=int(meta["pad_token_id"]),
            pad_token=str(meta["pad_token"]),
            pad_type_id=int(meta.get("pad_token_type_id", 0)),
        )

    def __call__(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        texts = pre_segment(texts, self.segmenter)
        if text_pairs is not None:
            text_pairs = pre_segment(text_pairs, self.segmenter)
        if text_pairs is None:
            encodings = self.tokenizer.encode_batch(list(texts))
        else:
            if len(text_pairs) != len(texts):
                raise ValueError(f"text_pairs has {len(text_pairs)} rows, texts has {len(texts)}")
            encodings = self.tokenizer.encode_batch(list(zip(texts, text_pairs, strict=True)))
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {name: np.asarray(columns[name], dtype=np.int64) for name in self.input_names}


def _resolve(path: Path) -> tuple[Path, Path, dict]:
    """(bundle dir, model file, metadata) for a bundle directory or a model file inside one."""
    path = Path(path)
    bundle_dir = path if path.is_dir() else path.parent
    meta = read_bundle_meta(bundle_dir)
    model_file = bundle_dir / meta["onnx"] if path.is_dir() else path
    if not model_file.is_file():
        raise BundleError(f"{model_file}: model file not found")
    return bundle_dir, model_file, meta


def make_session(model_file: Path, *, threads: int = 1) -> ort.InferenceSession:
    """A CPU session; ``threads`` bounds intra-op threads (1 = predictable per-request latency)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except (InvalidProtobuf, InvalidGraph, Fail) as exc:
        reason = str(exc).splitlines()[0][:300]
        raise BundleError(f"{model_file}: onnxruntime cannot load it as an ONNX model ({reason})") from None


@dataclass
class OnnxClassifier:
    session: ort.InferenceSession
    tokenizer: BundleTokenizer
    labels: list[str]
    precision: str
    model_file: Path

    @classmethod
    def load(cls, bundle_dir_or_onnx_path: Path | str, *, threads: int = 1) -> OnnxClassifier:
        """Load a bundle directory (its default model) or a specific ``.onnx``/``.ort`` file in one."""
        bundle_dir, model_file, meta = _resolve(Path(bundle_dir_or_onnx_path))
        precision = meta.get("variants", {}).get(model_file.name, {}).get("precision", "unknown")
        return cls(
            session=make_session(model_file, threads=threads),
            tokenizer=BundleTokenizer(bundle_dir, meta),
            labels=[str(label) for label in meta["labels"]],
            precision=precision,
            model_file=model_file,
        )

    def logits(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *, batch_size: int = 64
    ) -> np.ndarray:
        """Logits [len(texts), num_labels] in input order; batches sorted by length to cut padding."""
        lengths = [len(t) + (len(text_pairs[i]) if text_pairs is not None else 0) for i, t in enumerate(texts)]
        order = np.argsort(lengths, kind="stable")
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            pairs = [text_pairs[i] for i in idx] if text_pairs is not None else None
            feeds = self.tokenizer([texts[i] for i in idx], pairs)
            out[idx] = self.session.run(["logits"], feeds)[0]
        return out

    def predict(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        batch_size: int = 64,
        *,
        ids: Sequence[object] | None = None,
        return_logits: bool = False,
    ) -> PredictionTable:
        """The prediction table described in the module docstring."""
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"ids has {len(ids)} rows, texts has {len(texts)}")
        logits = self.logits(texts, text_pairs, batch_size=batch_size)
        probs = softmax(logits)
        best = probs.argmax(axis=-1)
        table: dict[str, object] = {} if ids is None else {"id": list(ids)}
        table["label"] = [self.labels[i] for i in best]
        table["probability"] = probs[np.arange(len(best)), best]
        for j, label in enumerate(self.labels):
            table[f"prob_{label}"] = probs[:, j]
        if return_logits:
            table["logits"] = logits.tolist()
        return pd.DataFrame(table)

    def predict_one(self, text: str, text_pair: str | None = None) -> dict:
        """One row of the prediction table as a dict (label, probability, prob_<label>...)."""
        row = self.predict([text], None if text_pair is None else [text_pair]).iloc[0]
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
