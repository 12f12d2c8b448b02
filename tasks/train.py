"""Training steps: fine-tune a teacher, distil a student, train a no-KD baseline."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
from prefect import task
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from landing.data_contracts.logits import align_logits
from landing.data_contracts.manifest import ArtifactManifest, DatasetManifest
from landing.errors import UserError
from landing.infra.settings import get_settings
from landing.infra.teacher_client import TeacherClient, TeacherServiceError
from landing.infra.teacher_server import serving_teacher
from landing.infra.tracking import log_classifier, log_params, step_run
from landing.models.data import label_ids
from landing.models.distributed import process_group_backend, train_distributed
from landing.models.kd import IGNORE_LABEL
from landing.models.loading import count_parameters, load_classifier, save_classifier
from landing.models.params import KDParams, OnlineTeacher
from landing.models.training import TrainingParams, TrainResult, fit_classifier
from landing.models.word_students import WORD_STUDENTS
from landing.tasks.context import (
    STEP_CACHE,
    RunContext,
    environment_digest,
    fetch_dataset,
    fetch_logits,
    fetch_model_dir,
    publish_dir,
    scratch_dir,
)


class MlflowMetricsCallback(TrainerCallback):
    """Stream the Trainer's loss and learning rate into the step's MLflow run."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        log_trainer_metrics(logs or {}, state.global_step)


def log_trainer_metrics(logs: dict, step: int) -> None:
    numeric = {f"train/{k}": float(v) for k, v in logs.items() if isinstance(v, int | float)}
    if numeric:
        mlflow.log_metrics(numeric, step=step)


def checkpoint_dir(role: str, fingerprint: dict) -> Path:
    """Stable per inputs, code and library versions: a re-run after a crash resumes the same
    checkpoints, a code change never resumes an old one."""
    keyed = {**fingerprint, "__environment__": environment_digest()}
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(get_settings().state_dir, "checkpoints", f"{role}-{digest}")


def teacher_identity(model: ArtifactManifest) -> str:
    return f"{model.metadata['role']}@sha256:{model.sha256[:16]}"


