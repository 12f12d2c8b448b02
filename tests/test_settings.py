from __future__ import annotations

from pathlib import Path

import pytest

from landing.infra.settings import LandingSettings, get_settings

_ENV = [
    "LANDING_STATE_DIR", "LANDING_TRACKING_URI", "MLFLOW_TRACKING_URI", "LANDING_ARTIFACT_ROOT",
    "LANDING_OBJECT_STORE_URI", "LANDING_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL", "LANDING_HTTP_TIMEOUT_S", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "LANDING_AWS_ACCESS_KEY_ID", "LANDING_AWS_SECRET_ACCESS_KEY",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in _ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults(tmp_path: Path) -> None:
    s = get_settings()
    state = (tmp_path / ".landing").resolve()
    assert s.state_dir == state and s.state_dir.is_absolute()
    assert s.resolved_tracking_uri() == f"sqlite:///{state}/mlflow.db"
    assert s.resolved_artifact_root() == (state / "mlartifacts").as_uri()
    assert s.resolved_object_store_uri() == (state / "objects").as_uri()
    assert s.cache_dir == state / "cache"
    assert s.s3_endpoint_url is None
    assert s.http_timeout_s == 15.0


def test_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LANDING_STATE_DIR", "st")
    monkeypatch.setenv("LANDING_OBJECT_STORE_URI", "s3://landing/runs")
    monkeypatch.setenv("LANDING_ARTIFACT_ROOT", "arts")  # plain path → file URI
    monkeypatch.setenv("LANDING_HTTP_TIMEOUT_S", "2.5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    s = get_settings()
    assert s.state_dir == (tmp_path / "st").resolve()
    assert s.resolved_object_store_uri() == "s3://landing/runs"
    assert s.resolved_artifact_root() == (tmp_path / "arts").resolve().as_uri()
    assert s.http_timeout_s == 2.5
    assert s.resolved_tracking_uri() == "http://127.0.0.1:5000"
    monkeypatch.setenv("LANDING_TRACKING_URI", "sqlite:///x.db")
    assert get_settings().resolved_tracking_uri() == "sqlite:///x.db"  # LANDING_ wins


def test_endpoint_fallback_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    assert get_settings().s3_endpoint_url == "http://generic:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3specific:2")
    assert get_settings().s3_endpoint_url == "http://s3specific:2"
    monkeypatch.setenv("LANDING_S3_ENDPOINT_URL", "http://landing:3")
    assert get_settings().s3_endpoint_url == "http://landing:3"
    assert LandingSettings(s3_endpoint_url="http://kw:4").s3_endpoint_url == "http://kw:4"


def test_secrets_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAVERYSECRETID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "topsecretvalue123")
    s = get_settings()
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "topsecretvalue123" not in text and "AKIAVERYSECRETID" not in text
    assert s.aws_secret_access_key is not None
    assert s.aws_secret_access_key.get_secret_value() == "topsecretvalue123"


def _fake_stack(state: Path, pid: int) -> Path:
    """A stack dir as `infra.stack up` leaves it, with every service recorded as process ``pid``."""
    import json
    import os

    from landing.infra.processes import _proc_cmdline, _proc_start_ticks
    from landing.infra.stack_config import SERVICES, StackConfig

    cfg = StackConfig(state)
    cfg.pids.mkdir(parents=True)
    for name in SERVICES:
        record = {"pid": pid, "cmdline": _proc_cmdline(os.getpid()), "start_ticks": _proc_start_ticks(os.getpid()), "port": None}
        (cfg.pids / f"{name}.pid").write_text(json.dumps(record))
    cfg.env_path.write_text("PREFECT_API_URL=http://127.0.0.1:14200/api\nLANDING_TRACKING_URI=http://127.0.0.1:15000\n")
    return cfg.env_path


def test_running_stack_is_used_and_explicit_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from landing.infra.settings import prepare_runtime_environment

    for k in ("PREFECT_API_URL", "PREFECT_HOME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LANDING_USE_STACK", "true")
    env_file = _fake_stack(tmp_path / ".landing", os.getpid())  # "our" processes: this one
    monkeypatch.setenv("LANDING_TRACKING_URI", "http://elsewhere:5000")
    assert prepare_runtime_environment() == env_file
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:14200/api"
    assert get_settings().tracking_uri == "http://elsewhere:5000"
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("LANDING_USE_STACK", "false")
    assert prepare_runtime_environment() is None and "PREFECT_API_URL" not in os.environ


def test_stopped_stack_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from landing.infra.settings import prepare_runtime_environment

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("LANDING_USE_STACK", "true")
    _fake_stack(tmp_path / ".landing", 2**22 + 1)  # no such process: the stack was not shut down cleanly
    assert prepare_runtime_environment() is None and "PREFECT_API_URL" not in os.environ


def test_a_tracking_server_keeps_the_artifacts_unless_told_otherwise(tmp_path, monkeypatch):
    from landing.infra.settings import LandingSettings

    monkeypatch.setenv("LANDING_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.delenv("LANDING_ARTIFACT_ROOT", raising=False)
    assert LandingSettings(state_dir=tmp_path).resolved_artifact_root() is None
    monkeypatch.setenv("LANDING_ARTIFACT_ROOT", "mlflow-artifacts:///landing")
    assert LandingSettings(state_dir=tmp_path).resolved_artifact_root() == "mlflow-artifacts:///landing"
