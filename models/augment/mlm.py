"""Masked-LM data augmentation (``mlm_da``): copies of each row with whole words re-drawn by a masked LM.

Each input row is copied ``expansion_rate`` times; in each copy ``mask_proportion`` of its words are
masked whole and the masked LM fills them in one forward pass. A *word* is what the tokenizer's
pre-tokenizer calls one (``word_ids()``: a WordPiece token plus its ``##`` continuations) and, in
Chinese text, a word segmented by jieba, so every character token of ``手机`` is masked together.

What this does differently from EasyNLP's ``mlm_da`` (whose defects it avoids):

- fills are *sampled* (``temperature``, ``top_k``; ``sampling: argmax`` as an option), never a special
  token, ``[UNK]`` or ``[unused*]``, never a ``##`` continuation at the start of a word and one word for
  one word (``one_word_fills``), not punctuation (``word_fills_only``), and not the original token
  unless ``allow_original`` is set;
- the originals are kept (``keep_originals``) and copies identical to their source or to another row
  (up to whitespace) are dropped and counted;
- Chinese is masked per jieba word, not per character;
- fills are put back into the original text at the words' character offsets, so the rest of the
  text keeps its case, accents, spacing and any characters the vocabulary lacks (an uncased
  tokenizer would otherwise lower-case the whole row and turn those characters into ``[UNK]``);
  ``remove_blanks`` strips the blanks the tokenizer's decoder puts next to CJK characters of a fill
  (a correct CJK range, not EasyNLP's ``A-z`` typo, which also matches ``[\\]^_```).

Every output row keeps the input's fields (``label``, ...) and records ``source_id`` and ``strategy``
(``"mlm_da"`` for copies, ``"original"`` for kept inputs). The parameters import only pydantic; torch,
transformers and jieba are imported when augmenting, so a run config can validate them cheaply.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as validated_dataclass

from landing.models.augment.rows import AugmentResult, check_output_ids, progress_bar, validate_rows
from landing.models.model_files import ModelFilesError, check_model_dir, looks_like_path
from landing.models.params import SeqLength

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
STRATEGY = "mlm_da"
SEGMENTS = ("text", "text_pair")

# CJK ideographs (URO, extensions A-F, compatibility), kana, bopomofo, CJK punctuation and fullwidth forms.
CJK_CHARS = (
    "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3200-\u32ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0002fa1f"
)
_CJK = re.compile(f"[{CJK_CHARS}]")
# BERT-style tokenizers split around every CJK character, so a decoder's blank next to one carries no information.
_BLANKS_NEXT_TO_CJK = re.compile(f"(?<=[{CJK_CHARS}])\\s+|\\s+(?=[{CJK_CHARS}])")
_BRACKETED = re.compile(r"^(\[[^\]\s]+\]|<[^>\s]+>)$")  # [unused12], <extra_id_3>, ...: not text
WORDPIECE_CONTINUATION = "##"

# Weights of a masked-LM head, by architecture family (BERT, RoBERTa/XLM-R, DistilBERT, ELECTRA
# generator, ALBERT, DeBERTa-v2); a checkpoint saved without them has no head to fill masks with.
MLM_HEAD_PREFIXES = ("cls.predictions.", "lm_head.", "vocab_projector.", "vocab_transform.", "generator_lm_head.",
                     "generator_predictions.", "predictions.", "lm_predictions.")  # fmt: skip
MLM_OPTIONS_HINT = (
    "set augmentation.mlm_model to a model with a masked-LM head (config.architectures *ForMaskedLM or "
    "*ForPreTraining, with its head weights), or train one from this encoder with mlm_adapt "
    "(continued masked-LM training that adds the head) and point augmentation.mlm_model at its output"
)


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MlmAugmentParams:
    """The knobs of masked-LM augmentation (``mlm_da``)."""

    expansion_rate: int = Field(10, ge=1, description="augmented copies drawn per input row (before duplicates are dropped)")
    mask_proportion: float = Field(0.25, gt=0, le=1, description="share of a row's words masked in each copy "
                                   "(rounded half up, at least one word)")  # fmt: skip
    sampling: Literal["sample", "argmax"] = Field("sample", description="sample: draw each fill from the "
                                                  "temperature-scaled top-k distribution; argmax: the most likely")  # fmt: skip
    temperature: float = Field(1.0, gt=0, description="divides the logits before sampling; < 1 is more conservative")
    top_k: int = Field(50, ge=0, description="sample among the k most likely allowed tokens; 0: all of them")
    allow_original: bool = Field(False, description="whether a fill may be the token it replaces")
    keep_originals: bool = Field(True, description="output the input rows too, before their copies")
    remove_blanks: bool = Field(True, description="strip the whitespace a decoder puts next to CJK characters of a fill")
    segmentation: Literal["auto", "wordpiece", "jieba"] = Field(
        "auto", description="words to mask: the tokenizer's words (WordPiece groups); jieba: also join the "
        "characters of each jieba word (Chinese); auto: jieba for rows that contain CJK characters"
    )
    mask_punctuation: bool = Field(False, description="whether words without a letter, digit or CJK character may be masked")
    one_word_fills: bool = Field(True, description="a masked word is filled with one word: where the original has a "
                                 "## continuation token, so does the fill (WordPiece)")  # fmt: skip
    word_fills_only: bool = Field(True, description="fills are tokens with a letter, digit or CJK character: a word is "
                                  "not replaced by punctuation")  # fmt: skip
    max_seq_length: SeqLength = Field(128, description="tokens per row seen by the model; the rest is kept as is")
    batch_size: int = Field(32, gt=0, description="copies per forward pass")
    record_fills: bool = Field(False, description="add mlm_fills (each masked word, its fill and their tokens) to copies")


@dataclass(frozen=True)
class WordUnit:
    """One maskable word: its token positions in the encoded row and its character span in one segment."""

    positions: tuple[int, ...]
    segment: int  # 0: text, 1: text_pair
    start: int
    end: int


@dataclass
class _Encoded:
    row: dict
    input_ids: list[int]
    token_type_ids: list[int] | None
    tokens: list[str]
    units: list[WordUnit]  # maskable words only
    texts: tuple[str, ...]


# ----------------------------------------------------------------------------- text helpers


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def remove_cjk_blanks(text: str) -> str:
    """Whitespace next to a CJK character removed, kept between other characters
    (``我 喜 欢 iPhone 12 手 机`` -> ``我喜欢iPhone 12手机``)."""
    return _BLANKS_NEXT_TO_CJK.sub("", text)


def detokenize(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], *, remove_blanks: bool = True) -> str:
    """Token ids to text: the tokenizer's decoder with its clean-up (`` 's`` -> ``'s``, `` ,`` -> ``,``),
    any ``##`` continuation a decoder left joined to its word, and no blanks between CJK characters."""
    text = tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=True)
    text = re.sub(rf"\s+{re.escape(WORDPIECE_CONTINUATION)}(?=\S)", "", text).strip()
    return remove_cjk_blanks(text) if remove_blanks else text


