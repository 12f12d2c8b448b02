"""DynaBERT-style width pruning: drop the least important attention heads and FFN neurons.

Importance follows Michel et al. 2019 ("Are Sixteen Heads Really Better than One?") as used by
DynaBERT: put a gate ξ=1 on every head / neuron and score it by E_x |∂L(x)/∂ξ|, which equals
|Σ activation × grad| over that unit's outputs. transformers 5 removed BERT's ``head_mask`` (and
``prune_heads``), so the gates are applied with forward hooks: on the input of
``attention.output.dense`` (the concatenated per-head contexts) for heads, and on the output of
``intermediate`` (after the activation) for neurons. Gates are per example, so examples whose
gradients have opposite signs don't cancel inside a batch.

Checkpoint format: transformers 5's ``BertSelfAttention`` derives the head size as
``hidden_size / num_attention_heads`` and has no per-layer head count, so a plain BERT config
cannot describe q/k/v projections narrower than ``hidden_size`` (setting ``num_attention_heads``
to the kept count would silently change the head size instead). A model with pruned heads is
therefore a ``PrunedBertForSequenceClassification`` (``model_type: pruned_bert``): plain BERT
plus ``heads_per_layer`` in its config (models/pruned_bert.py, which ``load_classifier``
registers with the Auto classes).
With ``prune_heads=False`` only FFN neurons go, the same number per layer, and the result stays
a plain ``BertForSequenceClassification`` with a smaller ``intermediate_size``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from transformers import (
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.pytorch_utils import prune_linear_layer

from landing.models.data import EncodedTable, KDCollator
from landing.models.kd import IGNORE_LABEL
from landing.models.loading import count_parameters
from landing.models.pruned_bert import PrunedBertConfig, PrunedBertForSequenceClassification

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _layers(model: PreTrainedModel) -> nn.ModuleList:
    if not isinstance(model, BertForSequenceClassification) or model.config.add_cross_attention:
        raise ValueError(f"width pruning supports BertForSequenceClassification encoders, not {type(model).__name__}")
    return model.bert.encoder.layer


def make_importance_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    labels: Sequence[int] | None = None,
    teacher_logits: np.ndarray | None = None,
    batch_size: int = 32,
    max_length: int = 128,
) -> DataLoader:
    """Batches for the importance pass: labels (ids, ``-100`` = none) and/or the teacher's logits."""
    table = EncodedTable(tokenizer, texts, max_length, labels=labels, teacher_logits=teacher_logits)
    return DataLoader(table, batch_size=batch_size, collate_fn=KDCollator(tokenizer))


def _loss(logits: torch.Tensor, batch: Mapping[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """Summed (not mean) loss, so each example's gate gradient is its own ∂L(x)/∂ξ regardless of batch size.

    Teacher soft targets win when present (DynaBERT scores with the loss it will recover with); else labels.
    """
    if "teacher_logits" in batch:
        soft = F.softmax(batch["teacher_logits"].float() / temperature, dim=-1)
        return -(soft * F.log_softmax(logits / temperature, dim=-1)).sum()
    labels = batch.get("labels")
    if labels is None or bool((labels == IGNORE_LABEL).all()):
        raise ValueError("importance batches need 'labels' or 'teacher_logits'")
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL, reduction="sum")


def _classifier_loss(temperature: float) -> Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]:
    def loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return _loss(model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}).logits, batch, temperature)

    return loss


def compute_importance(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *, temperature: float = 1.0,
    layers: nn.ModuleList | None = None, loss: Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
    """(head importance [layers, heads], neuron importance per layer [intermediate]) in one pass over ``batches``.

    A sentence classifier by default; any model on BERT layers with ``layers`` (its encoder's) and ``loss`` (the
    batch's summed loss, so each example's gate gradient is its own), e.g. the joint intent + slot model."""
    layers = _layers(model) if layers is None else layers
    loss = _classifier_loss(temperature) if loss is None else loss
    heads = torch.zeros(len(layers), layers[0].attention.self.num_attention_heads)
    neurons = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    gates: dict[tuple[str, int], torch.Tensor] = {}

    def head_gate(i: int):
        def hook(module: nn.Module, args: tuple) -> tuple:
            x = args[0]  # [batch, seq, heads * head_size]
            g = torch.ones(x.shape[0], heads.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
            gates["head", i] = g
            return ((x.unflatten(-1, (heads.shape[1], -1)) * g[:, None, :, None]).flatten(-2),)

        return hook

    def neuron_gate(i: int):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            g = torch.ones(out.shape[0], out.shape[-1], dtype=out.dtype, device=out.device, requires_grad=True)
            gates["neuron", i] = g
            return out * g[:, None, :]

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.attention.output.dense.register_forward_pre_hook(head_gate(i)))
        handles.append(layer.intermediate.register_forward_hook(neuron_gate(i)))
    was_training = model.training
    grads = [p.requires_grad for p in model.parameters()]
    model.eval()  # no dropout: scores reflect the network being pruned
    model.requires_grad_(False)  # only gate gradients are needed
    try:
        for batch in batches:
            loss(model, batch).backward()
            for i in range(len(layers)):
                heads[i] += gates["head", i].grad.abs().sum(0)
                neurons[i] += gates["neuron", i].grad.abs().sum(0)
            gates.clear()
    finally:
        for handle in handles:
            handle.remove()
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
        model.train(was_training)
    return heads, neurons


def head_importance(
    model: PreTrainedModel, batches: Iterable[Mapping[str, torch.Tensor]], *, temperature: float = 1.0
) -> torch.Tensor:
    """Σ_x |∂L(x)/∂ξ_head|, shape [num_layers, num_heads]."""
    return compute_importance(model, batches, temperature=temperature)[0]


def neuron_importance(
    model: PreTrainedModel, batches: Iterable[Mapping[str, torch.Tensor]], *, temperature: float = 1.0
) -> list[torch.Tensor]:
    """Σ_x |∂L(x)/∂ξ_neuron| per layer, each of shape [intermediate_size]."""
    return compute_importance(model, batches, temperature=temperature)[1]


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k).indices.sort().values  # keep the original order of the survivors


