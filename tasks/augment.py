"""Augmentation steps: adapt a masked LM, make augmented rows, mix them with the unlabelled rows.

Augmented rows keep the id of their source (``source_id``) and their own content id (``id``), so
the teacher's logits are joined to them by id like any other row, never by position.
"""

from __future__ import annotations

import dataclasses

import mlflow
import pandas as pd
from prefect import task

from landing.config import AugmentationConfig
from landing.data_contracts.manifest import DatasetManifest, ModelManifest
from landing.data_contracts.validation import write_canonical
from landing.infra.tracking import log_dataset, log_params, step_run
from landing.models.loading import weights_sha256
from landing.models.mlm_adapt import MlmAdaptParams
from landing.tasks.context import (
    STEP_CACHE,
    RunContext,
    fetch_dataset,
    fetch_model_dir,
    publish_dir,
    publish_file,
    scratch_dir,
)
from landing.tasks.train import MlflowMetricsCallback, resumable_checkpoints

SAMPLE_ROWS = 50  # augmented rows logged as an artifact, to look at


@task(name="mlm-adapt", cache_policy=STEP_CACHE, persist_result=True)
def adapt_mlm(base: str, tables: list[DatasetManifest], validation: DatasetManifest | None, params: MlmAdaptParams,
              ctx: RunContext) -> ModelManifest:  # fmt: skip
    """Continued masked-LM training of ``base`` on the run's own texts (domain-adaptive pretraining)."""
    from landing.models.mlm_adapt import adapt_masked_lm

    texts = [t for table in tables for t in fetch_dataset(table)["text"]]
    held_out = list(fetch_dataset(validation)["text"]) if validation is not None else []
    out = scratch_dir(ctx.run_key, "models", "mlm-adapted")
    fingerprint = {"base": base, "tables": [t.sha256 for t in tables], "validation": validation and validation.sha256,
                   "params": dataclasses.asdict(params), "seed": ctx.seed}  # fmt: skip
    with step_run(ctx.parent_run_id, "mlm-adapt"), resumable_checkpoints("mlm-adapt", fingerprint) as checkpoints:
        log_params({"mlm_adapt": dataclasses.asdict(params), "base": base, "texts": len(texts)})
        metrics = adapt_masked_lm(base, texts, held_out, params, out, seed=ctx.seed,
                                  checkpoint_dir=checkpoints,
                                  callbacks=[MlflowMetricsCallback()])  # fmt: skip
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
        uri = publish_dir(out, ctx.key("models", "mlm-adapted"))
    numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return ModelManifest(uri=uri, sha256=weights_sha256(out), role="mlm-adapted", adaptation={"base": base, **numeric})


@task(name="augment", cache_policy=STEP_CACHE, persist_result=True)
def augment_rows(train: DatasetManifest, aug: AugmentationConfig, masked_lm: ModelManifest | None,
                 ctx: RunContext) -> DatasetManifest:  # fmt: skip
    """New rows from the labelled split by each configured strategy; the sources' labels kept (``landing
    augment`` writes them), copies equal to a training row or to each other dropped and counted."""
    frame = fetch_dataset(train)
    rows = frame.to_dict(orient="records")
    made, stats = [], {}
    with step_run(ctx.parent_run_id, "augment"):
        log_params({"augmentation": aug.model_dump(mode="json")})
        if aug.eda is not None:
            from landing.models.augment.eda import augment

            out, stats["eda"] = augment(rows, aug.eda, seed=ctx.seed)
            made += out
        if aug.mlm_da is not None:
            from landing.models.augment.mlm import augment_with_mlm, load_masked_lm

            model, tokenizer = load_masked_lm(aug.mlm_model or str(fetch_model_dir(masked_lm)))
            out, stats["mlm_da"] = augment_with_mlm(rows, model, tokenizer, aug.mlm_da, seed=ctx.seed)
            made += out
        augmented = _new_rows(made, frame)
        mlflow.log_metrics(_counts(augmented, stats, len(made)))
        path = scratch_dir(ctx.run_key, "data") / "augmented.jsonl"
        write_canonical(augmented, path)
        uri, _ = publish_file(path, ctx.key("data", "augmented.jsonl"))
        sample = scratch_dir(ctx.run_key, "data") / "augmented-sample.tsv"
        augmented.head(SAMPLE_ROWS).to_csv(sample, sep="\t", index=False)
        mlflow.log_artifact(str(sample), artifact_path="augmentation")
        manifest = DatasetManifest.from_frame(augmented, uri=uri, local_path=path, input_schema=train.input_schema,
                                              name="augmented")  # fmt: skip
        log_dataset(augmented, name="augmented", source_uri=uri, digest=manifest.sha256, context="augmentation")
    return manifest


