"""Compression steps: import a student, prune + recover, build ONNX variants, time them, report.

Every variant is exported, parity-checked and converted to ``.ort`` in a scratch
folder; only a variant that passed every check is uploaded and logged to MLflow.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import mlflow
from prefect import task
from prefect.artifacts import create_table_artifact

from landing.config import CompressionConfig, LatencyConfig, LatencyTargetConfig
from landing.data_contracts.manifest import DatasetManifest, ModelManifest
from landing.files import sha256_file
from landing.infra.latency.interleave import interleaved_p50s, summarise_rounds
from landing.infra.latency.targets import make_target
from landing.infra.object_store import store_for_uri
from landing.infra.provenance import int8_dot_product_exact
from landing.infra.registry import log_onnx_bundle
from landing.infra.tracking import log_classifier, log_params, step_run
from landing.infra.uris import is_local, uri_to_path
from landing.models import compression
from landing.models.compression import build_onnx_variant, distil_from_soft_targets, prune, score_onnx
from landing.models.data import label_ids
from landing.models.latency import fixed_length_latency_in_fresh_process
from landing.models.loading import count_parameters, load_classifier, save_classifier, weights_sha256
from landing.models.metrics import classification_metrics
from landing.models.model_files import check_model_dir
from landing.models.predict import predict_logits
from landing.models.quantize import PRECISION
from landing.models.report import VariantResult, plot_accuracy_vs_latency, render_csv, render_markdown, report_rows
from landing.tasks.context import STEP_CACHE, RunContext, fetch_dataset, fetch_model_dir, publish_dir, scratch_dir
from landing.tasks.train import MlflowMetricsCallback, resumable_checkpoints


def _local_dir(uri: str) -> Path:
    """A local path or file:// URI as is; an s3:// prefix downloaded (refused unless complete)."""
    if is_local(uri):
        return uri_to_path(uri)
    target = scratch_dir("imports", hashlib.sha256(uri.encode()).hexdigest()[:16])
    return store_for_uri(uri).get_dir(uri, target)


@task(name="import-model")
def import_model(uri: str, role: str, max_seq_length: int, ctx: RunContext) -> ModelManifest:
    """Bring a saved model directory (local path, file:// or s3:// prefix) under this run, as a manifest."""
    local = _local_dir(uri)
    check_model_dir(local, field=f"{role}.uri")
    model, _ = load_classifier(str(local))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    published = publish_dir(local, ctx.key("models", role))
    return ModelManifest(uri=published, sha256=weights_sha256(local), role=role, source=uri,
                         parameters=count_parameters(model), labels=labels, max_seq_length=max_seq_length)  # fmt: skip


def _texts_and_labels(splits: dict[str, DatasetManifest], labels: list[str]) -> tuple[list[str], list[int]]:
    train = fetch_dataset(splits["train"])
    texts, y = list(train["text"]), label_ids(train["label"], labels)
    if "transfer" in splits:
        transfer = fetch_dataset(splits["transfer"])
        texts += list(transfer["text"])
        y += label_ids([None] * len(transfer), labels)
    return texts, y


def reduce_range(cfg: CompressionConfig) -> bool:
    """7-bit weights where onnxruntime's u8s8 kernels would saturate (see models/quantize.py), unless set."""
    return not int8_dot_product_exact() if cfg.reduce_range == "auto" else cfg.reduce_range


def _publish_model(model, tokenizer, role: str, ctx: RunContext) -> tuple[str, str, str]:
    """(uri, weights sha256, MLflow model URI) of a model saved under this run."""
    out = scratch_dir(ctx.run_key, "models", role)
    sha = save_classifier(model, tokenizer, out)
    return publish_dir(out, ctx.key("models", role)), sha, log_classifier(model, tokenizer)


