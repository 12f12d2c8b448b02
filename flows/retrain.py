"""The ``retrain`` flow: ``distill`` again, on a pushed data version when a trigger names one.

Deployed with a cron schedule and a trigger on ``landing.data.pushed`` events (see
landing/deployments.py); its completion is what triggers the ``promote`` deployment.
"""

from __future__ import annotations

from prefect import flow

from landing.config import DistillRunConfig, SourceConfig
from landing.flows.distill import distill


def with_train_data(config: DistillRunConfig, data_uri: str, data_sha256: str | None) -> DistillRunConfig:
    """``config`` reading its labelled (and transfer) table from one pushed, hash-checked data version."""
    data = config.data.model_copy(
        update={"train": config.data.train.model_copy(update={"sources": [SourceConfig(uri=data_uri, sha256=data_sha256)]})}
    )
    return config.model_copy(update={"data": data})


@flow(name="retrain", log_prints=True)
def retrain(
    config: DistillRunConfig,
    config_dir: str = ".",
    output_dir: str = "runs/retrain",
    data_uri: str | None = None,
    data_sha256: str | None = None,
) -> dict:
    """Distil a new student; ``data_uri`` (set by a data-push trigger) replaces the config's train sources."""
    if data_uri:
        print(f"training on pushed data {data_uri} (sha256 {data_sha256 or 'unchecked'})")
        config = with_train_data(config, data_uri, data_sha256)
    return distill(config=config, config_dir=config_dir, output_dir=output_dir)
