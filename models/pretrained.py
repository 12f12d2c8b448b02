"""Pretrained files by name: offline aliases, tokenizers and checked safetensors loading.

The bottom of models/: the model kinds (pooled, prompt, masked LM) and ``loading``'s builders all read
pretrained files through here, so none of them needs another to load a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from landing.models.model_files import ModelFilesError, check_model_dir, looks_like_path
from landing.models.offline import OFFLINE_ALIASES


def resolve_name_or_path(name_or_path: str | os.PathLike[str]) -> str:
    """An offline alias's directory, else the name or path as given (a ``Path`` as its string: the offline
    packages' ``get_model_path()`` returns one)."""
    name = os.fspath(name_or_path)
    return os.fspath(OFFLINE_ALIASES[name]()) if name in OFFLINE_ALIASES else name


def checked_from_pretrained(load: Callable, name_or_path: str, **kwargs):
    """``load(path, **kwargs)`` on checked local files, safetensors only; a hub name that cannot be
    resolved (offline, mistyped) is the user's error, named with the ways to provide it."""
    path = resolve_name_or_path(name_or_path)
    if looks_like_path(path):
        check_model_dir(Path(path).expanduser(), field=name_or_path)
    try:
        return load(path, **kwargs)
    except OSError as exc:
        if looks_like_path(path):
            raise
        raise ModelFilesError(
            f"{name_or_path!r}: not a local directory, not an offline alias ({', '.join(OFFLINE_ALIASES)}), "
            f"and not resolvable from the Hugging Face hub or its cache ({str(exc).splitlines()[0]}); "
            "give the path of a saved model directory"
        ) from None


def label_maps(labels: Sequence[str]) -> dict:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    path = resolve_name_or_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ModelFilesError(f"tokenizer {name_or_path!r}: not loadable ({str(exc).splitlines()[0]}); "
                              f"give a model directory with tokenizer files or an offline alias "
                              f"({', '.join(OFFLINE_ALIASES)})") from None  # fmt: skip


def encoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"cannot select layers of {type(model).__name__}: expected base_model.encoder.layer "
            "(BERT, RoBERTa, ELECTRA and similar encoders)"
        )
    return layers
