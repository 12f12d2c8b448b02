"""Fine-tuning and distillation on top of transformers' ``Trainer``.

The Trainer already gives progress bars, checkpointing every N steps and exact
resumption (optimizer, scheduler and RNG state), so we only add the
distillation loss (``DistillationTrainer.compute_loss``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    EarlyStoppingCallback,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from landing.models.cpu import native_bf16
from landing.models.data import EncodedTable, KDCollator, OnlineTeacherCollator, TeacherLogitsFn
from landing.models.fewshot.params import ContrastiveParams
from landing.models.kd import DistillBatch, ForwardOutputs, distillation_loss
from landing.models.loading import build_classifier
from landing.models.params import KDParams, TrainerParams, TrainingParams
from landing.models.specs import AnySpec, ContrastiveModel, as_spec

log = logging.getLogger(__name__)
# What Trainer._save_checkpoint writes; trainer_state.json comes last, after the optimizer and RNG state.
CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")


def checkpoint_is_complete(path: Path) -> bool:
    """Every file a resume reads exists and is whole: trainer_state.json parses, the torch files' zip
    archives pass their CRC check and the safetensors header reads. Nothing is unpickled here."""
    if not all((path / name).is_file() for name in CHECKPOINT_FILES):
        return False
    try:
        json.loads((path / "trainer_state.json").read_text())
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):  # torch.save writes zip archives
            with zipfile.ZipFile(path / name) as archive:
                if archive.testzip() is not None:
                    return False
        with safe_open(path / "model.safetensors", framework="pt"):
            pass
    except (OSError, ValueError, zipfile.BadZipFile, SafetensorError):  # a write cut short
        return False
    return True


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """Newest checkpoint that was completely written; broken ones are moved aside with a warning
    (to ``incomplete-<name>-<time>``: the Trainer's rotation globs ``checkpoint-*`` and would delete
    anything it matches) so they are never resumed and stay there to be looked at."""
    if not checkpoint_dir.is_dir():
        return None
    found = [p for p in checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if checkpoint_is_complete(path):
            return str(path)
        aside = path.with_name(f"incomplete-{path.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        log.warning("checkpoint %s was not completely written; moved to %s, not resumed", path, aside)
        path.rename(aside)
    return None


class DistillationTrainer(Trainer):
    """Trainer whose loss is the configured distillation losses (see models/kd.py).

    The adaptor between model outputs and losses: the student's forward outputs (with hidden
    states / attentions only when a loss needs them) and the teacher's logits become one
    :class:`DistillBatch`.
    """

    loss_is_scaled_for_ga = False  # our loss is a per-batch mean

    def __init__(self, *args, distillation: KDParams, teacher_model: PreTrainedModel | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from landing.models.kd_layers import outputs_needed

        self.distillation = distillation
        self.forward_options = outputs_needed(distillation)
        self.teacher_model, self.projections = None, None
        if distillation.needs_teacher_model:
            from landing.models.kd_layers import check_models, projections

            if teacher_model is None:
                raise ValueError(f"distillation type {distillation.type!r} needs the teacher model, not only its logits")
            check_models(distillation, self.model, teacher_model)
            if "output_attentions" in self.forward_options and hasattr(self.model, "set_attn_implementation"):
                self.model.set_attn_implementation("eager")  # SDPA returns no attention probabilities
            self.teacher_model = teacher_model.to(self.args.device).eval()
            self.projections = projections(distillation, self.model, teacher_model).to(self.args.device)

    def create_optimizer(self, model=None):
        """The student's parameters, plus the width projections of the intermediate losses (not saved with it)."""
        from landing.models.kd_layers import add_projections

        return add_projections(super().create_optimizer(model), self.projections)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "teacher_logits" not in inputs:  # validation rows (early stopping): only their labels
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        teacher = ForwardOutputs(logits=inputs.pop("teacher_logits"))
        labels = inputs.pop("labels")
        example_weights = inputs.pop("example_weights", None)
        options = self.forward_options
        outputs = model(**inputs, **options)
        if self.teacher_model is not None:
            from landing.models.kd_layers import teacher_outputs

            ran = teacher_outputs(self.teacher_model, inputs, options)
            teacher = ForwardOutputs(teacher.logits, ran.get("hidden_states"), ran.get("attentions"))
        student = ForwardOutputs(outputs.logits, outputs.get("hidden_states"), outputs.get("attentions"))
        batch = DistillBatch(student, teacher, labels, inputs.get("attention_mask"), example_weights, self.projections)
        loss = distillation_loss(batch, self.distillation)
        return (loss, outputs) if return_outputs else loss