def splice(text: str, replacements: Sequence[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, new)`` character span replaced; spans must not overlap."""
    out, cursor = [], 0
    for start, end, new in sorted(replacements):
        if start < cursor:
            raise ValueError(f"overlapping replacements at character {start}")
        out += [text[cursor:start], new]
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def jieba_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the jieba words of ``text`` that contain a CJK character."""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # not "Building prefix dict ..." on stderr
    return [(start, end) for word, start, end in jieba.tokenize(text) if has_cjk(word)]


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)


def words_to_mask(n_words: int, proportion: float) -> int:
    """How many of ``n_words`` words a copy masks: ``proportion`` of them rounded half up, at least one."""
    return min(n_words, max(1, round_half_up(proportion * n_words))) if n_words else 0


# ----------------------------------------------------------------------------- words


def word_units(
    tokens: Sequence[str],
    sequence_ids: Sequence[int | None],
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    texts: Sequence[str],
    *,
    segmentation: str = "auto",
    mask_punctuation: bool = False,
) -> list[WordUnit]:
    """The maskable words of one encoded row, in order.

    Tokens of one word (the same ``word_ids`` entry), a ``##`` token and the token before it, and, with
    jieba segmentation, the tokens overlapping one jieba word, all end up in one unit (union-find), so a
    word is never split. Special tokens and tokens without characters are never part of a unit.
    """
    content = [i for i, seg in enumerate(sequence_ids) if seg is not None and offsets[i][1] > offsets[i][0]]
    parent = {i: i for i in content}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first_of_word: dict[tuple[int, int], int] = {}
    previous: dict[int, int] = {}
    for i in content:
        seg = sequence_ids[i]
        if word_ids[i] is not None:
            key = (seg, word_ids[i])
            if key in first_of_word:
                union(first_of_word[key], i)
            else:
                first_of_word[key] = i
        if tokens[i].startswith(WORDPIECE_CONTINUATION) and seg in previous:
            union(previous[seg], i)
        previous[seg] = i
    for seg, text in enumerate(texts):
        if segmentation == "wordpiece" or (segmentation == "auto" and not has_cjk(text)):
            continue
        in_segment = [i for i in content if sequence_ids[i] == seg]
        for start, end in jieba_spans(text):
            overlapping = [i for i in in_segment if offsets[i][0] < end and offsets[i][1] > start]
            for i in overlapping[1:]:
                union(overlapping[0], i)
    groups: dict[int, list[int]] = {}
    for i in content:
        groups.setdefault(find(i), []).append(i)
    units = []
    for positions in sorted(groups.values()):
        seg = sequence_ids[positions[0]]
        start, end = min(offsets[i][0] for i in positions), max(offsets[i][1] for i in positions)
        surface = texts[seg][start:end]
        if mask_punctuation or any(ch.isalnum() for ch in surface):
            units.append(WordUnit(tuple(positions), seg, start, end))
    return units


