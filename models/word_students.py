"""Non-transformer students: a word vocabulary, bag-of-words and BiLSTM classifiers, their training and files.

**Vocabulary.** Words come from the training texts: English is NFKC-normalised, lower-cased and split by
the regex ``WORD_PATTERN`` (runs of word characters, runs of punctuation); Chinese is segmented into words
by jieba first, then normalised the same way and split on the spaces jieba's words were joined with.
Words seen fewer than ``min_freq`` times are dropped, the most frequent ``max_size`` (special tokens
included) are kept, ties broken alphabetically so the ids do not depend on hashing. ``[PAD]`` is id 0,
``[UNK]`` id 1. The vocabulary is a Hugging Face ``tokenizers`` ``Tokenizer(WordLevel(...))`` saved as
``tokenizer.json``, so the torch-free predictor (models/onnx_predictor.py) reads it as it is.

**Chinese in bundles.** jieba cannot run inside ``tokenizers``, so a Chinese tokenizer.json expects
pre-segmented text (a whitespace pre-tokenizer) and the bundle's ``landing_model.json`` says
``"pre_segment": "jieba"``; ``BundleTokenizer`` then segments with the same function
(``onnx_predictor.pre_segment``) that training and :func:`WordTokenizer.encode` use, so train and serve
cannot drift. A character-level Chinese student would have kept the predictor unchanged, but loses the
words that are the point of a word-level student; the hook is a lazy import, so English bundles and
transformer bundles still need nothing but onnxruntime, numpy, pandas and tokenizers.

**Models.** Inputs ``input_ids`` and ``attention_mask`` (right-padded, as both tokenizers pad), output an
object with ``.logits`` (transformers' ``SequenceClassifierOutput``), so the KD adaptor and the ONNX
exporter treat them like the transformer students. Each has a ``config`` dict that rebuilds it.

**Files.** ``model.safetensors`` (weights only, never pickle), ``word_student.json`` (the config and the
tokenizer's language / segmenter) and ``tokenizer.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from landing.files import atomic_path, write_bytes_atomic
from landing.models.kd import IGNORE_LABEL, DistillBatch, ForwardOutputs, distillation_loss
from landing.models.loading import weights_sha256
from landing.models.model_files import ModelFilesError, check_safetensors
from landing.models.onnx_predictor import TOKENIZER_FILE, pre_segment
from landing.models.params import KDParams, TrainingParams
from landing.models.training import TrainResult

log = logging.getLogger(__name__)

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
WORD_PATTERN = r"\w+|[^\w\s]+"
LANGUAGES = {"en": None, "zh": "jieba"}  # language -> the segmenter applied before tokenizer.json
CONFIG_FILE = "word_student.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "landing-word-student/1"


# --- vocabulary ------------------------------------------------------------------------------------


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])


def _pre_tokenizer(language: str) -> pre_tokenizers.PreTokenizer:
    if language == "zh":  # jieba's words, joined by single spaces (onnx_predictor.pre_segment)
        return pre_tokenizers.WhitespaceSplit()
    return pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)  # keep the matches


def _check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"language: {language!r}; expected one of {sorted(LANGUAGES)}")
    return language


@dataclass
class WordTokenizer:
    """A word-level ``tokenizers.Tokenizer`` and the segmenter its raw text goes through first."""

    tokenizer: Tokenizer
    language: str = "en"
    _encoders: dict[int, Tokenizer] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def segmenter(self) -> str | None:
        return LANGUAGES[self.language]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def words(self, text: str) -> list[str]:
        """The words of ``text`` as the tokenizer sees them (segmented, normalised, split), before lookup."""
        (segmented,) = pre_segment([text], self.segmenter)
        normalized = self.tokenizer.normalizer.normalize_str(segmented)
        return [w for w, _ in self.tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]

    def encode(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """Like the bundle's ``BundleTokenizer``: segmented, truncated to ``max_length`` on the right and
        right-padded with [PAD] to the batch's longest row."""
        if max_length not in self._encoders:  # a copy: the saved tokenizer keeps no padding settings
            tok = Tokenizer.from_str(self.tokenizer.to_str())
            tok.enable_truncation(max_length, strategy="longest_first", direction="right")
            tok.enable_padding(direction="right", pad_id=PAD_ID, pad_token=PAD_TOKEN)
            self._encoders[max_length] = tok
        encodings = self._encoders[max_length].encode_batch(pre_segment(texts, self.segmenter))
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(len(texts), -1),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long).reshape(
                len(texts), -1
            ),
        }

    def save(self, out_dir: Path) -> Path:
        path = Path(out_dir) / TOKENIZER_FILE
        write_bytes_atomic(path, self.tokenizer.to_str(pretty=True).encode())
        return path

    @classmethod
    def load(cls, model_dir: Path, language: str) -> WordTokenizer:
        path = Path(model_dir) / TOKENIZER_FILE
        if not path.is_file():
            raise ModelFilesError(f"{model_dir}: no {TOKENIZER_FILE}")
        return cls(Tokenizer.from_file(str(path)), _check_language(language))


