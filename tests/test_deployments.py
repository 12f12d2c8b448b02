"""Deployments file, data push, and the whole operating loop on a real stack:
``landing data push`` → event → ``retrain`` deployment run by the worker → completion → ``promote``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from landing.config import ConfigError
from landing.deployments import (
    DEPLOYABLE_FLOWS,
    FLOW_RUN_COMPLETED_EVENT,
    deployment_parameters,
    deployment_triggers,
    load_deployments,
)
from landing.infra.datasets import DATA_PUSHED_EVENT, dataset_resource_id

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke"
SST2_TRAIN = ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def smoke_file(tmp_path: Path, body: str) -> Path:
    return write(tmp_path / "deployments.yaml", body.replace("CONFIGS", str(SMOKE)))


@pytest.mark.parametrize("path", ["configs/deployments.yaml", "configs/smoke/deployments.yaml"])
def test_shipped_deployment_files_load_with_valid_run_configs(path):
    spec = load_deployments(ROOT / path)
    order = [d.name for d in spec.in_dependency_order()]
    for d in spec.deployments:
        params = deployment_parameters(d)
        assert params["config"]["flow"] in DEPLOYABLE_FLOWS
        assert Path(params["config_dir"]).is_dir()
        if d.after:  # upstream deployments are created first: their ids go into the trigger
            assert order.index(d.after) < order.index(d.name)
    retrain = next(d for d in spec.deployments if d.flow == "retrain")
    assert retrain.cron and retrain.on_data_push
    assert deployment_parameters(retrain)["config"]["registered_model"]


def test_triggers_match_the_dataset_and_the_upstream_deployment(tmp_path):
    spec = load_deployments(smoke_file(tmp_path, """
deployments:
  - {name: r, flow: retrain, config: CONFIGS/distill.yaml, on_data_push: sst2}
  - {name: p, config: CONFIGS/promote.yaml, after: r}
