"""Training and prediction of the joint intent + slot model (``models/slu.py``) through transformers' Trainer,
with the same optimisation knobs (``TrainerParams``) and checkpoint resumption as the sentence classifiers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback

from .kd import vanilla_kd_per_example
from .kd_layers import add_projections, check_models, outputs_needed, projections
from .kd_registry import DistillBatch, ForwardOutputs
from .loading import build_classifier
from .params import KDParams, TrainerParams
from .slu import IGNORE, JointIntentSlotModel, JointOutput, encode_utterances, word_predictions
from .slu_spans import first_subwords
from .training import TrainResult, last_complete_checkpoint, training_arguments


@dataclass(frozen=True)
class Utterances:
    """Pre-split words; their BIO tags and intent when labelled (None for unlabelled transfer rows); the
    teacher's intent logits and per-word slot logits (on each word's first sub-word) when distilling."""

    tokens: Sequence[Sequence[str]]
    tags: Sequence[Sequence[str]] | None = None
    intents: Sequence[str] | None = None
    teacher_intent_logits: Sequence[Sequence[float]] | None = None
    teacher_slot_logits: Sequence[Sequence[Sequence[float]]] | None = None


@dataclass(frozen=True)
class JointDistillation:
    """``vanilla_kd`` (its temperature and alpha) on both heads, each with its own weight; the other losses of
    ``kd.type`` (intermediate layers) on the encoders."""

    kd: KDParams
    intent_weight: float = 1.0
    slot_weight: float = 1.0


def build_joint_model(spec, tags: Sequence[str], intents: Sequence[str], slot_loss_weight: float = 1.0,
                      seed: int = 0) -> tuple[JointIntentSlotModel, PreTrainedTokenizerBase]:  # fmt: skip
    """The joint model on the encoder any transformer spec builds (pretrained, random, a layer subset)."""
    classifier, tokenizer = build_classifier(spec, ["_"], seed)  # its encoder; the one-label head is dropped
    return JointIntentSlotModel(classifier.base_model, len(intents), len(tags), slot_loss_weight), tokenizer


class EncodedUtterances(torch.utils.data.Dataset):
    """One row per utterance, unpadded: the collator pads each batch to its longest row."""

    def __init__(self, tokenizer, rows: Utterances, tag_ids: dict[str, int], intent_ids: dict[str, int], max_length: int):
        n = len(rows.tokens)
        tags, intents = rows.tags or [None] * n, rows.intents or [None] * n
        self.items = []
        for index, tokens in enumerate(rows.tokens):
            labelled = tags[index] is not None
            enc = encode_utterances(tokenizer, [tokens], max_length, tags=[tags[index] or ["O"] * len(tokens)],
                                    tag_ids=tag_ids)  # fmt: skip
            item = {"input_ids": enc["input_ids"][0], "attention_mask": enc["attention_mask"][0],
                    "slot_labels": enc["slot_labels"][0] if labelled else torch.full_like(enc["input_ids"][0], IGNORE),
                    "intent_labels": intent_ids[intents[index]] if intents[index] is not None else IGNORE}  # fmt: skip
            if rows.teacher_intent_logits is not None:
                item |= _teacher_targets(enc["word_ids"][0], rows.teacher_intent_logits[index],
                                         rows.teacher_slot_logits[index], len(tag_ids))  # fmt: skip
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def _teacher_targets(word_ids: Sequence[int | None], intent: Sequence[float], slots: Sequence[Sequence[float]],
                     n_tags: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """The teacher's word logits on each word's first sub-word (joined by word index); ``teacher_slot_mask``
    marks those positions (a word the teacher did not see, cut by its length, has none)."""
    logits, mask = torch.zeros(len(word_ids), n_tags), torch.zeros(len(word_ids), dtype=torch.bool)
    for word, position in first_subwords(word_ids).items():
        if word < len(slots):
            logits[position], mask[position] = torch.tensor(slots[word]), True
    return {"teacher_intent_logits": torch.tensor(intent), "teacher_slot_logits": logits, "teacher_slot_mask": mask}


def utterance_collator(pad_id: int):
    def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)

        def padded(key: str, value: int) -> torch.Tensor:
            return torch.stack([torch.nn.functional.pad(b[key], (0, width - len(b[key])), value=value) for b in batch])

        out = {"input_ids": padded("input_ids", pad_id), "attention_mask": padded("attention_mask", 0),
               "slot_labels": padded("slot_labels", IGNORE),
               "intent_labels": torch.tensor([b["intent_labels"] for b in batch])}  # fmt: skip
        if "teacher_intent_logits" in batch[0]:
            out["teacher_intent_logits"] = torch.stack([b["teacher_intent_logits"] for b in batch])
            out["teacher_slot_mask"] = padded("teacher_slot_mask", 0).bool()
            out["teacher_slot_logits"] = torch.stack([torch.nn.functional.pad(
                b["teacher_slot_logits"], (0, 0, 0, width - len(b["teacher_slot_logits"]))) for b in batch])  # fmt: skip
        return out

    return collate


class _JointTrainer(Trainer):
    """The joint loss, or with ``distillation`` ``vanilla_kd`` on both heads plus its intermediate-layer losses on
    the encoders (the teacher model run alongside on the same input ids; width projections trained with the
    student, as ``models/training.py``'s ``DistillationTrainer`` does for the classifiers)."""

    def __init__(self, *args, distillation: JointDistillation | None = None,
                 teacher_model: JointIntentSlotModel | None = None, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.distillation, self.teacher_model, self.projections, self.encoder_options = distillation, None, None, {}
        if distillation is not None and distillation.kd.needs_teacher_model:
            if teacher_model is None:
                raise ValueError(f"distillation type {distillation.kd.type!r} needs the teacher model, not only its logits")
            check_models(distillation.kd, self.model.encoder, teacher_model.encoder)
            self.encoder_options = outputs_needed(distillation.kd)
            if "output_attentions" in self.encoder_options:
                self.model.encoder.set_attn_implementation("eager")  # SDPA returns no attention probabilities
            self.teacher_model = teacher_model.to(self.args.device).eval()
            self.projections = projections(distillation.kd, self.model.encoder, teacher_model.encoder).to(self.args.device)

    def create_optimizer(self, model=None):
        return add_projections(super().create_optimizer(model), self.projections)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher = {k: inputs.pop(k) for k in ("teacher_intent_logits", "teacher_slot_logits", "teacher_slot_mask")
                   if k in inputs}  # fmt: skip
        if self.distillation is None:
            out = model(**inputs)
            return (out.loss, out) if return_outputs else out.loss
        out = model(inputs["input_ids"], inputs["attention_mask"], **self.encoder_options)
        loss = joint_kd_loss(out.intent_logits, out.slot_logits, inputs["intent_labels"], inputs["slot_labels"],
                             teacher, self.distillation)  # fmt: skip
        if self.teacher_model is not None:
            loss = loss + self._layer_loss(out, inputs)
        return (loss, out) if return_outputs else loss

    def _layer_loss(self, student: JointOutput, inputs: dict) -> torch.Tensor:
        with torch.no_grad():
            ran = self.teacher_model(inputs["input_ids"], inputs["attention_mask"], **self.encoder_options)
        batch = DistillBatch(ForwardOutputs(student.intent_logits, student.hidden_states, student.attentions),
                             ForwardOutputs(ran.intent_logits, ran.hidden_states, ran.attentions),
                             inputs["intent_labels"], inputs["attention_mask"], None, self.projections)  # fmt: skip
        return sum(weight * loss.fn(batch, self.distillation.kd).mean()
                   for loss, weight in self.distillation.kd.losses() if loss.needs_teacher_outputs)


def joint_kd_loss(intent_logits: torch.Tensor, slot_logits: torch.Tensor, intent_labels: torch.Tensor,
                  slot_labels: torch.Tensor, teacher: dict[str, torch.Tensor], distillation: JointDistillation) -> torch.Tensor:  # fmt: skip
    """``vanilla_kd`` on the intents plus, weighted apart, on the slots of the teacher's words (pure KL where a
    row or a word has no label)."""
    intent = vanilla_kd_per_example(intent_logits, teacher["teacher_intent_logits"], intent_labels, distillation.kd)
    mask = teacher["teacher_slot_mask"]
    slots = vanilla_kd_per_example(slot_logits[mask], teacher["teacher_slot_logits"][mask], slot_labels[mask],
                                   distillation.kd)  # fmt: skip
    return distillation.intent_weight * intent.mean() + distillation.slot_weight * slots.mean()


def train_joint(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase, rows: Utterances,
                tags: Sequence[str], intents: Sequence[str], params: TrainerParams, max_length: int,
                checkpoint_dir: Path, *, seed: int, distillation: JointDistillation | None = None,
                teacher_model: JointIntentSlotModel | None = None,
                callbacks: list[TrainerCallback] | None = None) -> TrainResult:  # fmt: skip
    """Train in place on ``rows`` (a tag outside ``tags`` is ignored, never guessed), with the teacher's logits
    when ``distillation`` (and ``teacher_model`` for its intermediate-layer losses), resuming from the newest
    complete checkpoint in ``checkpoint_dir``."""
    if distillation is not None and rows.teacher_intent_logits is None:
        raise ValueError("distillation needs the teacher's logits for every row")
    dataset = EncodedUtterances(tokenizer, rows, {t: i for i, t in enumerate(tags)}, {n: i for i, n in enumerate(intents)},
                       max_length)  # fmt: skip
    args = training_arguments(params, checkpoint_dir, seed)
    trainer = _JointTrainer(model=model, args=args, train_dataset=dataset, data_collator=utterance_collator(tokenizer.pad_token_id),
                            distillation=distillation, teacher_model=teacher_model, callbacks=callbacks)  # fmt: skip
    resume = last_complete_checkpoint(checkpoint_dir)
    output = trainer.train(resume_from_checkpoint=resume)
    return TrainResult(global_step=output.global_step, train_loss=float(output.training_loss),
                       train_runtime_s=float(output.metrics.get("train_runtime", 0.0)), resumed_from=resume,
                       bf16=args.bf16)  # fmt: skip


@torch.inference_mode()
def joint_teacher_logits(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase,
                         tokens: Sequence[Sequence[str]], max_length: int,
                         batch_size: int = 64) -> tuple[list[list[float]], list[list[list[float]]]]:  # fmt: skip
    """Per utterance: the intent logits, and the slot logits of each word (on its first sub-word; a word cut by
    ``max_length`` has none): what a student learns from, joined by word index."""
    model.eval()
    intents, slots = [], []
    for start in range(0, len(tokens), batch_size):
        enc = encode_utterances(tokenizer, tokens[start : start + batch_size], max_length)
        out = model(enc["input_ids"], enc["attention_mask"])
        intents += out.intent_logits.tolist()
        for row, ids in enumerate(enc["word_ids"]):
            first = first_subwords(ids)
            slots.append([out.slot_logits[row, first[w]].tolist() for w in sorted(first)])
    return intents, slots


@torch.inference_mode()
def predict_joint(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase, tokens: Sequence[Sequence[str]],
                  tags: Sequence[str], intents: Sequence[str], max_length: int,
                  batch_size: int = 64) -> tuple[list[str], list[list[str]]]:  # fmt: skip
    """(the intent, each word's tag) per utterance."""
    model.eval()
    predicted_intents, predicted_tags = [], []
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start : start + batch_size]
        enc = encode_utterances(tokenizer, chunk, max_length)
        out = model(enc["input_ids"], enc["attention_mask"])
        predicted_intents += [intents[i] for i in out.intent_logits.argmax(-1).tolist()]
        predicted_tags += word_predictions(out.slot_logits, enc["word_ids"], [len(t) for t in chunk], tags)
    return predicted_intents, predicted_tags
