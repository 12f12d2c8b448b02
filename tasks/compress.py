"""Compression steps: import a student, prune + recover, build ONNX variants, time them, report.

Every variant is exported, parity-checked and converted to ``.ort`` in a scratch
folder; only a variant that passed every check is uploaded and logged to MLflow.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
from prefect import task
from prefect.artifacts import create_table_artifact
from torch import nn

from data_contracts.manifest import ArtifactManifest, DatasetManifest, sha256_file
from infra.latency.interleave import interleaved_p50s, summarise_rounds
from infra.latency.targets import make_target
from infra.object_store import store_for_uri
from infra.provenance import int8_dot_product_exact
from infra.registry import log_onnx_bundle
from infra.tracking import log_classifier, log_params, step_run
from infra.uris import is_local, uri_to_path
from landing.config import PRUNING_STRATEGIES, CompressionConfig, LatencyConfig, LatencyTargetConfig, TrainingConfig
from models.data import EncodedTable, label_ids
from models.kd import KDParams
from models.latency import fixed_length_latency_in_fresh_process
from models.loading import count_parameters, keep_encoder_layers, load_classifier, save_classifier, weights_sha256
from models.metrics import classification_metrics
from models.onnx_export import check_parity_argmax, check_parity_fp32, convert_to_ort, export_onnx
from models.onnx_fusion import fuse_exported_model
from models.onnx_predictor import OnnxClassifier
from models.predict import predict_logits
from models.qat import prepare_qat, remove_qat
from models.quantize import QUANTIZERS
from models.report import VariantResult, plot_accuracy_vs_latency, render_csv, render_markdown, report_rows
from models.training import Distillation, TrainingParams, TrainResult, train_classifier
from models.vocab_pruning import prune_vocabulary
from models.width_pruning import make_importance_batches, prune_width
from tasks.context import STEP_CACHE, RunContext, fetch_dataset, fetch_model_dir, publish_dir, scratch_dir
from tasks.train import MlflowMetricsCallback, checkpoint_dir

PRECISION = {None: "fp32", "dynamic_int8": "int8", "static_int8": "int8", "int8_embeddings": "int8+int8-emb"}


def _local_dir(uri: str) -> Path:
    """A local path or file:// URI as is; an s3:// prefix downloaded (refused unless complete)."""
    if is_local(uri):
        return uri_to_path(uri)
    target = scratch_dir("imports", hashlib.sha256(uri.encode()).hexdigest()[:16])
    return store_for_uri(uri).get_dir(uri, target)


@task(name="import-model")
def import_model(uri: str, role: str, max_seq_length: int, ctx: RunContext) -> ArtifactManifest:
    """Bring a saved model directory (local path, file:// or s3:// prefix) under this run, as a manifest."""
    local = _local_dir(uri)
    if not (local / "config.json").is_file():
        raise FileNotFoundError(f"{role}: {uri} is not a saved model directory (no config.json)")
    model, _ = load_classifier(str(local))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    published = publish_dir(local, ctx.key("models", role))
    return ArtifactManifest(
        uri=published, sha256=weights_sha256(local), kind="model",
        metadata={"role": role, "source": uri, "parameters": count_parameters(model), "labels": labels,
                  "max_seq_length": max_seq_length, "eval_batch_size": 128},
    )  # fmt: skip


def _texts_and_labels(splits: dict[str, DatasetManifest], labels: list[str]) -> tuple[list[str], list[int]]:
    train = fetch_dataset(splits["train"])
    texts, y = list(train["text"]), label_ids(train["label"], labels)
    if "transfer" in splits:
        transfer = fetch_dataset(splits["transfer"])
        texts += list(transfer["text"])
        y += label_ids([None] * len(transfer), labels)
    return texts, y


def _distil(model, tokenizer, texts: list[str], y: list[int], soft: np.ndarray, training: TrainingConfig,
            role: str, fingerprint: dict, cfg: CompressionConfig, ctx: RunContext) -> TrainResult:  # fmt: skip
    """Vanilla KD from the unpruned student's soft targets (``recover_distillation``) on labelled + transfer rows."""
    data = EncodedTable(tokenizer, texts, cfg.max_seq_length, labels=y, teacher_logits=soft)
    kd = Distillation(cfg.recover_distillation.type,
                      KDParams(cfg.recover_distillation.temperature, cfg.recover_distillation.alpha))  # fmt: skip
    params = TrainingParams(**training.model_dump(exclude={"max_seq_length", "eval_batch_size", "distributed"}))
    return train_classifier(
        model, tokenizer, data, params, checkpoint_dir(role, fingerprint),
        seed=ctx.seed, distillation=kd, callbacks=[MlflowMetricsCallback()],
    )  # fmt: skip