def _prune_neurons(layer: nn.Module, keep: torch.Tensor) -> None:
    layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep)
    layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)


def prune_ffn_neurons(encoder: PreTrainedModel, neuron_scores: list[torch.Tensor], width_multiplier: float) -> dict:
    """In place: every layer of a BERT encoder keeps its most important FFN neurons (``width_multiplier`` of them,
    the same number in each layer), and its config says so, so it saves and loads as a plain BERT."""
    if not 0 < width_multiplier <= 1:
        raise ValueError(f"width_multiplier must be in (0, 1], got {width_multiplier}")
    before = count_parameters(encoder)
    keep = max(1, round(width_multiplier * neuron_scores[0].numel()))
    for layer, scores in zip(encoder.encoder.layer, neuron_scores, strict=True):
        _prune_neurons(layer, _top(scores, keep))
    encoder.config.intermediate_size = keep
    return {"params_before": before, "params_after": count_parameters(encoder),
            "neurons_per_layer": [keep] * len(neuron_scores)}  # fmt: skip


def prune_width(
    model: PreTrainedModel,
    width_multiplier: float,
    importance_batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    prune_heads: bool = True,
    temperature: float = 1.0,
) -> tuple[PreTrainedModel, dict]:
    """A narrower copy keeping the most important heads and FFN neurons, the same number in every layer.

    The input model is left untouched (it is the natural KD teacher for recovering accuracy).
    """
    if not 0 < width_multiplier <= 1:
        raise ValueError(f"width_multiplier must be in (0, 1], got {width_multiplier}")
    layers = _layers(model)
    head_scores, neuron_scores = compute_importance(model, importance_batches, temperature=temperature)
    n_heads = head_scores.shape[1]
    keep_heads = max(1, round(width_multiplier * n_heads)) if prune_heads else n_heads
    keep_neurons = max(1, round(width_multiplier * neuron_scores[0].numel()))

    pruned = copy.deepcopy(model)
    kept_heads: list[list[int]] = []
    for layer, h_scores, n_scores in zip(_layers(pruned), head_scores, neuron_scores):
        attn, size = layer.attention.self, layer.attention.self.attention_head_size
        heads = _top(h_scores, keep_heads)
        kept_heads.append(heads.tolist())
        if keep_heads < n_heads:
            index = (heads[:, None] * size + torch.arange(size)).flatten()
            for name in ("query", "key", "value"):
                setattr(attn, name, prune_linear_layer(getattr(attn, name), index))
            layer.attention.output.dense = prune_linear_layer(layer.attention.output.dense, index, dim=1)
            attn.num_attention_heads, attn.all_head_size = keep_heads, keep_heads * size
        _prune_neurons(layer, _top(n_scores, keep_neurons))

    # Rebuild from a config that describes the new shapes, so save_pretrained/from_pretrained round-trip.
    drop = ("model_type", "architectures", "heads_per_layer", "token_map_size")
    settings = {k: v for k, v in model.config.to_dict().items() if k not in drop}
    settings["intermediate_size"] = keep_neurons
    if keep_heads < n_heads or isinstance(model, PrunedBertForSequenceClassification):
        config = PrunedBertConfig(**settings, heads_per_layer=[keep_heads] * len(layers),
                                  token_map_size=getattr(model.config, "token_map_size", None))  # fmt: skip
        cls = PrunedBertForSequenceClassification
    else:
        config, cls = type(model.config)(**settings), type(model)
    config._attn_implementation = model.config._attn_implementation
    result = cls(config).to(dtype=model.dtype)
    result.load_state_dict(pruned.state_dict(), strict=True)
    result.train(model.training)
    stats = {
        "params_before": count_parameters(model),
        "params_after": count_parameters(result),
        "heads_per_layer": [keep_heads] * len(layers),
        "heads_kept": kept_heads,
        "neurons_per_layer": [keep_neurons] * len(layers),
    }
    return result, stats
