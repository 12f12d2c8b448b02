"""``easynlp --app_name=sequence_labeling`` through the script alone (EasyNLP's flag names), on a SNIPS slice in
EasyNLP's layout (``content``: tokens separated by spaces, ``label``: one tag each) and a tiny random BERT:
train → evaluate → predict, each a Prefect flow run with its MLflow run; a bad row is named by file and line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_easynlp_flow import SCRIPT, easynlp

ROOT = Path(__file__).resolve().parents[1]
SNIPS = ROOT.parent / "shared/data/slu/snips"
SCHEMA = ["--app_name=sequence_labeling", "--input_schema=content:str:1,label:str:1", "--first_sequence=content"]

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api"),
              pytest.mark.shared_data("slu/snips/train/seq.in", "slu/snips/dev/seq.in")]  # fmt: skip


def _tables(folder: Path) -> list[str]:
    def rows(split: str, n: int) -> str:
        tokens = (SNIPS / split / "seq.in").read_text().splitlines()[:n]
        tags = (SNIPS / split / "seq.out").read_text().splitlines()[:n]
        return "".join(f"{t.strip()}\t{g.strip()}\n" for t, g in zip(tokens, tags, strict=True))

    (folder / "train.tsv").write_text(rows("train", 400))
    (folder / "dev.tsv").write_text(rows("dev", 60))
    return [t for t in (SNIPS / "slot_label.txt").read_text().split() if t not in ("PAD", "UNK")]


def _summary(cwd: Path, stderr: str) -> dict:
    return json.loads((cwd / re.search(r"summary: (\S+)", stderr).group(1)).read_text())


def test_train_evaluate_predict_with_easynlps_flags(tmp_path, flow_env, tiny_mlm):
    tags = _tables(tmp_path)
    trained = easynlp(tmp_path, "--mode=train", "--tables=train.tsv,dev.tsv", *SCHEMA, "--label_name=label",
                      f"--label_enumerate_values={','.join(tags)}", "--checkpoint_dir=tagger", "--epoch_num=4",
                      "--sequence_length=32", "--micro_batch_size=16", "--learning_rate=3e-3",
                      f"--user_defined_parameters=pretrain_model_name_or_path={tiny_mlm}")  # fmt: skip
    assert "slot F1" in trained
    checkpoint = tmp_path / "tagger"
    assert {"model.onnx", "label_mapping.json", "slu.json", "slu_heads.safetensors"} <= {p.name for p in checkpoint.iterdir()}
    assert list(json.loads((checkpoint / "label_mapping.json").read_text())) == tags
    train_eval = _summary(tmp_path, trained)["eval"]
    assert train_eval["rows"] == 60 and 0 < train_eval["slot_f1"] <= 1 and "intent_accuracy" not in train_eval

    evaluated = _summary(tmp_path, easynlp(tmp_path, "--mode=evaluate", "--tables=dev.tsv", *SCHEMA, "--label_name=label",
                                 "--checkpoint_path=tagger", "--sequence_length=32"))["eval"]  # fmt: skip
    assert evaluated["slot_f1"] == pytest.approx(train_eval["slot_f1"])  # the same model on the same rows
    assert 0 < evaluated["slot_precision"] <= 1 and 0 < evaluated["slot_recall"] <= 1

    easynlp(tmp_path, "--mode=predict", "--tables=dev.tsv", *SCHEMA, "--checkpoint_path=tagger",
            "--outputs=dev.pred.tsv", "--output_schema=output,predictions", "--append_cols=label", "--sequence_length=32")  # fmt: skip
    contents = [line.split("\t")[0] for line in (tmp_path / "dev.tsv").read_text().splitlines()]
    lines = (tmp_path / "dev.pred.tsv").read_text().splitlines()
    assert len(lines) == 60  # every row, in order
    right = 0
    for content, line in zip(contents, lines, strict=True):
        spans, predicted, gold = line.split("\t")
        assert len(predicted.split()) == len(content.split())  # one tag per word, not per sub-word
        for span in json.loads(spans):  # character offsets into the content
            assert content[span["start"]:span["end"]] == span["word"] and span["tag"] in {t[2:] for t in tags}
        right += predicted == gold
    assert right / 60 == pytest.approx(evaluated["sentence_accuracy"])


def test_a_row_whose_tags_do_not_match_its_tokens_is_named(tmp_path, flow_env, tiny_mlm):
    import os
    import subprocess

    tags = _tables(tmp_path)
    with (tmp_path / "train.tsv").open("a") as fh:
        fh.write("play some jazz\tO B-genre\n")
    done = subprocess.run([str(SCRIPT), "--mode=train", "--tables=train.tsv,dev.tsv", *SCHEMA, "--label_name=label",
                           f"--label_enumerate_values={','.join(tags)}", "--checkpoint_dir=tagger",
                           f"--user_defined_parameters=pretrain_model_name_or_path={tiny_mlm}"], cwd=tmp_path,
                          env=dict(os.environ), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 1
    assert re.search(r"train\.tsv.*401.*label.*3 tags .*found.*2", done.stderr), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "tagger").exists()
