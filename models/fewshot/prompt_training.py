"""Training a prompt classifier with transformers' Trainer: the prompt losses, P-tuning's own learning rate,
a frozen PLM, and CPT's prototypes once training ends.

The loss of :class:`PromptClassifier` (cross-entropy over the label scores, plus CPT's
contrastive term) is the base; :class:`PromptTrainer` adds, as configured:

* EasyNLP's full-vocabulary MLM loss on the gold label word. A label score is the word's mean token
  log-probability under the full-vocabulary softmax, so this loss is exactly ``-score[gold]``.
* an auxiliary MLM loss on a batch of unlabelled text each step (PET's auxiliary language modelling);
* R-Drop: two dropout passes, their mean loss plus ``rdrop_alpha`` × the symmetric KL between them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase, Trainer

from landing.models.fewshot.params import PromptParams
from landing.models.fewshot.patterns import PatternError
from landing.models.fewshot.prompt_model import PromptClassifier
from landing.models.kd import IGNORE_LABEL

log = logging.getLogger(__name__)


class PromptTrainer(Trainer):
    def __init__(self, *args, prompt: PromptParams, unlabelled: Dataset | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prompt = prompt
        self._evaluating = False  # validation rows (early stopping) are scored without the auxiliary MLM loss
        self._unlabelled = self._mlm_batches(unlabelled) if unlabelled is not None and prompt.unlabelled_mlm_weight else None

    def _mlm_batches(self, unlabelled: Dataset) -> Iterator[dict]:
        collate = DataCollatorForLanguageModeling(self.processing_class, mlm_probability=0.15)
        generator = torch.Generator().manual_seed(self.args.seed)
        loader = DataLoader(unlabelled, batch_size=self.args.per_device_train_batch_size, shuffle=True,
                            collate_fn=lambda rows: collate([{"input_ids": r["input_ids"]} for r in rows]),
                            generator=generator)  # fmt: skip
        return itertools.chain.from_iterable(itertools.repeat(loader))

    def create_optimizer(self, model=None):
        """P-tuning's pseudo tokens (and prompt encoder) at ``ppt_learning_rate``, the rest at the training rate."""
        opt_model = self.model if model is None else model
        if self.optimizer is not None or self.prompt.ppt_learning_rate is None or not opt_model.prompt_parameters():
            return super().create_optimizer(model)
        prompt = {id(p) for p in opt_model.prompt_parameters()}
        decay = set(self.get_decay_parameter_names(opt_model))
        named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for _, p in named if id(p) in prompt], "lr": self.prompt.ppt_learning_rate, "weight_decay": 0.0},
            {"params": [p for n, p in named if id(p) not in prompt and n in decay], "weight_decay": self.args.weight_decay},
            {"params": [p for n, p in named if id(p) not in prompt and n not in decay], "weight_decay": 0.0},
        ]  # fmt: skip
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.args.learning_rate)
        return self.optimizer

    def prediction_step(self, *args, **kwargs):
        self._evaluating = True
        try:
            return super().prediction_step(*args, **kwargs)
        finally:
            self._evaluating = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        loss = outputs.loss
        if self.prompt.rdrop_alpha > 0:
            second = model(**inputs)
            loss = (loss + second.loss) / 2 + self.prompt.rdrop_alpha * symmetric_kl(outputs.logits, second.logits)
        if self.prompt.mlm_loss_weight > 0:
            loss = loss + self.prompt.mlm_loss_weight * gold_word_mlm_loss(model, outputs.mask_log_probs, inputs["labels"])
        if self._unlabelled is not None and not self._evaluating:
            batch = {k: v.to(loss.device) for k, v in next(self._unlabelled).items()}
            loss = loss + self.prompt.unlabelled_mlm_weight * plain_mlm_loss(model, batch)
        return (loss, outputs) if return_outputs else loss


def symmetric_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    log_a, log_b = F.log_softmax(a.float(), -1), F.log_softmax(b.float(), -1)
    return (F.kl_div(log_a, log_b, log_target=True, reduction="batchmean")
            + F.kl_div(log_b, log_a, log_target=True, reduction="batchmean")) / 2  # fmt: skip


def gold_word_mlm_loss(model, mask_log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over labelled rows of -(mean log-probability of the gold word's tokens over the whole vocabulary)."""
    keep = labels != IGNORE_LABEL
    if not bool(keep.any()):
        return mask_log_probs.sum() * 0.0
    return -model.label_scores(mask_log_probs[keep]).gather(1, labels[keep].unsqueeze(1)).mean()


def plain_mlm_loss(model: PromptClassifier, batch: dict) -> torch.Tensor:
    """The masked LM's own loss on text without the prompt (``batch`` from DataCollatorForLanguageModeling)."""
    hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).last_hidden_state
    labels = batch["labels"]
    where = labels != IGNORE_LABEL
    if not bool(where.any()):
        return hidden.sum() * 0.0
    return F.cross_entropy(model.mlm_head(hidden[where]).float(), labels[where])


def prepare_for_training(model: PromptClassifier, prompt: PromptParams, max_seq_length: int, train: Dataset) -> None:
    """Fit every prompt in ``max_seq_length`` (saved with the model, so prediction cuts the same way) and say once
    how many training rows lose text to it; ``freeze_plm``: only the pseudo tokens and their encoder train
    (P-tuning's frozen-PLM setting)."""
    if model.config.fixed_tokens + 2 > min(max_seq_length, model.max_prompt_tokens):
        raise PatternError(f"max_seq_length {max_seq_length}: the pattern alone takes {model.config.fixed_tokens} "
                           "tokens and leaves no room for the text; raise it or shorten the pattern")  # fmt: skip
    model.config.max_prompt_tokens = min(max_seq_length, model.max_prompt_tokens)
    lengths = torch.tensor([len(ids) for ids in train.encodings["input_ids"]])
    cut = int((model.prompt_lengths(lengths) > model.max_prompt_tokens).sum())
    if cut:
        log.warning("%d of %d training rows are cut to fit the prompt in max_seq_length %d (the pattern adds %d "
                    "tokens)", cut, len(lengths), model.max_prompt_tokens, model.config.fixed_tokens)  # fmt: skip
    if prompt.freeze_plm:
        trainable = {id(p) for p in model.prompt_parameters()}
        for param in model.parameters():
            param.requires_grad_(id(param) in trainable)


@torch.no_grad()
def fit_prototypes(model: PromptClassifier, tokenizer: PreTrainedTokenizerBase, train: Dataset,
                   batch_size: int = 64) -> None:  # fmt: skip
    """CPT: store each class's prototype from the labelled training rows, in the weights (prediction needs no
    training file afterwards)."""
    if model.config.prompt_method != "cpt":
        return
    was_training = model.training
    model.eval()
    rows = [train[i] for i in range(len(train))]
    rows = [r for r in rows if r.get("labels", IGNORE_LABEL) != IGNORE_LABEL]
    pad = DataCollatorForLanguageModeling(tokenizer, mlm=False)  # pads; its labels are unused
    hidden, labels = [], []
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = pad([{k: r[k] for k in ("input_ids", "attention_mask") if k in r} for r in chunk])
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        hidden.append(out.mask_hidden)
        labels.extend(r["labels"] for r in chunk)
    model.set_prototypes(torch.cat(hidden), torch.tensor(labels, device=device))
    model.train(was_training)
