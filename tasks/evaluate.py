"""Evaluate a trained model on the held-out split: accuracy, macro-F1, confusion matrix, latency."""

from __future__ import annotations

import mlflow
from prefect import task

from data_contracts.manifest import ArtifactManifest, DatasetManifest
from infra.tracking import step_run
from models.data import label_ids
from models.latency import batch1_latency_ms
from models.loading import load_classifier
from models.metrics import classification_metrics
from models.predict import predict_logits
from tasks.context import STEP_CACHE, RunContext, fetch_dataset, fetch_model_dir


@task(name="evaluate", cache_policy=STEP_CACHE, persist_result=True)
def evaluate_model(
    role: str, model: ArtifactManifest, eval_table: DatasetManifest, ctx: RunContext, latency_samples: int = 50
) -> dict:
    labels = model.metadata["labels"]
    max_length = model.metadata["max_seq_length"]
    classifier, tokenizer = load_classifier(str(fetch_model_dir(model)))
    frame = fetch_dataset(eval_table)
    pairs = list(frame["text_pair"]) if "text_pair" in frame else None
    with step_run(ctx.parent_run_id, f"evaluate-{role}"):
        logits = predict_logits(
            classifier, tokenizer, list(frame["text"]), text_pairs=pairs, max_length=max_length,
            batch_size=model.metadata["eval_batch_size"], desc=f"evaluate {role}",
        )  # fmt: skip
        metrics = classification_metrics(label_ids(frame["label"], labels), logits.argmax(-1), len(labels))
        latency = (
            batch1_latency_ms(classifier, tokenizer, list(frame["text"]), max_length=max_length, runs=latency_samples)
            if latency_samples
            else {}
        )
        mlflow.log_metrics({"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]})
        mlflow.log_metrics({f"latency_batch1_{k}": v for k, v in latency.items() if k.endswith("_ms")})
        mlflow.log_dict(metrics, "metrics/eval.json")
        mlflow.log_params({"role": role, "model_uri": model.metadata["mlflow_model_uri"], "eval": eval_table.uri})
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "confusion_matrix": metrics["confusion_matrix"],
        "params": model.metadata["parameters"],
        "model_uri": model.metadata["mlflow_model_uri"],
        "artifact_uri": model.uri,
        "latency_batch1_ms": latency.get("p50_ms"),
        "train_runtime_s": model.metadata.get("train_runtime_s"),
    }
