"""The fewshot flow on tiny models: every method per k and seed on the same k-shot split, the comparison in the
summary, MLflow and Prefect, the best registered as the teacher candidate and distilled; a PET teacher in
``distill`` unchanged."""

from __future__ import annotations

import json

import pytest
import yaml
from tiny_runs import TINY, run_landing, write_config

pytestmark = pytest.mark.integration
TRAINING = {"epochs": 2, "batch_size": 4, "learning_rate": 0.003, "max_seq_length": 24, "logging_steps": 1}


def _fewshot_config(folder, tiny_mlm, **extra):
    config = write_config(folder)
    raw = yaml.safe_load(config.read_text())
    prompt = {"kind": "prompt", "mlm_model": str(tiny_mlm)}
    raw = {
        "flow": "fewshot", "name": "tiny-fewshot", "experiment": "tiny-fewshot", "data": raw["data"] | {"split": {}},
        "fewshot": {"shots": [2, 4], "seeds": [1, 2]},
        "baseline": {"model": TINY, "training": TRAINING},
        "methods": {
            "pet": {"model": prompt | {"prompt": {"pattern": "{text} It was {mask}.", "label_desc": ["bad", "good"],
                                                  "rdrop_alpha": 1.0, "mlm_loss_weight": 0.5}},
                    "training": TRAINING},
            "ptuning": {"model": prompt | {"prompt": {"method": "ptuning", "pattern": "<pseudo>,sentence,<pseudo>,label",
                                                      "label_desc": "bad,good", "prompt_encoder": "mlp",
                                                      "ppt_learning_rate": 0.01, "unlabelled_mlm_weight": 0.1}},
                        "training": TRAINING},
            "cpt": {"model": prompt | {"prompt": {"method": "cpt", "pattern": "{text} so {mask}",
                                                  "label_desc": ["bad", "good"]}}, "training": TRAINING},
            "contrastive": {"model": {"kind": "contrastive", "name_or_path": str(tiny_mlm),
                                      "contrastive": {"max_pairs": 12}}, "training": TRAINING},
        },
        "registered_teacher": "tiny-fewshot-teacher",
        "student": {"model": TINY, "training": TRAINING},
    } | extra  # fmt: skip
    config.write_text(yaml.safe_dump(raw))
    return config


def test_fewshot_compares_every_method_and_registers_and_distils_the_best(prefect_api, flow_env, tiny_mlm):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client

    config = _fewshot_config(flow_env, tiny_mlm)
    code, output = run_landing(["run", str(config), "--output-dir", str(flow_env / "out")], flow_env)
    assert code == 0, output[-4000:]
    summary = json.loads((flow_env / "out" / "summary.json").read_text())
    rows = {(r["method"], r["k"]): r for r in summary["comparison"]}
    methods = ["fine-tune", "pet", "ptuning", "cpt", "contrastive"]
    assert set(rows) == {(m, k) for m in methods for k in (2, 4)}
    assert all(r["seeds"] == 2 and 0 <= r["eval_accuracy"] <= 100 for r in rows.values())
    assert len(summary["runs"]) == 5 * 2 * 2
    assert "| pet | 4 |" in summary["report_markdown"] and "| pet | 4 |" in output  # printed by the CLI
    best = summary["best"]
    at_best_k = [r for r in summary["runs"] if r["k"] == 4]
    means = {m: sum(r["validation_accuracy"] for r in at_best_k if r["method"] == m) / 2 for m in methods}
    assert best["k"] == 4 and means[best["method"]] == max(means.values())  # chosen on validation at the largest k
    # the teacher candidate in the registry, and the distilled student
    tracking = MlflowClient(f"sqlite:///{flow_env}/state/mlflow.db")
    version = tracking.get_model_version_by_alias("tiny-fewshot-teacher", "candidate")
    assert version.tags["landing.variant"] == best["method"]
    assert {"student_kd", "student_baseline"} <= set(summary["distillation"])
    # the comparison as an MLflow artifact and a Prefect table artifact
    artifacts = [a.path for a in tracking.list_artifacts(summary["mlflow_run_id"], "fewshot")]
    assert "fewshot/fewshot_comparison.md" in artifacts
    with get_client(sync_client=True) as client:
        table = client.read_latest_artifacts(limit=50)
    assert any(a.key == "fewshot-comparison" for a in table)


def test_k_shot_splits_hold_k_per_label_and_stay_out_of_eval(prefect_api, flow_env, tiny_mlm):
    """The manifests the flow trained on: k per label, validation the same size, disjoint, none from eval."""
    from landing.data_contracts.manifest import DatasetManifest, ModelManifest
    from landing.tasks.context import fetch_dataset

    config = _fewshot_config(flow_env, tiny_mlm, methods={}, student=None, registered_teacher=None,
                             fewshot={"shots": [3], "seeds": [5]})  # fmt: skip
    code, output = run_landing(["run", str(config), "--output-dir", str(flow_env / "out")], flow_env)
    assert code == 0, output[-4000:]
    summary = json.loads((flow_env / "out" / "summary.json").read_text())
    eval_ids = set(fetch_dataset(DatasetManifest.model_validate(summary["data"]["eval"]))["id"])
    run = summary["runs"][0]
    assert ModelManifest.model_validate(run["model"]).role == "fine-tune-k3-seed5"
    frames = {name: fetch_dataset(DatasetManifest.model_validate(m)) for name, m in summary["kshot"]["k3-seed5"].items()}
    assert frames["train"]["label"].value_counts().to_dict() == {"0": 3, "1": 3}
    assert frames["validation"]["label"].value_counts().to_dict() == {"0": 3, "1": 3}
    ids = {name: set(frame["id"]) for name, frame in frames.items()}
    assert not ids["train"] & ids["validation"] and not (ids["train"] | ids["validation"]) & eval_ids
    assert len(ids["train"] | ids["validation"] | ids["unlabelled"]) == 40  # nothing lost from the pool


def test_a_pet_teacher_feeds_distill_unchanged(prefect_api, flow_env, tiny_mlm):
    prompt = {"pattern": "sentence,It was,label,.", "label_desc": ["bad", "good"]}
    config = write_config(flow_env, teacher={"model": {"kind": "prompt", "mlm_model": str(tiny_mlm), "prompt": prompt},
                                             "training": TRAINING})  # fmt: skip
    raw = yaml.safe_load(config.read_text())
    raw["data"]["split"] = {"validation_size": 0, "transfer_size": 10}
    config.write_text(yaml.safe_dump(raw))
    code, output = run_landing(["run", str(config), "--output-dir", str(flow_env / "out")], flow_env)
    assert code == 0, output[-4000:]
    summary = json.loads((flow_env / "out" / "summary.json").read_text())
    assert summary["logits_uri"] and 0 <= summary["student_kd"]["accuracy"] <= 1
    assert summary["teacher"]["params"] > 0
