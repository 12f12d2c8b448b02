"""Meta-KD's prototype (transferability) weights (Pan et al., 2021; issue #14, item 2).

Each example ``i`` of domain ``d_i`` and class ``y_i`` is embedded by the teacher's encoder as the mean of
its last hidden states over real tokens (padding never counts, unlike EasyNLP's average over the whole
padded sequence). With ``c[y, d]`` the centroid (mean embedding) of class ``y`` in domain ``d``::

    w_i = ½ · [ cos(h_i, c[y_i, d_i]) + cos(h_i, mean over d ≠ d_i of c[y_i, d]) ]

No normalisation is applied: ``w_i`` is in [-1, 1], high for an example typical of its class both in
its own domain and across the others (knowledge that transfers), so the (1 + w_i) weights of the
student's stage 1 stay non-negative.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from landing.errors import UserError
from landing.models.pooling import mean_over_tokens
from landing.models.specs import AnySpec


class DomainDataError(UserError, ValueError):
    """Domains or classes that cannot give the centroids the weights need; the message names them."""


@torch.no_grad()
def encoder_embeddings(model, tokenizer, texts: Sequence[str], *, text_pairs: Sequence[str] | None = None,
                       batch_size: int = 64, max_length: int = 128) -> np.ndarray:  # fmt: skip
    """Mean-over-real-tokens embeddings of ``texts`` from ``model``'s encoder (``model.base_model``), in order."""
    model.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        args = [list(texts[start : start + batch_size])]
        if text_pairs is not None:
            args.append(list(text_pairs[start : start + batch_size]))
        batch = tokenizer(*args, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        hidden = model.base_model(**batch).last_hidden_state
        out.append(mean_over_tokens(hidden, batch["attention_mask"]).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), dtype=np.float32)


def class_centroids(embeddings: np.ndarray, labels: Sequence, domains: Sequence,
                    min_examples: int = 2) -> dict[tuple, np.ndarray]:  # fmt: skip
    """(class, domain) → mean embedding; a domain with one class only, or a (class, domain) with fewer than
    ``min_examples`` rows, is an error naming it."""
    labels, domains = np.asarray(labels, dtype=object), np.asarray(domains, dtype=object)
    centroids = {}
    for domain in sorted(set(domains), key=str):
        in_domain = domains == domain
        classes = sorted(set(labels[in_domain]), key=str)
        if len(classes) < 2:
            raise DomainDataError(f"Meta-KD: domain {domain!r} has one class only ({classes[0]!r}); every domain needs "
                                  "at least two")  # fmt: skip
        for label in classes:
            rows = in_domain & (labels == label)
            if rows.sum() < min_examples:
                raise DomainDataError(f"Meta-KD: domain {domain!r}, class {label!r}: {int(rows.sum())} example(s), "
                                      f"fewer than the {min_examples} a centroid needs")  # fmt: skip
            centroids[(label, domain)] = embeddings[rows].mean(0)
    return centroids


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.clip(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12, None)
    return (a * b).sum(-1)


def prototype_weights(embeddings: np.ndarray, labels: Sequence, domains: Sequence, min_examples: int = 2) -> np.ndarray:
    """Each example's transferability weight (the module docstring's formula), in row order."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    labels_arr, domains_arr = np.asarray(labels, dtype=object), np.asarray(domains, dtype=object)
    if len(set(domains_arr)) < 2:
        raise DomainDataError(f"Meta-KD needs at least two domains; found {sorted(set(domains_arr), key=str)}")
    centroids = class_centroids(embeddings, labels_arr, domains_arr, min_examples)
    own = np.stack([centroids[(y, d)] for y, d in zip(labels_arr, domains_arr, strict=True)])
    others = []
    for y, d in zip(labels_arr, domains_arr, strict=True):
        found = [c for (label, domain), c in centroids.items() if label == y and domain != d]
        if not found:
            raise DomainDataError(f"Meta-KD: class {y!r} occurs in domain {d!r} only; its cross-domain centroid "
                                  "needs the class in another domain too")  # fmt: skip
        others.append(np.mean(found, axis=0))
    return 0.5 * (_cos(embeddings, own) + _cos(embeddings, np.stack(others)))


# --- the meta-teacher's losses (issue #14, item 3) and the student's stage-1 weights (item 4) ------------
def domain_expertise(teacher_logits: np.ndarray, label_ids: Sequence[int]) -> np.ndarray:
    """The meta-teacher's confidence in each example's true label: softmax(logits)[y]."""
    logits = np.asarray(teacher_logits, dtype=np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return probs[np.arange(len(probs)), np.asarray(label_ids)]


def stage1_weights(prototype: np.ndarray, expertise: np.ndarray) -> np.ndarray:
    """Per-example weights of the student's stage 1: (1 + prototype weight) × domain expertise, both in [0, 2]×[0, 1]."""
    return (1.0 + np.asarray(prototype)) * np.asarray(expertise)


