"""Distillation losses, registered by name so a config's ``distillation.type`` picks one.

``vanilla_kd`` (Hinton et al., 2015), per example::

    loss_i = a_i * T^2 * KL(softmax(t_i / T) || softmax(s_i / T)) + (1 - a_i) * CE(s_i, y_i)

with ``a_i = alpha`` for labelled examples and ``a_i = 1`` for unlabelled transfer
examples (they have no ``y_i``). The ``T^2`` factor keeps the soft-target gradients
on the same scale as the hard-target ones when the temperature changes, so
``alpha`` means the same thing at every ``T`` (Hinton et al.'s convention).
TextBrewer's ``kd_ce_loss`` applies no ``T^2``: it is the soft cross-entropy at
temperature ``T`` alone, so its loss (and gradients) shrink as ``T`` grows; at
``T = 1`` the two agree up to the teacher-entropy constant. The batch loss is
the mean over examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_LABEL = -100


@dataclass(frozen=True)
class KDParams:
    temperature: float = 5.0
    alpha: float = 0.5


KDLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, KDParams], torch.Tensor]
KD_LOSSES: dict[str, KDLoss] = {}


def register_kd_loss(name: str) -> Callable[[KDLoss], KDLoss]:
    """Add a loss to the registry; later issues add intermediate-layer and Meta-KD losses here."""

    def decorate(fn: KDLoss) -> KDLoss:
        if name in KD_LOSSES:
            raise ValueError(f"distillation loss {name!r} is already registered")
        KD_LOSSES[name] = fn
        return fn

    return decorate


def get_kd_loss(name: str) -> KDLoss:
    try:
        return KD_LOSSES[name]
    except KeyError:
        raise ValueError(f"distillation.type: unknown loss {name!r}; expected one of {sorted(KD_LOSSES)}") from None


@register_kd_loss("vanilla_kd")
def vanilla_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, params: KDParams
) -> torch.Tensor:
    """Soft-target KL scaled by T² mixed with hard-label CE; labels == -100 mark unlabelled rows."""
    t = params.temperature
    soft_teacher = F.softmax(teacher_logits / t, dim=-1)
    log_soft_student = F.log_softmax(student_logits / t, dim=-1)
    kl = F.kl_div(log_soft_student, soft_teacher, reduction="none").sum(-1) * t * t
    has_label = labels != IGNORE_LABEL
    ce = F.cross_entropy(student_logits, labels.clamp(min=0), reduction="none")
    alpha = torch.where(has_label, torch.full_like(kl, params.alpha), torch.ones_like(kl))
    per_example = alpha * kl + (1 - alpha) * torch.where(has_label, ce, torch.zeros_like(ce))
    return per_example.mean()