@task(name="prune", cache_policy=STEP_CACHE, persist_result=True)
def prune_student(
    student: ArtifactManifest, splits: dict[str, DatasetManifest], cfg: CompressionConfig, ctx: RunContext
) -> ArtifactManifest:
    """Vocabulary, depth and/or width pruning, then recovery by distilling from the unpruned student."""
    strategies = [s for s in cfg.strategy_list if s in PRUNING_STRATEGIES]
    labels = student.metadata["labels"]
    model, tokenizer = load_classifier(str(fetch_model_dir(student)))
    texts, y = _texts_and_labels(splits, labels)
    with step_run(ctx.parent_run_id, "prune"):
        log_params({"strategies": "+".join(strategies), "compression": cfg.model_dump()})
        # Soft targets of the unpruned model: the importance signal and the recovery teacher.
        soft = predict_logits(model, tokenizer, texts, max_length=cfg.max_seq_length, desc="unpruned logits")
        stats: dict = {"params_before": count_parameters(model)}
        if "vocab" in strategies:
            model, tokenizer, vocab = prune_vocabulary(
                model, tokenizer, texts, max_vocab_size=cfg.max_vocab_size, max_seq_length=cfg.max_seq_length,
                keep_characters=cfg.keep_characters and cfg.dropped_tokens == "pieces",
                remap_dropped=cfg.dropped_tokens == "nearest",
            )  # fmt: skip
            stats |= {f"vocab.{k}": v for k, v in vocab.items()}
        if "depth" in strategies:
            stats["depth.layers_before"] = model.config.num_hidden_layers
            model = keep_encoder_layers(model, cfg.keep_layers, field="compression.keep_layers")
            stats["depth.layers_after"] = model.config.num_hidden_layers
        if "width" in strategies:
            rows = min(cfg.importance_rows, len(texts))
            batches = make_importance_batches(
                tokenizer, texts[:rows], teacher_logits=soft[:rows], max_length=cfg.max_seq_length
            )
            model, width = prune_width(model, cfg.width_multiplier, batches)
            stats |= {f"width.{k}": v for k, v in width.items() if not isinstance(v, list | dict)}
        fingerprint = {"student": student.sha256, "compression": cfg.model_dump(exclude=_QAT_ONLY),
                       "pruning": strategies, "seed": ctx.seed, "train": splits["train"].sha256}  # fmt: skip
        result = _distil(model, tokenizer, texts, y, soft, cfg.recover, "pruned", fingerprint, cfg, ctx)
        stats["params_after"] = count_parameters(model)
        mlflow.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, int | float)})
        mlflow.log_metric("recover_runtime_s", result.train_runtime_s)
        out = scratch_dir(ctx.run_key, "models", "pruned")
        sha = save_classifier(model, tokenizer, out)
        uri = publish_dir(out, ctx.key("models", "pruned"))
        model_uri = log_classifier(model, tokenizer)  # the PyTorch model its ONNX variants are exported from
    return ArtifactManifest(
        uri=uri, sha256=sha, kind="model",
        metadata={**student.metadata, "role": "pruned", "parameters": stats["params_after"], "pruning": stats,
                  "mlflow_model_uri": model_uri},
    )  # fmt: skip


# Settings that only change the QAT step or the exported variants: not part of the prune
# fingerprint (its pruning strategies are, separately), so adding `qat` reuses the recovery checkpoints.
_QAT_ONLY = {"qat", "qat_embeddings", "graph_fusion", "strategies", "reduce_range"}


def reduce_range(cfg: CompressionConfig) -> bool:
    """7-bit weights where onnxruntime's u8s8 kernels would saturate (see models/quantize.py), unless set."""
    return not int8_dot_product_exact() if cfg.reduce_range == "auto" else cfg.reduce_range


