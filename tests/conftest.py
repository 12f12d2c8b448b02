"""Shared fixtures. Env defaults keep every test offline and telemetry-free."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

for _k, _v in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ.setdefault(_k, _v)

from infra.s3_server import S3Server, s3_server  # noqa: E402


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Server]:
    """One moto S3 server on 127.0.0.1 for the whole session."""
    with s3_server("moto") as srv:
        yield srv


@pytest.fixture
def s3_env(s3_endpoint: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point boto3 and landing settings at the session S3 server."""
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    for k, v in s3_endpoint.env().items():
        monkeypatch.setenv(k, v)
    return s3_endpoint
