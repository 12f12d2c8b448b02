"""Open and close the flow's MLflow parent run; write the run summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.runtime import flow_run

from landing.errors import user_error_in
from landing.files import atomic_write
from landing.infra.failures import explain_failure
from landing.infra.object_store import check_reachable, open_store
from landing.infra.settings import get_settings
from landing.infra.state_lock import state_dir_lock
from landing.infra.tracking import (
    FLOW_RUN_TAG,
    check_tracking_reachable,
    close_abandoned_runs,
    configure_tracking,
    end_run,
    ensure_experiment,
    forget_open_run,
    log_params,
    record_open_run,
    start_parent_run,
)
from landing.tasks.context import RunContext

log = logging.getLogger(__name__)


@task(name="open-tracking-run")
def open_tracking_run(experiment: str, run_name: str, seed: int, config: dict) -> RunContext:
    """Fail fast on an unreachable tracking server or object store, then create the parent run."""
    settings = get_settings()
    check_tracking_reachable(settings.resolved_tracking_uri())
    check_reachable(open_store(settings=settings))
    configure_tracking(settings)
    if abandoned := close_abandoned_runs(settings):
        log.warning("marked FAILED %d MLflow run(s) an ended process left RUNNING: %s", len(abandoned), abandoned)
    experiment_id = ensure_experiment(experiment, settings)
    flow_run_id = str(flow_run.id or "local")
    parent = start_parent_run(
        experiment_id, run_name, {FLOW_RUN_TAG: flow_run_id, "landing.flow": str(flow_run.flow_name or run_name)}
    )
    record_open_run(settings, parent)
    with mlflow.start_run(run_id=parent):
        log_params(config)
    MlflowClient().update_run(parent, status="RUNNING")  # leaving start_run marked it FINISHED; it runs until closed
    # Reuse the parent run id as the artifact prefix: unique per flow run and easy to find from MLflow.
    return RunContext(parent_run_id=parent, flow_run_id=flow_run_id, run_key=f"runs/{parent}", seed=seed)


@task(name="close-tracking-run")
def close_tracking_run(ctx: RunContext, status: str, summary: dict | None = None) -> None:
    if summary is not None:
        client = MlflowClient()
        client.log_dict(ctx.parent_run_id, summary, "summary.json")
        for role in ("teacher", "student_kd", "student_baseline"):
            if role in summary:
                client.log_metric(ctx.parent_run_id, f"{role}.accuracy", summary[role]["accuracy"])
                client.log_metric(ctx.parent_run_id, f"{role}.macro_f1", summary[role]["macro_f1"])
    end_run(ctx.parent_run_id, status)
    forget_open_run(get_settings(), ctx.parent_run_id)


def write_json_atomic(path: Path, payload: dict) -> None:
    with atomic_write(path) as fh:
        json.dump(payload, fh, indent=2)



ERROR_TAG_CHARS = 5000  # MLflow tag values are capped (8,000 characters on sqlite)


@contextmanager
def parent_run_fails_on_error(ctx: RunContext) -> Iterator[None]:
    """Mark the flow's parent run FAILED when any step raises, with the error as the ``landing.error`` tag
    (a user's mistake by its message alone), then re-raise."""
    try:
        yield
    except BaseException as exc:
        explained = explain_failure(exc)  # a full disk, a tracking server gone
        user = explained or user_error_in(exc)
        message = str(user) if user is not None else f"{type(exc).__name__}: {exc}"
        try:
            MlflowClient().set_tag(ctx.parent_run_id, "landing.error", message[:ERROR_TAG_CHARS])
            close_tracking_run(ctx, "FAILED")
        except Exception as tracking_failed:  # e.g. the tracking store is on the disk that is full
            log.warning("could not mark MLflow run %s FAILED: %s", ctx.parent_run_id, tracking_failed)
        if explained is not None:
            raise explained from exc
        raise


@contextmanager
def tracked_run(config) -> Iterator[RunContext]:
    """A flow's run: the state directory locked (one run at a time), the MLflow parent run opened with the
    config as its params, and marked FAILED if any step (or publishing the summary) raises."""
    with state_dir_lock():
        ctx = open_tracking_run(config.experiment, config.name, config.seed, config.model_dump(mode="json"))
        with parent_run_fails_on_error(ctx):
            yield ctx


def publish_summary(ctx: RunContext, summary: dict, output_dir: str) -> dict:
    """``summary.json`` written atomically, then the parent run closed as FINISHED with it."""
    write_json_atomic(Path(output_dir) / "summary.json", summary)
    close_tracking_run(ctx, "FINISHED", summary)
    return summary
