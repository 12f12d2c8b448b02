"""The ``slu`` flow: utterances → teacher → its logits per word → KD student and no-KD baseline → metrics on
eval (reported) and validation (selection) → the KD student in ONNX (both heads), FP32 and dynamic INT8."""

from __future__ import annotations

from prefect import flow

from landing.config import SluRunConfig
from landing.tasks.slu import (
    augment_utterances,
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
                               distillation=config.distillation)  # fmt: skip
        baseline = train_slu("student_baseline", config.student, tags, intents, labelled, ctx)
        models = {"teacher": teacher, "student_kd": student_kd, "student_baseline": baseline}
        results = {role: {"eval": evaluate_slu(role, model, splits["eval"], ctx),
                          **({"validation": evaluate_slu(role, model, splits["validation"], ctx)} if "validation" in splits else {})}
                   for role, model in models.items()}  # fmt: skip
        onnx = export_slu(student_kd, splits["eval"], ctx)
        summary = {"flow": "slu", "mlflow_run_id": ctx.parent_run_id, "prefect_flow_run_id": ctx.flow_run_id,
                   "data": {name: m.model_dump() for name, m in splits.items()}, "tags": len(tags), "intents": len(intents),
                   "models": results, "onnx": onnx, "report_markdown": report(results, onnx)}  # fmt: skip
        return publish_summary(ctx, summary, output_dir)


def report(results: dict, onnx: dict) -> str:
    """The summary as a table: each model on eval (reported) and validation (for selection)."""
    lines = ["| model | parameters | split | intent accuracy | slot F1 | sentence accuracy |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for role, by_split in results.items():
        for split, m in by_split.items():
            lines.append(f"| {role} | {m['parameters'] / 1e6:.2f}M | {split} | " + " | ".join(f"{100 * m[k]:.2f}" for k in METRICS) + " |")
    for precision in ("fp32", "int8"):
        m = onnx[precision]
        lines.append(f"| student_kd ONNX {precision} ({m['size_mb']:.1f} MB) | | eval | " + " | ".join(f"{100 * m[k]:.2f}" for k in METRICS) + " |")
    return "\n".join(lines)