@task(name="train", cache_policy=STEP_CACHE, persist_result=True)
def train_model(
    role: str,
    spec: dict,
    training: TrainingParams,
    labels: list[str],
    train: DatasetManifest,
    ctx: RunContext,
    *,
    transfer: DatasetManifest | None = None,
    logits: ArtifactManifest | None = None,
    teacher: ArtifactManifest | None = None,
    distillation: KDParams | None = None,
    masked_lm: ArtifactManifest | None = None,
    init_from: ArtifactManifest | None = None,
) -> ArtifactManifest:
    """Train ``spec`` on the labelled split; with ``distillation``, also on the transfer set with teacher logits.

    A prompt spec without ``mlm_model`` takes ``masked_lm`` (an mlm_adapt result); its auxiliary MLM loss
    reads the transfer rows' text. ``init_from``: start from that saved model's weights (Meta-KD's stage 2
    from stage 1). A labelled table with an ``example_weight`` column weights its rows' losses."""
    texts, pairs, y, soft = _training_rows(role, labels, train, transfer, logits, teacher, distillation)
    fingerprint = {
        "role": role, "spec": spec, "training": asdict(training), "seed": ctx.seed, "train": train.sha256,
        "transfer": transfer and transfer.sha256, "logits": logits and logits.sha256,
        "distillation": distillation and asdict(distillation), "masked_lm": masked_lm and masked_lm.sha256,
        "init_from": init_from and init_from.sha256,
    }  # fmt: skip
    unlabelled_texts = None
    if spec["kind"] == "prompt":
        spec, unlabelled_texts = _prompt_inputs(spec, masked_lm, transfer)
    if init_from is not None:
        spec = {"kind": "pretrained", "name_or_path": str(fetch_model_dir(init_from))}
    weights = _example_weights(train, len(texts))
    with step_run(ctx.parent_run_id, role):
        log_params({"role": role, "model": spec, "training": asdict(training), "seed": ctx.seed})
        if init_from is not None:
            log_params({"init_from": teacher_identity(init_from)})  # the saved model this training started from
        if distillation is not None:
            log_params({"distillation": asdict(distillation), "teacher": teacher_identity(teacher)})
        if distillation is not None and distillation.teacher_labels == "hard":  # the argmax became labels
            soft, distillation = None, None
        rows = dict(text_pairs=pairs, teacher_logits=soft, distillation=distillation)
        online = distillation.online if distillation is not None else None
        if spec["kind"] in WORD_STUDENTS:
            return _train_word_student(role, spec, training, labels, texts, y, ctx, teacher, online, **rows)
        if online is not None:
            model, tokenizer, result = _train_with_online_teacher(
                spec, labels, texts, y, training, checkpoint_dir(role, fingerprint), ctx, teacher, online, **rows
            )
        elif training.distributed.world_size > 1:
            if distillation is not None and distillation.needs_teacher_model:
                raise UserError(f"distillation.type {distillation.type!r}: intermediate-layer losses run in one "
                                "process; set training.distributed.nproc_per_node to 1")  # fmt: skip
            model, tokenizer, result = _train_with_torchrun(
                role, spec, training, labels, ctx, texts=texts, label_ids=y, params=training,
                checkpoint_dir=checkpoint_dir(role, fingerprint), **rows,
            )  # fmt: skip
        else:
            model, tokenizer, result = fit_classifier(
                spec, labels, texts, y, training, checkpoint_dir(role, fingerprint), seed=ctx.seed,
                callbacks=[MlflowMetricsCallback()], unlabelled_texts=unlabelled_texts, example_weights=weights, **rows,
                teacher_dir=str(fetch_model_dir(teacher)) if distillation and distillation.needs_teacher_model else None,
            )  # fmt: skip
        return publish_trained(role, model, tokenizer, result, training, labels, len(texts), ctx)


def publish_trained(
    role: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, result: TrainResult,
    training: TrainingParams, labels: list[str], rows: int, ctx: RunContext,
) -> ArtifactManifest:  # fmt: skip
    """Inside a step's MLflow run: its training metrics, the model saved (safetensors), published and logged."""
    n_params = count_parameters(model)
    mlflow.log_metrics(
        {"train_loss": result.train_loss, "train_runtime_s": result.train_runtime_s,
         "train_rows": rows, "parameters": n_params, "global_step": result.global_step}
    )  # fmt: skip
    if result.resumed_from:
        mlflow.set_tag("landing.resumed_from", result.resumed_from)
    out = scratch_dir(ctx.run_key, "models", role)
    sha = save_classifier(model, tokenizer, out)
    uri = publish_dir(out, ctx.key("models", role))
    model_uri = log_classifier(model, tokenizer)
    run_id = mlflow.active_run().info.run_id
    return ArtifactManifest(
        uri=uri, sha256=sha, kind="model",
        metadata={"role": role, "parameters": n_params, "labels": labels, "mlflow_model_uri": model_uri,
                  "mlflow_run_id": run_id, "max_seq_length": training.max_seq_length,
                  "eval_batch_size": training.eval_batch_size, "train_runtime_s": result.train_runtime_s,
                  "global_step": result.global_step},
    )  # fmt: skip


def _example_weights(train: DatasetManifest, rows: int) -> list[float] | None:
    """The labelled table's ``example_weight`` column (transfer rows after it weigh 1), or None without one."""
    frame = fetch_dataset(train)
    if "example_weight" not in frame:
        return None
    weights = [float(w) for w in frame["example_weight"]]
    return weights + [1.0] * (rows - len(weights))


