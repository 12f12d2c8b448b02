"""Services going away in the middle of a run, with real servers on 127.0.0.1 that the test stops and
starts again: an S3 server (rclone, on disk, so its objects survive the restart) and an MLflow tracking
server (sqlite). The step fails naming the endpoint, nothing partial is published, and once the service
is back the same command completes, reusing the steps that had finished."""

from __future__ import annotations

import functools

import pytest
from tiny_runs import (
    Service,
    landing_command,
    mlflow_server,
    read_until,
    run_landing,
    task_states,
    write_config,
)

from landing.infra.s3_server import free_port, s3_server

pytestmark = pytest.mark.integration
FINISHED = r"Task run '{}-\w+' - Finished in state Completed"


@pytest.fixture
def services(tmp_path):
    s3 = Service(functools.partial(s3_server, "rclone", tmp_path / "s3", free_port(), access_key="outage-key",
                                   secret_key="outage-secret"))  # fmt: skip
    (tmp_path / "s3" / "landing").mkdir(parents=True)
    tracking_port = free_port()
    tracking = Service(functools.partial(mlflow_server, tmp_path, tracking_port, (tmp_path / "mlartifacts").as_uri()))
    s3.start(), tracking.start()
    yield s3, tracking
    s3.stop(), tracking.stop()


def _env(tmp_path, s3, tracking) -> dict[str, str]:
    return {**s3.info.env(), "LANDING_OBJECT_STORE_URI": "s3://landing/objects", "LANDING_TRACKING_URI": tracking.info,
            "LANDING_STATE_DIR": str(tmp_path / "state"),
            # Fail in seconds once the tracking server is gone (MLflow's own default retries for ~2 minutes).
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}  # fmt: skip


def _rerun_completes_reusing(tmp_path, argv, env, reused: list[str]) -> None:
    code, output = run_landing(argv, tmp_path, env)
    assert code == 0, output[-3000:]
    failed, finished = parent_runs_on(env)
    assert (failed.info.status, finished.info.status) == ("FAILED", "FINISHED")  # the abandoned run was closed
    states = task_states(finished.data.tags["prefect.flow_run_id"], dict.fromkeys(reused, 1))
    for step in reused:
        assert "Cached" in states[step], (step, states)


def parent_runs_on(env: dict) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["LANDING_TRACKING_URI"])
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)


def test_s3_stopped_during_a_run(prefect_api, tmp_path, services, unpublished_objects, monkeypatch):
    s3, tracking = services
    env = _env(tmp_path, s3, tracking)
    argv = ["run", str(write_config(tmp_path, name="s3-outage")), "--output-dir", str(tmp_path / "out")]
    run = landing_command(argv, tmp_path, env)
    before = read_until(run, FINISHED.format("train"))  # the teacher is trained and published...
    s3.stop()  # ...and the S3 server goes away before its logits are uploaded
    output = before + run.communicate(timeout=300)[0]
    flat = " ".join(output.split())
    assert run.returncode == 1, output[-3000:]
    assert f"endpoint {s3.info.endpoint_url} unreachable" in flat and "Traceback" not in output, output[-3000:]
    assert not (tmp_path / "out" / "summary.json").exists()

    s3.start()
    for key, value in s3.info.env().items():
        monkeypatch.setenv(key, value)
    failed = parent_runs_on(env)[-1]
    assert failed.info.status == "FAILED" and s3.info.endpoint_url in failed.data.tags["landing.error"]
    assert unpublished_objects("s3://landing/objects", failed.info.run_id) == []
    _rerun_completes_reusing(tmp_path, argv, env, ["download", "validate", "split", "train"])


def test_tracking_server_stopped_during_training(prefect_api, tmp_path, services, unpublished_objects, monkeypatch):
    s3, tracking = services
    env = _env(tmp_path, s3, tracking)
    argv = ["run", str(write_config(tmp_path, name="tracking-outage")), "--output-dir", str(tmp_path / "out")]
    run = landing_command(argv, tmp_path, env)
    before = read_until(run, FINISHED.format("split"))
    tracking.stop()  # training starts with the tracking server gone
    output = before + run.communicate(timeout=300)[0]
    flat = " ".join(output.split())
    assert run.returncode == 1, output[-3000:]
    assert f"the MLflow tracking server {tracking.info} stopped answering" in flat, output[-3000:]
    assert "run the same command again" in flat and "Traceback" not in output, output[-3000:]

    tracking.start()
    for key, value in s3.info.env().items():
        monkeypatch.setenv(key, value)
    assert unpublished_objects("s3://landing/objects", parent_runs_on(env)[-1].info.run_id) == []
    _rerun_completes_reusing(tmp_path, argv, env, ["download", "validate", "split"])
