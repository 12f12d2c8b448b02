"""Training steps: fine-tune a teacher, distil a student, train a no-KD baseline."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
from prefect import task
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from landing.data_contracts.logits import align_logits
from landing.data_contracts.manifest import DatasetManifest, LogitsManifest, ModelManifest, TeacherManifest
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
from landing.models.specs import AnySpec, PretrainedModel, PromptModel, WordStudentModel, as_spec
from landing.models.training import LabelledRows, TrainingParams, TrainResult, fit_classifier
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


def _checkpoint_dir(role: str, fingerprint: dict) -> Path:
    """Stable per inputs, code and library versions: a re-run after a crash resumes the same
    checkpoints, a code change never resumes an old one."""
    keyed = {**fingerprint, "__environment__": environment_digest()}
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(get_settings().state_dir, "checkpoints", f"{role}-{digest}")


@contextmanager
def resumable_checkpoints(role: str, fingerprint: dict) -> Iterator[Path]:
    """The step's checkpoint directory, kept while the step may crash and removed once its block (training
    and publishing the model) completes: the step's cached result replaces it from then on, and each
    checkpoint also holds the optimizer state, about three times the model."""
    path = _checkpoint_dir(role, fingerprint)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def teacher_identity(model: ModelManifest) -> str:
    return f"{model.role}@sha256:{model.sha256[:16]}"


@dataclass(frozen=True)
class TrainingJob:
    """One training step's inputs, resolved from its manifests: all that a training strategy below reads."""

    role: str
    spec: AnySpec
    training: TrainingParams
    labels: list[str]
    texts: list[str]
    text_pairs: list[str] | None
    label_ids: list[int]
    teacher_logits: np.ndarray | None
    distillation: KDParams | None
    teacher: TeacherManifest | None
    checkpoints: Path
    ctx: RunContext
    unlabelled_texts: list[str] | None = None
    example_weights: list[float] | None = None
    validation: LabelledRows | None = None  # for early stopping

    @property
    def online(self) -> OnlineTeacher | None:
        return self.distillation.online if self.distillation is not None else None


