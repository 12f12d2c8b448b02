"""The metakd flow on tiny BERTs and a slice of the Amazon multi-domain reviews: every row of the per-domain table,
stage 2 starting from stage 1, and the errors for a missing domain column or target domain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_runs import run_landing

from landing.config import ConfigError, load_config

pytestmark = pytest.mark.integration
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke" / "metakd.yaml"
SMALL = ["data.split.train_size=160", "teacher.training.epochs=1", "student.training.epochs=1",
         "teacher.training.max_seq_length=32", "student.training.max_seq_length=32"]  # fmt: skip


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def test_metakd_reports_every_row_per_domain_and_stage2_starts_from_stage1(prefect_api, flow_env):
    from mlflow import MlflowClient

    from landing.flows.metakd import ROWS

    code, output = run_landing(["run", str(SMOKE), "--output-dir", str(flow_env / "out"), *_sets(SMALL)], flow_env)
    assert code == 0, output[-4000:]
    summary = json.loads((flow_env / "out" / "summary.json").read_text())
    assert set(summary["domains"]) == {"books", "kitchen"}
    assert all(set(scores) == set(ROWS) and all(0 <= v <= 1 for v in scores.values())
               for scores in summary["domains"].values())  # fmt: skip
    assert "| student, Meta-KD |" in summary["report_markdown"] and "| student, Meta-KD |" in output
    client = MlflowClient(f"sqlite:///{flow_env}/state/mlflow.db")
    runs = {r.info.run_name: r for r in client.search_runs(
        [client.get_run(summary["mlflow_run_id"]).info.experiment_id],
        f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'", max_results=500)}  # fmt: skip
    stage2 = runs["student-books-metakd"].data.params
    assert stage2["model.kind"] == "pretrained" and stage2["init_from"].startswith("student-books-stage1@sha256:")
    assert "prototype_weight_mean" in runs["prototype-weights"].data.metrics


def test_a_table_without_the_domain_column_is_refused():
    with pytest.raises(ConfigError, match="metakd.domain_column: 'domain' is not a field"):
        load_config(SMOKE, ["data.contract.input_schema=label:str:1,text:str:1"])


def test_a_target_domain_absent_from_the_data_is_named(prefect_api, flow_env):
    code, output = run_landing(["run", str(SMOKE), "--output-dir", str(flow_env / "out"), *_sets(
        [*SMALL, "metakd.target_domains=[books, toys]"])], flow_env)  # fmt: skip
    assert code == 1 and "['toys'] not in the train table's 'domain' column" in output, output[-3000:]
