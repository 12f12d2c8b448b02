"""Intermediate-layer distillation (TinyBERT-style): student hidden states and attentions fitted to the
teacher's, layer by layer, through a declared layer map.

``distillation: {type: vanilla_kd+hidden_mse+attention_mse, layer_map: {1: 2, 2: 6}, weights: {...}}``:
student layer ``i`` (1-based; 0 is the embedding output, matched only when ``match_embeddings``) ←
teacher layer ``j``. Without ``layer_map`` the mapping is uniform: student layer i of n ← teacher
layer round(i·m/n) of m, so the last layers always meet. Hidden-state MSE is averaged over real
tokens only (padding never counts) and over the hidden width; when the widths differ, a learned
linear projection per mapped layer (student width → teacher width, trained with the student, not
saved with it) comes first. Attention MSE compares the attention probabilities of real query and key
positions, averaged over heads; ``attention_kl`` is KL(teacher ‖ student) per query row instead.
``pooled_mse`` compares the last hidden states' mean over real tokens (Meta-KD's domain representation).
Each loss returns one value per example, so example weights apply before reduction.

The teacher runs alongside the student on the same input ids, so both must share one vocabulary
(checked before training: TextBrewer's users meet silently wrong losses there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from landing.errors import UserError
from landing.models.kd_registry import DistillBatch, register_kd_loss

if TYPE_CHECKING:
    from landing.models.params import KDParams


class LayerMapError(UserError, ValueError):
    """A layer map that does not fit the student and the teacher; the message names the layer."""


def resolved_layer_map(params: KDParams, student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student layer → teacher layer (hidden-state indices: 0 = embeddings), declared or uniform."""
    if params.layer_map is not None:
        mapping = {int(s): int(t) for s, t in params.layer_map.items()}
    else:
        mapping = {i: round(i * teacher_layers / student_layers) for i in range(1, student_layers + 1)}
    if params.match_embeddings:
        mapping = {0: 0, **mapping}
    for s, t in mapping.items():
        if not 0 <= s <= student_layers:
            raise LayerMapError(f"distillation.layer_map: student layer {s} does not exist (the student has layers "
                                f"1..{student_layers}; 0 is the embedding output)")  # fmt: skip
        if not 0 <= t <= teacher_layers:
            raise LayerMapError(f"distillation.layer_map: teacher layer {t} (for student layer {s}) does not exist "
                                f"(the teacher has layers 1..{teacher_layers})")  # fmt: skip
    return mapping


