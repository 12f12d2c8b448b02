"""Prefect deployments of the flows, declared in ``configs/deployments.yaml``: ``landing deploy``.

Why deployments built in Python (``flow.to_deployment`` + ``prefect.deploy``) and not a
``prefect.yaml``: a deployment's default parameters are a whole run config, and here they
are loaded and validated by ``landing.config`` from the same YAML files ``landing run``
uses, so the Prefect UI shows them as an editable form (the pydantic schema) pre-filled
with those values; a ``prefect.yaml`` would have to copy every config into its
``parameters``. Why ``deploy`` to a work pool and not ``flow.serve``: the same
deployments then run on the local process worker that ``make up`` starts and on a
Kubernetes work pool (infra/k8s) with the image from docker/. Entrypoints are module
paths, so a worker needs only the installed package, no code storage.
"""

from __future__ import annotations

import json
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from landing.config import ConfigError, StrictModel, load_config
from landing.flows.table import FLOWS
from landing.infra.datasets import DATA_PUSHED_EVENT, dataset_resource_id

FLOW_RUN_COMPLETED_EVENT = "prefect.flow-run.Completed"
DEPLOYABLE_FLOWS = sorted(set(FLOWS) - {"augment"})  # augment writes a table for the user: run, not deployed


class DeploymentSpec(StrictModel):
    """One deployment: a flow, its default run config, and when it runs besides on demand."""

    name: str = Field(min_length=1)
    config: Path = Field(description="run config (YAML), relative to the deployments file")
    flow: Literal[tuple(DEPLOYABLE_FLOWS)] | None = Field(None, description="default: the config's flow")  # type: ignore[valid-type]
    overrides: dict[str, Any] = Field(default_factory=dict, description="key.path: value, as `landing run --set`")
    cron: str | None = Field(None, description="schedule, e.g. '0 3 * * 1' (Mondays 03:00)")
    timezone: str = "UTC"
    on_data_push: str | None = Field(None, description="run on `landing data push --dataset NAME` (retrain only)")
    after: str | None = Field(None, description="run when a run of this deployment (same file) completes")
    description: str | None = None
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _data_push_needs_retrain(self) -> DeploymentSpec:
        if self.on_data_push and self.flow != "retrain":
            raise ValueError("on_data_push needs flow: retrain (the flow that takes the pushed data version)")
        return self

    @model_validator(mode="after")
    def _cron_is_valid(self) -> DeploymentSpec:
        if self.cron is not None:
            from prefect.client.schemas.schedules import CronSchedule

            CronSchedule(cron=self.cron, timezone=self.timezone)  # ValueError naming what is wrong
        return self


class DeploymentsFile(StrictModel):
    work_pool: str = "landing"
    deployments: list[DeploymentSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_unique_and_after_known(self) -> DeploymentsFile:
        names = [d.name for d in self.deployments]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"deployment names must be unique; repeated: {duplicates}")
        for d in self.deployments:
            if d.after is not None and d.after not in names:
                raise ValueError(f"deployment {d.name!r}: after: no deployment named {d.after!r} in this file")
        return self

    def in_dependency_order(self) -> list[DeploymentSpec]:
        """``after`` targets first: a completion trigger needs its upstream deployment's id."""
        by_name = {d.name: d for d in self.deployments}
        graph = {d.name: {d.after} if d.after else set() for d in self.deployments}
        try:
            return [by_name[n] for n in TopologicalSorter(graph).static_order()]
        except CycleError as exc:
            raise ConfigError(f"deployments: `after` forms a cycle: {exc.args[1]}") from None


def load_deployments(path: str | Path) -> DeploymentsFile:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        spec = DeploymentsFile.model_validate(raw)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such deployments file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as err:
        lines = [f"{path}: invalid deployments file"]
        lines += [f"  {'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in err.errors()]
        raise ConfigError("\n".join(lines)) from None
    for d in spec.deployments:  # resolve and fill in the flow now, so errors name this file
        d.config = (path.parent / d.config).resolve()
        run_config = _run_config(d)
        d.flow = d.flow or run_config.flow
        takes = FLOWS[d.flow].config
        if type(run_config) is not takes:
            raise ConfigError(
                f"{path}: deployment {d.name!r}: flow {d.flow} takes a {takes.model_fields['flow'].default} "
                f"config, but {d.config} is a {run_config.flow} config"
            )
    return spec


def _run_config(spec: DeploymentSpec):
    sets = [f"{k}={json.dumps(v)}" for k, v in spec.overrides.items()]  # JSON is YAML
    return load_config(spec.config, sets)


def deployment_parameters(spec: DeploymentSpec) -> dict[str, Any]:
    """The deployment's default parameters: the validated run config, as JSON the UI can edit."""
    config = _run_config(spec)
    return {
        "config": config.model_dump(mode="json"),
        "config_dir": str(spec.config.parent),
        "output_dir": str(Path("runs") / spec.name),
    }


def deployment_triggers(spec: DeploymentSpec, deployment_ids: dict[str, str]) -> list:
    from prefect.events import DeploymentEventTrigger

    triggers = []
    if spec.on_data_push:
        triggers.append(
            DeploymentEventTrigger(
                name=f"{spec.name}: new {spec.on_data_push} data",
                expect={DATA_PUSHED_EVENT},
                match={"prefect.resource.id": dataset_resource_id(spec.on_data_push)},
                parameters={"data_uri": "{{ event.payload.uri }}", "data_sha256": "{{ event.payload.sha256 }}"},
            )
        )
    if spec.after:
        triggers.append(
            DeploymentEventTrigger(
                name=f"{spec.name}: after {spec.after} completes",
                expect={FLOW_RUN_COMPLETED_EVENT},
                match_related={"prefect.resource.id": f"prefect.deployment.{deployment_ids[spec.after]}"},
            )
        )
    return triggers


def deploy_all(spec: DeploymentsFile, work_pool: str | None = None) -> dict[str, str]:
    """Create or update every deployment on the Prefect API in settings; returns name → deployment id."""
    import prefect
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    ids: dict[str, str] = {}
    for d in spec.in_dependency_order():
        deployment = FLOWS[d.flow].run.to_deployment(
            name=d.name,
            schedules=[CronSchedule(cron=d.cron, timezone=d.timezone)] if d.cron else None,
            parameters=deployment_parameters(d),
            triggers=deployment_triggers(d, ids),
            description=d.description,
            tags=["landing", *d.tags],
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        (deployment_id,) = prefect.deploy(
            deployment, work_pool_name=work_pool or spec.work_pool, build=False, push=False,
            print_next_steps_message=False, ignore_warnings=True,
        )  # fmt: skip
        ids[d.name] = str(deployment_id)
    return ids