def build_word_tokenizer(
    texts: Sequence[str], *, language: str = "en", min_freq: int = 1, max_size: int | None = None
) -> WordTokenizer:
    """The vocabulary of ``texts`` (see the module docstring); ``max_size`` counts [PAD] and [UNK]."""
    _check_language(language)
    if min_freq < 1:
        raise ValueError(f"min_freq: {min_freq} must be >= 1")
    if max_size is not None and max_size < 3:
        raise ValueError(f"max_size: {max_size} must leave room for a word besides [PAD] and [UNK]")
    probe = WordTokenizer(_word_level({PAD_TOKEN: PAD_ID, UNK_TOKEN: UNK_ID}, language), language)
    counts: Counter[str] = Counter()
    normalizer, splitter = probe.tokenizer.normalizer, probe.tokenizer.pre_tokenizer
    for text in pre_segment(texts, probe.segmenter):
        counts.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    for special in (PAD_TOKEN, UNK_TOKEN):
        counts.pop(special, None)
    kept = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
    if max_size is not None:
        kept = kept[: max_size - 2]
    vocab = {PAD_TOKEN: PAD_ID, UNK_TOKEN: UNK_ID} | {w: i for i, w in enumerate(kept, start=2)}
    return WordTokenizer(_word_level(vocab, language), language)


def _word_level(vocab: dict[str, int], language: str) -> Tokenizer:
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK_TOKEN))
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = _pre_tokenizer(language)
    return tokenizer


# --- models ----------------------------------------------------------------------------------------


def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_id: int) -> torch.Tensor:
    return (input_ids != pad_id) if attention_mask is None else attention_mask.bool()