@task(name="prune", cache_policy=STEP_CACHE, persist_result=True)
def prune_student(
    student: ModelManifest, splits: dict[str, DatasetManifest], cfg: CompressionConfig, ctx: RunContext
) -> ModelManifest:
    """Vocabulary, depth and/or width pruning, then recovery by distilling from the unpruned student."""
    labels = student.labels
    model, tokenizer = load_classifier(str(fetch_model_dir(student)))
    texts, y = _texts_and_labels(splits, labels)
    with step_run(ctx.parent_run_id, "prune"):
        log_params({"strategies": "+".join(cfg.pruning), "compression": asdict(cfg)})
        # Soft targets of the unpruned model: the importance signal and the recovery teacher.
        soft = predict_logits(model, tokenizer, texts, max_length=cfg.max_seq_length, desc="unpruned logits")
        model, tokenizer, stats = prune(model, tokenizer, texts, soft, cfg)
        fingerprint = {"student": student.sha256, "compression": cfg.pruning_fingerprint(),
                       "pruning": cfg.pruning, "seed": ctx.seed, "train": splits["train"].sha256}  # fmt: skip
        with resumable_checkpoints("pruned", fingerprint) as checkpoints:
            result = distil_from_soft_targets(model, tokenizer, texts, y, soft, cfg.recover, cfg, checkpoints,
                                              seed=ctx.seed, callbacks=[MlflowMetricsCallback()],
                                              teacher_dir=fetch_model_dir(student))  # fmt: skip
            mlflow.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, int | float)})
            mlflow.log_metric("recover_runtime_s", result.train_runtime_s)
            uri, sha, model_uri = _publish_model(model, tokenizer, "pruned", ctx)  # what its ONNX variants come from
    # Recovered at compression.max_seq_length, to which vocabulary pruning also cuts the position table.
    return student.model_copy(update={"uri": uri, "sha256": sha, "role": "pruned", "parameters": stats["params_after"],
                                      "pruning": stats, "mlflow_model_uri": model_uri,
                                      "max_seq_length": cfg.max_seq_length})  # fmt: skip


@task(name="qat", cache_policy=STEP_CACHE, persist_result=True)
def quantization_aware_training(
    model: ModelManifest, unpruned: ModelManifest, splits: dict[str, DatasetManifest],
    cfg: CompressionConfig, ctx: RunContext,
) -> ModelManifest:  # fmt: skip
    """Fine-tune ``model`` under INT8 fake quantization (models/compression.py), distilling from ``unpruned``."""
    labels = model.labels
    texts, y = _texts_and_labels(splits, labels)
    with step_run(ctx.parent_run_id, "qat"):
        log_params({"qat": asdict(cfg.qat), "qat_embeddings": cfg.qat_embeddings, "source_model": model.uri})
        teacher, teacher_tokenizer = load_classifier(str(fetch_model_dir(unpruned)))
        soft = predict_logits(teacher, teacher_tokenizer, texts, max_length=cfg.max_seq_length, desc="unpruned logits")
        student, tokenizer = load_classifier(str(fetch_model_dir(model)))
        mlflow.log_param("quantize.reduce_range", reduce_range(cfg))
        fingerprint = {"model": model.sha256, "unpruned": unpruned.sha256, "qat": asdict(cfg.qat),
                       "reduce_range": reduce_range(cfg),
                       "kd": asdict(cfg.recover_distillation), "max_seq_length": cfg.max_seq_length,
                       "embeddings": cfg.qat_embeddings_on, "seed": ctx.seed, "train": splits["train"].sha256}  # fmt: skip
        with resumable_checkpoints("qat", fingerprint) as checkpoints:
            result = compression.quantization_aware_training(
                student, tokenizer, texts, y, soft, cfg, checkpoints,
                reduce_range=reduce_range(cfg), seed=ctx.seed, callbacks=[MlflowMetricsCallback()],
                teacher_dir=fetch_model_dir(unpruned),
            )  # fmt: skip
            mlflow.log_metric("qat_runtime_s", result.train_runtime_s)
            uri, sha, model_uri = _publish_model(student, tokenizer, "qat", ctx)  # fake quantizers removed
    return model.model_copy(update={"uri": uri, "sha256": sha, "role": "qat", "mlflow_model_uri": model_uri})


