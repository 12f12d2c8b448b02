"""PET, P-tuning and CPT as one transformers classifier over a BERT or MPNet masked LM.

The model takes what any classifier takes (the plain tokenizer's ``input_ids`` of ``[CLS] text [SEP]``
or ``[CLS] text [SEP] pair [SEP]``; MPNet's ``<s> text </s></s> pair </s>``) and builds the prompt itself,
with tensor gathers: the first token, the pattern's parts in order (text fields cut from the input, literal
tokens, the masks, pseudo tokens), the separator. So training, prediction, logits export, ``distill`` and ONNX export treat it as any
classifier and nothing outside needs to know the pattern. The output length is the input length
plus the pattern's fixed tokens, capped at the training sequence length (text is cut to fit; static shapes
and a slice, so it traces to ONNX).

Label scores (the ``logits``): a label word of ``n`` tokens is scored on the first ``n`` masks by its
mean token log-probability (masks beyond its length are not read), so words of different lengths
compare on one scale. Loss: cross-entropy over these label scores (not over the vocabulary).

* ``pet``: the MLM head's scores as above.
* ``ptuning``: as PET, with pseudo-token positions fed trainable embeddings (optionally through an LSTM or
  MLP prompt encoder) instead of word embeddings.
* ``cpt``: also a supervised contrastive loss on the mask-position representation; after training, class
  prototypes (mean normalised representation per class) are stored in the weights and the logits are
  cosine similarities to them over a temperature, so prediction needs no training file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    MPNetConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertOnlyMLMHead, BertPreTrainedModel
from transformers.models.mpnet.modeling_mpnet import MPNetLMHead, MPNetModel, MPNetPreTrainedModel

from landing.models.fewshot.params import PromptParams
from landing.models.fewshot.patterns import LITERAL, MASK, PSEUDO, TEXT, TEXT_PAIR, Part, PatternError
from landing.models.kd import IGNORE_LABEL

METHODS = ("pet", "ptuning", "cpt")


class _PromptFields:
    """The compiled prompt on top of an encoder's config: its parts with token ids, the verbalizer's token ids and
    the method. Mixed into one config class per encoder family."""

    def __init__(
        self, prompt_parts: list | None = None, label_token_ids: list | None = None, prompt_method: str = "pet",
        prompt_encoder: str = "none", cpt_temperature: float = 0.1, prompt_pattern: str = "",
        label_words: list | None = None, max_prompt_tokens: int | None = None, **kwargs,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.max_prompt_tokens = max_prompt_tokens  # the training sequence length the whole prompt fits in
        self.prompt_parts = prompt_parts or []  # [{"kind": ..., "ids": [...]}] in pattern order
        self.label_token_ids = label_token_ids or []  # per label (config label order), its word's token ids
        self.prompt_method = prompt_method
        self.prompt_encoder = prompt_encoder
        self.cpt_temperature = cpt_temperature
        self.prompt_pattern = prompt_pattern  # for information
        self.label_words = label_words or []

    @property
    def mask_count(self) -> int:
        return max((len(ids) for ids in self.label_token_ids), default=1)

    @property
    def pseudo_count(self) -> int:
        return sum(len(p["ids"]) for p in self.prompt_parts if p["kind"] == PSEUDO)

    @property
    def has_pair(self) -> bool:
        return any(p["kind"] == TEXT_PAIR for p in self.prompt_parts)

    @property
    def fixed_tokens(self) -> int:
        """Tokens the prompt adds to the input (literals, masks, pseudo tokens, the final separator)."""
        return 1 + sum(len(p["ids"]) for p in self.prompt_parts if p["kind"] in (LITERAL, MASK, PSEUDO))


class BertPromptConfig(_PromptFields, BertConfig):
    model_type = "bert_prompt"


class MPNetPromptConfig(_PromptFields, MPNetConfig):
    model_type = "mpnet_prompt"


@dataclass
class PromptOutput(SequenceClassifierOutput):
    mask_log_probs: torch.Tensor | None = None  # (batch, masks, vocab): for the full-vocabulary MLM loss
    mask_hidden: torch.Tensor | None = None  # (batch, hidden): CPT's representation


class PromptEncoder(nn.Module):
    """P-tuning's reparametrisation of the pseudo embeddings: a BiLSTM then an MLP, or an MLP alone."""

    def __init__(self, kind: str, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(hidden, hidden // 2, num_layers=2, bidirectional=True, batch_first=True) if kind == "lstm" else None
        width = hidden if self.lstm is None else 2 * (hidden // 2)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = embeddings.unsqueeze(0)
        if self.lstm is not None:
            x = self.lstm(x)[0]
        return self.mlp(x).squeeze(0)


class PromptClassifier:
    """The prompt classifier over a masked LM, mixed into one class per encoder family. The family names its
    encoder and MLM head classes and where they sit (as in its ``*ForMaskedLM``, so those weights load as they
    are), the module holding the head's ``decoder`` and ``bias``, how many separators stand between a pair's two
    texts, and whether the encoder takes segment ids."""

    encoder_class: type
    head_class: type
    head_name: str
    decoder_owner: str  # dotted path from the model
    pair_separators: int
    segment_ids: bool
    position_offset: int  # position ids the encoder reserves before the first token

    def __init__(self, config) -> None:
        super().__init__(config)
        if config.prompt_method not in METHODS:
            raise ValueError(f"prompt method {config.prompt_method!r}: expected one of {METHODS}")
        setattr(self, self.base_model_prefix, self.encoder_class(config, add_pooling_layer=False))
        setattr(self, self.head_name, self.head_class(config))
        n_pseudo = config.pseudo_count
        self.prompt_embeddings = nn.Embedding(n_pseudo, config.hidden_size) if n_pseudo else None
        self.prompt_encoder = PromptEncoder(config.prompt_encoder, config.hidden_size) if (
            n_pseudo and config.prompt_encoder != "none") else None  # fmt: skip
        self.register_buffer("prototypes", torch.zeros(config.num_labels, config.hidden_size))  # CPT; saved
        self.post_init()

    @property
    def encoder(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)

    @property
    def mlm_head(self) -> nn.Module:
        return getattr(self, self.head_name)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.encoder.embeddings.word_embeddings

    def get_output_embeddings(self):
        return attrgetter(self.decoder_owner)(self).decoder

    def set_output_embeddings(self, new_embeddings):
        owner = attrgetter(self.decoder_owner)(self)
        owner.decoder = new_embeddings
        owner.bias = new_embeddings.bias

    # Index tensors built from the config on use, not buffers: from_pretrained allocates non-persistent
    # buffers without running __init__'s values into them, and these are constants of the traced graph anyway.
    def _fixed_ids(self, device) -> torch.Tensor:
        fixed = [i for p in self.config.prompt_parts if p["kind"] in (LITERAL, MASK, PSEUDO) for i in p["ids"]]
        return torch.tensor([*fixed, self.config.sep_token_id], dtype=torch.long, device=device)

    def _label_index(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(label × mask token ids, zero-padded; label × mask weights, 1/len on the word's masks)."""
        words, width = self.config.label_token_ids, self.config.mask_count
        ids = torch.tensor([w + [0] * (width - len(w)) for w in words], device=device)
        weights = torch.tensor([[1.0 / len(w) if k < len(w) else 0.0 for k in range(width)] for w in words], device=device)
        return ids, weights

    def prompt_parameters(self) -> list[nn.Parameter]:
        """The pseudo-token embeddings and their encoder (P-tuning's own learning rate applies to these)."""
        modules = [m for m in (self.prompt_embeddings, self.prompt_encoder) if m is not None]
        return [p for m in modules for p in m.parameters()]

    # --- the prompt -------------------------------------------------------------------------------
    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt: the training sequence length, and never more than the encoder's positions."""
        positions = self.config.max_position_embeddings - self.position_offset
        return min(getattr(self.config, "max_prompt_tokens", None) or positions, positions)  # older saves: unset

    def prompt_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Each row's prompt length before any cut, from its input length (the first token and the text fields,
        without the input's separators, plus the pattern's fixed tokens)."""
        separators = 1 + (self.pair_separators if self.config.has_pair else 0)
        return input_lengths - separators + self.config.fixed_tokens

    def build_prompt(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(ids, attention mask, mask positions, pseudo positions) of ``[CLS] parts... [SEP]`` per row.

        Text that would take the prompt past ``max_prompt_tokens`` is cut from its end (the second text's
        first), so the text, the pattern and the special tokens always fit: a long row is never an error."""
        gap = self.pair_separators
        batch, length = input_ids.shape
        valid = attention_mask.bool()
        total = attention_mask.sum(1)
        first_sep = torch.argmax(((input_ids == self.config.sep_token_id) & valid).int(), dim=1)
        one = torch.ones_like(total)
        text, pair = first_sep - 1, (total - first_sep - gap - 1).clamp(min=0)
        over = (self.prompt_lengths(total) - self.max_prompt_tokens).clamp(min=0)
        cut_pair = torch.minimum(over, pair) if self.config.has_pair else torch.zeros_like(over)
        spans = {TEXT: (one, text - (over - cut_pair)), TEXT_PAIR: (first_sep + gap, pair - cut_pair)}
        starts, lengths, masks, pseudos = [torch.zeros_like(total)], [one], None, []  # [CLS] from the input
        offset = length
        for part in self.config.prompt_parts:
            if part["kind"] in spans:
                start, size = spans[part["kind"]]
            else:
                start, size = one * offset, one * len(part["ids"])
                offset += len(part["ids"])
            starts.append(start)
            lengths.append(size)
        starts.append(one * offset)  # the final [SEP]
        lengths.append(one)
        src_start, seg_len = torch.stack(starts, 1), torch.stack(lengths, 1)
        out_start = torch.cumsum(seg_len, 1) - seg_len
        fixed_ids = self._fixed_ids(input_ids.device)
        # A slice, not min(): the cap must stay in the traced graph, whatever the example input's length.
        positions = torch.arange(length + fixed_ids.numel(), device=input_ids.device)[: self.max_prompt_tokens]
        segment = (out_start.unsqueeze(1) <= positions.view(1, -1, 1)).sum(-1) - 1
        source = src_start.gather(1, segment) + positions.view(1, -1) - out_start.gather(1, segment)
        table = torch.cat([input_ids, fixed_ids.unsqueeze(0).expand(batch, -1)], 1)
        ids = table.gather(1, source.clamp(0, table.shape[1] - 1))
        inside = positions.view(1, -1) < seg_len.sum(1, keepdim=True)
        ids = torch.where(inside, ids, torch.full_like(ids, self.config.pad_token_id or 0))
        for index, part in enumerate(self.config.prompt_parts, start=1):
            at = out_start[:, index : index + 1] + torch.arange(len(part["ids"]), device=ids.device)
            if part["kind"] == MASK:
                masks = at
            elif part["kind"] == PSEUDO:
                pseudos.append(at)
        return ids, inside.long(), masks, torch.cat(pseudos, 1) if pseudos else None

    def _embeddings(self, ids: torch.Tensor, pseudo_positions: torch.Tensor | None) -> torch.Tensor:
        embeds = self.word_embeddings(ids)
        if pseudo_positions is None:
            return embeds
        vectors = self.prompt_embeddings.weight
        if self.prompt_encoder is not None:
            vectors = self.prompt_encoder(vectors)
        # One-hot placement (traceable, no in-place indexing): row b, pseudo p goes to pseudo_positions[b, p].
        place = (pseudo_positions.unsqueeze(-1) == torch.arange(ids.shape[1], device=ids.device)).to(embeds.dtype)
        keep = 1.0 - place.sum(1).clamp(max=1.0)
        return embeds * keep.unsqueeze(-1) + torch.einsum("bpt,ph->bth", place, vectors)

    # --- scoring ----------------------------------------------------------------------------------
    def label_scores(self, mask_log_probs: torch.Tensor) -> torch.Tensor:
        """Mean log-probability of each label word's tokens at the first masks; (batch, labels)."""
        ids, weights = self._label_index(mask_log_probs.device)
        index = ids.t().unsqueeze(0).expand(mask_log_probs.shape[0], -1, -1)  # (batch, masks, labels)
        return (mask_log_probs.gather(2, index) * weights.t().unsqueeze(0)).sum(1)

    def prototype_logits(self, mask_hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(mask_hidden, dim=-1) @ F.normalize(self.prototypes, dim=-1).t() / self.config.cpt_temperature

    @property
    def has_prototypes(self) -> bool:
        return bool(self.prototypes.abs().sum() > 0)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, token_type_ids=None,
        labels: torch.Tensor | None = None, output_hidden_states: bool | None = None,
        output_attentions: bool | None = None, **kwargs,
    ) -> PromptOutput:  # fmt: skip
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, mask, mask_positions, pseudo_positions = self.build_prompt(input_ids, attention_mask)
        segments = {"token_type_ids": torch.zeros_like(ids)} if self.segment_ids else {}
        outputs = self.encoder(inputs_embeds=self._embeddings(ids, pseudo_positions), attention_mask=mask,
                               output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                               return_dict=True, **segments)  # fmt: skip
        hidden = outputs.last_hidden_state
        at_masks = hidden.gather(1, mask_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        log_probs = torch.log_softmax(self.mlm_head(at_masks).float(), dim=-1)
        scores = self.label_scores(log_probs)
        mask_hidden = at_masks[:, 0]
        logits = self.prototype_logits(mask_hidden) if self.config.prompt_method == "cpt" and self.has_prototypes else scores
        loss = None
        if labels is not None:
            loss = label_loss(scores, labels)
            if self.config.prompt_method == "cpt":
                loss = loss + supervised_contrastive_loss(mask_hidden, labels, self.config.cpt_temperature)
        return PromptOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                            attentions=outputs.attentions, mask_log_probs=log_probs, mask_hidden=mask_hidden)  # fmt: skip

    @torch.no_grad()
    def set_prototypes(self, mask_hidden: torch.Tensor, labels: torch.Tensor) -> None:
        """CPT's class prototypes: the mean normalised mask representation of each class's training rows."""
        normed = F.normalize(mask_hidden.float(), dim=-1)
        for c in range(self.config.num_labels):
            rows = normed[labels == c]
            if len(rows) == 0:
                raise ValueError(f"CPT: no training row of label {self.config.id2label[c]!r} to build its prototype")
            self.prototypes[c] = rows.mean(0)


class BertPromptForSequenceClassification(PromptClassifier, BertPreTrainedModel):
    config_class = BertPromptConfig
    encoder_class, head_class, head_name, pair_separators, segment_ids = BertModel, BertOnlyMLMHead, "cls", 1, True
    decoder_owner, position_offset = "cls.predictions", 0
    _tied_weights_keys = {  # as BertForMaskedLM: the decoder is the input embeddings
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }


class MPNetPromptForSequenceClassification(PromptClassifier, MPNetPreTrainedModel):
    config_class = MPNetPromptConfig
    # A pair is <s> a </s></s> b </s>, as RoBERTa; MPNet has no segment embeddings.
    encoder_class, head_class, head_name, pair_separators, segment_ids = MPNetModel, MPNetLMHead, "lm_head", 2, False
    decoder_owner, position_offset = "lm_head", 2  # positions start after the padding index, as RoBERTa's
    _tied_weights_keys = {  # as MPNetForMaskedLM
        "lm_head.decoder.weight": "mpnet.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }


FAMILIES: dict[str, type[PromptClassifier]] = {"bert": BertPromptForSequenceClassification,
                                               "mpnet": MPNetPromptForSequenceClassification}  # fmt: skip


def label_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the verbalizer's label scores; rows without a label (-100) are left out."""
    keep = labels != IGNORE_LABEL
    if not bool(keep.any()):
        return scores.sum() * 0.0
    return F.cross_entropy(scores[keep], labels[keep])


def supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Khosla et al.'s SupCon over the batch: each labelled row pulled to the same-label rows, pushed from the rest."""
    keep = labels != IGNORE_LABEL
    z, y = F.normalize(features[keep].float(), dim=-1), labels[keep]
    if len(y) < 2:
        return features.sum() * 0.0
    similarity = z @ z.t() / temperature
    self_mask = torch.eye(len(y), dtype=torch.bool, device=z.device)
    similarity = similarity.masked_fill(self_mask, float("-inf"))
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positive = (y.unsqueeze(0) == y.unsqueeze(1)) & ~self_mask
    counts = positive.sum(1)
    has = counts > 0
    if not bool(has.any()):
        return features.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(1)[has] / counts[has]
    return -mean_log_prob.mean()


def register_prompt_model() -> None:
    """Make ``AutoModelForSequenceClassification.from_pretrained`` load prompt checkpoints; idempotent."""
    for model_class in FAMILIES.values():
        AutoConfig.register(model_class.config_class.model_type, model_class.config_class, exist_ok=True)
        AutoModelForSequenceClassification.register(model_class.config_class, model_class, exist_ok=True)


# --- building from a masked LM -------------------------------------------------------------------
def encode_label_words(tokenizer: PreTrainedTokenizerBase, words: dict[str, str]) -> list[list[int]]:
    """Each label word's token ids; a word that encodes to nothing, ``[UNK]`` or a special token is refused."""
    special = set(tokenizer.all_special_ids)
    encoded = []
    for label, word in words.items():
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        bad = [tokenizer.convert_ids_to_tokens(i) for i in ids if i in special]
        if not ids or bad:
            found = f"tokens {tokenizer.convert_ids_to_tokens(ids)}" if ids else "no tokens"
            raise PatternError(f"label word {word!r} (label {label!r}): the tokenizer cannot encode it ({found}); "
                               "choose a word in its vocabulary")  # fmt: skip
        encoded.append(ids)
    return encoded


def compile_parts(tokenizer: PreTrainedTokenizerBase, parts: Sequence[Part], mask_count: int) -> list[dict]:
    """Parts with token ids: literals tokenised alone, the label slot as ``mask_count`` masks, pseudo tokens as
    placeholders (their embeddings are the model's own)."""
    compiled = []
    for part in parts:
        if part.kind == LITERAL:
            ids = tokenizer(part.text, add_special_tokens=False)["input_ids"]
            if ids:
                compiled.append({"kind": LITERAL, "ids": ids})
        elif part.kind == MASK:
            compiled.append({"kind": MASK, "ids": [tokenizer.mask_token_id] * mask_count})
        elif part.kind == PSEUDO:
            compiled.append({"kind": PSEUDO, "ids": [tokenizer.pad_token_id or 0]})
        else:
            compiled.append({"kind": part.kind, "ids": []})
    return compiled


def prompt_classifier_from_mlm(
    masked_lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, labels: Sequence[str], parts: Sequence[Part],
    words: dict[str, str], *, method: str = "pet", prompt_encoder: str = "none", pseudo_init: Sequence[str] = (),
    cpt_temperature: float = 0.1, pattern: str = "",
) -> PromptClassifier:  # fmt: skip
    """The prompt classifier sharing ``masked_lm``'s weights (a BERT or MPNet ``*ForMaskedLM``), in the run's label
    order."""
    family = FAMILIES.get(masked_lm.config.model_type)
    if family is None:
        raise PatternError(f"prompt methods support {' and '.join(FAMILIES)} masked LMs; this one is "
                           f"{masked_lm.config.model_type!r}")  # fmt: skip
    label_token_ids = encode_label_words(tokenizer, words)
    compiled = compile_parts(tokenizer, parts, max(len(ids) for ids in label_token_ids))
    base = masked_lm.config.to_dict()
    for key in ("model_type", "architectures", "id2label", "label2id", "num_labels", "transformers_version"):
        base.pop(key, None)
    config = family.config_class(
        prompt_parts=compiled, label_token_ids=label_token_ids, prompt_method=method, prompt_encoder=prompt_encoder,
        cpt_temperature=cpt_temperature, prompt_pattern=pattern, label_words=list(words.values()),
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
        sep_token_id=tokenizer.sep_token_id, mask_token_id=tokenizer.mask_token_id, max_prompt_tokens=None, **base,
    )  # fmt: skip
    model = family(config)
    missing, unexpected = model.load_state_dict(masked_lm.state_dict(), strict=False)
    own = ("prompt_embeddings.", "prompt_encoder.", "prototypes")
    if [k for k in missing if not k.startswith(own)] or unexpected:
        raise PatternError(f"masked LM weights do not fit the prompt model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    _init_pseudo(model, tokenizer, pseudo_init)
    return model


def _init_pseudo(model: PromptClassifier, tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> None:
    """Pseudo embeddings start from the given words' embeddings (the mean of a word's tokens); the rest random."""
    if model.prompt_embeddings is None or not words:
        return
    if len(words) > model.prompt_embeddings.num_embeddings:
        raise PatternError(f"pseudo_init: {len(words)} words for {model.prompt_embeddings.num_embeddings} pseudo tokens")
    table = model.word_embeddings.weight
    with torch.no_grad():
        for i, word in enumerate(words):
            ids = tokenizer(word, add_special_tokens=False)["input_ids"]
            if not ids or tokenizer.unk_token_id in ids:
                raise PatternError(f"pseudo_init word {word!r}: the tokenizer cannot encode it")
            model.prompt_embeddings.weight[i] = table[ids].mean(0)


def prompt_classifier(mlm_model: str, params: PromptParams,
                      labels: Sequence[str]) -> tuple[PromptClassifier, PreTrainedTokenizerBase]:  # fmt: skip
    """The masked LM ``mlm_model`` (with its trained head) under the pattern and verbalizer of ``params`` (a pattern
    in the contract's terms, ``text``/``text_pair``: the run config spells the columns so)."""
    from landing.models.augment.mlm import load_masked_lm
    from landing.models.fewshot.patterns import parse_pattern, verbalizer

    masked_lm, tokenizer = load_masked_lm(mlm_model)
    words = verbalizer(labels, label_desc=params.label_desc, label_words=params.label_words)
    model = prompt_classifier_from_mlm(
        masked_lm, tokenizer, labels, parse_pattern(params.pattern), words,
        method=params.method, prompt_encoder=params.prompt_encoder, pseudo_init=params.pseudo_init,
        cpt_temperature=params.cpt_temperature, pattern=params.pattern,
    )  # fmt: skip
    model.prompt_params = params  # read by models/training.py: the prompt losses and learning rates
    return model, tokenizer