@dataclass
class TrainResult:
    global_step: int
    train_loss: float
    train_runtime_s: float
    resumed_from: str | None
    bf16: bool = False  # whether training.bf16: auto chose bf16 autocast on this machine
    best_step: int | None = None  # early stopping: the step whose weights were kept
    best_validation_accuracy: float | None = None


def world_size() -> int:
    """Processes training together: torchrun's ``WORLD_SIZE``, 1 when run without it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class LabelledRows:
    """Labelled rows as texts (and pairs) with label ids: e.g. the validation split early stopping reads."""

    texts: Sequence[str]
    label_ids: Sequence[int]
    text_pairs: Sequence[str] | None = None


def per_device_batch_size(batch_size: int, processes: int) -> int:
    """``batch_size`` is the global batch, so N processes give the same optimisation as one."""
    if batch_size % processes:
        raise ValueError(f"training.batch_size: {batch_size} (global) is not divisible by {processes} processes")
    return batch_size // processes


def uses_bf16(params: TrainerParams) -> bool:
    """``bf16: auto`` autocasts to bf16 only where the CPU has native bf16 (or on a GPU); FP32 elsewhere."""
    return params.bf16 == "auto" and (torch.cuda.is_available() or native_bf16())


def freeze(model: PreTrainedModel, params: TrainingParams) -> None:
    """No gradients for the embeddings and the lowest ``freeze_layers`` encoder layers (``training:`` knobs)."""
    from landing.models.pretrained import encoder_layers

    if params.freeze_embeddings:
        model.base_model.embeddings.requires_grad_(False)
    if params.freeze_layers:
        layers = encoder_layers(model)
        if params.freeze_layers > len(layers):
            raise ValueError(f"training.freeze_layers: {params.freeze_layers} > the model's {len(layers)} encoder layers")
        for layer in list(layers)[: params.freeze_layers]:
            layer.requires_grad_(False)


def early_stopping(params: TrainerParams) -> int:
    """The patience of early stopping on validation accuracy; 0 when off (only ``training:`` blocks have it)."""
    return params.early_stopping_patience if isinstance(params, TrainingParams) else 0


def _evaluation_arguments(params: TrainerParams) -> dict:
    """Validation accuracy at every checkpoint and the best checkpoint's weights at the end, for early stopping."""
    if not early_stopping(params):
        return {}
    return {"eval_strategy": "steps", "eval_steps": params.save_checkpoint_steps, "load_best_model_at_end": True,
            "metric_for_best_model": "accuracy", "greater_is_better": True,
            "per_device_eval_batch_size": params.eval_batch_size}  # fmt: skip


def _logits_only(outputs, labels) -> torch.Tensor:
    """The label logits of an evaluation batch, without the rest of the outputs (a prompt model's per-mask
    vocabulary scores would otherwise be gathered for every validation row)."""
    return outputs[0] if isinstance(outputs, tuple) else outputs


def _accuracy(prediction: EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((np.asarray(prediction.predictions).argmax(-1) == prediction.label_ids).mean())}


