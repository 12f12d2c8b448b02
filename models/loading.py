"""Build and load sequence classifiers: pretrained, random small BERTs, layer subsets, prompt and contrastive models.

``build_classifier`` takes a spec object (models/specs.py) and picks the builder by its type.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as transformers_logging

from landing.models.fewshot.pooled_classifier import mean_pool_from_encoder, register_mean_pool
from landing.models.fewshot.prompt_model import prompt_classifier, register_prompt_model
from landing.models.pretrained import checked_from_pretrained, encoder_layers, label_maps, load_tokenizer
from landing.models.pruned_bert import register_pruned_bert
from landing.models.specs import (
    AnySpec,
    ContrastiveModel,
    PretrainedModel,
    PromptModel,
    RandomBert,
    RandomMPNet,
    TeacherLayers,
    as_spec,
)

log = logging.getLogger(__name__)
Classifier = tuple[PreTrainedModel, PreTrainedTokenizerBase]


def register_model_classes() -> None:
    """The project's own architectures (pruned BERT, mean-pooled BERT, prompt classifiers) known to the Auto
    classes, so every saved model loads through ``AutoModelForSequenceClassification``; idempotent."""
    register_pruned_bert()
    register_mean_pool()
    register_prompt_model()


# A pretrained encoder gets a fresh classification head on purpose; these keys missing is expected.
HEAD_PREFIXES = ("classifier.", "score.", "pooler.")


def load_classifier(name_or_path: str, labels: Sequence[str] | None = None) -> Classifier:
    """Load any transformers model (hub name or local path) with a classification head.

    transformers prints a load report (a table of MISSING keys) whenever a head is new, which it
    is on purpose when fine-tuning a pretrained encoder; that case is said in one line instead, and
    any other missing or unexpected weights are still warned about.
    """
    register_model_classes()
    kwargs = label_maps(labels) if labels is not None else {}
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = checked_from_pretrained(AutoModelForSequenceClassification.from_pretrained, name_or_path,
                                       output_loading_info=True, use_safetensors=True, **kwargs)  # fmt: skip
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = list(info.get("missing_keys", []))
    # a checkpoint's pooler the classifier does not use (MPNet, RoBERTa classify from their own head) is expected
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(HEAD_PREFIXES)]
    new_head = [k for k in missing if k.startswith(HEAD_PREFIXES)]
    if new_head:
        log.info("%s: new classification head for %d labels (%s initialised)", name_or_path,
                 model.config.num_labels, ", ".join(sorted(new_head)))  # fmt: skip
    if len(new_head) < len(missing) or unexpected:
        log.warning("%s: weights missing from the checkpoint %s, unused %s", name_or_path,
                    sorted(set(missing) - set(new_head)), sorted(unexpected))  # fmt: skip
    return model, load_tokenizer(name_or_path)


def random_classifier(spec: RandomBert | RandomMPNet, labels: Sequence[str]) -> Classifier:
    """A freshly initialised BERT or MPNet sized by the tokenizer's vocabulary."""
    config_class, model_class = RANDOM_ARCHITECTURES[type(spec)]
    tok = load_tokenizer(spec.tokenizer)
    config = config_class(
        vocab_size=len(tok), **spec.model_dump(exclude={"kind", "tokenizer"}), pad_token_id=tok.pad_token_id or 0,
        **label_maps(labels),
    )  # fmt: skip
    return model_class(config), tok


def keep_encoder_layers(model: PreTrainedModel, layers: Sequence[int], *, field: str = "layers") -> PreTrainedModel:
    """Keep only ``layers`` of the encoder, in that order (DistilBERT-style layer dropping); in place.

    ``field`` names the setting the layers came from, for the error message.
    """
    kept_from = encoder_layers(model)
    depth = len(kept_from)
    bad = [i for i in layers if not -depth <= i < depth]
    if bad or not layers:
        raise ValueError(f"{field}: {list(layers)} must be non-empty indices into the model's {depth} layers")
    model.base_model.encoder.layer = nn.ModuleList(copy.deepcopy(kept_from[i]) for i in layers)
    for module in model.base_model.encoder.layer.modules():
        if isinstance(getattr(module, "config", None), PretrainedConfig):
            # deepcopy gave each kept layer a private config; sharing the model's lets later switches reach
            # every layer (set_attn_implementation("eager"), without which SDPA layers return no attentions)
            module.config = model.config
    model.config.num_hidden_layers = len(layers)
    if heads := getattr(model.config, "heads_per_layer", None):  # a width-pruned model: heads follow their layers
        model.config.heads_per_layer = [heads[i] for i in layers]
    return model


def layer_subset_classifier(name_or_path: str, layers: Sequence[int], labels: Sequence[str]) -> Classifier:
    """A shallower copy keeping ``layers`` (DistilBERT-style initialisation from a deeper model)."""
    model, tok = load_classifier(name_or_path, labels)
    try:
        return keep_encoder_layers(model, layers, field="student.model.layers"), tok
    except ValueError as err:
        raise ValueError(f"{err} ({name_or_path!r})") from None


def _teacher_layers(spec: TeacherLayers, labels: Sequence[str]) -> Classifier:
    if spec.name_or_path is None:
        raise ValueError("student.model.name_or_path: a teacher_layers spec names the model its layers come from "
                         "(the flows default it to the teacher's)")  # fmt: skip
    return layer_subset_classifier(spec.name_or_path, spec.layers, labels)


RANDOM_ARCHITECTURES = {
    RandomBert: (BertConfig, BertForSequenceClassification),
    RandomMPNet: (MPNetConfig, MPNetForSequenceClassification),
}
BUILDERS: dict[type, Callable[[Any, Sequence[str]], Classifier]] = {
    PretrainedModel: lambda spec, labels: load_classifier(spec.name_or_path, labels),
    RandomBert: random_classifier,
    RandomMPNet: random_classifier,
    TeacherLayers: _teacher_layers,
    PromptModel: lambda spec, labels: prompt_classifier(spec.mlm_model, spec.prompt, labels),
    ContrastiveModel: lambda spec, labels: mean_pool_from_encoder(spec.name_or_path, labels),
}


def build_classifier(spec: AnySpec | Mapping[str, Any], labels: Sequence[str], seed: int = 0) -> Classifier:
    """Build the transformer classifier a spec describes; ``seed`` fixes the freshly initialised weights."""
    spec = as_spec(spec)
    builder = BUILDERS.get(type(spec))
    if builder is None:  # a word student: models/word_students.py builds it from its training text
        raise ValueError(f"model.kind {spec.kind!r} is not a transformer classifier (expected one of "
                         f"{sorted(cls.model_fields['kind'].default for cls in BUILDERS)})")  # fmt: skip
    if isinstance(spec, PromptModel) and spec.mlm_model is None:
        raise ValueError("model.mlm_model: a prompt model needs its masked LM (the flows default it to mlm_adapt's)")
    torch.manual_seed(seed)
    return builder(spec, labels)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_classifier(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> str:
    """Save as safetensors + tokenizer; returns the weights' sha256, the model's identity."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return weights_sha256(out_dir)


def weights_sha256(model_dir: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights")
    for path in files:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