def encode_row(tokenizer: PreTrainedTokenizerBase, row: dict, params: MlmAugmentParams, max_length: int) -> _Encoded:
    texts = (row["text"],) if row.get("text_pair") is None else (row["text"], row["text_pair"])
    enc = tokenizer(*texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    units = word_units(tokens, enc.sequence_ids(), enc.word_ids(), enc["offset_mapping"], texts,
                       segmentation=params.segmentation, mask_punctuation=params.mask_punctuation)  # fmt: skip
    return _Encoded(row, list(enc["input_ids"]), enc.get("token_type_ids"), tokens, units, texts)


# ----------------------------------------------------------------------------- the masked LM


def _safetensors_keys(model_dir: Path) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as weights:
            keys.update(weights.keys())
    return keys


def has_mlm_head(name_or_path: str) -> bool:
    """Whether ``name_or_path`` is a masked LM with its head: a model type transformers has a masked-LM
    class for and, for a local directory, the head's weights in its safetensors (``cls.predictions.*``
    for BERT). An encoder saved without its head (sentence-transformers models, ``BertModel``) has none."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    from landing.models.pretrained import resolve_name_or_path

    path = resolve_name_or_path(name_or_path)
    local = looks_like_path(path)
    if local:
        check_model_dir(Path(path).expanduser(), field=name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as exc:
        raise ModelFilesError(f"{name_or_path!r}: no loadable config ({str(exc).splitlines()[0]}); give the path "
                              "of a saved model directory") from None  # fmt: skip
    if config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return False
    if local:
        return any(key.startswith(MLM_HEAD_PREFIXES) for key in _safetensors_keys(Path(path).expanduser()))
    architectures = config.architectures or []
    return any(a.endswith(("ForMaskedLM", "ForPreTraining", "WithLMHead")) for a in architectures)


def load_masked_lm(name_or_path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The masked LM and its tokenizer, in eval mode; a model without a trained MLM head is refused
    (a ModelFilesError naming the options) rather than given a randomly initialised one."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as transformers_logging

    from landing.models.pretrained import checked_from_pretrained, load_tokenizer

    if not has_mlm_head(name_or_path):
        raise ModelFilesError(f"{name_or_path!r} has no masked-LM head (no *ForMaskedLM architecture with its "
                              f"head weights, e.g. cls.predictions.* for BERT), so it cannot fill masks; "
                              f"{MLM_OPTIONS_HINT}")  # fmt: skip
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = checked_from_pretrained(AutoModelForMaskedLM.from_pretrained, name_or_path,
                                       output_loading_info=True, use_safetensors=True)  # fmt: skip
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise ModelFilesError(f"{name_or_path!r}: masked-LM weights missing from the checkpoint ({', '.join(missing[:5])}"
                              f"{', ...' if len(missing) > 5 else ''}); they would be random; {MLM_OPTIONS_HINT}")  # fmt: skip
    tokenizer = load_tokenizer(name_or_path)
    if tokenizer.mask_token_id is None:
        raise ModelFilesError(f"{name_or_path!r}: its tokenizer has no mask token")
    return model.eval(), tokenizer


def _mlm_head(model: PreTrainedModel):
    from torch import nn

    for name in ("cls", "lm_head"):  # BERT family; RoBERTa, XLM-R and similar
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def masked_lm_logits(model: PreTrainedModel, batch: dict, where: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits at the positions ``where`` (bool, batch × length) only, shape (masked, vocab).

    The head's decoder (hidden × vocabulary) costs about as much as a small encoder, so for BERT and
    RoBERTa-style models it runs on the masked positions alone; other models compute all logits."""
    head = _mlm_head(model)
    if head is None:
        return model(**batch).logits[where]
    hidden = model.base_model(**batch).last_hidden_state
    return head(hidden[where])


def banned_token_mask(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> torch.Tensor:
    """True for tokens that are never a fill: special and added tokens, ``[UNK]``, bracketed placeholders
    (``[unused7]``), and logits rows past the tokenizer's vocabulary."""
    import torch

    banned = torch.zeros(vocab_size, dtype=torch.bool)
    ids = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    if tokenizer.unk_token_id is not None:
        ids.add(tokenizer.unk_token_id)
    ids |= {i for token, i in tokenizer.get_vocab().items() if _BRACKETED.match(token)}
    banned[[i for i in ids if 0 <= i < vocab_size]] = True
    banned[len(tokenizer):] = True
    return banned


def non_word_token_mask(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> torch.Tensor:
    """True for tokens without a letter, digit or CJK character (punctuation, symbols)."""
    import torch

    mask = torch.zeros(vocab_size, dtype=torch.bool)
    ids = [i for token, i in tokenizer.get_vocab().items() if i < vocab_size and not any(ch.isalnum() for ch in token)]
    mask[ids] = True
    return mask


def continuation_token_mask(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> torch.Tensor:
    """True for WordPiece ``##`` tokens, which cannot start a word."""
    import torch

    mask = torch.zeros(vocab_size, dtype=torch.bool)
    ids = [i for token, i in tokenizer.get_vocab().items() if token.startswith(WORDPIECE_CONTINUATION) and i < vocab_size]
    mask[ids] = True
    return mask


def choose_fills(
    logits: torch.Tensor,
    originals: torch.Tensor,
    word_start: torch.Tensor,
    banned: torch.Tensor,
    continuation: torch.Tensor,
    params: MlmAugmentParams,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per masked position (rows of ``logits``), never a banned token, never a ``##`` token at a
    word's start, only ``##`` tokens where the original continues its word (``one_word_fills``), and not
    the original unless ``allow_original``; sampled or argmax per ``params``."""
    import torch

    exclude = banned.unsqueeze(0).expand_as(logits).clone()
    exclude[word_start] |= continuation
    if params.one_word_fills:
        continuing = continuation[originals] & ~word_start
        exclude[continuing] |= ~continuation
    if not params.allow_original:
        exclude[torch.arange(len(originals)), originals] = True
    if bool(exclude.all(dim=-1).any()):
        raise ValueError("mlm_da: no token of the vocabulary may fill a masked word (all are special, [UNK] or the original)")
    scores = logits.float().masked_fill(exclude, float("-inf"))
    if params.sampling == "argmax":
        return scores.argmax(dim=-1)
    scores = scores / params.temperature
    k = scores.shape[-1] if params.top_k == 0 else min(params.top_k, scores.shape[-1])
    top, index = scores.topk(k, dim=-1)
    picked = torch.multinomial(torch.softmax(top, dim=-1), 1, generator=generator)
    return index.gather(-1, picked).squeeze(-1)


# ----------------------------------------------------------------------------- augmentation


def _copy_rng(seed: int, row_index: int, copy_index: int) -> np.random.Generator:
    """Each copy's own random stream: its masks and fills do not depend on batch_size or on other rows."""
    return np.random.default_rng([seed, row_index, copy_index])



def _row_key(row: dict) -> tuple[str, str | None]:
    """What makes two rows the same: their texts up to whitespace."""
    pair = row.get("text_pair")
    return " ".join(row["text"].split()), None if pair is None else " ".join(pair.split())



def augment_with_mlm(
    rows: Sequence[dict],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    params: MlmAugmentParams,
    seed: int,
) -> AugmentResult:
    """Masked-LM augmentation of ``rows`` (``id``, ``text``, optional ``text_pair``, ``label``, ...).

    Returns the output rows (each original, if kept, followed by its surviving copies; copy ids
    ``<id>-mlm_da-<n>``) and stats: copies drawn, dropped as identical to their source or to another
    row, rows without a maskable word, masked words and tokens, seconds and rows per second. The same
    seed gives the same rows.
    """
    import torch

    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("mlm_da needs a fast (tokenizers-backed) tokenizer: its word ids and character offsets "
                         "locate the words to mask and put the fills back into the text")  # fmt: skip
    if tokenizer.mask_token_id is None:
        raise ValueError("mlm_da: the tokenizer has no mask token")
    validate_rows(rows, "mlm_da")
    started = time.perf_counter()
    max_length = min(params.max_seq_length, getattr(model.config, "max_position_embeddings", params.max_seq_length))
    encoded = [encode_row(tokenizer, row, params, max_length) for row in rows]
    vocab_size = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else len(tokenizer)
    banned = banned_token_mask(tokenizer, vocab_size)
    if params.word_fills_only:
        banned |= non_word_token_mask(tokenizer, vocab_size)
    continuation = continuation_token_mask(tokenizer, vocab_size)
    device = next(model.parameters()).device

    items = [(r, c) for r, enc in enumerate(encoded) if enc.units for c in range(params.expansion_rate)]
    no_words = sum(1 for enc in encoded if not enc.units)
    copies: dict[tuple[int, int], dict] = {}
    masked_words = masked_tokens = 0
    was_training = model.training
    model.eval()
    batches = range(0, len(items), params.batch_size)
    try:
        with torch.inference_mode(), progress_bar(len(batches), STRATEGY, "batch") as bar:
            for start in batches:
                plans = [_plan_copy(encoded[r], r, c, seed, params) for r, c in items[start : start + params.batch_size]]
                batch, where, originals = _masked_batch(encoded, plans, tokenizer)
                logits = masked_lm_logits(model, {k: v.to(device) for k, v in batch.items()}, where.to(device)).cpu()
                offset = 0
                for b, (r, c, units, torch_seed) in enumerate(plans):
                    positions = torch.nonzero(where[b]).squeeze(-1).tolist()
                    word_start = torch.tensor([any(p == u.positions[0] for u in units) for p in positions])
                    span = slice(offset, offset + len(positions))
                    fills = choose_fills(logits[span], originals[span], word_start, banned, continuation, params,
                                         torch.Generator().manual_seed(torch_seed)).tolist()  # fmt: skip
                    offset += len(positions)
                    copies[(r, c)] = _make_copy(encoded[r], units, dict(zip(positions, fills)), tokenizer, params, c)
                    masked_words += len(units)
                    masked_tokens += len(positions)
                bar.update(1)
    finally:
        model.train(was_training)

    out, seen = [], {_row_key(row) for row in rows}
    same_as_source = duplicates = 0
    for r, enc in enumerate(encoded):
        if params.keep_originals:
            out.append({**enc.row, "source_id": enc.row["id"], "strategy": "original"})
        for c in range(params.expansion_rate):
            copy = copies.get((r, c))
            if copy is None:
                continue
            key = _row_key(copy)
            if key == _row_key(enc.row):
                same_as_source += 1
            elif key in seen:
                duplicates += 1
            else:
                seen.add(key)
                out.append(copy)
    check_output_ids(out, "mlm_da")
    seconds = time.perf_counter() - started
    stats = {
        "strategy": STRATEGY,
        "rows_in": len(rows),
        "copies_drawn": len(items),
        "copies_kept": sum(1 for row in out if row["strategy"] == STRATEGY),
        "dropped_same_as_source": same_as_source,
        "dropped_duplicate": duplicates,
        "rows_without_maskable_words": no_words,
        "rows_out": len(out),
        "masked_words": masked_words,
        "masked_tokens": masked_tokens,
        "seconds": round(seconds, 3),
        "rows_per_second": round(len(rows) / seconds, 2) if seconds > 0 else None,
        "copies_per_second": round(len(items) / seconds, 2) if seconds > 0 else None,
    }
    log.info("mlm_da: %d rows -> %d (%d copies kept of %d drawn; %d same as source, %d duplicates) in %.1f s",
             len(rows), len(out), stats["copies_kept"], len(items), same_as_source, duplicates, seconds)  # fmt: skip
    return AugmentResult(out, stats)


def _plan_copy(enc: _Encoded, r: int, c: int, seed: int, params: MlmAugmentParams) -> tuple:
    """Copy ``c`` of row ``r``: which words it masks, and the seed of its fills."""
    rng = _copy_rng(seed, r, c)
    k = words_to_mask(len(enc.units), params.mask_proportion)
    chosen = sorted(rng.choice(len(enc.units), size=k, replace=False).tolist())
    return r, c, [enc.units[u] for u in chosen], int(rng.integers(2**62))


def _masked_batch(encoded: list[_Encoded], plans: list[tuple], tokenizer: PreTrainedTokenizerBase):
    """The padded model inputs of ``plans`` with their words masked, where they are, and the tokens masked."""
    import torch

    length = max(len(encoded[r].input_ids) for r, *_ in plans)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(plans), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(plans), length), dtype=torch.long)
    types = torch.zeros((len(plans), length), dtype=torch.long)
    where = torch.zeros((len(plans), length), dtype=torch.bool)
    for b, (r, _, units, _) in enumerate(plans):
        enc = encoded[r]
        n = len(enc.input_ids)
        input_ids[b, :n] = torch.tensor(enc.input_ids)
        attention[b, :n] = 1
        if enc.token_type_ids is not None:
            types[b, :n] = torch.tensor(enc.token_type_ids)
        for unit in units:
            where[b, list(unit.positions)] = True
    originals = input_ids[where]
    input_ids[where] = tokenizer.mask_token_id
    batch = {"input_ids": input_ids, "attention_mask": attention}
    if any(encoded[r].token_type_ids is not None for r, *_ in plans):
        batch["token_type_ids"] = types
    return batch, where, originals


def _make_copy(
    enc: _Encoded, units: list[WordUnit], fills: dict[int, int], tokenizer: PreTrainedTokenizerBase,
    params: MlmAugmentParams, copy_index: int,
) -> dict:  # fmt: skip
    replacements: list[list[tuple[int, int, str]]] = [[] for _ in enc.texts]
    record = []
    for unit in units:
        ids = [fills[p] for p in unit.positions]
        new = detokenize(tokenizer, ids, remove_blanks=params.remove_blanks)
        replacements[unit.segment].append((unit.start, unit.end, new))
        if params.record_fills:
            record.append({"word": enc.texts[unit.segment][unit.start : unit.end], "fill": new,
                           "word_tokens": [enc.tokens[p] for p in unit.positions],
                           "fill_tokens": tokenizer.convert_ids_to_tokens(ids), "segment": SEGMENTS[unit.segment]})  # fmt: skip
    row: dict[str, Any] = {**enc.row, "id": f"{enc.row['id']}-{STRATEGY}-{copy_index}"}
    for seg, text in enumerate(enc.texts):
        row[SEGMENTS[seg]] = splice(text, replacements[seg])
    row |= {"source_id": enc.row["id"], "strategy": STRATEGY}
    if params.record_fills:
        row["mlm_fills"] = record
    return row
