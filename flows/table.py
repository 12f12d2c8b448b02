"""The flow table: every flow by name, with the run config it takes. The CLI runs from it and the deployments
deploy from it; the config loader knows the same names from the configs' own ``flow:`` fields, and the table
is checked against them when it is built, so a new flow is one row here and one config class."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import Flow

from landing.config import (
    FLOW_CONFIGS,
    AugmentRunConfig,
    CompressRunConfig,
    DistillRunConfig,
    FewshotRunConfig,
    MetakdRunConfig,
    PromoteRunConfig,
    SluRunConfig,
    StrictModel,
)
from landing.flows.augment import augment
from landing.flows.compress import compress
from landing.flows.distill import distill
from landing.flows.fewshot import fewshot
from landing.flows.metakd import metakd
from landing.flows.promote import promote
from landing.flows.retrain import retrain
from landing.flows.slu import slu


@dataclass(frozen=True)
class FlowEntry:
    name: str
    config: type[StrictModel]  # the run config the flow takes (its ``config`` parameter)
    run: Flow


def _table(*entries: FlowEntry) -> dict[str, FlowEntry]:
    table = {entry.name: entry for entry in entries}
    runnable = {name: entry.config for name, entry in table.items() if name in FLOW_CONFIGS}
    if runnable != FLOW_CONFIGS:  # each run config's `flow:` names the flow that takes it
        raise RuntimeError(f"flow table {runnable} does not match the run configs {FLOW_CONFIGS}")
    return table


FLOWS = _table(
    FlowEntry("distill", DistillRunConfig, distill),
    FlowEntry("compress", CompressRunConfig, compress),
    FlowEntry("promote", PromoteRunConfig, promote),
    FlowEntry("fewshot", FewshotRunConfig, fewshot),
    FlowEntry("metakd", MetakdRunConfig, metakd),
    FlowEntry("augment", AugmentRunConfig, augment),
    FlowEntry("slu", SluRunConfig, slu),
    FlowEntry("retrain", DistillRunConfig, retrain),  # distill again, on pushed data; deployed, not `landing run`
)