@task(name="qat", cache_policy=STEP_CACHE, persist_result=True)
def quantization_aware_training(
    model: ArtifactManifest, unpruned: ArtifactManifest, splits: dict[str, DatasetManifest],
    cfg: CompressionConfig, ctx: RunContext,
) -> ArtifactManifest:  # fmt: skip
    """Fine-tune ``model`` under INT8 fake quantization (models/qat.py), distilling from ``unpruned``
    as recovery does; the result is FP32 again, for the usual export + onnxruntime quantization."""
    labels = model.metadata["labels"]
    texts, y = _texts_and_labels(splits, labels)
    with step_run(ctx.parent_run_id, "qat"):
        log_params({"qat": cfg.qat.model_dump(), "qat_embeddings": cfg.qat_embeddings, "source_model": model.uri})
        teacher, teacher_tokenizer = load_classifier(str(fetch_model_dir(unpruned)))
        soft = predict_logits(teacher, teacher_tokenizer, texts, max_length=cfg.max_seq_length, desc="unpruned logits")
        student, tokenizer = load_classifier(str(fetch_model_dir(model)))
        embeddings = cfg.qat_embeddings and "int8_embeddings" in cfg.strategy_list
        handle = prepare_qat(student, embeddings=embeddings, reduce_range=reduce_range(cfg))
        mlflow.log_param("quantize.reduce_range", reduce_range(cfg))
        fingerprint = {"model": model.sha256, "unpruned": unpruned.sha256, "qat": cfg.qat.model_dump(),
                       "reduce_range": reduce_range(cfg),
                       "kd": cfg.recover_distillation.model_dump(), "max_seq_length": cfg.max_seq_length,
                       "embeddings": embeddings, "seed": ctx.seed, "train": splits["train"].sha256}  # fmt: skip
        result = _distil(student, tokenizer, texts, y, soft, cfg.qat, "qat", fingerprint, cfg, ctx)
        remove_qat(handle, rounded=True)  # the FP32 reference of the INT8 parity check = what INT8 computes
        mlflow.log_metric("qat_runtime_s", result.train_runtime_s)
        out = scratch_dir(ctx.run_key, "models", "qat")
        sha = save_classifier(student, tokenizer, out)
        uri = publish_dir(out, ctx.key("models", "qat"))
        model_uri = log_classifier(student, tokenizer)  # fake quantizers removed: what the ONNX export sees
    return ArtifactManifest(uri=uri, sha256=sha, kind="model",
                            metadata={**model.metadata, "role": "qat", "mlflow_model_uri": model_uri})  # fmt: skip


def _qat_reference(
    model: ArtifactManifest, quantizer: str, cfg: CompressionConfig
) -> Callable[[nn.Module], object] | None:
    """A QAT model's INT8 export is checked against the fake-quantized model it was trained as.

    Its FP32 form is not the reference: QAT optimises the quantized network, so the FP32 one
    (no activation rounding) may disagree with it more than a post-training model's does.
    """
    if model.metadata.get("role") != "qat":
        return None
    return functools.partial(prepare_qat, embeddings=quantizer == "int8_embeddings", reduce_range=reduce_range(cfg))