class BowClassifier(nn.Module):
    """Embedding -> mean over the real (non-pad) tokens -> MLP (one hidden ReLU layer; none if hidden_size=0)."""

    kind = "bow"

    def __init__(
        self, vocab_size: int, labels: Sequence[str], *, embedding_dim: int = 128, hidden_size: int = 128,
        dropout: float = 0.1, pad_token_id: int = PAD_ID,
    ) -> None:  # fmt: skip
        super().__init__()
        self.config = {
            "kind": self.kind, "vocab_size": vocab_size, "labels": list(labels), "embedding_dim": embedding_dim,
            "hidden_size": hidden_size, "dropout": dropout, "pad_token_id": pad_token_id,
        }  # fmt: skip
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_token_id)
        head: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_size:
            head += [nn.Linear(embedding_dim, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
        head.append(nn.Linear(hidden_size or embedding_dim, len(labels)))
        self.head = nn.Sequential(*head)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SequenceClassifierOutput:
        mask = _mask(input_ids, attention_mask, self.config["pad_token_id"]).unsqueeze(-1)
        embedded = self.embedding(input_ids) * mask.to(self.embedding.weight.dtype)
        count = mask.sum(dim=1).clamp(min=1).to(embedded.dtype)  # a row without words pools to zeros
        return SequenceClassifierOutput(logits=self.head(embedded.sum(dim=1) / count))


def _reverse_real_tokens(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first ``length`` steps reversed in place, the padding after them left where it is.

    Its own inverse. The backward LSTM reads the real tokens last-to-first and the padding only after
    them, so its outputs at real tokens equal a packed sequence's, without pack_padded_sequence (which
    the ONNX exporter does not trace into a dynamic-length graph): arange, where and gather export."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # [1, T]
    length = lengths.unsqueeze(1)  # [B, 1]
    index = torch.where(steps < length, length - 1 - steps, steps)  # [B, T]
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class BiLstmClassifier(nn.Module):
    """Embedding -> bidirectional LSTM over the real tokens -> max or mean pooling over them -> linear.

    Each layer is a forward and a backward unidirectional LSTM (batch_first); the backward one runs on
    the per-row reversed real tokens (:func:`_reverse_real_tokens`), so right padding changes no output:
    the same text gives the same logits in any batch, in PyTorch and in ONNX.
    """

    kind = "bilstm"

    def __init__(
        self, vocab_size: int, labels: Sequence[str], *, embedding_dim: int = 128, hidden_size: int = 128,
        num_layers: int = 1, pooling: str = "max", dropout: float = 0.1, pad_token_id: int = PAD_ID,
    ) -> None:  # fmt: skip
        super().__init__()
        if pooling not in ("max", "mean"):
            raise ValueError(f"pooling: {pooling!r}; expected 'max' or 'mean'")
        if num_layers < 1:
            raise ValueError(f"num_layers: {num_layers} must be >= 1")
        self.config = {
            "kind": self.kind, "vocab_size": vocab_size, "labels": list(labels), "embedding_dim": embedding_dim,
            "hidden_size": hidden_size, "num_layers": num_layers, "pooling": pooling, "dropout": dropout,
            "pad_token_id": pad_token_id,
        }  # fmt: skip
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_token_id)
        sizes = [embedding_dim] + [2 * hidden_size] * (num_layers - 1)
        self.forward_lstms = nn.ModuleList(nn.LSTM(n, hidden_size, batch_first=True) for n in sizes)
        self.backward_lstms = nn.ModuleList(nn.LSTM(n, hidden_size, batch_first=True) for n in sizes)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden_size, len(labels))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SequenceClassifierOutput:
        pad = self.config["pad_token_id"]
        mask = _mask(input_ids, attention_mask, pad)
        # One more padding step: a batch of empty texts (sequence length 0) still runs through the LSTMs.
        input_ids, mask = F.pad(input_ids, (0, 1), value=pad), F.pad(mask, (0, 1), value=False)
        lengths = mask.sum(dim=1)
        x = self.dropout(self.embedding(input_ids))
        for forward_lstm, backward_lstm in zip(self.forward_lstms, self.backward_lstms, strict=True):
            ahead, _ = forward_lstm(x)  # causal: right padding cannot reach the real steps
            behind, _ = backward_lstm(_reverse_real_tokens(x, lengths))
            x = self.dropout(torch.cat([ahead, _reverse_real_tokens(behind, lengths)], dim=-1))
        real = mask.unsqueeze(-1)
        has_words = real.any(dim=1)  # [B, 1]; a row without words pools to zeros
        if self.config["pooling"] == "max":
            pooled = x.masked_fill(~real, torch.finfo(x.dtype).min).max(dim=1).values
        else:
            pooled = (x * real.to(x.dtype)).sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)
        pooled = torch.where(has_words, pooled, torch.zeros_like(pooled))
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))


WORD_STUDENTS: dict[str, type[nn.Module]] = {BowClassifier.kind: BowClassifier, BiLstmClassifier.kind: BiLstmClassifier}


def build_word_student(
    kind: str, tokenizer: WordTokenizer, labels: Sequence[str], *, seed: int = 0, **options
) -> nn.Module:
    """A freshly initialised ``kind`` (bow, bilstm) sized by the tokenizer's vocabulary; ``seed`` fixes it."""
    if kind not in WORD_STUDENTS:
        raise ValueError(f"kind: unknown word student {kind!r}; expected one of {sorted(WORD_STUDENTS)}")
    torch.manual_seed(seed)
    return WORD_STUDENTS[kind](tokenizer.vocab_size, labels, **options)


def _from_config(config: dict) -> nn.Module:
    options = {k: v for k, v in config.items() if k not in ("kind", "vocab_size", "labels")}
    if config.get("kind") not in WORD_STUDENTS:
        raise ModelFilesError(f"{CONFIG_FILE}: unknown kind {config.get('kind')!r}; expected one of "
                              f"{sorted(WORD_STUDENTS)}")  # fmt: skip
    return WORD_STUDENTS[config["kind"]](config["vocab_size"], config["labels"], **options)


# --- files -----------------------------------------------------------------------------------------


