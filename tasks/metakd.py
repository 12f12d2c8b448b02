"""Meta-KD steps: per-domain tables, prototype weights, the meta-teacher, the student's stage-1 weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import task

from landing.config import MetaKDConfig, TrainingConfig
from landing.data_contracts.manifest import DatasetManifest, LogitsManifest, ModelManifest
from landing.data_contracts.validation import write_canonical
from landing.infra.tracking import log_dataset, log_params, step_run
from landing.models.data import label_ids
from landing.models.metakd import (
    DomainDataError,
    domain_expertise,
    encoder_embeddings,
    fit_meta_teacher,
    prototype_weights,
    stage1_weights,
)
from landing.models.specs import AnySpec
from landing.tasks.context import STEP_CACHE, RunContext, fetch_dataset, fetch_logits, publish_file, scratch_dir
from landing.tasks.train import MlflowMetricsCallback, TrainedClassifier, publish_model, resumable_checkpoints


def _publish_table(frame: pd.DataFrame, name: str, like: DatasetManifest, ctx: RunContext, context: str) -> DatasetManifest:
    path = scratch_dir(ctx.run_key, "data", "metakd") / f"{name}.jsonl"
    write_canonical(frame, path)
    uri, _ = publish_file(path, ctx.key("data", "metakd", f"{name}.jsonl"))
    manifest = DatasetManifest.from_frame(frame, uri=uri, local_path=path, input_schema=like.input_schema, name=name)
    log_dataset(frame, name=name, source_uri=uri, digest=manifest.sha256, context=context)
    return manifest


@task(name="domain-tables", cache_policy=STEP_CACHE, persist_result=True)
def domain_tables(table: DatasetManifest, column: str, targets: list[str] | None, ctx: RunContext) -> dict[str, DatasetManifest]:
    """The table's rows per domain (every domain, or ``targets``; a target absent from the table is named)."""
    frame = fetch_dataset(table)
    found = sorted(frame[column].astype(str).unique())
    missing = [d for d in targets or [] if d not in found]
    if missing:
        raise DomainDataError(f"metakd.target_domains: {missing} not in the {table.name} table's {column!r} column "
                              f"(found {found})")  # fmt: skip
    with step_run(ctx.parent_run_id, f"domains-{table.name}"):
        return {d: _publish_table(frame[frame[column].astype(str) == d], f"{table.name}-{d}", table, ctx, "training")
                for d in (targets or found)}  # fmt: skip


@task(name="prototype-weights", cache_policy=STEP_CACHE, persist_result=True)
def weigh_examples(train: DatasetManifest, base: str, params: MetaKDConfig, max_length: int,
                   ctx: RunContext) -> DatasetManifest:  # fmt: skip
    """The training table with each row's transferability weight (``prototype_weight``), from ``base``'s encoder."""
    from landing.models.loading import load_classifier

    frame = fetch_dataset(train)
    model, tokenizer = load_classifier(base, ["0", "1"])  # the encoder only; the head is unused
    pairs = list(frame["text_pair"]) if "text_pair" in frame else None
    embeddings = encoder_embeddings(model, tokenizer, list(frame["text"]), text_pairs=pairs, max_length=max_length)
    weights = prototype_weights(embeddings, list(frame["label"]), list(frame[params.domain_column].astype(str)),
                                params.min_examples)  # fmt: skip
    with step_run(ctx.parent_run_id, "prototype-weights"):
        log_params({"base": base, "min_examples": params.min_examples})
        import mlflow

        mlflow.log_metrics({"prototype_weight_mean": float(weights.mean()), "prototype_weight_min": float(weights.min()),
                            "prototype_weight_max": float(weights.max())})  # fmt: skip
        return _publish_table(frame.assign(prototype_weight=weights), "train-weighted", train, ctx, "training")


@task(name="meta-teacher", cache_policy=STEP_CACHE, persist_result=True)
def train_meta_teacher(spec: AnySpec, training: TrainingConfig, labels: list[str], weighted: DatasetManifest,
                       params: MetaKDConfig, ctx: RunContext) -> ModelManifest:  # fmt: skip
    """The meta-teacher on every domain: prototype-weighted loss plus the domain loss."""
    frame = fetch_dataset(weighted)
    domains = sorted(frame[params.domain_column].astype(str).unique())
    domain_ids = [domains.index(d) for d in frame[params.domain_column].astype(str)]
    fingerprint = {"role": "meta-teacher", "spec": spec.model_dump(mode="json"), "weighted": weighted.sha256, "seed": ctx.seed,
                   "params": params.model_dump(mode="json")}  # fmt: skip
    with step_run(ctx.parent_run_id, "meta-teacher"), resumable_checkpoints("meta-teacher", fingerprint) as checkpoints:
        log_params({"role": "meta-teacher", "model": spec.model_dump(mode="json"), "domain_loss_weight": params.domain_loss_weight,
                    "domain_loss": params.domain_loss, "domains": domains})  # fmt: skip
        model, tokenizer, result = fit_meta_teacher(
            spec, labels, list(frame["text"]), label_ids(frame["label"], labels), list(frame["prototype_weight"] + 0.0),
            domain_ids, len(domains), training, checkpoints, seed=ctx.seed,
            domain_loss_weight=params.domain_loss_weight, mode=params.domain_loss, callbacks=[MlflowMetricsCallback()],
        )  # fmt: skip
        return publish_model("meta-teacher", TrainedClassifier(model, tokenizer, result), training, labels, len(frame), ctx)


@task(name="stage1-weights", cache_policy=STEP_CACHE, persist_result=True)
def stage1_table(domain_train: DatasetManifest, logits: LogitsManifest, labels: list[str],
                 ctx: RunContext) -> DatasetManifest:  # fmt: skip
    """A target domain's rows with ``example_weight`` = (1 + prototype weight) × the meta-teacher's expertise."""
    from landing.data_contracts.logits import align_logits

    frame = fetch_dataset(domain_train)
    teacher = np.asarray(align_logits(list(frame["id"]), fetch_logits(logits), expected_teacher_id=None,
                                      expected_num_labels=len(labels),
                                      expected_label_names=labels))  # fmt: skip
    expertise = domain_expertise(teacher, label_ids(frame["label"], labels))
    weights = stage1_weights(frame["prototype_weight"].to_numpy(dtype=float), expertise)
    with step_run(ctx.parent_run_id, f"stage1-weights-{domain_train.name}"):
        return _publish_table(frame.assign(example_weight=weights), f"{domain_train.name}-stage1", domain_train, ctx,
                              "training")  # fmt: skip


@task(name="metakd-report")
def report_metakd(markdown: str, rows: list[dict], ctx: RunContext) -> None:
    """The per-domain table to MLflow (markdown) and as a Prefect table artifact."""
    import mlflow
    from prefect.artifacts import create_table_artifact

    mlflow.MlflowClient().log_text(ctx.parent_run_id, markdown, "metakd/metakd_report.md")
    create_table_artifact(table=rows, key="metakd-report", description=markdown.splitlines()[0].lstrip("# "))