@task(name="build-variant", cache_policy=STEP_CACHE, persist_result=True)
def build_variant(
    name: str, model: ModelManifest, quantizer: str | None, splits: dict[str, DatasetManifest],
    cfg: CompressionConfig, ctx: RunContext,
) -> dict:  # fmt: skip
    """Export → (quantize) → parity → .ort → held-out accuracy; published only when every check passed."""
    eval_frame = fetch_dataset(splits["eval"])
    # The gates that refuse a variant look at validation; eval is only reported.
    gate_split = "validation" if "validation" in splits else "eval"
    gate_frame = fetch_dataset(splits[gate_split])
    labels = model.labels
    with step_run(ctx.parent_run_id, f"variant-{name}"):
        variant = build_onnx_variant(
            fetch_model_dir(model), scratch_dir(ctx.run_key, "variants", name), quantizer, cfg,
            gate_texts=list(gate_frame["text"]),
            calibration_texts=list(fetch_dataset(splits["train"])["text"][: cfg.calibration_rows]),
            max_length=model.max_seq_length or cfg.max_seq_length,
            reduce_range=reduce_range(cfg), from_qat=model.role == "qat",
        )  # fmt: skip
        parity = variant.parity | {"split": gate_split}
        metrics = score_onnx(variant.model, eval_frame["text"], label_ids(eval_frame["label"], labels), len(labels))
        gate_accuracy = score_onnx(variant.model, gate_frame["text"], label_ids(gate_frame["label"], labels),
                                   len(labels))["accuracy"]  # fmt: skip
        uri = publish_dir(variant.model.parent, ctx.key("variants", name))
        size = variant.model.stat().st_size
        mlflow.log_metrics({"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                            f"{gate_split}_accuracy": gate_accuracy,
                            "size_bytes": size, "ort_size_bytes": variant.ort.stat().st_size})  # fmt: skip
        mlflow.log_dict(parity, "parity.json")
        for mobile_artifact in (variant.ort, *variant.model.parent.glob("*.mobile_usability.txt")):
            mlflow.log_artifact(str(mobile_artifact), artifact_path="mobile")
        log_params({"variant": name, "quantizer": quantizer, "source_model": model.uri,
                    "quantize.reduce_range": quantizer is not None and reduce_range(cfg)})  # fmt: skip
        mlflow_uri = log_onnx_bundle(variant.model.parent, variant.model.name, name="model")
    return {
        "name": name, "precision": PRECISION.get(quantizer, "fp32"), "accuracy": metrics["accuracy"],
        "accuracy_split": "eval", "validation_accuracy": gate_accuracy if gate_split == "validation" else None,
        "macro_f1": metrics["macro_f1"], "size_bytes": size, "uri": uri, "model_file": variant.model.name,
        "sha256": sha256_file(variant.model), "parity": parity, "mlflow_model_uri": mlflow_uri,
    }  # fmt: skip


@task(name="measure-latency")
def measure_latency(
    variants: list[dict], target: LatencyTargetConfig, latency: LatencyConfig, eval_table: DatasetManifest,
    ctx: RunContext, pytorch: dict[str, ModelManifest] | None = None,
) -> dict[str, dict]:
    """Every variant on one target, interleaved: ``latency.rounds`` round-robin rounds, each a fresh
    process per variant; p50 is the median of per-round p50s, with their range (infra/latency/interleave.py).

    ``pytorch`` reference models join the same rounds on the host target, on the same text at the same
    lengths. Never cached: a replayed timing would be reported as a new measurement. The rest of a
    variant's report (p90/p99, end to end, peak memory) is its last round's.
    """
    texts = list(fetch_dataset(eval_table)["text"][:200])
    runner = make_target({"kind": target.kind, **target.options})
    last: dict[str, dict] = {}

    def pytorch_timer(name: str, model: ModelManifest):
        model_dir = fetch_model_dir(model)

        def run() -> dict[str, float]:
            timings = fixed_length_latency_in_fresh_process(model_dir, texts, latency)
            last[name] = {"runtime": "pytorch", "threads": latency.threads, "results": {
                seq: {"model_only": t, "model_only_inputs": "text", "end_to_end": None} for seq, t in timings.items()
            }}  # fmt: skip
            return {seq: t["p50_ms"] for seq, t in timings.items()}

        return run

    def timer(variant: dict):
        bundle = _local_dir(variant["uri"])

        def run() -> dict[str, float]:
            report = runner.measure(bundle / variant["model_file"], latency, tokenizer_json=bundle / "tokenizer.json",
                                    texts=texts)  # fmt: skip
            last[variant["name"]] = report.to_json()
            return {str(seq): report.p50(seq) for seq in latency.seq_lens}

        return run

    measures = {v["name"]: timer(v) for v in variants}
    if target.kind == "host":
        measures |= {name: pytorch_timer(name, model) for name, model in (pytorch or {}).items()}
    per_round = interleaved_p50s(measures, latency.rounds)
    out = {name: last[name] | {"rounds": summarise_rounds(p50s)} for name, p50s in per_round.items()}
    with step_run(ctx.parent_run_id, f"latency-{runner.name}"):
        log_params({"latency": latency.model_dump(exclude={"targets"}), "target": target.kind})
        for name, report in out.items():
            for seq, summary in report["rounds"].items():
                mlflow.log_metric(f"{name}.p50_ms_seq{seq}", summary["median_ms"])
        mlflow.log_dict(out, "latency.json")
    return out


