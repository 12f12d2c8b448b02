"""Masked-LM adaptation (``mlm_adapt``): continued masked-LM training of an encoder, e.g. one without an MLM head.

Domain-adaptive pretraining on the task's own texts, and the way to get a fill-in model for
``mlm_da`` (models/augment/mlm.py) from an encoder published without its head (sentence-transformers
models such as MiniLM-L6): the encoder is loaded into its masked-LM class (``BertForMaskedLM`` for
BERT), a new head is initialised whose decoder is tied to the input embeddings, and only the top
``train_layers`` encoder layers plus the head's transform and bias are trained. The embeddings,
and with them the tied decoder, stay frozen, as do the lower layers: their weights are saved
bit-identical. A model that already has an MLM head keeps and trains it.

Masking is transformers' ``DataCollatorForLanguageModeling`` (``mask_probability`` of the tokens;
80 % ``[MASK]``, 10 % random, 10 % kept), training is transformers' ``Trainer`` (a step budget by default,
checkpointed and resumable like every other training here),
and masked-token top-1 accuracy is measured on the validation texts before and after, on the same
seeded masks. The result is saved as safetensors with its tokenizer, loadable by ``load_masked_lm``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as validated_dataclass

from landing.errors import UserError
from landing.models.params import SeqLength, TrainerParams

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

log = logging.getLogger(__name__)


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MlmAdaptParams(TrainerParams):
    """The knobs of masked-LM adaptation (``mlm_adapt``): a Trainer run with its own defaults (a step budget,
    a head-sized learning rate), plus which layers train and how tokens are masked."""

    max_steps: int = Field(800, description="optimizer steps, the texts cycled as needed; -1: train epochs instead")
    eval_batch_size: int = Field(64, gt=0)
    learning_rate: float = Field(5e-4, gt=0, description="for the top layers and the head (the rest is frozen)")
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    save_checkpoint_steps: int = Field(200, gt=0, description="a killed run resumes from the last checkpoint")
    train_layers: int = Field(2, ge=0, description="top encoder layers trained with the head; 0: the head only")
    mask_probability: float = Field(0.15, gt=0, lt=1, description="share of tokens selected for masking")
    max_seq_length: SeqLength = 128

    @model_validator(mode="after")
    def _a_budget(self) -> MlmAdaptParams:
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps: {self.max_steps}; give the optimizer steps (> 0), or -1 to train epochs")
        return self


def non_empty(texts: Sequence[str]) -> list[str]:
    return [t for t in texts if isinstance(t, str) and t.strip()]


class _Texts:
    """Tokenised texts as the collator wants them (input ids and the special-tokens mask, unpadded)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> None:
        texts = non_empty(texts)
        if not texts:
            self.items: list[dict] = []
            return
        enc = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
        keys = [k for k in ("input_ids", "token_type_ids", "special_tokens_mask") if k in enc]
        self.items = [{k: enc[k][i] for k in keys} for i in range(len(texts))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return dict(self.items[i])


def _load_for_mlm(base_name_or_path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, bool]:
    """The model in its masked-LM class and whether its head is new; encoder weights must all load."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as transformers_logging

    from landing.models.augment.mlm import MLM_HEAD_PREFIXES, has_mlm_head
    from landing.models.model_files import ModelFilesError
    from landing.models.pretrained import checked_from_pretrained, load_tokenizer

    had_head = has_mlm_head(base_name_or_path)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the new head's MISSING table is expected, said below in one line
    try:
        model, info = checked_from_pretrained(AutoModelForMaskedLM.from_pretrained, base_name_or_path,
                                       output_loading_info=True, use_safetensors=True)  # fmt: skip
    except ValueError as exc:  # a config transformers has no masked-LM class for
        raise ModelFilesError(f"mlm_adapt: {base_name_or_path!r} cannot be loaded as a masked LM ({exc})") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys", []))
    encoder_missing = [k for k in missing if not k.startswith(MLM_HEAD_PREFIXES)]
    if encoder_missing:
        raise ModelFilesError(f"mlm_adapt: {base_name_or_path!r}: encoder weights missing from the checkpoint "
                              f"({', '.join(encoder_missing[:5])}); adaptation needs a pretrained encoder")  # fmt: skip
    if missing:
        log.info("%s: new masked-LM head (%s initialised; decoder tied to the input embeddings)",
                 base_name_or_path, ", ".join(missing))  # fmt: skip
    tokenizer = load_tokenizer(base_name_or_path)
    if tokenizer.mask_token is None:
        raise ModelFilesError(f"mlm_adapt: {base_name_or_path!r}: its tokenizer has no mask token")
    return model, tokenizer, not had_head


def embeddings_tied(model: PreTrainedModel) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def freeze_for_adaptation(model: PreTrainedModel, train_layers: int) -> list[str]:
    """Train only the top ``train_layers`` encoder layers and the MLM head (not the tied decoder, which is
    the input embeddings); returns the names of the trainable parameters."""
    from landing.models.pretrained import encoder_layers

    layers = encoder_layers(model)
    if train_layers > len(layers):
        raise UserError(f"mlm_adapt.train_layers: {train_layers} > the model's {len(layers)} encoder layers")
    prefix = model.base_model_prefix + "."
    for param in model.parameters():
        param.requires_grad_(False)
    for layer in list(layers)[len(layers) - train_layers :]:
        for param in layer.parameters():
            param.requires_grad_(True)
    for name, param in model.named_parameters():
        if not name.startswith(prefix):  # the head
            param.requires_grad_(True)
    model.get_input_embeddings().weight.requires_grad_(False)  # and so the decoder tied to it
    return [name for name, param in model.named_parameters() if param.requires_grad]


def masked_batches(tokenizer: PreTrainedTokenizerBase, data: _Texts, params: MlmAdaptParams, seed: int) -> list[dict]:
    """The validation texts, batched and masked once with a seeded collator: before and after see the same masks."""
    from transformers import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=params.mask_probability, seed=seed)
    return [collate([data[i] for i in range(start, min(start + params.eval_batch_size, len(data)))])
            for start in range(0, len(data), params.eval_batch_size)]  # fmt: skip


def masked_lm_accuracy(model: PreTrainedModel, batches: list[dict]) -> dict:
    """Top-1 accuracy and mean cross-entropy over the masked (labelled) tokens of ``batches``."""
    import torch

    from landing.models.augment.mlm import masked_lm_logits

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    loss_sum = 0.0
    with torch.inference_mode():
        for batch in batches:
            labels = batch["labels"]
            where = labels != -100
            inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            logits = masked_lm_logits(model, inputs, where.to(device)).float().cpu()
            target = labels[where]
            correct += int((logits.argmax(-1) == target).sum())
            loss_sum += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
            total += int(where.sum())
    model.train(was_training)
    return {"accuracy": correct / total if total else float("nan"), "loss": loss_sum / total if total else float("nan"),
            "masked_tokens": total}  # fmt: skip


def adapt_masked_lm(
    base_name_or_path: str,
    texts: Sequence[str],
    validation_texts: Sequence[str],
    params: MlmAdaptParams,
    out_dir: Path,
    seed: int,
    checkpoint_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
) -> dict:
    """Continue masked-LM training of ``base_name_or_path`` on ``texts`` and save the result to ``out_dir``;
    checkpoints go to ``checkpoint_dir``, and a run killed midway resumes from the last complete one there.

    Returns val_mlm_accuracy_before/after (masked-token top-1 on ``validation_texts``, same masks),
    val_mlm_loss_before/after, train_loss, steps, seconds, and what was trained.
    """
    from transformers import DataCollatorForLanguageModeling, Trainer, set_seed

    from landing.models.training import last_complete_checkpoint, training_arguments

    started = time.perf_counter()
    n_train, n_validation = len(non_empty(texts)), len(non_empty(validation_texts))
    if not n_train or not n_validation:
        raise ValueError(f"mlm_adapt: {n_train} training and {n_validation} validation texts; both must be non-empty")
    set_seed(seed)  # the new head's initialisation
    model, tokenizer, new_head = _load_for_mlm(base_name_or_path)
    if not embeddings_tied(model):
        raise ValueError(f"mlm_adapt: {base_name_or_path!r}: the MLM decoder is not tied to the input embeddings "
                         "(config.tie_word_embeddings is false)")  # fmt: skip
    trainable = freeze_for_adaptation(model, params.train_layers)
    max_length = min(params.max_seq_length, getattr(model.config, "max_position_embeddings", params.max_seq_length))
    train = _Texts(tokenizer, texts, max_length)
    validation = _Texts(tokenizer, validation_texts, max_length)
    eval_batches = masked_batches(tokenizer, validation, params, seed)
    before = masked_lm_accuracy(model, eval_batches)
    log.info("mlm_adapt: validation masked-token accuracy before %.4f (%d tokens)", before["accuracy"], before["masked_tokens"])

    args = training_arguments(params, checkpoint_dir, seed)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=params.mask_probability, seed=seed)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator, processing_class=tokenizer,
                      callbacks=callbacks)  # fmt: skip
    resume = last_complete_checkpoint(checkpoint_dir)
    if resume:
        log.info("mlm_adapt: resuming from %s", resume)
    output = trainer.train(resume_from_checkpoint=resume)
    model = trainer.model
    if not embeddings_tied(model):
        raise RuntimeError("mlm_adapt: the decoder came untied from the input embeddings during training")
    after = masked_lm_accuracy(model, eval_batches)
    log.info("mlm_adapt: validation masked-token accuracy after %.4f", after["accuracy"])

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "val_mlm_accuracy_before": before["accuracy"],
        "val_mlm_accuracy_after": after["accuracy"],
        "val_mlm_loss_before": before["loss"],
        "val_mlm_loss_after": after["loss"],
        "val_masked_tokens": before["masked_tokens"],
        "train_loss": float(output.training_loss),
        "steps": int(output.global_step),
        "resumed_from": resume,
        "seconds": round(time.perf_counter() - started, 2),
        "train_texts": len(train),
        "validation_texts": len(validation),
        "new_head": new_head,
        "train_layers": params.train_layers,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "trainable": trainable,
        "out_dir": str(out_dir),
    }
