"""Registry steps: register a flow's student, evaluate registry aliases, decide and apply promotion.

Two registered models per student: ``<name>`` (transformers weights, for fine-tuning and
reference) and ``<name>-onnx`` (the bundle that serves). Aliases belong to a registered
model, so one name with a ``format`` tag could have only one ``champion`` for both formats;
two names let each carry its own ``challenger``/``champion``. ``<name>`` is the PyTorch model
the ONNX version was exported from (pruned or QAT when compressed); both versions carry its
weights hash and the variant name, the ONNX one records that PyTorch version
(``landing.pytorch_version``), and promotion moves ``champion`` on both or neither.
"""

from __future__ import annotations

import json

import mlflow
from mlflow.tracking import MlflowClient
from prefect import task

from landing.config import LatencyConfig, PromotionGates
from landing.data_contracts.manifest import DatasetManifest
from landing.infra.latency.targets import make_target
from landing.infra.registry import (
    CHALLENGER,
    CHAMPION,
    FORMAT_TAG,
    ONNX_SUFFIX,
    PARITY_TAG,
    VARIANT_TAG,
    WEIGHTS_TAG,
    RegistryError,
    get_alias_version,
    git_commit,
    move_aliases,
    record_decision,
    register_student,
    resolve_onnx_bundle,
)
from landing.infra.tracking import FLOW_RUN_TAG, step_run
from landing.models.data import label_ids
from landing.models.metrics import classification_metrics
from landing.models.onnx_predictor import TOKENIZER_FILE, OnnxClassifier
from landing.tasks.context import RunContext, fetch_dataset, scratch_dir

PYTORCH_VERSION_TAG = "landing.pytorch_version"
LATENCY_TEXTS = 200


def onnx_model_name(name: str) -> str:
    return f"{name}{ONNX_SUFFIX}"


def _version_info(version) -> dict:
    return {"name": version.name, "version": str(version.version), "uri": f"models:/{version.name}/{version.version}"}


@task(name="register-models")
def register_models(
    registered_model: str,
    ctx: RunContext,
    *,
    pytorch_uri: str | None = None,
    onnx_uri: str | None = None,
    data_sha256: str | None = None,
    teacher: str | None = None,
    parity: dict | None = None,
    weights_sha256: str | None = None,
    variant: str | None = None,
    alias: str = CHALLENGER,
) -> dict:
    """Register the flow's student (MLflow model URIs ``models:/m-...``) as the new ``alias`` of both names.

    ``pytorch_uri`` is the model ``onnx_uri`` was exported from; ``weights_sha256`` (of its weights)
    and ``variant`` tag both versions, so either one leads to the other.
    """
    tags = {"landing.data_sha256": data_sha256, "landing.teacher": teacher, "landing.git_commit": git_commit(),
            FLOW_RUN_TAG: ctx.flow_run_id, "landing.mlflow_run_id": ctx.parent_run_id,
            WEIGHTS_TAG: weights_sha256, VARIANT_TAG: variant}  # fmt: skip
    tags = {k: v for k, v in tags.items() if v is not None}
    out: dict[str, dict] = {}
    if pytorch_uri:
        version = register_student(registered_model, pytorch_uri, tags=tags | {FORMAT_TAG: "transformers"}, alias=alias)
        out["pytorch"] = _version_info(version)
    if onnx_uri:
        onnx_tags = tags | {FORMAT_TAG: "onnx"}
        if parity is not None:
            onnx_tags[PARITY_TAG] = json.dumps(parity, separators=(",", ":"))
        if "pytorch" in out:
            onnx_tags[PYTORCH_VERSION_TAG] = out["pytorch"]["version"]
        version = register_student(onnx_model_name(registered_model), onnx_uri, tags=onnx_tags, alias=alias)
        out["onnx"] = _version_info(version)
    if not out:
        raise ValueError(f"{registered_model}: nothing to register (no pytorch_uri or onnx_uri)")
    return out


