"""The registry of distillation losses by name, and the batch every loss reads.

Pure Python (torch only in annotations): models/params.py validates loss names against it, and the losses
(models/kd.py, models/kd_layers.py) register into it, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from landing.models.params import KDParams

IGNORE_LABEL = -100


@dataclass(frozen=True)
class ForwardOutputs:
    """What one model's forward pass gives the losses; absent fields are None."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass(frozen=True)
class DistillBatch:
    """One batch as every distillation loss sees it."""

    student: ForwardOutputs
    teacher: ForwardOutputs
    labels: torch.Tensor  # IGNORE_LABEL marks unlabelled rows
    attention_mask: torch.Tensor | None = None
    example_weights: torch.Tensor | None = None
    projections: torch.nn.ModuleDict | None = None  # student layer → width projection (models/kd_layers.py)


@dataclass(frozen=True)
class RegisteredLoss:
    """A per-example loss and the outputs it needs (so the trainer asks the model for them)."""

    fn: Callable[[DistillBatch, KDParams], torch.Tensor]
    needs_hidden_states: bool = False
    needs_attentions: bool = False
    needs_teacher_outputs: bool = False  # the teacher's hidden states / attentions too: the teacher runs per batch


KD_LOSSES: dict[str, RegisteredLoss] = {}


def register_kd_loss(name: str, *, needs_hidden_states: bool = False, needs_attentions: bool = False,
                     needs_teacher_outputs: bool = False):  # fmt: skip
    """Add a per-example loss ``fn(batch, params) -> Tensor[batch]`` to the registry under ``name``; the flags say
    which outputs it reads (the student's, and with ``needs_teacher_outputs`` the teacher's as well)."""

    def decorate(fn):
        if name in KD_LOSSES:
            raise ValueError(f"distillation loss {name!r} is already registered")
        KD_LOSSES[name] = RegisteredLoss(fn, needs_hidden_states, needs_attentions, needs_teacher_outputs)
        return fn

    return decorate


def get_kd_loss(name: str) -> RegisteredLoss:
    try:
        return KD_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(KD_LOSSES)}") from None