"""))  # fmt: skip
    (on_data,) = deployment_triggers(spec.deployments[0], {})
    assert on_data.expect == {DATA_PUSHED_EVENT}
    assert on_data.match.model_dump() == {"prefect.resource.id": dataset_resource_id("sst2")}
    assert on_data.parameters == {"data_uri": "{{ event.payload.uri }}", "data_sha256": "{{ event.payload.sha256 }}"}
    (after,) = deployment_triggers(spec.deployments[1], {"r": "1234"})
    assert after.expect == {FLOW_RUN_COMPLETED_EVENT}
    assert after.match_related.model_dump() == {"prefect.resource.id": "prefect.deployment.1234"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("deployments:\n  - {name: a, config: CONFIGS/distill.yaml, after: nope}", "no deployment named 'nope'"),
        ("deployments:\n  - {name: a, config: CONFIGS/distill.yaml, on_data_push: x}", "on_data_push needs flow: retrain"),
        ("deployments:\n  - {name: a, config: CONFIGS/distill.yaml}\n  - {name: a, config: CONFIGS/distill.yaml}",
         "repeated: ['a']"),
        ("deployments:\n  - {name: a, flow: promote, config: CONFIGS/distill.yaml}", "takes a promote config"),
        ("deployments:\n  - {name: a, config: CONFIGS/distill.yaml, after: b}\n"
         "  - {name: b, config: CONFIGS/distill.yaml, after: a}", "cycle"),
        ("deployments:\n  - {name: a, config: CONFIGS/distill.yaml, overrides: {seed: many}}", "seed"),
        ("deployments:\n  - {name: a, config: CONFIGS/missing.yaml}", "missing.yaml: no such config file"),
        ("deployments:\n  - {name: a, config: CONFIGS/distill.yaml, cron: '61 * * * *'}", "deployments.0"),
        ("deployments:\n  - {name: a, config: CONFIGS/distill.yaml, cron: '0 3 * * *', timezone: Mars/Base}",
         "deployments.0"),
    ],
)
def test_bad_deployment_files_name_the_problem(tmp_path, body, message):
    with pytest.raises(ConfigError) as info:
        load_deployments(smoke_file(tmp_path, body)).in_dependency_order()
    assert message in str(info.value)


def test_data_push_validates_then_stores_by_content_hash(tmp_path, monkeypatch):
    from landing.config import load_config
    from landing.data_contracts.validation import DataValidationError
    from landing.infra.datasets import DataPushError, announce_data_version, publish_data_version
    from landing.infra.settings import LandingSettings
    from landing.infra.uris import uri_to_path

    settings = LandingSettings(state_dir=tmp_path / "state")
    contract = load_config(SMOKE / "distill.yaml").data.contract
    good = write(tmp_path / "new.tsv", "sentence\tlabel\na fine film\t1\na dull film\t0\n")
    pushed = publish_data_version(good, "sst2", contract, settings)
    assert pushed.rows == 2 and pushed.uri.endswith(f"datasets/sst2/{pushed.sha256}/new.tsv")
    assert uri_to_path(pushed.uri).read_bytes() == good.read_bytes()

    bad = write(tmp_path / "bad.tsv", "sentence\tlabel\nok\t1\nwhat\tmaybe\n")
    with pytest.raises(DataValidationError, match=r"bad.tsv:3: column .label."):
        publish_data_version(bad, "sst2", contract, settings)
    with pytest.raises(DataPushError, match="dataset name"):
        publish_data_version(good, "../etc", contract, settings)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The env var and any settings context (the session's test harness sets one) both removed.
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(DataPushError, match="PREFECT_API_URL"):
            announce_data_version(pushed)


# --- the operating loop on a real stack ----------------------------------------------------------


def _wait_for_run(client, deployment_id, timeout_s: float):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        if runs and runs[0].state and runs[0].state.is_final():
            return runs[0]
        time.sleep(3)
    pytest.fail(f"no finished flow run of deployment {deployment_id} within {timeout_s:.0f}s")


@pytest.mark.stack
def test_data_push_retrains_then_promotes_on_the_stack(tmp_path):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from landing.infra.s3_server import free_port
    from landing.infra.stack import StackConfig, deploy, down, stack_env, up

    ports = sorted({free_port() for _ in range(5)})[:3]
    cfg = StackConfig(tmp_path / "state", prefect_port=ports[0], mlflow_port=ports[1], s3_port=ports[2])
    try:
        up(cfg, out=lambda _: None)
        deploy(cfg, SMOKE / "deployments.yaml")
        env = {**os.environ, **stack_env(cfg), "PREFECT_HOME": str(cfg.prefect_home)}
        lines = SST2_TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)[:701]
        table = write(tmp_path / "sst2-v2.tsv", "".join(lines))
        landing = Path(sys.executable).parent / "landing"
        push = subprocess.run(
            [str(landing), "data", "push", str(table), "--dataset", "smoke-sst2", "--config", str(SMOKE / "distill.yaml")],
            env=env, capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert push.returncode == 0, push.stderr
        assert "announced smoke-sst2" in push.stdout

        with temporary_settings({PREFECT_API_URL: cfg.prefect_api_url}):
            with get_client(sync_client=True) as client:
                retrain_dep = client.read_deployment_by_name("retrain/smoke-retrain")
                promote_dep = client.read_deployment_by_name("promote/smoke-promote")
                assert retrain_dep.schedules[0].schedule.cron == "0 3 * * *"
                assert "config" in retrain_dep.parameter_openapi_schema["properties"]  # a form in the UI
                retrain_run = _wait_for_run(client, retrain_dep.id, 600)
                assert retrain_run.state.is_completed(), retrain_run.state.message
                assert retrain_run.parameters["data_uri"].endswith("/sst2-v2.tsv")
                assert retrain_run.parameters["data_sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()
                assert retrain_run.created_by.type == "AUTOMATION"
                promote_run = _wait_for_run(client, promote_dep.id, 300)
                assert promote_run.state.is_completed(), promote_run.state.message
                assert promote_run.created_by.type == "AUTOMATION"
        champion = MlflowClient(cfg.mlflow_url).get_model_version_by_alias("smoke-student-onnx", "champion")
        assert champion.version == "1" and len(champion.tags["landing.data_sha256"]) == 64
    finally:
        down(cfg, out=lambda _: None)