def _new_rows(made: list[dict], train: pd.DataFrame) -> pd.DataFrame:
    """Copies only (no originals), each text once and none equal to a training row."""
    columns = [c for c in ("id", "text", "text_pair", "label", "source_id", "strategy") if c in train.columns
               or c in ("source_id", "strategy")]  # fmt: skip
    frame = pd.DataFrame(made, columns=columns) if made else pd.DataFrame(columns=columns)
    frame = frame[frame["strategy"] != "original"]
    key = ["text", "text_pair"] if "text_pair" in frame else ["text"]
    seen = set(map(tuple, train[key].itertuples(index=False)))
    new = pd.Series([tuple(r) not in seen for r in frame[key].itertuples(index=False)], index=frame.index, dtype=bool)
    frame = frame.loc[new]  # a boolean Series: an empty list would select no columns instead of no rows
    return frame.drop_duplicates(subset=key).drop_duplicates(subset="id").reset_index(drop=True)


def _counts(augmented: pd.DataFrame, stats: dict, made: int) -> dict[str, float]:
    counts = {f"rows_{strategy}": float(n) for strategy, n in augmented["strategy"].value_counts().items()}
    counts |= {"rows_augmented": float(len(augmented)), "rows_made": float(made)}
    for source, st in stats.items():
        for key in ("rows_per_second", "seconds"):
            if isinstance(st.get(key), int | float):
                counts[f"{source}_{key}"] = float(st[key])
    return counts


@task(name="mix-transfer", cache_policy=STEP_CACHE, persist_result=True)
def mix_transfer(augmented: DatasetManifest, transfer: DatasetManifest | None, unlabelled_rows: int | None,
                 ctx: RunContext) -> DatasetManifest | None:  # fmt: skip
    """The KD student's transfer rows: every augmented row (labels dropped: the teacher labels them) plus
    the transfer split's rows, at most ``unlabelled_rows`` of them (a seeded sample); None when there are
    none (KD on the labelled rows alone)."""
    made = fetch_dataset(augmented).drop(columns=["label"], errors="ignore") if augmented.rows else pd.DataFrame()
    unlabelled = fetch_dataset(transfer) if transfer is not None and transfer.rows else pd.DataFrame()
    if unlabelled_rows is not None and len(unlabelled) > unlabelled_rows:
        unlabelled = unlabelled.sample(n=unlabelled_rows, random_state=ctx.seed)
    parts = [p for p in (made, unlabelled.assign(strategy="unlabelled")) if len(p)]
    with step_run(ctx.parent_run_id, "mix-transfer"):
        log_params({"unlabelled_rows": unlabelled_rows})
        mlflow.log_metrics({"rows_transfer_augmented": len(made), "rows_transfer_unlabelled": len(unlabelled)})
        if not parts:
            mlflow.log_metric("rows_transfer", 0)
            return None
        mixed = pd.concat(parts, ignore_index=True).drop_duplicates(subset="id").reset_index(drop=True)
        mlflow.log_metric("rows_transfer", len(mixed))
        path = scratch_dir(ctx.run_key, "data") / "split-transfer-mixed.jsonl"
        write_canonical(mixed, path)
        uri, _ = publish_file(path, ctx.key("data", "split-transfer-mixed.jsonl"))
    return DatasetManifest.from_frame(mixed, uri=uri, local_path=path, input_schema=augmented.input_schema,
                                      name="transfer")  # fmt: skip
