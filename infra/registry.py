"""MLflow model-registry adapter: register students, move aliases, ship ONNX bundles.

Aliases, not stages: ``challenger`` is the newest registered student, ``champion`` the
one serving. Every version carries the tags that make it reproducible (data hash,
teacher, git commit, Prefect flow run), so a promoted model can be traced back to the
exact inputs that produced it. ONNX models are logged with their bundle files
(``landing_model.json``, ``tokenizer.json``) so a registry URI alone is enough to serve.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from landing.models.onnx_predictor import BUNDLE_META, TOKENIZER_FILE, read_bundle_meta

CHALLENGER = "challenger"
CHAMPION = "champion"
PROMOTION_TAG = "landing.promotion"
FORMAT_TAG = "landing.format"
PARITY_TAG = "landing.parity"
WEIGHTS_TAG = "landing.weights_sha256"  # of the PyTorch weights an ONNX version was exported from
VARIANT_TAG = "landing.variant"
ONNX_SUFFIX = "-onnx"
_MLFLOW_ONNX_FILE = "model.onnx"  # where mlflow.onnx.save_model writes the graph
_EXTRA_DIR = "extra_files"  # where MLflow puts a flavor's extra_files
_MAX_TAG_CHARS = 5000  # MLflow's limit on a model-version tag value


class RegistryError(RuntimeError):
    """A registry entry that is missing or unusable; the message names the model."""


def _client() -> MlflowClient:
    return MlflowClient()


def _not_found(exc: MlflowException) -> bool:
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _logged_model_run(client: MlflowClient, model_uri: str) -> tuple[str | None, str | None]:
    """(model_id, source run id) of a ``models:/m-<id>`` URI, so the version links back to its run."""
    ref = model_uri.removeprefix("models:/")
    if not model_uri.startswith("models:/m-") or "/" in ref or "@" in ref:
        return None, None
    try:
        return ref, client.get_logged_model(ref).source_run_id
    except MlflowException:
        return ref, None


def register_student(name: str, model_uri: str, *, tags: dict[str, str], alias: str = CHALLENGER) -> ModelVersion:
    """New version of ``name`` (created if missing) from a logged model URI, tagged, with ``alias`` moved to it."""
    client = _client()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    model_id, run_id = _logged_model_run(client, model_uri)
    clean = {k: str(v) for k, v in tags.items() if v is not None}
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=clean, model_id=model_id)
    client.set_registered_model_alias(name, alias, version.version)
    return client.get_model_version(name, version.version)


def move_aliases(alias: str, targets: dict[str, str | int]) -> None:
    """Point ``alias`` of every registered model in ``targets`` (name -> version) at its version, or none.

    The PyTorch and ONNX names of one student must move together; if a move fails, the ones
    already made are put back (alias restored to its old version, or deleted) and the error re-raised.
    """
    client = _client()
    previous = {name: client.get_registered_model(name).aliases.get(alias) for name in targets}
    moved: list[str] = []
    try:
        for name, version in targets.items():
            client.set_registered_model_alias(name, alias, str(version))
            moved.append(name)
    except MlflowException:
        for name in reversed(moved):
            if previous[name] is None:
                client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, str(previous[name]))
        raise


def get_alias_version(name: str, alias: str, *, must_exist: bool = False) -> ModelVersion | None:
    """The version ``alias`` points at; None when the alias (or, unless ``must_exist``, the model) is missing."""
    client = _client()
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        if must_exist:
            raise RegistryError(f"registered model {name!r} does not exist; register a student first") from None
        return None
    version = model.aliases.get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def record_decision(name: str, version: str | int, decision: dict) -> None:
    """Store a promotion decision on the version itself, so the registry UI shows why it is (not) champion."""
    value = json.dumps(decision, separators=(",", ":"), default=str)
    if len(value) > _MAX_TAG_CHARS:
        raise ValueError(f"{name} v{version}: promotion decision is {len(value)} chars; tags hold {_MAX_TAG_CHARS}")
    _client().set_model_version_tag(name, str(version), PROMOTION_TAG, value)


def git_commit(repo: Path | None = None) -> str | None:
    """HEAD's commit of the repo holding ``repo`` (default: this project), read from ``.git`` files.

    No ``git`` executable needed (slim images lack it); None outside a repository or on any error.
    """
    try:
        start = Path(repo or Path(__file__).resolve().parents[1]).resolve()
        dot_git = next((p / ".git" for p in (start, *start.parents) if (p / ".git").exists()), None)
        if dot_git is None:
            return None
        if dot_git.is_file():  # worktree or submodule: "gitdir: <path>"
            dot_git = (dot_git.parent / dot_git.read_text().split(":", 1)[1].strip()).resolve()
        common = dot_git
        if (dot_git / "commondir").is_file():
            common = (dot_git / (dot_git / "commondir").read_text().strip()).resolve()
        head = (dot_git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        for base in (dot_git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip() or None
        packed = common / "packed-refs"
        for line in packed.read_text().splitlines() if packed.is_file() else []:
            sha, _, name = line.partition(" ")
            if name.strip() == ref:
                return sha
    except (OSError, IndexError, ValueError):
        return None
    return None


def log_onnx_bundle(bundle_dir: Path, model_file: str, name: str = "onnx") -> str:
    """Log ``bundle_dir/model_file`` as an MLflow ONNX model in the active run, with its bundle files.

    MLflow stores the graph as ``model.onnx`` and extra files under ``extra_files/``; the logged
    ``landing_model.json`` is rewritten to point at ``model.onnx`` so :func:`resolve_onnx_bundle`
    only has to move the files next to it. Returns the model URI (``models:/m-<id>``).
    """
    import onnx  # heavy; only where a model is logged

    bundle_dir = Path(bundle_dir)
    meta = read_bundle_meta(bundle_dir)
    precision = meta.get("variants", {}).get(model_file, {}).get("precision", meta.get("precision", "unknown"))
    meta |= {"onnx": _MLFLOW_ONNX_FILE, "precision": precision, "source_file": model_file,
             "variants": {_MLFLOW_ONNX_FILE: {"precision": precision}}}  # fmt: skip
    flavor_logger = logging.getLogger("mlflow.onnx")
    previous = flavor_logger.level
    with tempfile.TemporaryDirectory(prefix="landing-onnx-") as tmp:
        (Path(tmp) / BUNDLE_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        shutil.copy2(bundle_dir / TOKENIZER_FILE, Path(tmp) / TOKENIZER_FILE)
        flavor_logger.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = mlflow.onnx.log_model(
                    onnx.load(str(bundle_dir / model_file)), name=name, save_as_external_data=False,
                    extra_files=[str(Path(tmp) / BUNDLE_META), str(Path(tmp) / TOKENIZER_FILE)],
                    pip_requirements=["onnxruntime", "tokenizers", "numpy"],
                    metadata={"landing.format": meta.get("format", "landing-onnx/1"), "precision": precision},
                )  # fmt: skip
        finally:
            flavor_logger.setLevel(previous)
    return info.model_uri


def resolve_onnx_bundle(model_uri: str, dst: Path) -> Path:
    """Download a registered ONNX model (``models:/NAME@champion``, ``models:/NAME/3``) as a bundle directory.

    The result loads with ``models.onnx_predictor.OnnxClassifier.load`` and times with the latency targets.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except MlflowException as exc:
        raise RegistryError(f"{model_uri}: cannot download: {exc.message}") from None
    for fname in (BUNDLE_META, TOKENIZER_FILE):
        src = local / _EXTRA_DIR / fname
        if not src.is_file() and not (local / fname).is_file():
            raise RegistryError(
                f"{model_uri}: no {fname} among the model's files; log ONNX models with infra.registry.log_onnx_bundle"
            )
        if src.is_file():
            shutil.copy2(src, local / fname)
    if not (local / read_bundle_meta(local)["onnx"]).is_file():
        raise RegistryError(f"{model_uri}: bundle names {read_bundle_meta(local)['onnx']}, which is not in the model")
    return local
