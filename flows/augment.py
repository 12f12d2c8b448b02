"""Augmentation: the ``augment`` flow (``landing augment``), and the steps ``distill`` runs before its KD student."""

from __future__ import annotations

from prefect import flow

from landing.config import AugmentRunConfig, DistillRunConfig
from landing.data_contracts.manifest import DatasetManifest
from landing.flows.data import prepare_data
from landing.models.specs import tokenizer_name
from landing.tasks.augment import adapt_mlm, augment_rows, mix_transfer
from landing.tasks.context import RunContext
from landing.tasks.tracking import publish_summary, tracked_run


def augmented_table(config: DistillRunConfig, splits: dict[str, DatasetManifest], ctx: RunContext) -> DatasetManifest:
    """mlm_adapt (when mlm_da has no masked LM of its own), then the augmented rows of the labelled split."""
    aug = config.augmentation
    masked_lm = None
    if aug.mlm_da is not None and aug.mlm_model is None:
        base = aug.mlm_base or config.teacher.model.name_or_path
        texts = [splits["train"], *([splits["transfer"]] if "transfer" in splits else [])]
        masked_lm = adapt_mlm(base, texts, splits.get("validation"), aug.mlm_adapt, ctx)
    return augment_rows(splits["train"], aug, masked_lm, ctx)


def augmented_transfer(
    config: DistillRunConfig, splits: dict[str, DatasetManifest], ctx: RunContext
) -> DatasetManifest | None:
    """The KD student's transfer rows: augmented rows plus (a configured number of) unlabelled ones; None
    when that is none at all."""
    augmented = augmented_table(config, splits, ctx)
    return mix_transfer(augmented, splits.get("transfer"), config.augmentation.unlabelled_rows, ctx)


@flow(name="augment", log_prints=True)
def augment(config: AugmentRunConfig, config_dir: str = ".", output_dir: str = "runs/augment") -> dict:
    with tracked_run(config) as ctx:
        splits, rejects = prepare_data(config.data, config_dir, ctx, [tokenizer_name(config.teacher.model)])
        augmented = augmented_table(config, splits, ctx)
        summary = {
            "flow": "augment",
            "mlflow_run_id": ctx.parent_run_id,
            "prefect_flow_run_id": ctx.flow_run_id,
            "augmented": augmented.model_dump(),
            "data": {name: m.model_dump() for name, m in splits.items()},
            "rejects": rejects,
        }
        return publish_summary(ctx, summary, output_dir)