def check_models(params: KDParams, student, teacher) -> dict[int, int]:
    """The resolved map, validated against both configs (layer counts, and head counts for attention losses)."""
    s_cfg, t_cfg = student.config, teacher.config
    mapping = resolved_layer_map(params, s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
    if any(name.startswith("attention_") for name in params.loss_names):
        for s, t in mapping.items():  # attention maps are averaged over heads, so head counts may differ
            if s > 0 and t == 0:
                raise LayerMapError(f"distillation.layer_map: student layer {s} ← teacher layer 0 (embeddings) has "
                                    "no attention to match; map it to a transformer layer")  # fmt: skip
    return mapping


POOLED = "pooled"  # the projection key of pooled_mse


def projections(params: KDParams, student, teacher) -> nn.ModuleDict:
    """One linear map per mapped layer (and one for the pooled representation) when the hidden widths differ;
    empty when they are equal."""
    width_s, width_t = student.config.hidden_size, teacher.config.hidden_size
    if width_s == width_t:
        return nn.ModuleDict()
    maps = {}
    if any(name.startswith("hidden_") for name in params.loss_names):
        maps |= {str(s): nn.Linear(width_s, width_t) for s in check_models(params, student, teacher)}
    if "pooled_mse" in params.loss_names:
        maps[POOLED] = nn.Linear(width_s, width_t)
    return nn.ModuleDict(maps)


def outputs_needed(params: KDParams) -> dict[str, bool]:
    """The forward options the configured losses read (``output_hidden_states``, ``output_attentions``), only
    those that are on."""
    losses = [loss for loss, _ in params.losses()]
    wanted = {"output_hidden_states": any(loss.needs_hidden_states for loss in losses),
              "output_attentions": any(loss.needs_attentions for loss in losses)}  # fmt: skip
    return {k: True for k, on in wanted.items() if on}


def add_projections(optimizer, projections: nn.ModuleDict | None):
    """The width projections trained with the student (not saved with it), as one more parameter group."""
    if projections is not None and len(projections):
        optimizer.add_param_group({"params": list(projections.parameters()), "weight_decay": 0.0})
    return optimizer


def _token_mask(batch: DistillBatch, like: torch.Tensor) -> torch.Tensor:
    if batch.attention_mask is None:
        return torch.ones(like.shape[:2], dtype=like.dtype, device=like.device)
    return batch.attention_mask.to(like.dtype)


def _require(batch: DistillBatch, field: str) -> None:
    for side in ("student", "teacher"):
        if getattr(getattr(batch, side), field) is None:
            raise ValueError(f"intermediate-layer distillation: the {side}'s {field} are missing from the batch "
                             "(the trainer runs the teacher alongside the student for these losses)")  # fmt: skip


@register_kd_loss("hidden_mse", needs_hidden_states=True, needs_teacher_outputs=True)
def hidden_mse(batch: DistillBatch, params: KDParams) -> torch.Tensor:
    """Per example: the mean over mapped layers of the squared error per real token, averaged over the width."""
    _require(batch, "hidden_states")
    student, teacher = batch.student.hidden_states, batch.teacher.hidden_states
    mapping = resolved_layer_map(params, len(student) - 1, len(teacher) - 1)
    mask = _token_mask(batch, student[0])
    tokens = mask.sum(1).clamp(min=1)
    losses = []
    for s, t in mapping.items():
        h = student[s]
        if batch.projections is not None and str(s) in batch.projections:
            h = batch.projections[str(s)](h)
        error = ((h.float() - teacher[t].float()) ** 2).mean(-1)  # (batch, tokens)
        losses.append((error * mask).sum(1) / tokens)
    return torch.stack(losses).mean(0)


@register_kd_loss("pooled_mse", needs_hidden_states=True, needs_teacher_outputs=True)
def pooled_mse(batch: DistillBatch, params: KDParams) -> torch.Tensor:
    """Per example: squared error of the last hidden states' mean over real tokens, averaged over the width. In
    Meta-KD this is the domain representation, the pooled vector the meta-teacher's domain head reads."""
    _require(batch, "hidden_states")
    student, teacher = batch.student.hidden_states[-1], batch.teacher.hidden_states[-1]
    mask = _token_mask(batch, student).unsqueeze(-1)
    tokens = mask.sum(1).clamp(min=1)
    pooled_s, pooled_t = (student.float() * mask).sum(1) / tokens, (teacher.float() * mask).sum(1) / tokens
    if batch.projections is not None and POOLED in batch.projections:
        pooled_s = batch.projections[POOLED](pooled_s)  # linear, so projecting the mean = the mean of projections
    return ((pooled_s - pooled_t) ** 2).mean(-1)


def _attention_pairs(batch: DistillBatch, params: KDParams):
    _require(batch, "attentions")
    student, teacher = batch.student.attentions, batch.teacher.attentions
    mapping = resolved_layer_map(params, len(student), len(teacher))
    for s, t in mapping.items():
        if s == 0:
            continue  # the embedding output has no attention
        # averaged over heads: the probabilities of one position attending to another
        yield student[s - 1].float().mean(1), teacher[t - 1].float().mean(1)


def _query_key_mask(batch: DistillBatch, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mask = _token_mask(batch, like)
    return mask, mask.unsqueeze(2) * mask.unsqueeze(1)  # (batch, queries), (batch, queries, keys)


@register_kd_loss("attention_mse", needs_attentions=True, needs_teacher_outputs=True)
def attention_mse(batch: DistillBatch, params: KDParams) -> torch.Tensor:
    """Per example: squared error of the head-averaged attention probabilities over real (query, key) pairs."""
    losses = []
    for s_att, t_att in _attention_pairs(batch, params):
        _, pairs = _query_key_mask(batch, s_att)
        losses.append((((s_att - t_att) ** 2) * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1))
    return torch.stack(losses).mean(0)


@register_kd_loss("attention_kl", needs_attentions=True, needs_teacher_outputs=True)
def attention_kl(batch: DistillBatch, params: KDParams) -> torch.Tensor:
    """Per example: KL(teacher ‖ student) of each real query's (head-averaged) attention, averaged over queries."""
    losses = []
    for s_att, t_att in _attention_pairs(batch, params):
        queries, _ = _query_key_mask(batch, s_att)
        tiny = torch.finfo(s_att.dtype).tiny
        kl = (t_att * (torch.log(t_att.clamp(min=tiny)) - torch.log(s_att.clamp(min=tiny)))).sum(-1)
        losses.append((kl * queries).sum(1) / queries.sum(1).clamp(min=1))
    return torch.stack(losses).mean(0)


def same_vocabulary(student_tokenizer, teacher_tokenizer) -> bool:
    return student_tokenizer.get_vocab() == teacher_tokenizer.get_vocab()


def teacher_outputs(teacher, inputs: dict, options: dict):
    """The teacher's hidden states / attentions for the student's batch (no gradients, eval mode)."""
    with torch.no_grad():
        keep = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return teacher(**keep, **options)