def _prompt_inputs(
    spec: dict, masked_lm: ArtifactManifest | None, transfer: DatasetManifest | None
) -> tuple[dict, list[str] | None]:
    """(the spec with its masked LM as a local directory, the auxiliary MLM texts or None)."""
    if spec.get("mlm_model") is None:
        if masked_lm is None:
            raise UserError("a prompt method needs a masked LM: mlm_model, or the run's mlm_adapt")
        spec = {**spec, "mlm_model": str(fetch_model_dir(masked_lm))}
    wants_text = (spec["prompt"].get("unlabelled_mlm_weight") or 0) > 0
    return spec, list(fetch_dataset(transfer)["text"]) if wants_text and transfer is not None else None


def _training_rows(
    role: str, labels: list[str], train: DatasetManifest, transfer: DatasetManifest | None,
    logits: ArtifactManifest | None, teacher: ArtifactManifest | None, distillation: KDParams | None,
) -> tuple[list[str], list[str] | None, list[int], np.ndarray | None]:  # fmt: skip
    """(texts, text pairs, label ids, teacher logits): the labelled rows, plus with KD the transfer rows
    (unlabelled) and the teacher's logits joined by example id."""
    frame = fetch_dataset(train)
    frames = [frame]
    if distillation is not None:
        if teacher is None or (logits is None and distillation.online is None):
            raise ValueError(f"{role}: distillation needs the teacher model and its logits (or an online teacher)")
        if transfer is not None:
            frames.append(fetch_dataset(transfer))
    texts = [t for f in frames for t in f["text"]]
    pairs = [t for f in frames for t in f["text_pair"]] if "text_pair" in frame else None
    y = label_ids(frame["label"], labels) + [IGNORE_LABEL] * sum(len(f) for f in frames[1:])
    if distillation is None or distillation.online is not None:
        return texts, pairs, y, None
    soft = np.asarray(align_logits(
        [i for f in frames for i in f["id"]], fetch_logits(logits), expected_teacher_id=teacher_identity(teacher),
        expected_num_labels=len(labels), expected_label_names=labels,
    ), dtype=np.float32)  # fmt: skip
    if distillation.teacher_labels == "hard":  # unlabelled rows take the teacher's argmax as their label
        y = [t if t != IGNORE_LABEL else int(row.argmax()) for t, row in zip(y, soft, strict=True)]
    return texts, pairs, y, soft


def _train_word_student(
    role: str, spec: dict, training: TrainingParams, labels: list[str], texts: list[str], y: list[int],
    ctx: RunContext, teacher: ArtifactManifest | None, online: OnlineTeacher | None, *, text_pairs, teacher_logits,
    distillation,
) -> ArtifactManifest:  # fmt: skip
    """A bag-of-words or BiLSTM student: vocabulary from the training text, the same KD losses, saved with
    safetensors and exported to an ONNX bundle (parity-checked) that ``landing predict`` serves."""
    from landing.models.word_onnx import export_word_student
    from landing.models.word_students import (
        build_word_student,
        build_word_tokenizer,
        fit_word_student,
        save_word_student,
    )

    if text_pairs is not None:
        raise UserError(f"student.model.kind {spec['kind']!r}: word students take one text; this table has pairs")
    vocabulary = {k: spec[k] for k in ("language", "min_freq", "max_size")}
    tokenizer = build_word_tokenizer(texts, **vocabulary)
    bilstm_only = () if spec["kind"] == "bilstm" else ("num_layers", "pooling")
    options = {k: v for k, v in spec.items() if k not in ("kind", *vocabulary, *bilstm_only)}
    model = build_word_student(spec["kind"], tokenizer, labels, seed=ctx.seed, **options)
    if online is not None:  # the served teacher answers every row once; still no logits file
        with serving_teacher(fetch_model_dir(teacher), teacher_identity(teacher), teacher.metadata["max_seq_length"],
                             host=online.host, port=online.port) as url:  # fmt: skip
            client = TeacherClient(url, texts, None, params=online, expected_teacher_id=teacher_identity(teacher),
                                   num_labels=len(labels))  # fmt: skip
            try:
                teacher_logits = client(list(range(len(texts))))
            finally:
                client.close()
    result = fit_word_student(model, tokenizer, texts, y, teacher_logits, training, distillation, ctx.seed)
    out, bundle = scratch_dir(ctx.run_key, "models", role), scratch_dir(ctx.run_key, "models", f"{role}-onnx")
    sha = save_word_student(model, tokenizer, out)
    export_word_student(out, bundle, training.max_seq_length)
    n_params = count_parameters(model)
    mlflow.log_metrics({"train_loss": result.train_loss, "train_runtime_s": result.train_runtime_s,
                        "train_rows": len(texts), "parameters": n_params, "global_step": result.global_step,
                        "vocabulary": tokenizer.vocab_size})  # fmt: skip
    uri = publish_dir(out, ctx.key("models", role))
    onnx_uri = publish_dir(bundle, ctx.key("models", f"{role}-onnx"))
    mlflow.log_artifacts(str(out), artifact_path="model")
    mlflow.log_artifacts(str(bundle), artifact_path="onnx")
    run_id = mlflow.active_run().info.run_id
    return ArtifactManifest(
        uri=uri, sha256=sha, kind="model",
        metadata={"role": role, "parameters": n_params, "labels": labels, "mlflow_model_uri": f"runs:/{run_id}/model",
                  "mlflow_run_id": run_id, "max_seq_length": training.max_seq_length, "word_student": spec["kind"],
                  "eval_batch_size": training.eval_batch_size, "train_runtime_s": result.train_runtime_s,
                  "global_step": result.global_step, "onnx_bundle": onnx_uri},
    )  # fmt: skip