@dataclass
class TrainedClassifier:
    """A trained transformers classifier, as ``publish_model`` saves, publishes and logs it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    result: TrainResult

    def save(self, out: Path) -> str:
        return save_classifier(self.model, self.tokenizer, out)

    def log_model(self, out: Path) -> str:
        return log_classifier(self.model, self.tokenizer)

    def publish_extras(self, role: str, training: TrainingParams, ctx: RunContext, out: Path) -> dict:
        return {}


@dataclass
class TrainedWordStudent(TrainedClassifier):
    """A bag-of-words or BiLSTM student: its own files, and an ONNX bundle (parity-checked) for ``landing predict``."""

    kind: str = "bow"

    def save(self, out: Path) -> str:
        from landing.models.word_students import save_word_student

        return save_word_student(self.model, self.tokenizer, out)

    def log_model(self, out: Path) -> str:
        mlflow.log_artifacts(str(out), artifact_path="model")
        return f"runs:/{mlflow.active_run().info.run_id}/model"

    def publish_extras(self, role: str, training: TrainingParams, ctx: RunContext, out: Path) -> dict:
        from landing.models.word_onnx import export_word_student

        bundle = scratch_dir(ctx.run_key, "models", f"{role}-onnx")
        export_word_student(out, bundle, training.max_seq_length)
        onnx_uri = publish_dir(bundle, ctx.key("models", f"{role}-onnx"))
        mlflow.log_artifacts(str(bundle), artifact_path="onnx")
        mlflow.log_metric("vocabulary", self.tokenizer.vocab_size)
        return {"word_student": self.kind, "onnx_bundle": onnx_uri}


@task(name="train", cache_policy=STEP_CACHE, persist_result=True)
def train_model(
    role: str,
    spec: AnySpec,
    training: TrainingParams,
    labels: list[str],
    train: DatasetManifest,
    ctx: RunContext,
    *,
    transfer: DatasetManifest | None = None,
    logits: LogitsManifest | None = None,
    teacher: TeacherManifest | None = None,
    distillation: KDParams | None = None,
    masked_lm: ModelManifest | None = None,
    init_from: ModelManifest | None = None,
    validation: DatasetManifest | None = None,
) -> ModelManifest:
    """Train ``spec`` on the labelled split; with ``distillation``, also on the transfer set with teacher logits.

    A prompt spec without ``mlm_model`` takes ``masked_lm`` (an mlm_adapt result); its auxiliary MLM loss
    reads the transfer rows' text. ``init_from``: start from that saved model's weights (Meta-KD's stage 2
    from stage 1). A labelled table with an ``example_weight`` column weights its rows' losses. ``validation``:
    the split ``training.early_stopping_patience`` evaluates (ignored without it)."""
    spec = as_spec(spec)
    texts, pairs, y, soft = _training_rows(role, labels, train, transfer, logits, teacher, distillation)
    fingerprint = {
        "role": role, "spec": spec.model_dump(mode="json"), "training": asdict(training), "seed": ctx.seed, "train": train.sha256,
        "transfer": transfer and transfer.sha256, "logits": logits and logits.sha256,
        "distillation": distillation and asdict(distillation), "masked_lm": masked_lm and masked_lm.sha256,
        "init_from": init_from and init_from.sha256,
    }  # fmt: skip
    held_out = _validation_rows(role, training, labels, validation)
    if held_out is not None:  # a key only when read: runs without early stopping keep their cached steps
        fingerprint["validation"] = validation.sha256
    unlabelled_texts = None
    if isinstance(spec, PromptModel):
        spec, unlabelled_texts = _prompt_inputs(spec, masked_lm, transfer)
    if init_from is not None:
        spec = PretrainedModel(name_or_path=str(fetch_model_dir(init_from)))
    with step_run(ctx.parent_run_id, role), resumable_checkpoints(role, fingerprint) as checkpoints:
        log_params({"role": role, "model": spec.model_dump(mode="json"), "training": asdict(training), "seed": ctx.seed})
        if init_from is not None:
            log_params({"init_from": teacher_identity(init_from)})  # the saved model this training started from
        if distillation is not None:
            log_params({"distillation": asdict(distillation), "teacher": teacher_identity(teacher)})
        if distillation is not None and distillation.teacher_labels == "hard":  # the argmax became labels
            soft, distillation = None, None
        job = TrainingJob(role, spec, training, labels, texts, pairs, y, soft, distillation, teacher,
                          checkpoints, ctx, unlabelled_texts, _example_weights(train, len(texts)),
                          held_out)  # fmt: skip
        trained = training_strategy(job)(job)
        return publish_model(role, trained, training, labels, len(texts), ctx)


def _validation_rows(role: str, training: TrainingParams, labels: list[str],
                     validation: DatasetManifest | None) -> LabelledRows | None:  # fmt: skip
    """The validation split as rows, when this training stops early on it; None otherwise."""
    if not training.early_stopping_patience:
        return None
    if validation is None:
        raise UserError(f"{role}: training.early_stopping_patience needs a validation split "
                        "(data.split.validation_size > 0)")  # fmt: skip
    frame = fetch_dataset(validation)
    pairs = list(frame["text_pair"]) if "text_pair" in frame else None
    return LabelledRows(list(frame["text"]), label_ids(frame["label"], labels), pairs)


def training_strategy(job: TrainingJob) -> Callable[[TrainingJob], TrainedClassifier]:
    """How this job trains: a word student, with a served teacher, under torchrun, or in this process."""
    if job.validation is not None and (isinstance(job.spec, WordStudentModel) or job.online is not None
                                       or job.training.distributed.world_size > 1):  # fmt: skip
        raise UserError(f"{job.role}: training.early_stopping_patience works for in-process Trainer runs; not with a "
                        "word student, distillation.online or training.distributed")  # fmt: skip
    if isinstance(job.spec, WordStudentModel):
        return _fit_word_student
    if job.online is not None:
        return _fit_with_online_teacher
    if job.training.distributed.world_size > 1:
        return _fit_with_torchrun
    return _fit_in_process


def publish_model(
    role: str, trained: TrainedClassifier, training: TrainingParams, labels: list[str], rows: int, ctx: RunContext
) -> ModelManifest:
    """Inside a step's MLflow run: its training metrics, the model saved (safetensors), published and logged."""
    n_params, result = count_parameters(trained.model), trained.result
    mlflow.log_metrics(
        {"train_loss": result.train_loss, "train_runtime_s": result.train_runtime_s,
         "train_rows": rows, "parameters": n_params, "global_step": result.global_step}
    )  # fmt: skip
    if result.resumed_from:
        mlflow.set_tag("landing.resumed_from", result.resumed_from)
    if result.best_step is not None:  # early stopping kept this step's weights
        mlflow.log_metrics({"best_step": result.best_step, "best_validation_accuracy": result.best_validation_accuracy})
    mlflow.set_tag("landing.precision", "bf16 autocast" if result.bf16 else "fp32")
    out = scratch_dir(ctx.run_key, "models", role)
    sha = trained.save(out)
    extras = trained.publish_extras(role, training, ctx, out)
    uri = publish_dir(out, ctx.key("models", role))
    model_uri = trained.log_model(out)
    shutil.rmtree(out)  # published and logged: the store and MLflow keep it, fetch_model_dir brings it back
    run_id = mlflow.active_run().info.run_id
    return ModelManifest(
        uri=uri, sha256=sha, role=role, parameters=n_params, labels=labels, mlflow_model_uri=model_uri,
        mlflow_run_id=run_id, max_seq_length=training.max_seq_length, eval_batch_size=training.eval_batch_size,
        train_runtime_s=result.train_runtime_s, global_step=result.global_step, bf16=result.bf16, **extras,
    )  # fmt: skip