def save_word_student(model: nn.Module, tokenizer: WordTokenizer, out_dir: Path) -> str:
    """Weights (safetensors), config and tokenizer into ``out_dir``; returns the weights' sha256."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if model.config["vocab_size"] != tokenizer.vocab_size:
        raise ValueError(f"the model's vocab_size {model.config['vocab_size']} is not the tokenizer's "
                         f"{tokenizer.vocab_size}")  # fmt: skip
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    tokenizer.save(out_dir)
    config = {"format": FORMAT, "model": model.config, "tokenizer": {"language": tokenizer.language,
              "pre_segment": tokenizer.segmenter}}  # fmt: skip
    write_bytes_atomic(out_dir / CONFIG_FILE, (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode())
    return weights_sha256(out_dir)


def read_word_student_config(model_dir: Path) -> dict:
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise ModelFilesError(f"{model_dir}: no {CONFIG_FILE}; expected a directory written by save_word_student")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFilesError(f"{path}: not valid JSON ({exc})") from None
    if config.get("format") != FORMAT:
        raise ModelFilesError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    return config


def load_word_student(model_dir: Path) -> tuple[nn.Module, WordTokenizer]:
    """The model (eval mode) and tokenizer :func:`save_word_student` wrote; every weight must match."""
    model_dir = Path(model_dir)
    config = read_word_student_config(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFilesError(f"{model_dir}: no {WEIGHTS_FILE}")
    check_safetensors(weights, field=str(model_dir))
    model = _from_config(config["model"])
    model.load_state_dict(load_file(str(weights)), strict=True)
    tokenizer = WordTokenizer.load(model_dir, config["tokenizer"]["language"])
    if tokenizer.vocab_size != model.config["vocab_size"]:
        raise ModelFilesError(f"{model_dir}: {TOKENIZER_FILE} has {tokenizer.vocab_size} words, the model "
                              f"{model.config['vocab_size']}")  # fmt: skip
    return model.eval(), tokenizer


# --- training --------------------------------------------------------------------------------------


@torch.inference_mode()
def predict_logits(
    model: nn.Module, tokenizer: WordTokenizer, texts: Sequence[str], *, max_length: int, batch_size: int = 128
) -> np.ndarray:
    """Logits [len(texts), num_labels] in eval mode (the model's mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        out = [model(**tokenizer.encode(texts[i : i + batch_size], max_length)).logits.float().numpy()
               for i in range(0, len(texts), batch_size)]  # fmt: skip
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, len(model.config["labels"])), dtype=np.float32)


