"""MLflow adapter: one parent run per flow run, one nested run per step.

Prefect runs tasks in worker threads and MLflow's active-run stack is
thread-local, so steps open their nested run explicitly with
``parent_run_id`` instead of relying on an active parent.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
import transformers
from mlflow.tracking import MlflowClient

from landing.files import write_bytes_atomic
from landing.infra.settings import LandingSettings

FLOW_RUN_TAG = "prefect.flow_run_id"
STEP_TAG = "landing.step"


class TrackingUnreachableError(RuntimeError):
    """The MLflow tracking server did not answer; raised before any work starts."""


def check_tracking_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the URL, when an MLflow server (http/https URI) does not answer ``/health``."""
    if not uri.startswith(("http://", "https://")):
        return  # sqlite / file stores are created on first use
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnreachableError(f"MLflow tracking server {uri} is unreachable: {reason}") from None


def configure_tracking(settings: LandingSettings) -> str:
    uri = settings.resolved_tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


# MLflow 3's UI opens an experiment by this tag; without it, a GenAI traces overview (empty for us).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(name: str, settings: LandingSettings) -> str:
    """Experiment id, creating it with the configured artifact root on first use, tagged so the UI
    opens it in the model-training view (runs, metrics), also when it was created before the tag."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=settings.resolved_artifact_root(), tags=EXPERIMENT_KIND)
    for key, value in EXPERIMENT_KIND.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def start_parent_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Create (but do not activate) the flow's parent run; steps nest under its id."""
    return MlflowClient().create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def end_run(run_id: str, status: str) -> None:
    MlflowClient().set_terminated(run_id, status=status)


ABANDONED = "the process running it ended before it could close the run (killed, its disk full, or the server gone)"


def _open_runs_dir(settings: LandingSettings) -> Path:
    return settings.state_dir / "open-runs"


def record_open_run(settings: LandingSettings, run_id: str) -> None:
    """Remember, in the state directory, a parent run until it is closed (see ``close_abandoned_runs``)."""
    path = _open_runs_dir(settings) / run_id
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, settings.resolved_tracking_uri().encode())


def forget_open_run(settings: LandingSettings, run_id: str) -> None:
    (_open_runs_dir(settings) / run_id).unlink(missing_ok=True)


def close_abandoned_runs(settings: LandingSettings) -> list[str]:
    """Mark FAILED the parent runs this state directory opened and a dead process never closed.

    Safe because the caller holds the state directory's lock: no live run of this directory can
    own them. Runs recorded against another tracking URI are left for when that one is in use.
    """
    client, uri, closed = MlflowClient(), settings.resolved_tracking_uri(), []
    folder = _open_runs_dir(settings)
    for record in sorted(folder.iterdir()) if folder.is_dir() else []:
        if record.read_text().strip() != uri:
            continue
        try:
            running = client.get_run(record.name).info.status == "RUNNING"
        except mlflow.exceptions.MlflowException:  # deleted meanwhile
            running = False
        if running:
            client.set_tag(record.name, "landing.error", ABANDONED)
            client.set_terminated(record.name, status="FAILED")
            closed.append(record.name)
        record.unlink()
    return closed


@contextmanager
def step_run(parent_run_id: str, step: str, *, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """A nested run for one pipeline step, active in the calling thread; FAILED if the step raises."""
    parent = MlflowClient().get_run(parent_run_id)
    all_tags = {STEP_TAG: step, **{k: v for k, v in parent.data.tags.items() if k == FLOW_RUN_TAG}, **(tags or {})}
    with mlflow.start_run(
        experiment_id=parent.info.experiment_id, run_name=step, parent_run_id=parent_run_id, tags=all_tags
    ) as run:
        yield run


def log_params(params: dict[str, Any], prefix: str = "") -> None:
    """Flatten nested params into dotted keys; MLflow params are strings of at most 6000 chars."""
    flat: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            flat[key] = str(value)[:6000]

    walk(params, prefix)
    mlflow.log_params(flat)


def pip_requirements() -> list[str]:
    # Explicit, because MLflow's inference imports optional packages (torchvision) to pin them.
    return [f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}"]


def log_classifier(model, tokenizer, name: str = "model") -> str:
    """Log a transformers classifier as an MLflow model (safetensors inside); returns its model URI."""
    # Silence hub look-ups for a model card/licence: our models are local and have none.
    flavor_logger = logging.getLogger("mlflow.transformers")
    previous = flavor_logger.level
    flavor_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = mlflow.transformers.log_model(
                transformers_model={"model": model, "tokenizer": tokenizer},
                name=name,
                task="text-classification",
                pip_requirements=pip_requirements(),
            )
    finally:
        flavor_logger.setLevel(previous)
    return info.model_uri


def log_dataset(frame: pd.DataFrame, *, name: str, source_uri: str, digest: str, context: str) -> None:
    """Record a dataset input on the active run, tied to its object-store URI and sha256."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        targets = "label" if "label" in frame.columns else None
        dataset = mlflow.data.from_pandas(frame, source=source_uri, name=name, targets=targets, digest=digest[:16])
        mlflow.log_input(dataset, context=context)