@task(name="measure-pytorch")
def measure_pytorch(name: str, model: ModelManifest, eval_table: DatasetManifest, ctx: RunContext) -> dict:
    """A PyTorch FP32 reference row: held-out accuracy and weights size (its latency: ``measure_latency``)."""
    model_dir = fetch_model_dir(model)
    classifier, tokenizer = load_classifier(str(model_dir))
    frame = fetch_dataset(eval_table)
    labels = model.labels
    logits = predict_logits(classifier, tokenizer, list(frame["text"]), max_length=model.max_seq_length)
    metrics = classification_metrics(label_ids(frame["label"], labels), logits.argmax(-1), len(labels))
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    return {"name": name, "precision": "fp32", "runtime": "pytorch", "accuracy": metrics["accuracy"],
            "accuracy_split": "eval", "macro_f1": metrics["macro_f1"], "size_bytes": size, "uri": model.uri}  # fmt: skip


def _variant_result(v: dict, target: str | None) -> VariantResult:
    report = v["latency"][target]
    rounds = report["rounds"]
    return VariantResult(
        name=v["name"], precision=v["precision"], accuracy=v["accuracy"], size_bytes=v["size_bytes"],
        latency_ms_p50={s: r["median_ms"] for s, r in rounds.items()},
        latency_ms_range={s: (r["min_ms"], r["max_ms"]) for s, r in rounds.items()},
        latency_ms_p50_end_to_end={s: (r["end_to_end"] or {}).get("p50_ms") for s, r in report["results"].items()},
        peak_rss_bytes=report.get("peak_rss_bytes"), parity=v.get("parity", {}), uri=v["uri"],
        validation_accuracy=v.get("validation_accuracy"), runtime=v.get("runtime", "onnxruntime"), macro_f1=v["macro_f1"],
    )  # fmt: skip


@task(name="report")
def report_compression(variants: list[dict], reference: str, target: str, ctx: RunContext, output_dir: str) -> dict:
    """The brief's table (markdown + CSV), the accuracy-vs-latency PNG, to MLflow and as a Prefect artifact."""
    results = [_variant_result(v, target) for v in variants]
    rows = report_rows(results, reference)
    markdown = render_markdown(rows, f"Compression report (latency on {target}, batch 1; Δ vs {reference})")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compression_report.md").write_text(markdown)
    (out / "compression_report.csv").write_text(render_csv(results))
    seq = sorted(results[0].latency_ms_p50, key=int)[0]
    plot = plot_accuracy_vs_latency(results, seq, out / "accuracy_vs_latency.png")
    for path in (out / "compression_report.md", out / "compression_report.csv", plot):
        mlflow.MlflowClient().log_artifact(ctx.parent_run_id, str(path), artifact_path="compression")
    create_table_artifact(table=rows, key="compression-report", description=markdown.splitlines()[0].lstrip("# "))
    return {"markdown": markdown, "variants": [r.as_summary() for r in results]}
