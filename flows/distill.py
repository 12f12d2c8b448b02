"""The ``distill`` flow: data → teacher → logits → KD student and no-KD baseline → evaluation."""

from __future__ import annotations

import dataclasses

from prefect import flow

from landing.config import DistillRunConfig
from landing.data_contracts.manifest import DatasetManifest, ModelManifest
from landing.flows.augment import augmented_transfer
from landing.flows.compress import compress_model
from landing.flows.data import prepare_data
from landing.models.specs import tokenizer_name
from landing.tasks.context import RunContext
from landing.tasks.evaluate import evaluate_model
from landing.tasks.predict import export_logits
from landing.tasks.promote import register_models
from landing.tasks.tracking import publish_summary, tracked_run
from landing.tasks.train import teacher_identity, train_model


def _evaluate(
    role: str, model: ModelManifest, splits: dict[str, DatasetManifest], ctx: RunContext, latency_samples: int
) -> dict:
    """Eval-split figures (reported) plus, under ``validation``, the validation-split figures (for selection)."""
    result = evaluate_model(role, model, splits["eval"], ctx, latency_samples)
    result |= {"split": "eval", "global_step": model.global_step}
    if "validation" in splits:
        selection = evaluate_model(f"{role}-validation", model, splits["validation"], ctx, 0)
        result["validation"] = {"accuracy": selection["accuracy"], "macro_f1": selection["macro_f1"],
                                "rows": splits["validation"].rows}  # fmt: skip
    return result


@flow(name="distill", log_prints=True)
def distill(config: DistillRunConfig, config_dir: str = ".", output_dir: str = "runs/distill") -> dict:
    with tracked_run(config) as ctx:
        tokenizers = [tokenizer_name(config.teacher.model), tokenizer_name(config.student.model)]
        splits, rejects = prepare_data(config.data, config_dir, ctx, tokenizers)
        contract = config.data.contract
        labels = list(contract.label_enumerate_values or sorted(splits["train"].label_counts))
        held_out = splits.get("validation")  # what early stopping (training.early_stopping_patience) evaluates
        teacher = train_model("teacher", config.teacher.model, config.teacher.training, labels, splits["train"], ctx,
                              validation=held_out)  # fmt: skip
        transfer = splits.get("transfer")
        if config.augmentation is not None:  # augmented (and unlabelled) rows, labelled by the teacher below
            transfer = augmented_transfer(config, splits, ctx)
        online = config.distillation.online is not None  # the student asks the served teacher: no logits file
        logits = None if online else export_logits(teacher, [splits["train"], *([transfer] if transfer else [])], ctx)
        student_spec = config.student.model
        student_kd = train_model(
            "student_kd", student_spec, config.student.training, labels, splits["train"], ctx,
            transfer=transfer, logits=logits, teacher=teacher, distillation=config.distillation, validation=held_out,
        )  # fmt: skip
        baseline = train_model("student_baseline", student_spec, config.student.training, labels, splits["train"], ctx,
                               validation=held_out)  # fmt: skip
        models = {"teacher": teacher, "student_kd": student_kd, "student_baseline": baseline}
        if config.baseline.step_matched:
            # As many optimizer steps as the KD student, labelled rows only: separates the teacher's signal
            # from the extra training the transfer rows give the KD student.
            steps = dataclasses.replace(config.student.training, max_steps=student_kd.global_step,
                                        early_stopping_patience=0)  # fmt: skip
            models["student_baseline_steps"] = train_model(
                "student_baseline_steps", student_spec, steps, labels, splits["train"], ctx
            )
        summary = {
            "flow": "distill",
            "mlflow_run_id": ctx.parent_run_id,
            "prefect_flow_run_id": ctx.flow_run_id,
            "logits_uri": logits.uri if logits is not None else None,  # None: online distillation
            "data": {name: m.model_dump() for name, m in splits.items()},
            "rejects": rejects,
        }
        for role, model in models.items():
            summary[role] = _evaluate(role, model, splits, ctx, config.latency_samples)
        if config.compression is not None:
            summary |= compress_model(student_kd, splits, config.compression, config.latency, ctx, output_dir)
        if config.registered_model:
            # Without compression the KD student itself is the candidate (PyTorch only).
            candidate = summary.get("registry_candidate") or {
                "variant": "student_kd", "pytorch_uri": summary["student_kd"]["model_uri"],
                "weights_sha256": student_kd.sha256,
            }
            summary["registry"] = register_models(
                config.registered_model, ctx, pytorch_uri=candidate["pytorch_uri"],
                onnx_uri=candidate.get("onnx_uri"), parity=candidate.get("parity"),
                weights_sha256=candidate["weights_sha256"], variant=candidate["variant"],
                data_sha256=splits["train"].sha256, teacher=teacher_identity(teacher),
            )  # fmt: skip
        return publish_summary(ctx, summary, output_dir)
