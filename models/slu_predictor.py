"""An exported SLU bundle (``models/slu_export.py``) served with onnxruntime and ``tokenizers`` alone: no torch,
no transformers, as ``landing predict`` runs it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .onnx_predictor import TOKENIZER_FILE, make_session, read_bundle_meta
from .slu_spans import first_subwords, slot_spans

OUTPUTS = ("intent_logits", "slot_logits")


class OnnxSluPredictor:
    """An exported SLU bundle, served with onnxruntime and ``tokenizers`` alone (no torch, no transformers)."""

    def __init__(self, bundle_dir: Path, model_file: str | None = None, threads: int = 1) -> None:
        from tokenizers import Tokenizer

        bundle_dir = Path(bundle_dir)
        self.meta = read_bundle_meta(bundle_dir)
        self.session = make_session(bundle_dir / (model_file or self.meta["onnx"]), threads=threads)
        self.tokenizer = Tokenizer.from_file(str(bundle_dir / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(self.meta["max_length"])

    @classmethod
    def load(cls, bundle_dir: Path | str, *, threads: int = 1) -> OnnxSluPredictor:
        return cls(Path(bundle_dir), threads=threads)

    def predict(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, batch_size: int = 64, *,
                ids: Sequence[object] | None = None, return_logits: bool = False) -> pd.DataFrame:  # fmt: skip
        """``landing predict``'s table: ``id`` (when given), ``intent``, ``probability`` and ``slots`` (the spans as
        a JSON list, so every table format holds it the same way)."""
        import json

        if text_pairs is not None or return_logits:
            raise ValueError("an SLU bundle takes one text per row and writes no logits column")
        rows = [r for start in range(0, len(texts), batch_size) for r in self.analyse(texts[start : start + batch_size])]
        frame = pd.DataFrame({"intent": [r["intent"] for r in rows], "probability": [r["probability"] for r in rows],
                              "slots": [json.dumps(r["slots"], ensure_ascii=False) for r in rows]})  # fmt: skip
        if ids is not None:
            frame.insert(0, "id", list(ids))
        return frame

    def analyse(self, texts: Sequence[str]) -> list[dict]:
        """Per text: ``intent``, ``probability``, ``slots`` (``slot``, ``text``, ``start``, ``end``, character
        offsets into the text) and ``tags`` (each word's BIO tag); words are the text's whitespace-separated tokens."""
        words = [text.split() for text in texts]
        encodings = self.tokenizer.encode_batch(words, is_pretokenized=True)
        width = max(len(e.ids) for e in encodings)
        pad = self.meta["pad_token_id"]
        ids = np.array([e.ids + [pad] * (width - len(e.ids)) for e in encodings], dtype=np.int64)
        # the encodings' own masks: a tokenizer.json saved with padding on already pads, and pads must not be pooled
        mask = np.array([e.attention_mask + [0] * (width - len(e.ids)) for e in encodings], dtype=np.int64)
        intent_logits, slot_logits = self.session.run(list(OUTPUTS), {"input_ids": ids, "attention_mask": mask})
        exp = np.exp(intent_logits - intent_logits.max(-1, keepdims=True))
        probabilities = exp / exp.sum(-1, keepdims=True)
        tags, intents = self.meta["tags"], self.meta["intents"]
        results = []
        for row, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
            word_tags = ["O"] * len(words[row])
            for word, position in first_subwords(encoding.word_ids).items():
                word_tags[word] = tags[int(slot_logits[row, position].argmax())]
            best = int(probabilities[row].argmax())
            results.append({"intent": intents[best], "probability": float(probabilities[row, best]),
                            "slots": slot_spans(text, word_tags), "tags": word_tags})  # fmt: skip
        return results
