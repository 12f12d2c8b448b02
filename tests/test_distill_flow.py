"""The whole distill flow on the smoke config: real Prefect API, MLflow on sqlite, S3 on 127.0.0.1."""

import json
from pathlib import Path

import boto3
import pytest
from mlflow.tracking import MlflowClient
from tiny_runs import task_states

from landing.config import TeacherLayers, load_config
from landing.flows.distill import distill

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs/smoke/distill.yaml"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.shared_data("sst2/train.tsv", "sst2/dev.tsv"),
]


def test_distill_flow_end_to_end(prefect_api, flow_env, s3_env, assert_above_chance):
    config = load_config(
        SMOKE,
        ["data.train.max_rows=400", "data.split.train_size=150", "data.split.transfer_size=150",
         "baseline.step_matched=true"],
    )  # fmt: skip
    out = flow_env / "out"

    summary = distill(config=config, config_dir=str(SMOKE.parent), output_dir=str(out))

    written = json.loads((out / "summary.json").read_text())
    assert written["mlflow_run_id"] == summary["mlflow_run_id"]
    # The smoke teacher learns. The tiny KD student, taught on the teacher's soft targets, must at least not
    # collapse onto one label (a constant prediction's macro-F1 is at most 1/3 on two labels); the no-KD
    # student, 150 labelled rows only, does collapse on this config, which is what KD is there to fix.
    assert_above_chance(written["teacher"]["accuracy"], written["data"]["eval"]["label_counts"], "smoke teacher")
    for role in ("teacher", "student_kd"):
        assert written[role]["macro_f1"] > 0.4, (role, written[role])
    for role in ("teacher", "student_kd", "student_baseline"):
        assert written[role]["params"] > 0 and written[role]["model_uri"].startswith("models:/")
    assert written["student_kd"]["params"] < written["teacher"]["params"]
    assert written["data"]["train"]["rows"] == 150 and written["data"]["transfer"]["rows"] == 150
    # Validation: 10% of the 400 labelled rows (none of them in dev), evaluated next to eval for every model.
    assert written["data"]["validation"]["rows"] == 40
    for role in ("teacher", "student_kd", "student_baseline", "student_baseline_steps"):
        assert written[role]["split"] == "eval" and written[role]["validation"]["rows"] == 40
        assert written[role]["validation"]["accuracy"] > 0.0

    # Finished steps leave neither checkpoints (their cached results replace them) nor scratch copies of models.
    state = flow_env / "state"
    assert not any((state / "checkpoints").glob("*")), sorted((state / "checkpoints").iterdir())
    assert not list((state / "work").rglob("model.safetensors"))

    # The logits object is in the bucket, under this run's prefix.
    bucket = (flow_env / "bucket").read_text()
    assert written["logits_uri"] == f"s3://{bucket}/objects/runs/{summary['mlflow_run_id']}/logits/teacher_logits.npz"
    s3 = boto3.client("s3", endpoint_url=s3_env.endpoint_url, region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"objects/runs/{summary['mlflow_run_id']}/logits/teacher_logits.npz" in keys
    assert any(k.endswith("models/student_kd/_COMPLETE") for k in keys)

    # One finished parent run tagged with the Prefect flow run, a nested run per step.
    client = MlflowClient(f"sqlite:///{flow_env}/state/mlflow.db")
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["prefect.flow_run_id"] == summary["prefect_flow_run_id"] != "local"
    assert parent.data.metrics["student_kd.accuracy"] == pytest.approx(written["student_kd"]["accuracy"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    steps = {r.data.tags["landing.step"]: r for r in children}
    assert {"download-train", "validate-train", "split", "teacher", "export-logits", "student_kd",
            "student_baseline", "evaluate-teacher", "evaluate-student_kd"} <= set(steps)  # fmt: skip
    assert all(r.info.status == "FINISHED" for r in children)
    assert steps["student_kd"].data.params["distillation.type"] == "vanilla_kd"
    # The step-matched baseline takes as many optimizer steps as the KD student, more than the plain baseline.
    kd_steps = steps["student_kd"].data.metrics["global_step"]
    assert steps["student_baseline_steps"].data.metrics["global_step"] == kd_steps
    assert steps["student_baseline"].data.metrics["global_step"] < kd_steps
    assert steps["evaluate-student_kd"].data.metrics["accuracy"] == pytest.approx(written["student_kd"]["accuracy"])
    assert len(steps["split"].inputs.dataset_inputs) == 4  # train, validation, eval, transfer as dataset inputs


def test_failed_step_marks_the_parent_run_failed(prefect_api, flow_env):
    config = load_config(SMOKE)
    # The teacher trains fine; the student's pretrained weights do not exist, so its step fails.
    config.student.model = TeacherLayers(name_or_path=str(flow_env / "no-such-model"), layers=[0])
    with pytest.raises(Exception, match="no-such-model"):
        distill(config=config, config_dir=str(SMOKE.parent), output_dir=str(flow_env / "out"))
    client = MlflowClient(f"sqlite:///{flow_env}/state/mlflow.db")
    runs = client.search_runs(client.get_experiment_by_name("landing-smoke").experiment_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["FAILED"]
    assert not (flow_env / "out" / "summary.json").exists()


# The steps the rerun test reads back: teacher and two students, both tables validated, one split and one export.
RERUN_STEPS = {"train": 3, "validate": 2, "split": 1, "export-logits": 1, "evaluate": 1}


def test_rerun_skips_finished_steps_and_a_changed_parameter_or_row_reruns_downstream(prefect_api, flow_env):
    table = flow_env / "train.tsv"  # a local copy of 301 SST-2 lines, so one row can be changed
    lines = (ROOT.parent / "shared/data/sst2/train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:301]
    table.write_text("".join(lines), encoding="utf-8")
    fast = [f"data.train.sources=[{{uri: '{table}'}}]", "data.split.train_size=100", "data.split.transfer_size=100",
            "teacher.training.epochs=2", "student.training.epochs=2", "latency_samples=0"]  # fmt: skip
    first = distill(config=load_config(SMOKE, fast), config_dir=str(SMOKE.parent), output_dir=str(flow_env / "a"))
    again = distill(config=load_config(SMOKE, fast), config_dir=str(SMOKE.parent), output_dir=str(flow_env / "b"))
    states = task_states(again["prefect_flow_run_id"], RERUN_STEPS)
    assert set(states["train"]) == {"Cached"} and set(states["export-logits"]) == {"Cached"}
    assert set(states["validate"]) == {"Cached"} and set(states["evaluate"]) == {"Cached"}
    assert again["student_kd"] == first["student_kd"]

    changed = load_config(SMOKE, [*fast, "student.training.learning_rate=0.002"])
    third = distill(config=changed, config_dir=str(SMOKE.parent), output_dir=str(flow_env / "c"))
    states = task_states(third["prefect_flow_run_id"], RERUN_STEPS)
    assert sorted(states["train"]) == ["Cached", "Completed", "Completed"]  # teacher reused, both students re-run
    assert states["export-logits"] == ["Cached"]
    assert third["teacher"] == first["teacher"] and third["logits_uri"] == first["logits_uri"]

    # Same path, same size, one label flipped: the bytes changed, so download and everything downstream re-run.
    sentence, label = lines[5].rstrip("\n").split("\t")
    lines[5] = f"{sentence}\t{1 - int(label)}\n"
    table.write_text("".join(lines), encoding="utf-8")
    fourth = distill(config=changed, config_dir=str(SMOKE.parent), output_dir=str(flow_env / "d"))
    states = task_states(fourth["prefect_flow_run_id"], RERUN_STEPS | {"download": 2})
    assert sorted(states["download"]) == ["Cached", "Completed"]  # train re-read; the unchanged dev table reused
    assert sorted(states["validate"]) == ["Cached", "Completed"] and states["split"] == ["Completed"]
    assert set(states["train"]) == {"Completed"} and states["export-logits"] == ["Completed"]
    assert fourth["data"]["train"]["sha256"] != third["data"]["train"]["sha256"]