def training_arguments(
    params: TrainerParams, output_dir: Path, seed: int, ddp_backend: str | None = None
) -> TrainingArguments:
    return TrainingArguments(
        **_evaluation_arguments(params),
        output_dir=str(output_dir),
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        per_device_train_batch_size=per_device_batch_size(params.batch_size, world_size()),
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        max_grad_norm=params.max_grad_norm,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        warmup_steps=params.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        save_strategy="steps",
        save_steps=params.save_checkpoint_steps,
        save_total_limit=2,
        logging_steps=params.logging_steps,
        report_to="none",
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=False,
        ddp_backend=ddp_backend,
        bf16=uses_bf16(params),
        train_sampling_strategy="group_by_length" if params.group_by_length else "random",
        # Our losses are per-batch means. With this on, Trainer multiplies the loss by the number of
        # processes (meant for losses divided by a token count summed over all ranks), so DDP's gradient
        # average would give N × the one-process gradient and log N × the loss. Off: the mean of the
        # ranks' means, i.e. the global-batch mean. No effect on one device.
        average_tokens_across_devices=False,
    )


def train_classifier(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: EncodedTable,
    params: TrainerParams,  # the row length is the encoded table's; torchrun is the caller's
    checkpoint_dir: Path,
    *,
    seed: int,
    distillation: KDParams | None = None,
    callbacks: list[TrainerCallback] | None = None,
    ddp_backend: str | None = None,
    online_teacher: TeacherLogitsFn | None = None,
    unlabelled: EncodedTable | None = None,
    teacher_model: PreTrainedModel | None = None,
    validation: EncodedTable | None = None,
) -> TrainResult:
    """Train in place, resuming from the newest checkpoint in ``checkpoint_dir`` if a run crashed.

    Under torchrun (see models/distributed.py) the Trainer itself wraps the model in DDP and
    shards the batches; ``ddp_backend`` (gloo, nccl) picks the process-group backend. ``validation``:
    the labelled rows early stopping (``early_stopping_patience``) evaluates.
    """
    if distillation is not None and train.teacher_logits is None and online_teacher is None:
        raise ValueError("distillation needs teacher logits for every training row, or an online teacher")
    patience = early_stopping(params)
    if patience and validation is None:
        raise ValueError("training.early_stopping_patience: early stopping needs the validation rows")
    if patience and online_teacher is not None:
        raise ValueError("training.early_stopping_patience: not available with distillation.online")
    args = training_arguments(params, checkpoint_dir, seed, ddp_backend)
    stopper = [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []
    common = dict(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=validation if patience else None,
        compute_metrics=_accuracy if patience else None,
        preprocess_logits_for_metrics=_logits_only if patience else None,
        data_collator=OnlineTeacherCollator(tokenizer, online_teacher) if online_teacher else KDCollator(tokenizer),
        processing_class=tokenizer,
        callbacks=[*(callbacks or []), *stopper],
    )
    prompt = getattr(model, "prompt_params", None)  # a prompt classifier (models/fewshot) trains with its losses
    if prompt is not None:
        from landing.models.fewshot.prompt_training import PromptTrainer, fit_prototypes, prepare_for_training

        prepare_for_training(model, prompt, params.max_seq_length, train)
        trainer = PromptTrainer(prompt=prompt, unlabelled=unlabelled, **common)
    else:
        trainer = (DistillationTrainer(distillation=distillation, teacher_model=teacher_model, **common)
                   if distillation else Trainer(**common))  # fmt: skip
    resume = last_complete_checkpoint(checkpoint_dir)
    output = trainer.train(resume_from_checkpoint=resume)
    if prompt is not None:
        fit_prototypes(model, tokenizer, train)  # CPT: class prototypes into the weights
    return TrainResult(
        global_step=output.global_step,
        train_loss=float(output.training_loss),
        train_runtime_s=float(output.metrics.get("train_runtime", 0.0)),
        resumed_from=resume,
        bf16=args.bf16,
        best_step=trainer.state.best_global_step if patience else None,
        best_validation_accuracy=trainer.state.best_metric if patience else None,
    )


def fit_classifier(
    spec: AnySpec | Mapping[str, Any], labels: Sequence[str], texts: Sequence[str], label_ids: Sequence[int], params: TrainingParams,
    checkpoint_dir: Path, *, seed: int, text_pairs: Sequence[str] | None = None,
    teacher_logits: np.ndarray | None = None, distillation: KDParams | None = None,
    callbacks: list[TrainerCallback] | None = None, ddp_backend: str | None = None,
    online_teacher: TeacherLogitsFn | None = None, unlabelled_texts: Sequence[str] | None = None,
    teacher_dir: str | None = None, example_weights: Sequence[float] | None = None,
    validation: LabelledRows | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, TrainResult]:  # fmt: skip
    """Build ``spec`` (same seed, same start), encode the rows and train it: one step's whole training.

    ``online_teacher`` (row indices → logits) replaces ``teacher_logits``: asked per training batch.
    ``unlabelled_texts``: a prompt classifier's auxiliary MLM text. ``teacher_dir``: the saved teacher, run
    alongside the student when an intermediate-layer loss needs its hidden states or attentions.
    ``validation``: the rows early stopping evaluates (read only when ``early_stopping_patience`` is set)."""
    spec = as_spec(spec)
    model, tokenizer = build_classifier(spec, list(labels), seed=seed)
    freeze(model, params)
    if isinstance(spec, ContrastiveModel) and params.early_stopping_patience:
        raise ValueError("training.early_stopping_patience: the contrastive model trains in its own loop, without it")
    if isinstance(spec, ContrastiveModel):  # SetFit-style: its own two-stage loop, not the Trainer
        return model, tokenizer, _fit_contrastive(model, tokenizer, spec.contrastive, texts, label_ids, params, seed)
    if example_weights is not None and distillation is None:
        raise ValueError("example weights apply to the distillation losses; this training has none")
    dataset = EncodedTable(tokenizer, texts, params.max_seq_length, text_pairs=text_pairs, labels=label_ids,
                           teacher_logits=teacher_logits, with_row_index=online_teacher is not None,
                           example_weights=example_weights)  # fmt: skip
    unlabelled = EncodedTable(tokenizer, unlabelled_texts, params.max_seq_length) if unlabelled_texts else None
    teacher_model = layer_teacher(teacher_dir, tokenizer) if distillation and distillation.needs_teacher_model else None
    held_out = None
    if validation is not None and params.early_stopping_patience:
        held_out = EncodedTable(tokenizer, validation.texts, params.max_seq_length, text_pairs=validation.text_pairs,
                                labels=validation.label_ids)  # fmt: skip
    result = train_classifier(model, tokenizer, dataset, params, checkpoint_dir, seed=seed,
                              distillation=distillation, callbacks=callbacks, ddp_backend=ddp_backend,
                              online_teacher=online_teacher, unlabelled=unlabelled, teacher_model=teacher_model,
                              validation=held_out)  # fmt: skip
    return model, tokenizer, result


def _fit_contrastive(model, tokenizer, options: ContrastiveParams, texts, label_ids, params: TrainingParams,
                     seed: int) -> TrainResult:  # fmt: skip
    from landing.models.fewshot.contrastive import train_contrastive

    stats = train_contrastive(model, tokenizer, texts, label_ids, options, params, seed=seed)
    return TrainResult(global_step=stats["steps"], train_loss=stats["final_loss"], train_runtime_s=stats["seconds"],
                       resumed_from=None)  # fmt: skip


def layer_teacher(teacher_dir: str | None, student_tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The saved teacher for the intermediate losses, with eager attention (the attention probabilities are
    returned), refused when its vocabulary differs from the student's: the two read the same input ids."""
    from transformers import AutoModelForSequenceClassification

    from landing.models.kd_layers import same_vocabulary
    from landing.models.loading import register_model_classes
    from landing.models.pretrained import load_tokenizer

    if teacher_dir is None:
        raise ValueError("intermediate-layer distillation needs the saved teacher model")
    if not same_vocabulary(student_tokenizer, load_tokenizer(teacher_dir)):
        raise ValueError("intermediate-layer distillation: the student's vocabulary differs from the teacher's, so the "
                         "same input ids would mean different tokens; use logits-only losses (vanilla_kd) here")  # fmt: skip
    register_model_classes()
    return AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager").eval()
