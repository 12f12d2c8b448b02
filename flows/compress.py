"""The ``compress`` flow: prune → recover → quantize → export → parity → latency → report."""

from __future__ import annotations

from prefect import flow

from landing.config import CompressionConfig, CompressRunConfig, LatencyConfig, ModelSource
from landing.data_contracts.manifest import DatasetManifest, ModelManifest
from landing.flows.data import prepare_data
from landing.models.specs import tokenizer_name
from landing.tasks.compress import (
    build_variant,
    import_model,
    measure_latency,
    measure_pytorch,
    prune_student,
    quantization_aware_training,
    report_compression,
)
from landing.tasks.context import RunContext
from landing.tasks.promote import register_models
from landing.tasks.tracking import publish_summary, tracked_run
from landing.tasks.train import train_model


def compress_model(
    student: ModelManifest,
    splits: dict[str, DatasetManifest],
    cfg: CompressionConfig,
    latency: LatencyConfig,
    ctx: RunContext,
    output_dir: str,
    teacher: ModelManifest | None = None,
) -> dict:
    """All variants of ``student`` (and reference rows for ``teacher``), timed in one run, then the report."""
    variants = [build_variant("student_fp32", student, None, splits, cfg, ctx)]
    if teacher is not None:
        variants.append(build_variant("teacher_onnx_fp32", teacher, None, splits, cfg, ctx))
    base, prefix = student, "student"
    source = student  # the PyTorch model the registry candidate (last student variant) is exported from
    if cfg.pruning:
        base, prefix = prune_student(student, splits, cfg, ctx), "pruned"
        variants.append(build_variant("pruned_fp32", base, None, splits, cfg, ctx))
        source = base
    for quantizer in cfg.quantizers:
        variants.append(build_variant(f"{prefix}_{quantizer}", base, quantizer, splits, cfg, ctx))
    if "qat" in cfg.strategy_list:
        # QAT targets onnxruntime's dynamic INT8 (static INT8 calibrates activations instead).
        qat = quantization_aware_training(base, student, splits, cfg, ctx)
        for quantizer in (q for q in cfg.quantizers if q != "static_int8"):
            variants.append(build_variant(f"{prefix}_qat_{quantizer}", qat, quantizer, splits, cfg, ctx))
            source = qat
    # The most compressed student variant is the one offered to the registry.
    candidate = next(v for v in reversed(variants) if not v["name"].startswith("teacher"))
    report_target = latency.targets[0].kind
    # The PyTorch teacher is a host-only row (boards and phones run onnxruntime alone), timed in the same rounds.
    pytorch = {"teacher_pytorch_fp32": teacher} if teacher is not None and report_target == "host" else {}
    timings = {
        target.kind: measure_latency(variants, target, latency, splits["eval"], ctx, pytorch)
        for target in latency.targets
    }
    variants += [measure_pytorch(name, model, splits["eval"], ctx) for name, model in pytorch.items()]
    for variant in variants:
        variant["latency"] = {kind: reports[variant["name"]] for kind, reports in timings.items() if variant["name"] in reports}
    report = report_compression(variants, "student_fp32", report_target, ctx, output_dir)
    return {
        "variants": report["variants"],
        "report_markdown": report["markdown"],
        "registry_candidate": {
            "variant": candidate["name"], "onnx_uri": candidate["mlflow_model_uri"], "parity": candidate["parity"],
            "pytorch_uri": source.mlflow_model_uri, "weights_sha256": source.sha256,
        },
    }


@flow(name="compress")
def compress(config: CompressRunConfig, config_dir: str = ".", output_dir: str = "runs/compress") -> dict:
    with tracked_run(config) as ctx:
        trained = None if isinstance(config.student, ModelSource) else tokenizer_name(config.student.model)
        splits, rejects = prepare_data(config.data, config_dir, ctx, [trained])
        max_len = config.compression.max_seq_length
        if isinstance(config.student, ModelSource):
            student = import_model(config.student.uri, "student", max_len, ctx)
        else:
            labels = list(config.data.contract.label_enumerate_values or sorted(splits["train"].label_counts))
            student = train_model("student", config.student.model, config.student.training, labels, splits["train"], ctx,
                                  validation=splits.get("validation"))  # fmt: skip
        teacher = import_model(config.teacher.uri, "teacher", max_len, ctx) if config.teacher else None
        result = compress_model(student, splits, config.compression, config.latency, ctx, output_dir, teacher)
        summary = {
            "flow": "compress",
            "mlflow_run_id": ctx.parent_run_id,
            "prefect_flow_run_id": ctx.flow_run_id,
            "student": student.uri,
            "data": {name: m.model_dump() for name, m in splits.items()},
            "rejects": rejects,
            **result,
        }
        if config.registered_model:
            candidate = result["registry_candidate"]
            summary["registry"] = register_models(
                config.registered_model, ctx, onnx_uri=candidate["onnx_uri"], parity=candidate["parity"],
                pytorch_uri=candidate["pytorch_uri"], weights_sha256=candidate["weights_sha256"],
                variant=candidate["variant"], data_sha256=splits["train"].sha256,
            )  # fmt: skip
        return publish_summary(ctx, summary, output_dir)
