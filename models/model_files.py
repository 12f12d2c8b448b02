"""Checks on the model files a user points at, before anything loads them (no torch here).

A model directory must hold ``config.json`` and safetensors weights: pickled weights
(``pytorch_model.bin``, ``*.pt``) are refused rather than unpickled, since unpickling a
file can run any code in it. Each failure is a :class:`ModelFilesError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from landing.errors import UserError

PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
CONVERT_HINT = (
    "convert it once, where you trust the file: python -c \"from transformers import AutoModel as M; "
    "M.from_pretrained('{path}').save_pretrained('{path}', safe_serialization=True)\""
)


class ModelFilesError(UserError, ValueError):
    """A model directory or file that cannot be used as it is; the message names it and the fix."""


def looks_like_path(name_or_path: str | os.PathLike[str]) -> bool:
    """A local path rather than a hub name: a ``Path``, explicit (``/``, ``./``, ``../``, ``~``) or existing."""
    if isinstance(name_or_path, os.PathLike):
        return True
    return name_or_path.startswith(("/", "./", "../", "~")) or Path(name_or_path).exists()


def check_model_dir(path: Path, *, field: str) -> None:
    """Raise ModelFilesError unless ``path`` is a transformers model directory with readable safetensors
    weights; ``field`` is the config key or option that named it."""
    where = f"{field}: {path}"
    if not path.is_dir():
        raise ModelFilesError(f"{where}: no such model directory")
    if not (path / "config.json").is_file():
        raise ModelFilesError(f"{where}: no config.json; expected a directory written by save_pretrained "
                              "(config.json, *.safetensors, tokenizer files)")  # fmt: skip
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in path.glob(pattern))
        if pickled:
            raise ModelFilesError(f"{where}: only pickled weights ({', '.join(pickled)}); landing loads safetensors "
                                  f"only, since unpickling a file can run code in it; {CONVERT_HINT.format(path=path)}")  # fmt: skip
        raise ModelFilesError(f"{where}: no *.safetensors weights")
    for weight_file in weights:
        check_safetensors(weight_file, field=field)


def check_safetensors(path: Path, *, field: str) -> None:
    """The header parses and every tensor lies inside the file (safetensors validates both on open)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as weights:
            weights.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFilesError(f"{field}: {path}: not a readable safetensors file ({exc}); "
                              "re-save or re-download the model") from None  # fmt: skip
