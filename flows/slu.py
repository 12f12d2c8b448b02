"""The ``slu`` flow: utterances → teacher → its logits per word → KD student and no-KD baseline → metrics on
eval (reported) and validation (selection) → the KD student compressed (vocabulary, width, QAT) → ONNX with both heads,
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
    report_slu,
    train_slu,
)
from landing.tasks.tracking import publish_summary, tracked_run


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
                   "models": results, "onnx": onnx, "report_markdown": report_slu(results, onnx, ctx)}  # fmt: skip
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
