"""The ``slu`` flow: utterances → teacher → its logits per word → KD student and no-KD baseline → metrics on
eval (reported) and validation (selection) → the KD student compressed (vocabulary, QAT) → ONNX with both heads,
FP32 and INT8 → every variant timed interleaved on each latency target, against the uncompressed student's FP32."""

from __future__ import annotations

from prefect import flow

from landing.config import SluRunConfig
from landing.tasks.compress import measure_latency
from landing.tasks.slu import (
    augment_utterances,
    compress_slu,
    evaluate_slu,
    export_slu,
    export_slu_logits,
    prepare_utterances,
    train_slu,
)
from landing.tasks.tracking import publish_summary, tracked_run

METRICS = ("intent_accuracy", "slot_f1", "sentence_accuracy")


@flow(name="slu", log_prints=True)
def slu(config: SluRunConfig, config_dir: str = ".", output_dir: str = "runs/slu") -> dict:
    with tracked_run(config) as ctx:
        data = prepare_utterances(config.data, config_dir, config.seed, ctx)
        splits, tags, intents = data["splits"], data["tags"], data["intents"]
        labelled = [splits["train"]]
        teacher = train_slu("teacher", config.teacher, tags, intents, labelled, ctx)
        kd_rows = labelled + ([augment_utterances(splits["train"], config.augmentation, ctx)] if config.augmentation else [])
        logits = export_slu_logits(teacher, kd_rows, ctx)
        student_kd = train_slu("student_kd", config.student, tags, intents, kd_rows, ctx, logits=logits,
                               distillation=config.distillation,
                               teacher=teacher if config.distillation.kd.needs_teacher_model else None)  # fmt: skip
        baseline = train_slu("student_baseline", config.student, tags, intents, labelled, ctx)
        models = {"teacher": teacher, "student_kd": student_kd, "student_baseline": baseline}
        results = {role: {"eval": evaluate_slu(role, model, splits["eval"], ctx),
                          **({"validation": evaluate_slu(role, model, splits["validation"], ctx)} if "validation" in splits else {})}
                   for role, model in models.items()}  # fmt: skip
        onnx = land_student(config, student_kd, kd_rows, splits, ctx)
        summary = {"flow": "slu", "mlflow_run_id": ctx.parent_run_id, "prefect_flow_run_id": ctx.flow_run_id,
                   "data": {name: m.model_dump() for name, m in splits.items()}, "tags": len(tags), "intents": len(intents),
                   "models": results, "onnx": onnx, "report_markdown": report(results, onnx)}  # fmt: skip
        return publish_summary(ctx, summary, output_dir)


def land_student(config: SluRunConfig, student_kd, kd_rows, splits, ctx) -> dict:
    """The KD student's FP32 ONNX (the reference) and the compressed variants, timed together on every target."""
    compression = config.compression
    if compression.pruning or "qat" in compression.strategy_list:
        compressed = compress_slu(student_kd, kd_rows, compression, config.distillation, ctx)
        variants = export_slu(student_kd, [], splits, compression, ctx) + export_slu(compressed, compression.quantizers,
                                                                                    splits, compression, ctx)  # fmt: skip
    else:
        variants = export_slu(student_kd, compression.quantizers, splits, compression, ctx)
    latency = {target.kind: measure_latency(variants, target, config.latency, splits["eval"], ctx)
               for target in config.latency.targets}  # fmt: skip
    return {"reference": variants[0]["name"], "variants": [v | {"latency": {t: by_name[v["name"]]["rounds"]
            for t, by_name in latency.items()}} for v in variants]}  # fmt: skip


def report(results: dict, onnx: dict) -> str:
    """The summary as tables: each model on eval (reported) and validation (for selection); each ONNX variant's
    size, eval figures and p50 latency per target and length, with its speed-up over the reference variant."""
    lines = ["| model | parameters | split | intent accuracy | slot F1 | sentence accuracy |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for role, by_split in results.items():
        for split, m in by_split.items():
            lines.append(f"| {role} | {m['parameters'] / 1e6:.2f}M | {split} | " + " | ".join(f"{100 * m[k]:.2f}" for k in METRICS) + " |")
    reference = next(v for v in onnx["variants"] if v["name"] == onnx["reference"])
    lines += ["", f"ONNX variants (batch 1; p50 = median of interleaved rounds; speed-up vs {onnx['reference']}):", "",
              "| variant | precision | size (MB) | intent accuracy | slot F1 | sentence accuracy | target | seq | p50 (ms) | speed-up |",
              "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]  # fmt: skip
    for v in onnx["variants"]:
        scores = " | ".join(f"{100 * v['eval'][k]:.2f}" for k in METRICS)
        for target, by_seq in v["latency"].items():
            for seq, r in by_seq.items():
                speedup = reference["latency"][target][seq]["median_ms"] / r["median_ms"]
                lines.append(f"| {v['name']} | {v['precision']} | {v['size_bytes'] / 1e6:.2f} | {scores} | {target} | {seq} | "
                             f"{r['median_ms']:.2f} | {speedup:.2f}× |")  # fmt: skip
    return "\n".join(lines)
