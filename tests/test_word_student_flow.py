"""Bag-of-words and BiLSTM students in the distill flow: trained with KD, exported to ONNX, served by predict."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tiny_runs import run_landing, write_config

from landing.config import ConfigError, load_config

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["bow", "bilstm"])
def test_a_word_student_is_distilled_exported_and_served(kind, prefect_api, flow_env):
    student = {"model": {"kind": kind, "embedding_dim": 16, "hidden_size": 16},
               "training": {"epochs": 5, "batch_size": 8, "learning_rate": 0.01, "max_seq_length": 16}}  # fmt: skip
    config = write_config(flow_env, student=student)
    code, output = run_landing(["run", str(config), "--output-dir", str(flow_env / "out")], flow_env)
    assert code == 0, output[-3000:]
    summary = json.loads((flow_env / "out" / "summary.json").read_text())
    for role in ("student_kd", "student_baseline"):
        assert 0 <= summary[role]["accuracy"] <= 1 and summary[role]["params"] > 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{flow_env}/state/mlflow.db")
    runs = {r.info.run_name: r for r in client.search_runs(client.get_experiment_by_name("tiny-runs").experiment_id)}
    bundle = runs["student_kd"].data.params.get("onnx_bundle") or _bundle_uri(flow_env, summary)
    (flow_env / "input.tsv").write_text("text\na fine film\na dull film\n")
    code, output = run_landing(["predict", "--model", bundle, "--input", str(flow_env / "input.tsv"), "--output",
                                str(flow_env / "predicted.tsv")], flow_env)  # fmt: skip
    assert code == 0, output[-3000:]
    predicted = pd.read_csv(flow_env / "predicted.tsv", sep="\t")
    assert len(predicted) == 2 and set(predicted["label"].astype(str)) <= {"0", "1"}


def _bundle_uri(flow_env, summary) -> str:
    bucket = (flow_env / "bucket").read_text()
    return f"s3://{bucket}/objects/runs/{summary['mlflow_run_id']}/models/student_kd-onnx"


def test_word_students_are_not_compressed_or_registered(tmp_path):
    config = write_config(tmp_path, student={"model": {"kind": "bow"}}, registered_model="x")
    with pytest.raises(ConfigError, match="a word student is exported to ONNX as it is"):
        load_config(config)
