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

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

# The intermediate-layer losses (hidden_mse, attention_mse, attention_kl, pooled_mse) register themselves on
# import: this module is the whole catalogue, so a config validated against it knows every built-in loss.
import landing.models.kd_layers  # noqa: F401
from landing.models.kd_registry import (  # noqa: F401  (the registry's names, for the losses' users)
    IGNORE_LABEL,
    KD_LOSSES,
    DistillBatch,
    ForwardOutputs,
    RegisteredLoss,
    get_kd_loss,
    register_kd_loss,
)

if TYPE_CHECKING:
    from landing.models.params import KDParams

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
