"""Distillation losses, registered by name and combined with weights (TextBrewer's adaptor idea).

The trainer hands every loss one :class:`DistillBatch`: the student's and the teacher's forward
outputs (logits, and hidden states / attentions when a loss asks for them), the attention mask,
the labels and optional per-example weights. A loss returns one value per example; the combiner
weights the losses (``KDParams.weights``) and averages over examples (weighted by
``example_weights`` when given). So a new loss (intermediate layers, Meta-KD) is one registered
function, not a new trainer.

``vanilla_kd`` (Hinton et al., 2015), per example::

    loss_i = a_i * T^2 * KL(softmax(t_i / T) || softmax(s_i / T)) + (1 - a_i) * CE(s_i, y_i)

with ``a_i = alpha`` for labelled examples and ``a_i = 1`` for unlabelled transfer
examples (they have no ``y_i``). The ``T^2`` factor keeps the soft-target gradients
on the same scale as the hard-target ones when the temperature changes, so
``alpha`` means the same thing at every ``T`` (Hinton et al.'s convention).
TextBrewer's ``kd_ce_loss`` applies no ``T^2``: it is the soft cross-entropy at
temperature ``T`` alone, so its loss (and gradients) shrink as ``T`` grows; at
``T = 1`` the two agree up to the teacher-entropy constant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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


def distillation_loss(batch: DistillBatch, params: KDParams) -> torch.Tensor:
    """The weighted sum of the configured losses, averaged over examples (weighted when the batch has weights)."""
    per_example = sum(weight * loss.fn(batch, params) for loss, weight in params.losses())
    if batch.example_weights is None:
        return per_example.mean()
    weights = batch.example_weights.to(per_example.dtype)
    return (weights * per_example).sum() / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)


def vanilla_kd_per_example(
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
    return alpha * kl + (1 - alpha) * torch.where(has_label, ce, torch.zeros_like(ce))


def vanilla_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, params: KDParams
) -> torch.Tensor:
    """The batch mean of :func:`vanilla_kd_per_example`."""
    return vanilla_kd_per_example(student_logits, teacher_logits, labels, params).mean()


@register_kd_loss("vanilla_kd")
def _vanilla_kd(batch: DistillBatch, params: KDParams) -> torch.Tensor:
    return vanilla_kd_per_example(batch.student.logits, batch.teacher.logits, batch.labels, params)


# The intermediate-layer losses register themselves here too (hidden_mse, attention_mse, attention_kl).
import landing.models.kd_layers  # noqa: E402, F401