def _fit_in_process(job: TrainingJob) -> TrainedClassifier:
    needs_teacher = job.distillation is not None and job.distillation.needs_teacher_model
    return TrainedClassifier(*fit_classifier(
        job.spec, job.labels, job.texts, job.label_ids, job.training, job.checkpoints, seed=job.ctx.seed,
        text_pairs=job.text_pairs, teacher_logits=job.teacher_logits, distillation=job.distillation,
        callbacks=[MlflowMetricsCallback()], unlabelled_texts=job.unlabelled_texts, example_weights=job.example_weights,
        teacher_dir=str(fetch_model_dir(job.teacher)) if needs_teacher else None, validation=job.validation,
    ))  # fmt: skip


def _example_weights(train: DatasetManifest, rows: int) -> list[float] | None:
    """The labelled table's ``example_weight`` column (transfer rows after it weigh 1), or None without one."""
    frame = fetch_dataset(train)
    if "example_weight" not in frame:
        return None
    weights = [float(w) for w in frame["example_weight"]]
    return weights + [1.0] * (rows - len(weights))


def _prompt_inputs(
    spec: PromptModel, masked_lm: ModelManifest | None, transfer: DatasetManifest | None
) -> tuple[PromptModel, list[str] | None]:
    """(the spec with its masked LM as a local directory, the auxiliary MLM texts or None)."""
    if spec.mlm_model is None:
        if masked_lm is None:
            raise UserError("a prompt method needs a masked LM: mlm_model, or the run's mlm_adapt")
        spec = spec.model_copy(update={"mlm_model": str(fetch_model_dir(masked_lm))})
    wants_text = spec.prompt.unlabelled_mlm_weight > 0
    return spec, list(fetch_dataset(transfer)["text"]) if wants_text and transfer is not None else None