@task(name="evaluate-candidate")
def evaluate_candidate(
    model_name: str, alias: str, eval_table: DatasetManifest, latency: LatencyConfig, seq_len: int, ctx: RunContext,
    *, required: bool = False, reuse: dict | None = None, validation_table: DatasetManifest | None = None,
) -> dict | None:  # fmt: skip
    """Accuracy (validation, which the gates use, and eval, reported) and batch-1 p50 of the ONNX
    version ``alias`` points at; None if there is none.

    The version is pinned (``models:/NAME/N``) so a concurrent alias move cannot mix two models.
    ``reuse`` is a result already measured for the same version (challenger == champion).
    """
    version = get_alias_version(model_name, alias, must_exist=required)
    if version is None:
        if required:
            raise RegistryError(f"registered model {model_name!r} has no {alias!r} alias")
        return None
    if reuse is not None and reuse["version"] == str(version.version):
        return reuse | {"alias": alias}
    info = _version_info(version)
    bundle = resolve_onnx_bundle(info["uri"], scratch_dir(ctx.run_key, "registry", f"{model_name}-v{info['version']}"))
    classifier = OnnxClassifier.load(bundle)
    frame = fetch_dataset(eval_table)
    texts = list(frame["text"])
    pairs = list(frame["text_pair"]) if "text_pair" in frame else None
    seq_lens = sorted({*latency.seq_lens, seq_len})
    target_cfg = latency.targets[0]
    with step_run(ctx.parent_run_id, f"evaluate-{alias}", tags={"landing.registry_version": info["uri"]}):
        logits = classifier.logits(texts, pairs)
        metrics = classification_metrics(
            label_ids(frame["label"], classifier.labels), logits.argmax(-1), len(classifier.labels)
        )
        validation = None
        if validation_table is not None:
            held = fetch_dataset(validation_table)
            held_logits = classifier.logits(list(held["text"]), list(held["text_pair"]) if "text_pair" in held else None)
            validation = classification_metrics(
                label_ids(held["label"], classifier.labels), held_logits.argmax(-1), len(classifier.labels)
            )["accuracy"]
            mlflow.log_metric("validation_accuracy", validation)
        runner = make_target({"kind": target_cfg.kind, **target_cfg.options})
        report = runner.measure(classifier.model_file, latency.model_copy(update={"seq_lens": seq_lens}),
                                tokenizer_json=bundle / TOKENIZER_FILE, texts=texts[:LATENCY_TEXTS])  # fmt: skip
        p50 = {str(s): report.p50(s) for s in seq_lens}
        mlflow.log_metrics({"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                            **{f"p50_ms_seq{s}": v for s, v in p50.items()}})  # fmt: skip
        mlflow.log_params({"alias": alias, "model_uri": info["uri"], "eval": eval_table.uri, "target": runner.name})
    parity = version.tags.get(PARITY_TAG)
    return info | {
        "alias": alias, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "rows": len(texts),
        "accuracy_split": "eval", "validation_accuracy": validation,
        "latency_p50_ms": p50, "latency_target": runner.name, "precision": classifier.precision,
        "parity": json.loads(parity) if parity else None, "pytorch_version": version.tags.get(PYTORCH_VERSION_TAG),
    }  # fmt: skip


def decide_promotion(challenger: dict, champion: dict | None, gates: PromotionGates) -> dict:
    """Pure: which gates the challenger passes against the champion, and so whether it is promoted.

    With no champion the accuracy gate has nothing to compare against and the challenger becomes
    the first champion, but the absolute gates (latency bound, parity) still apply.
    """
    checks: list[tuple[str, bool, str]] = []
    if champion is not None and champion["version"] == challenger["version"]:
        return {"promote": False, "failed_gates": [], "challenger_version": challenger["version"],
                "champion_version": champion["version"],
                "reasons": [f"challenger v{challenger['version']} is already the champion"]}  # fmt: skip
    if champion is None:
        checks.append(("accuracy", True, "no champion yet: the challenger becomes the first champion"))
    else:
        # Decided on validation, so eval stays an unbiased report; eval only when there is no validation split.
        key = "validation_accuracy" if challenger.get("validation_accuracy") is not None else "accuracy"
        split = "validation" if key == "validation_accuracy" else "eval (no validation split)"
        gain = challenger[key] - champion[key]
        ok = gain >= gates.min_accuracy_gain - 1e-9
        checks.append(("accuracy", ok, f"{challenger[key]:.4f} vs champion {champion[key]:.4f} on {split}: "
                                       f"gain {gain:+.4f}, required >= {gates.min_accuracy_gain:+.4f}"))  # fmt: skip
    if gates.max_latency_p50_ms is not None:
        seq = gates.latency_seq_len
        p50 = challenger.get("latency_p50_ms", {}).get(str(seq))
        ok = p50 is not None and p50 <= gates.max_latency_p50_ms
        found = "not measured" if p50 is None else f"{p50:.3f} ms"
        checks.append(("latency", ok, f"p50 at seq {seq} {found}, max {gates.max_latency_p50_ms:g} ms"))
    if gates.require_parity:
        ok = bool(challenger.get("parity"))
        checks.append(("parity", ok, "parity record " + ("present" if ok else f"missing ({PARITY_TAG} tag)")))
    failed = [name for name, ok, _ in checks if not ok]
    return {
        "promote": not failed, "failed_gates": failed,
        "challenger_version": challenger["version"], "champion_version": champion and champion["version"],
        "reasons": [f"{name} gate {'passed' if ok else 'FAILED'}: {detail}" for name, ok, detail in checks],
    }  # fmt: skip


@task(name="apply-promotion")
def apply_promotion(
    registered_model: str, challenger: dict, champion: dict | None, decision: dict, ctx: RunContext
) -> dict:
    """Move ``champion`` (ONNX name, and the PyTorch version it came from) only on a passing decision; record why."""
    onnx_name = challenger["name"]
    if decision["promote"]:
        targets = {onnx_name: challenger["version"]}
        if challenger.get("pytorch_version"):
            targets[registered_model] = challenger["pytorch_version"]
        move_aliases(CHAMPION, targets)
    record = decision | {"mlflow_run_id": ctx.parent_run_id, FLOW_RUN_TAG: ctx.flow_run_id}
    record_decision(onnx_name, challenger["version"], record)
    full = record | {"registered_model": onnx_name, "challenger": challenger, "champion": champion}
    MlflowClient().log_dict(ctx.parent_run_id, full, "promotion.json")
    return record