def _train_with_online_teacher(
    spec: dict, labels: list[str], texts: list[str], y: list[int], training: TrainingParams, checkpoints: Path,
    ctx: RunContext, teacher: ArtifactManifest, online: OnlineTeacher, *, text_pairs, distillation, **_,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, TrainResult]:  # fmt: skip
    """Serve the teacher for the length of the training and ask it for each batch's logits."""
    if training.distributed.world_size > 1:
        raise TeacherServiceError("distillation.online: not available with distributed training (training.distributed)")
    identity = teacher_identity(teacher)
    with serving_teacher(fetch_model_dir(teacher), identity, teacher.metadata["max_seq_length"], host=online.host,
                         port=online.port) as url:  # fmt: skip
        _step_logger().info("online distillation: teacher %s served at %s", identity, url)
        client = TeacherClient(url, texts, text_pairs, params=online, expected_teacher_id=identity,
                               num_labels=len(labels))  # fmt: skip
        try:
            trained = fit_classifier(spec, labels, texts, y, training, checkpoints, seed=ctx.seed, text_pairs=text_pairs,
                                     distillation=distillation, callbacks=[MlflowMetricsCallback()],
                                     online_teacher=client)  # fmt: skip
        finally:
            client.close()
        mlflow.log_metrics({"teacher_requests": client.requests})
    return trained


def _train_with_torchrun(
    role: str, spec: dict, training: TrainingParams, labels: list[str], ctx: RunContext, **request
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, TrainResult]:
    """Train under torchrun DDP (one process per device, see models/distributed.py) and load the result.

    The ranks get their inputs as files in the step's scratch directory and global rank 0 saves
    the model there; the Trainer's log history is replayed into this step's MLflow run afterwards,
    so metrics look the same as for an in-process run.
    """
    launch = training.distributed
    backend = process_group_backend(launch.backend)
    log_params({"distributed": {"world_size": launch.world_size, "process_group": backend}})
    logger = _step_logger()
    model_dir, result, history = train_distributed(
        launch, scratch_dir(ctx.run_key, "ddp", role), step=f"train {role}", log=logger.info,
        spec=spec, labels=labels, seed=ctx.seed, **request,
    )  # fmt: skip
    for entry in history:
        step = entry.pop("step")
        log_trainer_metrics(entry, step)
    model, tokenizer = load_classifier(str(model_dir))
    return model, tokenizer, result


def _step_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a task run (torchrun's output then shows in the UI), else a plain one."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("landing.train")
