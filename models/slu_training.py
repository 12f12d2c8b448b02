"""Training and prediction of the joint intent + slot model (``models/slu.py``) through transformers' Trainer,
with the same optimisation knobs (``TrainerParams``) and checkpoint resumption as the sentence classifiers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase, Trainer

from .params import TrainerParams
from .slu import IGNORE, JointIntentSlotModel, encode_utterances, word_predictions
from .training import TrainResult, last_complete_checkpoint, training_arguments


@dataclass(frozen=True)
class Utterances:
    """Pre-split words, and their BIO tags and intent when labelled."""

    tokens: Sequence[Sequence[str]]
    tags: Sequence[Sequence[str]] | None = None
    intents: Sequence[str] | None = None


class _Encoded(torch.utils.data.Dataset):
    """One row per utterance, unpadded: the collator pads each batch to its longest row."""

    def __init__(self, tokenizer, rows: Utterances, tag_ids: dict[str, int], intent_ids: dict[str, int], max_length: int):
        self.items = []
        for tokens, tags, intent in zip(rows.tokens, rows.tags, rows.intents, strict=True):
            enc = encode_utterances(tokenizer, [tokens], max_length, tags=[tags], tag_ids=tag_ids)
            self.items.append({"input_ids": enc["input_ids"][0], "attention_mask": enc["attention_mask"][0],
                               "slot_labels": enc["slot_labels"][0], "intent_labels": intent_ids[intent]})  # fmt: skip

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def _collate(pad_id: int):
    def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)

        def padded(key: str, value: int) -> torch.Tensor:
            return torch.stack([torch.nn.functional.pad(b[key], (0, width - len(b[key])), value=value) for b in batch])

        return {"input_ids": padded("input_ids", pad_id), "attention_mask": padded("attention_mask", 0),
                "slot_labels": padded("slot_labels", IGNORE),
                "intent_labels": torch.tensor([b["intent_labels"] for b in batch])}  # fmt: skip

    return collate


class _JointTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(**inputs)
        return (out.loss, out) if return_outputs else out.loss


def train_joint(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase, rows: Utterances,
                tags: Sequence[str], intents: Sequence[str], params: TrainerParams, max_length: int,
                checkpoint_dir: Path, *, seed: int) -> TrainResult:  # fmt: skip
    """Train in place on labelled ``rows`` (a tag outside ``tags`` is ignored, never guessed), resuming from the
    newest complete checkpoint in ``checkpoint_dir``."""
    dataset = _Encoded(tokenizer, rows, {t: i for i, t in enumerate(tags)}, {n: i for i, n in enumerate(intents)},
                       max_length)  # fmt: skip
    args = training_arguments(params, checkpoint_dir, seed)
    trainer = _JointTrainer(model=model, args=args, train_dataset=dataset, data_collator=_collate(tokenizer.pad_token_id))
    resume = last_complete_checkpoint(checkpoint_dir)
    output = trainer.train(resume_from_checkpoint=resume)
    return TrainResult(global_step=output.global_step, train_loss=float(output.training_loss),
                       train_runtime_s=float(output.metrics.get("train_runtime", 0.0)), resumed_from=resume,
                       bf16=args.bf16)  # fmt: skip


@torch.inference_mode()
def predict_joint(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase, tokens: Sequence[Sequence[str]],
                  tags: Sequence[str], intents: Sequence[str], max_length: int,
                  batch_size: int = 64) -> tuple[list[str], list[list[str]]]:  # fmt: skip
    """(the intent, each word's tag) per utterance."""
    model.eval()
    predicted_intents, predicted_tags = [], []
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start : start + batch_size]
        enc = encode_utterances(tokenizer, chunk, max_length)
        out = model(enc["input_ids"], enc["attention_mask"])
        predicted_intents += [intents[i] for i in out.intent_logits.argmax(-1).tolist()]
        predicted_tags += word_predictions(out.slot_logits, enc["word_ids"], [len(t) for t in chunk], tags)
    return predicted_intents, predicted_tags