@task(name="build-variant", cache_policy=STEP_CACHE, persist_result=True)
def build_variant(
    name: str, model: ArtifactManifest, quantizer: str | None, splits: dict[str, DatasetManifest],
    cfg: CompressionConfig, ctx: RunContext,
) -> dict:  # fmt: skip
    """Export → (quantize) → parity → .ort → held-out accuracy; published only when every check passed."""
    model_dir = fetch_model_dir(model)
    work = scratch_dir(ctx.run_key, "variants", name)
    eval_frame = fetch_dataset(splits["eval"])
    eval_texts = list(eval_frame["text"])
    # The gates that refuse a variant look at validation; eval is only reported.
    gate_split = "validation" if "validation" in splits else "eval"
    gate_frame = fetch_dataset(splits[gate_split])
    gate_texts = list(gate_frame["text"])
    labels = model.metadata["labels"]
    max_length = model.metadata.get("max_seq_length", cfg.max_seq_length)
    with step_run(ctx.parent_run_id, f"variant-{name}"):
        fp32 = export_onnx(model_dir, work / "fp32" / "model.onnx", max_length=max_length)
        parity = {"fp32": check_parity_fp32(model_dir, fp32, gate_texts, max_length=max_length,
                                            atol=cfg.fp32_max_abs_diff)}  # fmt: skip
        final = fp32
        if quantizer is not None:
            source = fp32
            if cfg.graph_fusion:  # measured: INT8 ~10% faster fused, FP32 ~15% slower, so only before quantizing
                source = fp32.with_name("model.fused.onnx")
                fused = fuse_exported_model(fp32, model_dir, source)
                parity["fp32_fused"] = check_parity_fp32(model_dir, source, gate_texts, max_length=max_length,
                                                         atol=cfg.fp32_max_abs_diff) | {"fused_ops": fused}  # fmt: skip
            calibration = list(fetch_dataset(splits["train"])["text"][: cfg.calibration_rows])
            final = QUANTIZERS[quantizer](source, work / name / "model.onnx", calibration, fp32.parent,
                                          max_length=max_length, per_channel=cfg.per_channel,
                                          reduce_range=reduce_range(cfg))  # fmt: skip
            parity["int8"] = check_parity_argmax(model_dir, final, gate_texts, max_length=max_length,
                                                 min_agreement=cfg.int8_min_agreement,
                                                 prepare_reference=_qat_reference(model, quantizer, cfg))  # fmt: skip
            parity["int8"]["reduce_range"] = reduce_range(cfg)
            if _qat_reference(model, quantizer, cfg) is not None:
                parity["int8"]["reference"] = "fake-quantized model (QAT)"
        parity["split"] = gate_split
        ort_path = convert_to_ort(final)
        classifier = OnnxClassifier.load(final)
        metrics = classification_metrics(label_ids(eval_frame["label"], labels),
                                         classifier.logits(eval_texts).argmax(-1), len(labels))  # fmt: skip
        gate_accuracy = classification_metrics(label_ids(gate_frame["label"], labels),
                                               classifier.logits(gate_texts).argmax(-1), len(labels))["accuracy"]  # fmt: skip
        uri = publish_dir(final.parent, ctx.key("variants", name))
        mlflow.log_metrics({"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                            f"{gate_split}_accuracy": gate_accuracy,
                            "size_bytes": final.stat().st_size, "ort_size_bytes": ort_path.stat().st_size})  # fmt: skip
        mlflow.log_dict(parity, "parity.json")
        for mobile_artifact in (ort_path, *final.parent.glob("*.mobile_usability.txt")):
            mlflow.log_artifact(str(mobile_artifact), artifact_path="mobile")
        log_params({"variant": name, "quantizer": quantizer, "source_model": model.uri,
                    "quantize.reduce_range": quantizer is not None and reduce_range(cfg)})  # fmt: skip
        mlflow_uri = log_onnx_bundle(final.parent, final.name, name="model")
    return {
        "name": name, "precision": PRECISION[quantizer], "accuracy": metrics["accuracy"], "accuracy_split": "eval",
        "validation_accuracy": gate_accuracy if gate_split == "validation" else None,
        "macro_f1": metrics["macro_f1"], "size_bytes": final.stat().st_size, "uri": uri,
        "model_file": final.name, "sha256": sha256_file(final), "parity": parity, "mlflow_model_uri": mlflow_uri,
    }  # fmt: skip


@task(name="measure-latency")
def measure_latency(
    variants: list[dict], target: LatencyTargetConfig, latency: LatencyConfig, eval_table: DatasetManifest,
    ctx: RunContext, pytorch: dict[str, ArtifactManifest] | None = None,
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

    def pytorch_timer(name: str, model: ArtifactManifest):
        model_dir = fetch_model_dir(model)

        def run() -> dict[str, float]:
            timings = fixed_length_latency_in_fresh_process(
                model_dir, texts, latency.seq_lens, runs=latency.runs, warmup=latency.warmup, threads=latency.threads
            )
            last[name] = {"runtime": "pytorch", "threads": latency.threads, "results": {
                seq: {"model_only": t, "model_only_inputs": "text", "end_to_end": None} for seq, t in timings.items()
            }}  # fmt: skip
            return {seq: t["p50_ms"] for seq, t in timings.items()}

        return run

    def timer(variant: dict):
        bundle = _local_dir(variant["uri"])

        def run() -> dict[str, float]:
            report = runner.measure(
                bundle / variant["model_file"], seq_lens=latency.seq_lens, threads=latency.threads,
                warmup=latency.warmup, runs=latency.runs, tokenizer_json=bundle / "tokenizer.json", texts=texts,
            )  # fmt: skip
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
def measure_pytorch(name: str, model: ArtifactManifest, eval_table: DatasetManifest, ctx: RunContext) -> dict:
    """A PyTorch FP32 reference row: held-out accuracy and weights size (its latency: ``measure_latency``)."""
    model_dir = fetch_model_dir(model)
    classifier, tokenizer = load_classifier(str(model_dir))
    frame = fetch_dataset(eval_table)
    labels = model.metadata["labels"]
    logits = predict_logits(classifier, tokenizer, list(frame["text"]), max_length=model.metadata["max_seq_length"])
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
