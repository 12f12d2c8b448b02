"""The joint intent + slot model through the classifier's compression chain: vocabulary pruning
(``models/vocab_pruning.py``, on the encoder), FFN width pruning (``models/width_pruning.py``), QAT
(``models/qat.py``, on every Linear, both heads included) and onnxruntime's dynamic INT8 quantizers
(``models/quantize.py``), the INT8 graph checked on both heads.

The strategies offered are ``params.SLU_STRATEGIES``; the config refuses the others with ``params.SLU_REFUSED``.
Graph fusion is not applied: onnxruntime's BERT fusion expects the classifier's graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import BertModel, PreTrainedTokenizerBase

from .onnx_export import ParityError
from .onnx_predictor import make_session
from .params import CompressionParams, KDParams
from .qat import prepare_qat, remove_qat
from .slu import JointIntentSlotModel, encode_utterances
from .slu_predictor import OUTPUTS
from .slu_spans import first_subwords
from .slu_training import EncodedUtterances, JointDistillation, Utterances, joint_kd_loss, utterance_collator
from .vocab_pruning import prune_vocabulary
from .width_pruning import compute_importance, prune_ffn_neurons


def prune_joint_vocabulary(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                           params: CompressionParams) -> tuple[JointIntentSlotModel, PreTrainedTokenizerBase, dict]:  # fmt: skip
    """The encoder's vocabulary cut to the ``params.max_vocab_size`` most frequent tokens of ``texts`` (and its
    positions to ``params.max_seq_length``), in place; a word with a dropped piece is re-segmented into kept ones."""
    encoder, tokenizer, stats = prune_vocabulary(model.encoder, tokenizer, texts, max_vocab_size=params.max_vocab_size,
                                                 max_seq_length=params.max_seq_length,
                                                 keep_characters=params.keep_characters)  # fmt: skip
    model.encoder = encoder
    return model, tokenizer, stats


def prune_joint_width(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase, rows: Utterances,
                      tags: Sequence[str], intents: Sequence[str], params: CompressionParams) -> dict:  # fmt: skip
    """In place: each encoder layer keeps ``params.width_multiplier`` of its FFN neurons, the most important by
    :func:`joint_neuron_importance`. Heads stay: the joint encoder saves as a plain BERT, whose config cannot
    describe attention narrower than its hidden size."""
    if not isinstance(model.encoder, BertModel):
        raise ValueError(f"compression.strategies width: FFN pruning supports BERT encoders, not "
                         f"{type(model.encoder).__name__}")  # fmt: skip
    scores = joint_neuron_importance(model, tokenizer, rows, tags, intents, params)
    return prune_ffn_neurons(model.encoder, scores, params.width_multiplier)


def joint_neuron_importance(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase, rows: Utterances,
                            tags: Sequence[str], intents: Sequence[str], params: CompressionParams) -> list[torch.Tensor]:  # fmt: skip
    """Per encoder layer, each FFN neuron's DynaBERT importance (``models/width_pruning.py``) under the joint KD
    loss against the logits in ``rows`` (the uncompressed model's), on its first ``params.importance_rows``."""
    n = params.importance_rows
    subset = Utterances(*(None if part is None else part[:n] for part in dataclasses.astuple(rows)))
    dataset = EncodedUtterances(tokenizer, subset, {t: i for i, t in enumerate(tags)},
                                {name: i for i, name in enumerate(intents)}, params.max_seq_length)  # fmt: skip
    batches = DataLoader(dataset, batch_size=32, collate_fn=utterance_collator(tokenizer.pad_token_id))
    kd = JointDistillation(KDParams(temperature=params.recover_distillation.temperature, alpha=1.0))

    def summed_loss(joint: nn.Module, batch: dict) -> torch.Tensor:  # the batch mean × its size: per-example gates
        out = joint(batch["input_ids"], batch["attention_mask"])
        teacher = {k: batch[k] for k in ("teacher_intent_logits", "teacher_slot_logits", "teacher_slot_mask")}
        return joint_kd_loss(out.intent_logits, out.slot_logits, batch["intent_labels"], batch["slot_labels"],
                             teacher, kd) * len(batch["input_ids"])  # fmt: skip

    return compute_importance(model, batches, layers=model.encoder.encoder.layer, loss=summed_loss)[1]


def _every_linear(model: nn.Module) -> list[nn.Linear]:
    """What onnxruntime's dynamic quantizer turns into INT8 MatMuls in the joint graph: every Linear."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@contextmanager
def fake_quantized(model: JointIntentSlotModel, *, embeddings: bool, reduce_range: bool) -> Iterator[None]:
    """Inside: the model computes as onnxruntime's dynamic INT8 will; after: plain FP32 on the INT8 grid."""
    handle = prepare_qat(model, embeddings=embeddings, reduce_range=reduce_range, select=_every_linear)
    try:
        yield
    finally:
        remove_qat(handle, rounded=True)


@torch.no_grad()
def check_joint_agreement(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase, onnx_path: Path,
                          tokens: Sequence[Sequence[str]], *, max_length: int, min_agreement: float) -> dict:  # fmt: skip
    """An INT8 graph against the PyTorch model on the same rows: the share of equal intent argmaxes, and of equal
    slot argmaxes on words' first sub-words; either under ``min_agreement`` raises ``ParityError``."""
    model.eval()
    enc = encode_utterances(tokenizer, tokens, max_length)
    reference = model(enc["input_ids"], enc["attention_mask"])
    intents, slots = make_session(onnx_path).run(list(OUTPUTS), {"input_ids": enc["input_ids"].numpy(),
                                                                 "attention_mask": enc["attention_mask"].numpy()})  # fmt: skip
    intent_agreement = float(np.mean(reference.intent_logits.argmax(-1).numpy() == intents.argmax(-1)))
    torch_slots, ort_slots = reference.slot_logits.argmax(-1).numpy(), slots.argmax(-1)
    positions = [(row, p) for row, ids in enumerate(enc["word_ids"]) for p in first_subwords(ids).values()]
    slot_agreement = float(np.mean([torch_slots[r, p] == ort_slots[r, p] for r, p in positions])) if positions else 1.0
    result = {"intent_agreement": intent_agreement, "slot_agreement": slot_agreement, "rows": len(tokens),
              "words": len(positions), "min_agreement": min_agreement}  # fmt: skip
    if min(intent_agreement, slot_agreement) < min_agreement:
        raise ParityError(f"{onnx_path.name}: INT8 agrees with PyTorch on {intent_agreement:.1%} of intents and "
                          f"{slot_agreement:.1%} of word tags; at least {min_agreement:.1%} is required")  # fmt: skip
    return result
