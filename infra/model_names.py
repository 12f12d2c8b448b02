"""``pretrain_model_name_or_path`` as EasyNLP users write it: a local path, a name under the model zoo directory,
or a name in the alias file, tried in that order; the project's offline packages by their names after them."""

from __future__ import annotations

from pathlib import Path

import yaml

from landing.errors import UserError
from landing.infra.settings import get_settings
from landing.models.offline import OFFLINE_ALIASES  # not models.pretrained: naming a model needs no transformers

DEFAULT_MODELZOO = Path("~/.easynlp_modelzoo")  # EasyNLP's own default


class ModelNameError(UserError, ValueError):
    """A model name that resolves to nothing on this machine."""


def read_aliases(path: Path | None) -> dict[str, str]:
    """``name: path`` lines of the alias file (paths relative to the file)."""
    if path is None:
        return {}
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNameError(f"model alias file {path} (LANDING_MODEL_ALIASES): no such file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ModelNameError(f"model alias file {path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ModelNameError(f"model alias file {path}: expected 'name: path' lines, found {type(raw).__name__}")
    return {name: str((path.parent / Path(target).expanduser()).resolve()) for name, target in raw.items()}


def resolve_model_name(name: str, modelzoo_base_dir: str | None = None, *, key: str = "pretrain_model_name_or_path") -> str:
    """A local directory for ``name``, or the name of an offline package model; else a clear error."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    zoo = Path(modelzoo_base_dir).expanduser() if modelzoo_base_dir else DEFAULT_MODELZOO.expanduser()
    for candidate in (zoo / name, zoo / "public" / name):
        if candidate.is_dir():
            return str(candidate.resolve())
    aliases_file = get_settings().model_aliases
    aliases = read_aliases(aliases_file)
    if name in aliases:
        if not Path(aliases[name]).is_dir():
            raise ModelNameError(f"{key}={name}: the alias file {aliases_file} maps it to {aliases[name]}, "
                                 "which is not a directory")  # fmt: skip
        return aliases[name]
    if name in OFFLINE_ALIASES:
        return name
    raise ModelNameError(
        f"{key}={name}: not a local directory, not under the model zoo {zoo} (--modelzoo_base_dir), and not in the "
        f"alias file ({aliases_file or 'none: set LANDING_MODEL_ALIASES'}); this machine does not download models. "
        f"Put the model's directory at {zoo / name}, or add the line '{name}: /path/to/model' to an alias file "
        "named by LANDING_MODEL_ALIASES"
    )
