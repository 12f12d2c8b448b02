"""No secret leaks: a whole distill + compress + promote run against a real S3 server (rclone, which checks
the key) and a real MLflow tracking server (artifacts proxied to that S3), with recognisable credentials,
leaves them nowhere: console output, Prefect logs and flow-run parameters, MLflow params, tags, metrics,
artifacts and registry, summary.json, the object store, checkpoints and every other file it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_runs import mlflow_server, run_landing, write_config

from landing.infra.s3_server import free_port, s3_server

pytestmark = pytest.mark.integration
SECRET = "S3CRET-9f2c1e7a-must-never-appear"
TOKEN = "T0KEN-51d0c3b8-must-never-appear"  # MLflow's bearer token, sent to the tracking server only
COMPRESSION = {"strategies": "dynamic_int8", "max_seq_length": 16, "calibration_rows": 16, "int8_min_agreement": 0.5}
LATENCY = {"seq_lens": [16], "warmup": 1, "runs": 3, "rounds": 1}


def _prefect_texts(flow_run_ids: list[str]) -> list[str]:
    """Every log line and parameter the Prefect API holds for these flow runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs, only = [], LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
    with get_client(sync_client=True) as client:
        while page := client.read_logs(log_filter=only, limit=200, offset=len(logs)):  # the API's page limit
            logs += page
        runs = [client.read_flow_run(i) for i in flow_run_ids]
    assert logs, "the runs' logs reached the Prefect API"
    return [log.message for log in logs] + [str(run.parameters) + str(run.state) for run in runs]


def _mlflow_texts(tracking_uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    texts = []
    for experiment in client.search_experiments():
        texts.append(str(experiment.tags))
        for run in client.search_runs([experiment.experiment_id]):
            texts += [str(run.data.params), str(run.data.tags), str(run.data.metrics), str(run.inputs)]
    for model in client.search_registered_models():
        texts.append(str(model))
        texts += [str(v) for v in client.search_model_versions(f"name = '{model.name}'")]
    return texts


def _files_containing(roots: list[Path], needles: list[str]) -> list[str]:
    found = []
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            found += [f"{path}: {n}" for n in needles if n.encode() in data]
    return found


def test_a_whole_run_leaves_the_credentials_nowhere(prefect_api, tmp_path):
    s3_data = tmp_path / "s3"
    (s3_data / "landing").mkdir(parents=True)
    with s3_server("rclone", s3_data, access_key="leak-test-key", secret_key=SECRET) as s3:
        server_env = {**s3.env(), "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url}
        with mlflow_server(tmp_path, free_port(), "s3://landing/mlartifacts", server_env) as tracking:
            env = {**s3.env(), "LANDING_AWS_SECRET_ACCESS_KEY": SECRET, "MLFLOW_TRACKING_TOKEN": TOKEN,
                   "LANDING_OBJECT_STORE_URI": "s3://landing/objects", "LANDING_TRACKING_URI": tracking,
                   "LANDING_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
            distill = write_config(tmp_path, name="secrets", registered_model="leak-check", compression=COMPRESSION,
                                   latency=LATENCY)  # fmt: skip
            code, distilled = run_landing(["run", str(distill), "--output-dir", str(tmp_path / "distill")], tmp_path, env)
            assert code == 0, distilled[-3000:]
            promote = write_config(tmp_path, flow="promote", name="secrets-promote", registered_model="leak-check",
                                   latency=LATENCY, gates={"min_accuracy_gain": -1.0})  # fmt: skip
            _drop_keys(promote, ("teacher", "student", "latency_samples"))  # promote trains nothing
            code, promoted = run_landing(["run", str(promote), "--output-dir", str(tmp_path / "promote")], tmp_path, env)
            assert code == 0, promoted[-3000:]
            texts = [distilled, promoted, *_mlflow_texts(tracking)]
            summaries = [Path(tmp_path / d / "summary.json").read_text() for d in ("distill", "promote")]
            texts += summaries + _prefect_texts(_flow_run_ids(summaries))

    # The credentials were used: objects and proxied MLflow artifacts are in the S3 server's bucket.
    assert list((s3_data / "landing" / "objects").rglob("*.npz")) and list((s3_data / "landing" / "mlartifacts").rglob("*"))
    leaks = [f"text {i}: {n}" for i, t in enumerate(texts) for n in (SECRET, TOKEN) if n in t]
    leaks += _files_containing([tmp_path], [SECRET, TOKEN])  # state dir (checkpoints, cache), S3 data, MLflow db
    assert not leaks, leaks


def _drop_keys(config: Path, keys: tuple[str, ...]) -> None:
    import yaml

    raw = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k not in keys}))


def _flow_run_ids(summaries: list[str]) -> list[str]:
    import json

    return [json.loads(s)["prefect_flow_run_id"] for s in summaries]
