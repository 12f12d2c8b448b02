"""Where the local stack keeps its state, its ports and URLs, and its credentials and env files."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
BUCKET = "landing"
WORK_POOL = "landing"
WORKER_NAME = "landing-local"
SERVICES = ("s3", "mlflow", "prefect", "worker")  # start order; stopped in reverse
PROJECT_ROOT = Path(__file__).resolve().parents[1]
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
}


class StackError(RuntimeError):
    """A service could not be started, or a port is taken by something that is not ours."""


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000
    s3_port: int = 9000
    startup_timeout_s: float = 180.0  # Prefect's server takes ~1 min on a busy 2-core box
    stop_timeout_s: float = 10.0

    @property
    def root(self) -> Path:
        return self.state_dir.expanduser().resolve() / "stack"

    @property
    def s3_dir(self) -> Path:
        return self.root / "s3"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def credentials_path(self) -> Path:
        return self.root / "credentials.env"

    @property
    def env_path(self) -> Path:
        return self.root / "stack.env"

    @property
    def s3_url(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    def port(self, service: str) -> int | None:
        return {"s3": self.s3_port, "mlflow": self.mlflow_port, "prefect": self.prefect_port}.get(service)

    def url(self, service: str) -> str:
        return {
            "s3": self.s3_url,
            "mlflow": self.mlflow_url,
            "prefect": self.prefect_api_url,
            "worker": f"pool {WORK_POOL}",
        }[service]


# --- credentials and env files ---------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Write via a 0600 temp file then rename, so secrets are never world-readable, even briefly."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip("'\"")
    return out


def load_credentials(cfg: StackConfig) -> tuple[str, str]:
    """Generated once and reused, so data written by an earlier ``up`` stays readable."""
    path = cfg.credentials_path
    if not path.exists():
        cfg.root.mkdir(parents=True, exist_ok=True)
        _write_private(
            path,
            "# S3 credentials of the local stack (python -m landing.infra.stack); keep private\n"
            f"AWS_ACCESS_KEY_ID=landing-{secrets.token_hex(6)}\n"
            f"AWS_SECRET_ACCESS_KEY={secrets.token_urlsafe(30)}\n",
        )
    os.chmod(path, 0o600)
    env = _read_env_file(path)
    return env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]


def stack_env(cfg: StackConfig) -> dict[str, str]:
    """What a flow (or the worker's flow-run subprocesses) needs to use the stack."""
    key, secret = load_credentials(cfg)
    return {
        "LANDING_TRACKING_URI": cfg.mlflow_url,
        # Proxied through the tracking server to s3://landing/mlartifacts; without this the
        # flows' experiments keep artifacts in a local dir. No host in the URI: MLflow 3.17
        # rejects host-addressed mlflow-artifacts locations; "///" keeps settings' _as_uri
        # from mistaking it for a path.
        "LANDING_ARTIFACT_ROOT": "mlflow-artifacts:///landing",
        "PREFECT_API_URL": cfg.prefect_api_url,
        "LANDING_OBJECT_STORE_URI": f"s3://{BUCKET}/objects",
        "LANDING_S3_ENDPOINT_URL": cfg.s3_url,
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_url,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def write_stack_env(cfg: StackConfig) -> Path:
    lines = ["# Written by `python -m landing.infra.stack up`. Use: set -a; . THIS_FILE; set +a"]
    lines += [f"{k}={v}" for k, v in stack_env(cfg).items()]
    _write_private(cfg.env_path, "\n".join(lines) + "\n")
    return cfg.env_path
