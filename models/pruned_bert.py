"""The pruned-BERT architecture: BERT with per-layer head counts and optionally remapped word embeddings.

Written by width pruning (fewer heads per layer than ``num_attention_heads`` allows to describe)
and by vocabulary pruning with ``dropped_tokens: nearest`` (a token map in front of the kept rows).
Its own module, registered explicitly (:func:`register_pruned_bert`), so loading a model does not
depend on which pruning module happens to have been imported.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification


class PrunedBertConfig(BertConfig):
    """BERT config plus ``heads_per_layer`` and ``token_map_size``.

    ``num_attention_heads`` stays the unpruned count: BERT derives the head size from it.
    ``token_map_size`` (optional): the original vocabulary size when the word embeddings are a
    :class:`RemappedEmbedding` (``vocab_size`` is then the number of kept rows).
    """

    model_type = "pruned_bert"

    def __init__(self, heads_per_layer: list[int] | None = None, token_map_size: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.heads_per_layer = list(heads_per_layer or [self.num_attention_heads] * self.num_hidden_layers)
        self.token_map_size = token_map_size


class RemappedEmbedding(nn.Module):
    """Word embeddings of a pruned vocabulary, addressed by the original tokenizer's ids.

    ``token_map[old_id]`` is the row used for that token: its own row when it was kept, else the
    row of a similar kept token (models.vocab_pruning). The tokenizer stays the original one, so
    texts are segmented as before. The map is INT16 (2 bytes per original token) and exports to
    ONNX as one more Gather.
    """

    def __init__(self, token_map_size: int, num_rows: int, dim: int, padding_idx: int | None = None) -> None:
        super().__init__()
        dtype = torch.int16 if num_rows <= torch.iinfo(torch.int16).max else torch.int32
        self.register_buffer("token_map", torch.zeros(token_map_size, dtype=dtype))
        self.embedding = nn.Embedding(num_rows, dim, padding_idx=padding_idx)

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    @property
    def num_embeddings(self) -> int:
        return self.embedding.num_embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.token_map[input_ids].long())


class PrunedBertForSequenceClassification(BertForSequenceClassification):
    """A BERT classifier whose layers have ``config.heads_per_layer`` heads of the original head size
    (and, with ``config.token_map_size``, remapped word embeddings)."""

    config_class = PrunedBertConfig

    def __init__(self, config: PrunedBertConfig) -> None:
        super().__init__(config)
        for layer, heads in zip(self.bert.encoder.layer, config.heads_per_layer):
            set_head_count(layer, heads)  # shapes only; from_pretrained / load_state_dict fills the weights
        if getattr(config, "token_map_size", None):
            self.bert.embeddings.word_embeddings = RemappedEmbedding(
                config.token_map_size, config.vocab_size, config.hidden_size, config.pad_token_id
            )


def set_head_count(layer: nn.Module, heads: int) -> None:
    attn, out = layer.attention.self, layer.attention.output
    width = heads * attn.attention_head_size
    hidden = out.dense.out_features
    for name in ("query", "key", "value"):
        setattr(attn, name, nn.Linear(hidden, width))
    out.dense = nn.Linear(width, hidden)
    attn.num_attention_heads, attn.all_head_size = heads, width


def register_pruned_bert() -> None:
    """Make ``AutoConfig`` / ``AutoModelForSequenceClassification.from_pretrained`` load ``pruned_bert``
    checkpoints; idempotent, called by everything that loads a saved model."""
    AutoConfig.register(PrunedBertConfig.model_type, PrunedBertConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(PrunedBertConfig, PrunedBertForSequenceClassification, exist_ok=True)