def shuffled_domains(domain_ids: Sequence[int], seed: int) -> np.ndarray:
    """EasyNLP's domain-confusion targets: the domain labels permuted (seeded), so the domain head can only learn
    the domain mix, and the loss pushes the pooled representation to carry no domain."""
    return np.random.default_rng(seed).permutation(np.asarray(domain_ids))


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def domain_loss(pooled: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-example domain loss on the pooled representation. ``confusion``: cross-entropy against shuffled domain
    labels (EasyNLP); ``reversal``: against the true domains through a gradient-reversal layer (Ganin et al.)."""
    if mode == "reversal":
        pooled = _ReverseGradient.apply(pooled)
    elif mode != "confusion":
        raise ValueError(f"domain loss mode {mode!r}: expected confusion or reversal")
    return torch.nn.functional.cross_entropy(head(pooled), targets, reduction="none")


def meta_teacher_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, domain_term: torch.Tensor,
                      domain_loss_weight: float) -> torch.Tensor:  # fmt: skip
    """Σ w_i · CE_i / Σ w_i + domain_loss_weight · mean(domain term): the prototype weights apply per example,
    before the reduction (EasyNLP reduces first, so its weighting collapses to a constant)."""
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    weighted = (weights * ce).sum() / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)
    return weighted + domain_loss_weight * domain_term.mean()


# --- training the meta-teacher -------------------------------------------------------------------------
def fit_meta_teacher(
    spec: AnySpec, labels: Sequence[str], texts: Sequence[str], label_ids: Sequence[int], weights: Sequence[float],
    domain_ids: Sequence[int], n_domains: int, params, checkpoint_dir, *, seed: int, domain_loss_weight: float,
    mode: str = "confusion", callbacks=None,
):  # fmt: skip
    """The meta-teacher: ``spec`` fine-tuned on every domain with the prototype-weighted loss plus
    ``domain_loss_weight`` × the domain loss of a domain head on its pooled (mean over real tokens) last
    hidden states. The head is only the loss's and is not saved: the teacher is a plain classifier."""
    from transformers import Trainer

    from landing.models.data import EncodedTable, KDCollator
    from landing.models.loading import build_classifier
    from landing.models.training import TrainResult, last_complete_checkpoint, training_arguments

    model, tokenizer = build_classifier(spec, list(labels), seed=seed)
    targets = shuffled_domains(domain_ids, seed) if mode == "confusion" else np.asarray(domain_ids)
    data = EncodedTable(tokenizer, texts, params.max_seq_length, labels=label_ids, example_weights=weights,
                        domain_ids=[int(d) for d in targets])  # fmt: skip
    head = torch.nn.Linear(model.config.hidden_size, n_domains)

    class MetaTeacherTrainer(Trainer):
        def create_optimizer(self, model=None):
            optimizer = super().create_optimizer(model)
            optimizer.add_param_group({"params": list(head.parameters()), "weight_decay": 0.0})
            return optimizer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels_, weights_, domains_ = (inputs.pop(k) for k in ("labels", "example_weights", "domain_ids"))
            outputs = model(**inputs, output_hidden_states=True)
            pooled = mean_over_tokens(outputs.hidden_states[-1], inputs["attention_mask"])
            term = domain_loss(pooled, head.to(pooled.device), domains_, mode)
            loss = meta_teacher_loss(outputs.logits, labels_, weights_, term, domain_loss_weight)
            return (loss, outputs) if return_outputs else loss

    trainer = MetaTeacherTrainer(model=model, args=training_arguments(params, checkpoint_dir, seed), train_dataset=data,
                                 data_collator=KDCollator(tokenizer), processing_class=tokenizer, callbacks=callbacks)  # fmt: skip
    resume = last_complete_checkpoint(checkpoint_dir)
    output = trainer.train(resume_from_checkpoint=resume)
    return model, tokenizer, TrainResult(output.global_step, float(output.training_loss),
                                         float(output.metrics.get("train_runtime", 0.0)), resume)  # fmt: skip
