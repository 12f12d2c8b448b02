"""The whole slu flow on its smoke config (a slice of SNIPS, tiny random BERTs): real Prefect API, MLflow on
sqlite, S3 on 127.0.0.1; then a re-run served from the cache."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tiny_runs import task_states

from landing.config import load_config
from landing.flows.slu import slu

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs/smoke/slu.yaml"
pytestmark = [pytest.mark.integration, pytest.mark.shared_data("slu/snips/train/seq.in", "slu/snips/dev/seq.in")]


def test_the_slu_flow_trains_distils_evaluates_and_exports_both_heads(prefect_api, flow_env):
    out = flow_env / "out"
    summary = slu(config=load_config(SMOKE), config_dir=str(SMOKE.parent), output_dir=str(out))
    assert json.loads((out / "summary.json").read_text())["models"] == summary["models"]

    data = summary["data"]
    assert data["eval"]["rows"] == 700 and data["validation"]["rows"] == 100 and data["train"]["rows"] == 500
    for role in ("teacher", "student_kd", "student_baseline"):
        for split in ("eval", "validation"):
            metrics = summary["models"][role][split]
            assert metrics["intent_accuracy"] > 1 / 7 + 0.2, (role, split, metrics)  # 7 intents: well above chance
            assert 0 < metrics["slot_f1"] < 1 and metrics["sentence_accuracy"] <= metrics["intent_accuracy"]
    onnx, kd = summary["onnx"], summary["models"]["student_kd"]["eval"]
    variants = {v["name"]: v for v in onnx["variants"]}
    assert list(variants) == ["student_kd-fp32", "compressed-fp32", "compressed-dynamic_int8", "compressed-int8_embeddings"]
    for metric in ("intent_accuracy", "slot_f1", "sentence_accuracy"):  # the served FP32 model is the PyTorch one
        assert variants["student_kd-fp32"]["eval"][metric] == pytest.approx(kd[metric], abs=2 / 700)
    for name in ("compressed-dynamic_int8", "compressed-int8_embeddings"):  # both heads gated, on validation
        assert variants[name]["parity"]["int8"]["min_agreement"] == 0.9 and variants[name]["parity"]["split"] == "validation"
        assert min(variants[name]["parity"]["int8"]["intent_agreement"], variants[name]["parity"]["int8"]["slot_agreement"]) >= 0.9
    sizes = [variants[n]["size_bytes"] for n in variants]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] / 10  # vocabulary, then INT8, then INT8 tables
    assert all(v["latency"]["host"]["16"]["median_ms"] > 0 for v in variants.values())
    assert "| compressed-int8_embeddings | int8+int8-emb |" in summary["report_markdown"]

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("landing-smoke").experiment_id])
    steps = {r.data.tags.get("landing.step") for r in runs}
    report = client.download_artifacts(summary["mlflow_run_id"], "slu_report.md", str(flow_env / "report"))
    assert Path(report).read_text() == summary["report_markdown"]
    assert {"teacher", "student_kd", "student_baseline", "slu-logits", "slu-augment", "slu-compress", "student_kd-onnx",
            "compressed-onnx", "latency-host"} <= steps

    again = slu(config=load_config(SMOKE), config_dir=str(SMOKE.parent), output_dir=str(flow_env / "again"))
    untimed = [{k: v for k, v in variant.items() if k != "latency"} for variant in again["onnx"]["variants"]]
    assert again["models"] == summary["models"] and untimed == [{k: v for k, v in variant.items() if k != "latency"}
                                                                 for variant in onnx["variants"]]  # fmt: skip
    states = task_states(again["prefect_flow_run_id"], {"slu-train": 3, "slu-evaluate": 6, "slu-compress": 1,
                                                        "slu-export": 2})  # fmt: skip
    assert {name: set(s) for name, s in states.items() if name.startswith("slu-") and name not in ("slu-data", "slu-report")} == {
        "slu-train": {"Cached"}, "slu-evaluate": {"Cached"}, "slu-export": {"Cached"}, "slu-logits": {"Cached"},
        "slu-compress": {"Cached"},
        "slu-augment": {"Cached"}}  # fmt: skip
