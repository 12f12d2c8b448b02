"""Runtime settings for landing, read from ``LANDING_*`` env vars (plus the standard
MLflow/AWS fallbacks) so flows, tests and ``make up`` share one source of truth."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from landing.infra.uris import path_to_uri
from landing.models.offline import StateDirSettings


def _as_uri(value: str) -> str:
    """Plain local paths become absolute ``file://`` URIs; URIs pass through unchanged."""
    return value if "://" in value else path_to_uri(value)


class LandingSettings(StateDirSettings):
    """All locations derive from ``state_dir`` (declared in ``StateDirSettings``) unless overridden, so one env
    var relocates everything (tests point it at a tmp dir)."""

    model_config = SettingsConfigDict(
        env_prefix="LANDING_",
        extra="ignore",
        populate_by_name=True,  # kwargs by field name work despite the env aliases
    )

    tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("LANDING_TRACKING_URI", "MLFLOW_TRACKING_URI")
    )
    artifact_root: str | None = None
    object_store_uri: str | None = None
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "LANDING_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
        ),
    )
    s3_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("LANDING_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    # Optional explicit credentials; when unset boto3's default chain is used. SecretStr keeps
    # them out of repr/str/logs.
    aws_access_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("LANDING_AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("LANDING_AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    )
    http_timeout_s: float = 15.0
    lock_timeout_s: float = Field(
        3600.0, description="how long a run waits for another run on the same state_dir; -1 = no limit, 0 = refuse"
    )
    model_aliases: Path | None = Field(
        None, description="YAML file of 'name: path' lines: model names the easynlp command line resolves"
    )
    use_stack: bool = Field(True, description="use the stack `make up` started under state_dir while it runs")
    reuse_prefect_server: bool = Field(
        True, description="easynlp commands: start the stack's Prefect server once and reuse it (no temporary "
        "server per command); stop it with `python -m landing.infra.stack down`",
    )

    warm_commands: bool = Field(
        True, description="easynlp commands: keep a warm process with the imports done, and run later commands "
        "in a fork of it (landing/warm.py); false: every command in a new process",
    )
    warm_idle_minutes: float = Field(15.0, gt=0, description="the warm process exits after this long without a command")

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    def resolved_artifact_root(self) -> str | None:
        """Where new experiments keep artifacts; None leaves it to the tracking server (its own
        artifact store, proxied), which is what a tracking server is for."""
        if self.artifact_root:
            return _as_uri(self.artifact_root)
        if self.resolved_tracking_uri().startswith(("http://", "https://")):
            return None
        return (self.state_dir / "mlartifacts").as_uri()

    def resolved_object_store_uri(self) -> str:
        if self.object_store_uri:
            return _as_uri(self.object_store_uri)
        return (self.state_dir / "objects").as_uri()


def get_settings() -> LandingSettings:
    """Fresh instance per call so env changes (e.g. monkeypatched in tests) are always seen."""
    return LandingSettings()


def prepare_runtime_environment(settings: LandingSettings | None = None) -> Path | None:
    """Embedded defaults for Prefect and MLflow (state under the landing state dir, no
    telemetry), or the local stack's URLs while one started by ``make up`` runs there.

    Prefect keeps cached step results under PREFECT_HOME, so it lives beside the artifacts
    those results point to: deleting the state dir forgets both together. Variables already
    set in the environment always win. Returns the stack's env file when it is used.
    """
    import os

    from landing.infra.stack import running_stack_env

    settings = settings or get_settings()
    stack = running_stack_env(settings.state_dir) if settings.use_stack else None
    for key, value in (stack[1] if stack else {}).items():
        os.environ.setdefault(key, value)
    prefect_home = settings.state_dir / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(prefect_home))
    # The temporary Prefect server of a run without a stack gets 20 s to start by default; a busy 2-core
    # machine (a benchmark on the other core) needs more, and a run that fails there loses nothing but time.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    return stack[0] if stack else None
