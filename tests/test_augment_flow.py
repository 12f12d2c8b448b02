"""Augmentation in the flows: `landing augment` writes the augmented table; `distill` labels augmented and
unlabelled rows with the teacher (soft logits, hard labels, or online) and trains the KD student on them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from tiny_runs import GOOD_ROWS, TINY, run_landing, task_states, tsv, write_config

from landing.config import ConfigError, load_config

pytestmark = pytest.mark.integration
EDA = {"strategies": {"unk": 0.5, "ngram": 0.5}, "expansion_rate": 2, "p": 0.3}


def _unlabelled(folder, rows: int = 30):
    (folder / "unlabelled.tsv").write_bytes(("sentence\n" + "".join(f"an unlabelled film review {i}\n"
                                                                      for i in range(rows))).encode())  # fmt: skip


def _augmenting_config(folder, augmentation: dict, **extra):
    _unlabelled(folder)
    config = write_config(folder, augmentation=augmentation, **extra)
    raw = yaml.safe_load(config.read_text())
    raw["data"]["unlabelled"] = {"sources": [{"uri": "unlabelled.tsv"}]}
    config.write_text(yaml.safe_dump(raw))
    return config


def test_landing_augment_writes_the_table_with_the_users_columns(prefect_api, flow_env, tiny_mlm):
    config = _augmenting_config(flow_env, {"eda": EDA, "mlm_da": {"expansion_rate": 1, "max_seq_length": 32},
                                           "mlm_model": str(tiny_mlm)})  # fmt: skip
    out = flow_env / "augmented.tsv"
    code, output = run_landing(["augment", str(config), "--output", str(out)], flow_env)
    assert code == 0, output[-3000:]
    table = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    assert list(table.columns) == ["sentence", "label", "source_id", "strategy"]
    assert set(table["strategy"]) <= {"unk", "ngram", "mlm_da"} and {"mlm_da"} < set(table["strategy"])
    train = pd.read_csv(flow_env / "train.tsv", sep="\t", dtype=str)
    from landing.data_contracts.validation import example_id

    sources = {example_id(t): label for t, label in zip(train["sentence"], train["label"], strict=True)}
    assert set(table["source_id"]) <= set(sources)  # every row points to a source row...
    assert all(sources[s] == label for s, label in zip(table["source_id"], table["label"], strict=True))  # ...its label
    assert not set(table["sentence"]) & set(train["sentence"]) and table["sentence"].is_unique
    manifest = json.loads((flow_env / "augmented.tsv.manifest.json").read_text())
    assert manifest["rows"] == len(table) and manifest["name"] == "augmented"


@pytest.mark.parametrize("mode", ["soft", "hard", "online"])
def test_distill_trains_the_student_on_augmented_and_unlabelled_rows(mode, prefect_api, flow_env):
    distillation = {"soft": {}, "hard": {"teacher_labels": "hard"}, "online": {"online": {"server_batch_size": 8}}}
    config = _augmenting_config(flow_env, {"eda": EDA, "unlabelled_rows": 10}, distillation=distillation[mode])
    code, output = run_landing(["run", str(config), "--output-dir", str(flow_env / "out")], flow_env)
    assert code == 0, output[-3000:]
    summary = json.loads((flow_env / "out" / "summary.json").read_text())
    assert (summary["logits_uri"] is None) == (mode == "online")  # online: no logits file
    states = task_states(summary["prefect_flow_run_id"], {"augment": 1, "mix-transfer": 1, "evaluate": 1})
    assert states["augment"] == ["Completed"] and states["mix-transfer"] == ["Completed"]
    assert ("export-logits" in states) == (mode != "online")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{flow_env}/state/mlflow.db")
    runs = {r.info.run_name: r for r in client.search_runs(client.get_experiment_by_name("tiny-runs").experiment_id)}
    mixed = runs["mix-transfer"].data.metrics
    assert mixed["rows_transfer_unlabelled"] == 10 and mixed["rows_transfer_augmented"] > 0
    kd = runs["student_kd"].data.metrics
    assert kd["train_rows"] == summary["data"]["train"]["rows"] + mixed["rows_transfer"]
    assert ("teacher_requests" in kd) == (mode == "online")


def test_mlm_da_needs_a_masked_lm(tmp_path, tiny_mlm):
    config = write_config(tmp_path, augmentation={"mlm_da": {}})
    with pytest.raises(ConfigError, match="mlm_da needs a masked LM: set augmentation.mlm_model .*augmentation.mlm_adapt"):
        load_config(config)
    from landing.models.loading import build_classifier, save_classifier

    save_classifier(*build_classifier(TINY, ["0", "1"]), tmp_path / "classifier")  # an encoder, no MLM head
    config = write_config(tmp_path, augmentation={"mlm_da": {}, "mlm_model": str(tmp_path / "classifier")})
    with pytest.raises(ConfigError, match="classifier' has no masked-LM head; .* augmentation.mlm_adapt"):
        load_config(config)
    config = write_config(tmp_path, augmentation={"mlm_da": {}, "mlm_model": str(tiny_mlm)})
    assert load_config(config).augmentation.mlm_model == str(tiny_mlm)


def test_hard_teacher_labels_are_offline_only(tmp_path):
    config = write_config(tmp_path, distillation={"teacher_labels": "hard", "online": {}})
    with pytest.raises(ConfigError, match="hard labels are read from the logits file"):
        load_config(config)


def test_a_table_without_rows_to_augment_is_named(tmp_path):
    config = write_config(tmp_path, train=tsv(GOOD_ROWS), augmentation={})
    with pytest.raises(ConfigError, match="give augmentation.eda and/or augmentation.mlm_da"):
        load_config(config)


def test_augmentation_that_adds_no_rows_distils_on_the_labelled_rows_alone(prefect_api, flow_env):
    """expansion_rate 0 and unlabelled_rows 0 (the benchmark's "KD on the labelled rows"): no transfer table."""
    config = _augmenting_config(flow_env, {"eda": {"expansion_rate": 0}, "unlabelled_rows": 0})
    code, output = run_landing(["run", str(config), "--output-dir", str(flow_env / "out")], flow_env)
    assert code == 0, output[-3000:]
    summary = json.loads((flow_env / "out" / "summary.json").read_text())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{flow_env}/state/mlflow.db")
    runs = {r.info.run_name: r for r in client.search_runs(client.get_experiment_by_name("tiny-runs").experiment_id)}
    assert runs["mix-transfer"].data.metrics["rows_transfer"] == 0
    assert runs["student_kd"].data.metrics["train_rows"] == summary["data"]["train"]["rows"]
