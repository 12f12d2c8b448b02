"""Offline checks of the deployment files (no Docker engine or cluster here): they parse,
name the services/ports/settings the flows rely on, and the work-pool template passes
Prefect's own validation. Building the image, starting compose and submitting Jobs are untested."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
JOB_TEMPLATE = ROOT / "infra" / "k8s" / "prefect-work-pool-job-template.json"
FLOW_ENV = ("PREFECT_API_URL", "LANDING_TRACKING_URI", "LANDING_OBJECT_STORE_URI", "LANDING_S3_ENDPOINT_URL")
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(JOB_TEMPLATE.read_text())


def _container_port(ports: list[str]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in ports}


def test_compose_names_services_and_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"prefect-server", "prefect-db", "mlflow", "mlflow-db", "s3", "worker", "deploy"} <= set(services)
    assert "landing deploy configs/deployments.yaml" in " ".join(services["deploy"]["command"])
    for name, port in {"prefect-server": 4200, "mlflow": 5000, "s3": 9000}.items():
        assert _container_port(services[name]["ports"]) == {port}, name
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"]), f"{name} exposed beyond localhost"
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in mlflow_cmd and "--artifacts-destination=s3://landing/" in mlflow_cmd
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"


def test_compose_worker_uses_project_image_and_stack_settings(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["build"]["dockerfile"] == "docker/Dockerfile"
    assert (COMPOSE.parent / worker["build"]["context"] / worker["build"]["dockerfile"]).resolve() == DOCKERFILE
    env = worker["environment"]
    assert {*FLOW_ENV, *AWS_KEYS} <= set(env)
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["LANDING_TRACKING_URI"] == "http://mlflow:5000"
    assert env["LANDING_S3_ENDPOINT_URL"] == "http://s3:9000"
    assert "--pool" in worker["command"] and "landing" in worker["command"]
    # Secrets come from the caller's env, never literals in the file.
    assert all(str(env[k]).startswith("${") for k in AWS_KEYS)


def test_dockerfile_pins_cpu_torch_before_project() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    torch_line = next(line for line in text.splitlines() if "torch==" in line and line.startswith("RUN"))
    assert "torch==2.13.0" in torch_line and "download.pytorch.org/whl/cpu" in torch_line
    assert text.index("torch==2.13.0") < text.index("pip install .")


def test_job_template_is_a_valid_prefect_base_job_template(template: dict[str, Any]) -> None:
    from prefect.server.schemas.actions import validate_base_job_template

    assert {"job_configuration", "variables"} <= set(template)
    validate_base_job_template(template)  # what Prefect's API runs on `work-pool create`
    assert template["job_configuration"]["job_manifest"]["kind"] == "Job"


def test_job_template_renders_the_flow_env_with_secret_keys(template: dict[str, Any]) -> None:
    from prefect.utilities.templating import apply_values

    props = template["variables"]["properties"]
    defaults = {k: v["default"] for k, v in props.items() if "default" in v}
    manifest = apply_values(template["job_configuration"]["job_manifest"], {**defaults, "name": "run-1"})
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert set(FLOW_ENV) <= set(env)
    assert env["PREFECT_API_URL"]["value"].endswith("/api")
    for key in AWS_KEYS:
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "landing-s3", "key": key}
        assert "value" not in env[key]
    assert container["image"] == props["image"]["default"]
    assert "{{" not in json.dumps(manifest["spec"]["template"]["spec"]["containers"][0]["env"])