def _linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """transformers' default schedule (linear warmup, then linear decay to 0), as a LambdaLR factor."""
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def fit_word_student(
    model: nn.Module, tokenizer: WordTokenizer, texts: Sequence[str], labels: Sequence[int],
    soft_targets: np.ndarray | None, params: TrainingParams, kd: KDParams | None, seed: int,
    *, example_weights: Sequence[float] | None = None, checkpoint_dir: Path | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:  # fmt: skip
    """Train ``model`` in place on ``texts``: cross-entropy on ``labels`` without ``kd``, else the
    configured distillation losses (models/kd.py, by name from the registry) against ``soft_targets``
    (teacher logits [rows, labels]); ``labels`` may be IGNORE_LABEL for unlabelled transfer rows then.

    A plain torch loop rather than transformers' Trainer: these models are not PreTrainedModels (no
    save_pretrained / config object, which Trainer's checkpointing, resumption and model card assume).
    The rest is Trainer's defaults and the same knobs: AdamW (weight_decay not on biases), linear warmup
    (warmup_ratio) and decay, gradient norm clipped to max_grad_norm, batch_size rows per step, epochs or
    max_steps, max_seq_length, seed. One process only (no torchrun / DDP).

    With ``checkpoint_dir``, every ``save_checkpoint_steps`` steps the weights, optimizer, schedule, step and
    random state are saved there (atomically), and a run finding one resumes from it: the result is the
    uninterrupted run's, to the bit. ``on_step(step)`` is called after every optimizer step.
    """
    n = len(texts)
    if n == 0 or len(labels) != n:
        raise ValueError(f"texts ({n} rows) and labels ({len(labels)} rows) must be non-empty and the same length")
    if params.distributed.world_size > 1:
        raise ValueError("word students train in one process; training.distributed must be the default")
    if params.gradient_accumulation_steps > 1:
        raise ValueError("word students take one batch per optimizer step; gradient_accumulation_steps must be 1")
    num_labels = len(model.config["labels"])
    teacher = None
    if kd is not None:
        if soft_targets is None:
            raise ValueError("distillation needs teacher logits (soft_targets) for every training row")
        teacher = torch.as_tensor(np.asarray(soft_targets), dtype=torch.float32)
        if teacher.shape != (n, num_labels):
            raise ValueError(f"soft_targets: shape {tuple(teacher.shape)}, expected ({n}, {num_labels})")
        needing = [name for name, (loss, _) in zip(kd.loss_names, kd.losses(), strict=True)
                   if loss.needs_hidden_states or loss.needs_attentions]  # fmt: skip
        if needing:
            raise ValueError(f"distillation type {kd.type!r}: {needing} need hidden states or attentions, "
                             "which word students do not have; use logit losses such as vanilla_kd")  # fmt: skip
    elif soft_targets is not None:
        raise ValueError("soft_targets given without distillation params (kd); pass KDParams to distil")
    targets = torch.as_tensor(list(labels), dtype=torch.long)
    if kd is None and bool((targets == IGNORE_LABEL).any()):
        raise ValueError("unlabelled rows (IGNORE_LABEL) need distillation: there is nothing to learn from")
    weights = None if example_weights is None else torch.as_tensor(list(example_weights), dtype=torch.float32)

    torch.manual_seed(seed)
    order_rng = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(n / params.batch_size)
    total = params.max_steps if params.max_steps > 0 else max(1, math.ceil(params.epochs * steps_per_epoch))
    decay = [p for name, p in model.named_parameters() if p.requires_grad and not name.endswith("bias")]
    no_decay = [p for name, p in model.named_parameters() if p.requires_grad and name.endswith("bias")]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": params.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=params.learning_rate,
    )
    warmup = math.ceil(params.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _linear_warmup_decay(s, warmup, total))

    model.train()
    started, step, running, position = time.perf_counter(), 0, 0.0, 0
    resumed = _load_checkpoint(checkpoint_dir, model, optimizer, scheduler) if checkpoint_dir else None
    if resumed is not None:
        step, running, position, epoch_rng = resumed["step"], resumed["running"], resumed["position"], resumed["epoch_rng"]
        order_rng.set_state(epoch_rng)
        torch.set_rng_state(resumed["torch_rng"])
        log.info("resumed at step %d/%d from %s", step, total, checkpoint_dir)
    while step < total:
        epoch_rng = order_rng.get_state()  # this epoch's order is drawn from it: a checkpoint keeps it
        batches = torch.randperm(n, generator=order_rng).split(params.batch_size)
        for index, rows in enumerate(batches):
            if index < position:  # a resumed epoch: these batches were trained before the checkpoint
                continue
            if step >= total:
                break
            inputs = tokenizer.encode([texts[i] for i in rows.tolist()], params.max_seq_length)
            logits = model(**inputs).logits
            if teacher is None:
                loss = F.cross_entropy(logits, targets[rows], reduction="none")
                if weights is None:
                    loss = loss.mean()
                else:  # as distillation_loss weighs examples
                    loss = (weights[rows] * loss).sum() / weights[rows].sum().clamp(min=torch.finfo(loss.dtype).tiny)
            else:
                batch = DistillBatch(ForwardOutputs(logits), ForwardOutputs(teacher[rows]), targets[rows],
                                     inputs["attention_mask"], None if weights is None else weights[rows])  # fmt: skip
                loss = distillation_loss(batch, kd)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            running += float(loss.detach())
            if step % params.logging_steps == 0:
                log.info("step %d/%d: loss %.4f", step, total, running / step)
            if checkpoint_dir is not None and step % params.save_checkpoint_steps == 0 and step < total:
                _save_checkpoint(checkpoint_dir, model, optimizer, scheduler, step=step, running=running,
                                 position=index + 1, epoch_rng=epoch_rng)  # fmt: skip
            if on_step is not None:
                on_step(step)
        position = 0
    model.eval()
    return TrainResult(global_step=step, train_loss=running / max(step, 1),
                       train_runtime_s=time.perf_counter() - started,
                       resumed_from=str(checkpoint_dir) if resumed is not None else None)  # fmt: skip


CHECKPOINT_FILE = "word-student-checkpoint.pt"


def _save_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler, **progress) -> None:
    """Tensors, numbers and state dicts only, so ``torch.load(weights_only=True)`` reads it back; written to a
    temporary name and renamed, so a crash while saving leaves the previous checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), **progress}  # fmt: skip
    with atomic_path(folder / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler) -> dict | None:
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state