def _training_rows(
    role: str, labels: list[str], train: DatasetManifest, transfer: DatasetManifest | None,
    logits: LogitsManifest | None, teacher: TeacherManifest | None, distillation: KDParams | None,
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


def _fit_word_student(job: TrainingJob) -> TrainedWordStudent:
    """A bag-of-words or BiLSTM student: vocabulary from the training text, the same KD losses."""
    from landing.models.word_students import build_word_student, build_word_tokenizer, fit_word_student

    spec, teacher, online = job.spec, job.teacher, job.online
    if job.text_pairs is not None:
        raise UserError(f"student.model.kind {spec.kind!r}: word students take one text; this table has pairs")
    tokenizer = build_word_tokenizer(job.texts, language=spec.language, min_freq=spec.min_freq, max_size=spec.max_size)
    shape = {"embedding_dim": spec.embedding_dim, "hidden_size": spec.hidden_size, "dropout": spec.dropout}
    if spec.kind == "bilstm":
        shape |= {"num_layers": spec.num_layers, "pooling": spec.pooling}
    model = build_word_student(spec.kind, tokenizer, job.labels, seed=job.ctx.seed, **shape)
    teacher_logits = job.teacher_logits
    if online is not None:  # the served teacher answers every row once; still no logits file
        with serving_teacher(fetch_model_dir(teacher), teacher_identity(teacher), teacher.max_seq_length,
                             host=online.host, port=online.port) as url:  # fmt: skip
            client = TeacherClient(url, job.texts, None, params=online, expected_teacher_id=teacher_identity(teacher),
                                   num_labels=len(job.labels))  # fmt: skip
            try:
                teacher_logits = client(list(range(len(job.texts))))
            finally:
                client.close()
    result = fit_word_student(model, tokenizer, job.texts, job.label_ids, teacher_logits, job.training,
                              job.distillation, job.ctx.seed, checkpoint_dir=job.checkpoints)  # fmt: skip
    return TrainedWordStudent(model, tokenizer, result, kind=spec.kind)


def _fit_with_online_teacher(job: TrainingJob) -> TrainedClassifier:
    """Serve the teacher for the length of the training and ask it for each batch's logits."""
    if job.training.distributed.world_size > 1:
        raise TeacherServiceError("distillation.online: not available with distributed training (training.distributed)")
    identity, online, teacher = teacher_identity(job.teacher), job.online, job.teacher
    with serving_teacher(fetch_model_dir(teacher), identity, teacher.max_seq_length, host=online.host,
                         port=online.port) as url:  # fmt: skip
        _step_logger().info("online distillation: teacher %s served at %s", identity, url)
        client = TeacherClient(url, job.texts, job.text_pairs, params=online, expected_teacher_id=identity,
                               num_labels=len(job.labels))  # fmt: skip
        try:
            trained = fit_classifier(job.spec, job.labels, job.texts, job.label_ids, job.training, job.checkpoints,
                                     seed=job.ctx.seed, text_pairs=job.text_pairs, distillation=job.distillation,
                                     callbacks=[MlflowMetricsCallback()], online_teacher=client)  # fmt: skip
        finally:
            client.close()
        mlflow.log_metrics({"teacher_requests": client.requests})
    return TrainedClassifier(*trained)


def _fit_with_torchrun(job: TrainingJob) -> TrainedClassifier:
    """Train under torchrun DDP (one process per device, see models/distributed.py) and load the result.

    The ranks get their inputs as files in the step's scratch directory and global rank 0 saves
    the model there; the Trainer's log history is replayed into this step's MLflow run afterwards,
    so metrics look the same as for an in-process run.
    """
    if job.distillation is not None and job.distillation.needs_teacher_model:
        raise UserError(f"distillation.type {job.distillation.type!r}: intermediate-layer losses run in one "
                        "process; set training.distributed.nproc_per_node to 1")  # fmt: skip
    launch = job.training.distributed
    backend = process_group_backend(launch.backend)
    log_params({"distributed": {"world_size": launch.world_size, "process_group": backend}})
    logger = _step_logger()
    model_dir, result, history = train_distributed(
        launch, scratch_dir(job.ctx.run_key, "ddp", job.role), step=f"train {job.role}", log=logger.info,
        spec=job.spec, labels=job.labels, seed=job.ctx.seed, texts=job.texts, label_ids=job.label_ids,
        params=job.training, checkpoint_dir=job.checkpoints, text_pairs=job.text_pairs,
        teacher_logits=job.teacher_logits, distillation=job.distillation,
    )  # fmt: skip
    for entry in history:
        step = entry.pop("step")
        log_trainer_metrics(entry, step)
    return TrainedClassifier(*load_classifier(str(model_dir)), result)


def _step_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a task run (torchrun's output then shows in the UI), else a plain one."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("landing.train")
