"""Joint intent detection and slot filling (SLU) on any encoder the project loads: an intent head on the
mean-pooled tokens (the pooling these sentence encoders were trained with) and a slot head on every token.

A word's slot tag is learnt and predicted on its first sub-word only; the other sub-words and the special
tokens are ignored (label ``IGNORE``), as in JointBERT. Spans and metrics follow conlleval, through ``seqeval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .pooling import mean_over_tokens
from .slu_spans import first_subwords

IGNORE = -100  # torch's cross-entropy ignore_index: positions without a slot label


@dataclass
class JointOutput:
    intent_logits: torch.Tensor  # (batch, intents)
    slot_logits: torch.Tensor  # (batch, tokens, slot tags)
    loss: torch.Tensor | None = None
    intent_loss: torch.Tensor | None = None
    slot_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None  # the encoder's, when asked (intermediate-layer KD)
    attentions: tuple[torch.Tensor, ...] | None = None


class JointIntentSlotModel(nn.Module):
    """``loss = intent CE + slot_loss_weight · slot CE`` (the slot CE over labelled first sub-words only)."""

    def __init__(self, encoder: PreTrainedModel, num_intents: int, num_slot_tags: int, slot_loss_weight: float = 1.0,
                 dropout: float = 0.1):  # fmt: skip
        super().__init__()
        self.encoder = encoder
        width = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.intent_head = nn.Linear(width, num_intents)
        self.slot_head = nn.Linear(width, num_slot_tags)
        self.slot_loss_weight = slot_loss_weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, intent_labels: torch.Tensor | None = None,
                slot_labels: torch.Tensor | None = None, **encoder_options) -> JointOutput:  # fmt: skip
        """``encoder_options`` (``output_hidden_states``, ``output_attentions``) go to the encoder; its hidden
        states and attentions are then in the output."""
        encoded = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **encoder_options)
        hidden = encoded.last_hidden_state
        intent_logits = self.intent_head(self.dropout(mean_over_tokens(hidden, attention_mask)))
        slot_logits = self.slot_head(self.dropout(hidden))
        out = JointOutput(intent_logits, slot_logits, hidden_states=encoded.get("hidden_states"),
                          attentions=encoded.get("attentions"))  # fmt: skip
        if intent_labels is not None and slot_labels is not None:
            out.intent_loss = nn.functional.cross_entropy(intent_logits, intent_labels)
            out.slot_loss = nn.functional.cross_entropy(slot_logits.flatten(0, 1), slot_labels.flatten(), ignore_index=IGNORE)
            out.loss = out.intent_loss + self.slot_loss_weight * out.slot_loss
        return out


def first_subword_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Per sub-word position: the word's label on its first sub-word, ``IGNORE`` on the rest and on specials."""
    labels = [IGNORE] * len(word_ids)
    for word, position in first_subwords(word_ids).items():
        labels[position] = word_labels[word]
    return labels


def encode_utterances(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[Sequence[str]], max_length: int,
                      tags: Sequence[Sequence[str]] | None = None, tag_ids: dict[str, int] | None = None) -> dict:  # fmt: skip
    """Tokenizer inputs for pre-split words, plus ``slot_labels`` when ``tags`` are given and ``word_ids`` (per
    row: each position's word index or None) to map predictions back to words. A word cut by ``max_length`` has
    no position, so it can only be predicted as missed (``words_kept`` says how many words each row kept)."""
    enc = tokenizer([list(t) for t in tokens], is_split_into_words=True, truncation=True, max_length=max_length,
                    padding=True, return_tensors="pt")  # fmt: skip
    word_ids = [enc.word_ids(i) for i in range(len(tokens))]
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "word_ids": word_ids,
           "words_kept": [len({w for w in ids if w is not None}) for ids in word_ids]}  # fmt: skip
    if tags is not None:
        if tag_ids is None:
            raise ValueError("tag_ids are needed with tags")
        out["slot_labels"] = torch.tensor([
            first_subword_labels(ids, [tag_ids.get(t, IGNORE) for t in row]) for ids, row in zip(word_ids, tags, strict=True)])  # fmt: skip
    return out


def word_predictions(slot_logits: torch.Tensor, word_ids: Sequence[Sequence[int | None]], words: Sequence[int],
                     tags: Sequence[str]) -> list[list[str]]:  # fmt: skip
    """Each word's predicted tag, read on its first sub-word; a word with no position (cut) is ``O``."""
    best = slot_logits.argmax(-1).tolist()
    out = []
    for row, ids, n in zip(best, word_ids, words, strict=True):
        predicted = ["O"] * n
        for word, position in first_subwords(ids).items():
            if word < n:
                predicted[word] = tags[row[position]]
        out.append(predicted)
    return out


def slu_metrics(gold_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]],
                gold_intents: Sequence[str], predicted_intents: Sequence[str]) -> dict[str, float]:  # fmt: skip
    """Intent accuracy, span-level slot F1 (seqeval's default: conlleval's semantics) and sentence accuracy
    (the intent and every tag right)."""
    from seqeval.metrics import f1_score

    n = len(gold_intents)
    intent_right = [g == p for g, p in zip(gold_intents, predicted_intents, strict=True)]
    tags_right = [list(g) == list(p) for g, p in zip(gold_tags, predicted_tags, strict=True)]
    return {"intent_accuracy": sum(intent_right) / n,
            "slot_f1": float(f1_score([list(t) for t in gold_tags], [list(t) for t in predicted_tags])),
            "sentence_accuracy": sum(i and t for i, t in zip(intent_right, tags_right, strict=True)) / n}  # fmt: skip
