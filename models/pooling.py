"""Pooling of token states into one vector a sentence, shared by the mean-pooled classifier and Meta-KD."""

from __future__ import annotations

import torch


def mean_over_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, width) → (batch, width): the mean over the positions the mask marks real."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
