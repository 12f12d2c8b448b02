"""Tokenised datasets and the collator shared by training, prediction and distillation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from landing.models.kd import IGNORE_LABEL


class EncodedTable(Dataset):
    """Texts tokenised once up front; labels are ids (``-100`` = unlabelled); teacher logits and
    per-example loss weights (e.g. lower for augmented rows) optional."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        max_length: int,
        *,
        text_pairs: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        teacher_logits: np.ndarray | None = None,
        example_weights: Sequence[float] | None = None,
        with_row_index: bool = False,
        domain_ids: Sequence[int] | None = None,
    ) -> None:
        n = len(texts)
        optional = (("text_pairs", text_pairs), ("labels", labels), ("teacher_logits", teacher_logits),
                    ("example_weights", example_weights), ("domain_ids", domain_ids))  # fmt: skip
        for name, values in optional:
            if values is not None and len(values) != n:
                raise ValueError(f"{name}: {len(values)} rows for {n} texts")
        args = (list(texts), list(text_pairs)) if text_pairs is not None else (list(texts),)
        self.encodings = tokenizer(*args, truncation=True, max_length=max_length)
        self.labels = list(labels) if labels is not None else None
        self.teacher_logits = teacher_logits
        self.example_weights = list(example_weights) if example_weights is not None else None
        self.domain_ids = list(domain_ids) if domain_ids is not None else None  # Meta-KD's domain targets
        self.with_row_index = with_row_index  # for a collator that looks rows up elsewhere (online teacher)

    def __len__(self) -> int:
        return len(self.encodings["input_ids"])

    def __getitem__(self, i: int) -> dict:
        item = {key: values[i] for key, values in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        if self.teacher_logits is not None:
            item["teacher_logits"] = self.teacher_logits[i]
        if self.example_weights is not None:
            item["example_weights"] = self.example_weights[i]
        if self.domain_ids is not None:
            item["domain_ids"] = self.domain_ids[i]
        if self.with_row_index:
            item["row"] = i
        return item


class KDCollator:
    """Pads token fields dynamically and stacks the teacher logits and example weights alongside."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, features: list[dict]) -> dict:
        teacher = [f.pop("teacher_logits") for f in features if "teacher_logits" in f]
        weights = [f.pop("example_weights") for f in features if "example_weights" in f]
        domains = [f.pop("domain_ids") for f in features if "domain_ids" in f]
        batch = self.pad(features)
        if domains:
            batch["domain_ids"] = torch.tensor(domains, dtype=torch.long)
        if teacher:
            batch["teacher_logits"] = torch.tensor(np.stack(teacher), dtype=torch.float32)
        if weights:
            batch["example_weights"] = torch.tensor(weights, dtype=torch.float32)
        return batch


# Row indices of a training batch → the teacher's logits for those rows (e.g. asked of a served teacher).
TeacherLogitsFn = Callable[[Sequence[int]], np.ndarray]


class OnlineTeacherCollator(KDCollator):
    """KDCollator whose teacher logits come from ``teacher`` per batch instead of from the dataset."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, teacher: TeacherLogitsFn) -> None:
        super().__init__(tokenizer)
        self.teacher = teacher

    def __call__(self, features: list[dict]) -> dict:
        rows = [f.pop("row") for f in features]
        batch = super().__call__(features)
        batch["teacher_logits"] = torch.as_tensor(np.asarray(self.teacher(rows)), dtype=torch.float32)
        return batch


def label_ids(labels: Sequence[str | None], label_names: Sequence[str]) -> list[int]:
    """Map label strings to ids; ``None`` (unlabelled transfer rows) becomes ``-100``."""
    index = {name: i for i, name in enumerate(label_names)}
    out = []
    for label in labels:
        if label is None or (isinstance(label, float) and np.isnan(label)):
            out.append(IGNORE_LABEL)
        elif label not in index:
            raise ValueError(f"label {label!r} is not one of {list(label_names)}")
        else:
            out.append(index[label])
    return out
