"""A BERT or MPNet classifier over the masked mean of its token states, as sentence-transformers embeds a sentence.

SetFit fine-tunes a sentence encoder (mean pooling, L2 normalisation) and then fits a linear head on
its embeddings; this is that encoder and head as one ordinary transformers classifier, so the result
saves, loads (:func:`register_mean_pool`), distils and exports to ONNX like any other model here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
    BertPreTrainedModel,
    MPNetConfig,
    MPNetModel,
    MPNetPreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import logging as transformers_logging

from landing.models.pooling import mean_over_tokens
from landing.models.pretrained import label_maps, load_tokenizer, resolve_name_or_path

log = logging.getLogger(__name__)


class MeanPoolConfig(BertConfig):
    """BERT config plus ``normalize``: whether the pooled embedding is L2-normalised before the head."""

    model_type = "bert_mean_pool"

    def __init__(self, normalize: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize


class MPNetMeanPoolConfig(MPNetConfig):
    """MPNet config plus ``normalize`` (SetFit's own backbone, all-mpnet-base-v2, is an MPNet)."""

    model_type = "mpnet_mean_pool"

    def __init__(self, normalize: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize


class _MeanPooled:
    """Encoder -> masked mean over tokens -> optional L2 normalisation -> linear head (no dropout, as SetFit).
    Mixed into one class per encoder family, which names its ``encoder_class``; the encoder, without its pooler,
    sits under the family's ``base_model_prefix`` (``bert``, ``mpnet``), as in its pretrained checkpoints."""

    encoder_class: type

    def __init__(self, config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, self.encoder_class(config, add_pooling_layer=False))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @property
    def sentence_encoder(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)

    def _encode(self, input_ids, attention_mask, token_type_ids, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {k: v for k, v in {"token_type_ids": token_type_ids, **kwargs}.items() if v is not None}
        out = self.sentence_encoder(input_ids, attention_mask=attention_mask, return_dict=True, **extra)
        pooled = mean_over_tokens(out.last_hidden_state, attention_mask)  # sentence-transformers' Pooling(mean)
        return (F.normalize(pooled, p=2, dim=1) if self.config.normalize else pooled), out

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The sentence embedding the head reads (normalised when ``config.normalize``)."""
        return self._encode(input_ids, attention_mask, token_type_ids)[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """Logits, and the cross-entropy loss when ``labels`` are given (-100 rows ignored)."""
        pooled, out = self._encode(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states,
                                   output_attentions=output_attentions)  # fmt: skip
        logits = self.classifier(pooled)
        loss = None if labels is None else F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)  # fmt: skip


class BertMeanPoolForSequenceClassification(_MeanPooled, BertPreTrainedModel):
    config_class = MeanPoolConfig
    encoder_class = BertModel


class MPNetMeanPoolForSequenceClassification(_MeanPooled, MPNetPreTrainedModel):
    config_class = MPNetMeanPoolConfig
    encoder_class = MPNetModel


# encoder family (the checkpoint's model_type) -> its mean-pooled classifier and that classifier's config
MEAN_POOLED = {
    "bert": (BertMeanPoolForSequenceClassification, MeanPoolConfig, BertConfig),
    "mpnet": (MPNetMeanPoolForSequenceClassification, MPNetMeanPoolConfig, MPNetConfig),
}
MeanPooledClassifier = BertMeanPoolForSequenceClassification | MPNetMeanPoolForSequenceClassification


def register_mean_pool() -> None:
    """Make ``AutoConfig`` / ``AutoModelForSequenceClassification.from_pretrained`` load the mean-pooled
    checkpoints; idempotent, called by everything that loads a saved model."""
    for model_class, config_class, _ in MEAN_POOLED.values():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForSequenceClassification.register(config_class, model_class, exist_ok=True)


def mean_pool_from_encoder(
    name_or_path: str, labels: Sequence[str], *, normalize: bool = True
) -> tuple[MeanPooledClassifier, PreTrainedTokenizerBase]:
    """The pretrained BERT or MPNet encoder at ``name_or_path`` (a directory or offline alias; safetensors) with a
    fresh head for ``labels``; the encoder's own pooler, unused by mean pooling, is dropped."""
    path = resolve_name_or_path(name_or_path)
    family = AutoConfig.from_pretrained(path).model_type
    if family not in MEAN_POOLED:
        raise ValueError(f"{name_or_path!r}: a {family!r} checkpoint; the contrastive model mean-pools "
                         f"{' or '.join(MEAN_POOLED)} encoders")  # fmt: skip
    model_class, config_class, family_config = MEAN_POOLED[family]
    config = config_class(normalize=normalize, **_encoder_fields(family_config, path), **label_maps(labels))
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the new head's MISSING table; reported in one line below
    try:
        model, info = model_class.from_pretrained(path, config=config, use_safetensors=True, output_loading_info=True)
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("classifier.")]
    # The pooler and a masked-LM head (an mlm_adapt result is a fine encoder) are not used by mean pooling.
    unused = ("pooler.", f"{family}.pooler.", "cls.", "lm_head.")
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(unused)]
    if missing or unexpected:
        raise ValueError(f"{name_or_path!r}: not a {family} encoder checkpoint (missing {missing}, unused {unexpected})")
    log.info("%s: mean-pooled encoder with a new head for %d labels", name_or_path, len(labels))
    return model, load_tokenizer(name_or_path)


def _encoder_fields(family_config: type, path: str) -> dict:
    """The encoder's config as keyword arguments, without the keys the mean-pool config sets itself."""
    fields = family_config.from_pretrained(path).to_dict()
    for key in ("model_type", "architectures", "num_labels", "id2label", "label2id", "transformers_version"):
        fields.pop(key, None)
    return fields
