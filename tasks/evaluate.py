"""Evaluate a trained model on the held-out split: accuracy, macro-F1, confusion matrix, latency.

Accuracy is a cached step (same model + table = same number); latency is a separate step that is
never cached, because a replayed timing would be reported as a new measurement.
"""

from __future__ import annotations

import datetime as dt

import mlflow
from prefect import task

from landing.data_contracts.manifest import DatasetManifest, ModelManifest
from landing.infra.tracking import step_run
from landing.models.data import label_ids
from landing.models.latency import batch1_latency_ms
from landing.models.loading import load_classifier
from landing.models.metrics import classification_metrics
from landing.models.predict import predict_logits
from landing.tasks.context import STEP_CACHE, RunContext, fetch_dataset, fetch_model_dir


@task(name="evaluate", cache_policy=STEP_CACHE, persist_result=True)
def evaluate_accuracy(role: str, model: ModelManifest, eval_table: DatasetManifest, ctx: RunContext) -> dict:
    labels = model.labels
    frame = fetch_dataset(eval_table)
    with step_run(ctx.parent_run_id, f"evaluate-{role}"):
        logits = _logits(model, frame, role)
        metrics = classification_metrics(label_ids(frame["label"], labels), logits.argmax(-1), len(labels))
        mlflow.log_metrics({"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]})
        mlflow.log_dict(metrics, "metrics/eval.json")
        mlflow.log_params({"role": role, "model_uri": model.mlflow_model_uri, "eval": eval_table.uri})
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "confusion_matrix": metrics["confusion_matrix"],
        "params": model.parameters,
        "model_uri": model.mlflow_model_uri,
        "artifact_uri": model.uri,
        "train_runtime_s": model.train_runtime_s,
    }


def _load(model: ModelManifest):
    """(model, a tokenizer callable as transformers' is) for a transformer or a word student."""
    model_dir = fetch_model_dir(model)
    if not model.word_student:
        return load_classifier(str(model_dir))
    from landing.models.word_students import load_word_student

    student, words = load_word_student(model_dir)
    return student, lambda text, max_length=128, **_: words.encode([text], max_length)


def _logits(model: ModelManifest, frame, role: str):
    if model.word_student:
        from landing.models.word_students import load_word_student
        from landing.models.word_students import predict_logits as word_logits

        student, words = load_word_student(fetch_model_dir(model))
        return word_logits(student, words, list(frame["text"]), max_length=model.max_seq_length,
                           batch_size=model.eval_batch_size)  # fmt: skip
    classifier, tokenizer = load_classifier(str(fetch_model_dir(model)))
    pairs = list(frame["text_pair"]) if "text_pair" in frame else None
    return predict_logits(classifier, tokenizer, list(frame["text"]), text_pairs=pairs, desc=f"evaluate {role}",
                          max_length=model.max_seq_length, batch_size=model.eval_batch_size)  # fmt: skip


@task(name="evaluate-latency")
def measure_eval_latency(
    role: str, model: ModelManifest, eval_table: DatasetManifest, ctx: RunContext, samples: int
) -> dict:
    """Batch-1 PyTorch latency on the table's texts, measured now (no cache policy on purpose)."""
    if not samples:
        return {"latency_batch1_ms": None, "latency_measured_at": None}
    classifier, tokenizer = _load(model)
    texts = list(fetch_dataset(eval_table)["text"])
    latency = batch1_latency_ms(classifier, tokenizer, texts, max_length=model.max_seq_length, runs=samples)
    with step_run(ctx.parent_run_id, f"latency-{role}"):
        mlflow.log_metrics({f"latency_batch1_{k}": v for k, v in latency.items() if k.endswith("_ms")})
    measured_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {"latency_batch1_ms": latency["p50_ms"], "latency_measured_at": measured_at}


def evaluate_model(
    role: str, model: ModelManifest, eval_table: DatasetManifest, ctx: RunContext, latency_samples: int = 50
) -> dict:
    """Cached accuracy plus a fresh latency measurement, as one summary entry."""
    return evaluate_accuracy(role, model, eval_table, ctx) | measure_eval_latency(
        role, model, eval_table, ctx, latency_samples
    )
