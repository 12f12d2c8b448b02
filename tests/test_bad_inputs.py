"""Bad input, table-driven: each case is a file or flag, the command, the exit code and the message it must print.

Every case runs the real ``landing`` entry point. Config mistakes are refused before anything starts, in this
process (``landing.cli.main``). Table mistakes are found by the reader that ``landing run`` uses too, so each
runs in this process as ``landing validate-data``; one case per error family (a row that breaks the contract,
a file that does not parse, a file that is not there) also runs as ``python -m landing.cli run``, the whole
``distill`` flow against the session's Prefect API, MLflow on sqlite and the S3 server. Those also check that
nothing was left behind: no traceback on the console, the Prefect flow run ``Failed`` and the parent MLflow
run ``FAILED`` with the message, no run left ``RUNNING``, no model registered, nothing half-published, no
summary written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_runs import GOOD_ROWS, TINY, run_landing, tsv, write_config

from landing.cli import main

pytestmark = pytest.mark.integration


def unwrapped(text: str) -> str:
    """``text`` without whitespace and panel borders: rich wraps long lines, even mid-word inside a path, at the
    console's width (which differs with the length of the temporary paths), so messages are compared without."""
    return "".join(text.replace("│", " ").split())


@dataclass(frozen=True)
class Case:
    name: str
    train: bytes | None = None  # train table bytes (None: the good table); its file name is `train_name`
    train_name: str = "train.tsv"
    args: tuple[str, ...] = ()  # extra command-line arguments (e.g. --set ...)
    command: str = "run"
    exit_code: int = 1
    fragments: tuple[str, ...] = field(default_factory=tuple)
    end_to_end: bool = False  # also run as a whole `landing run` (one case per error family)


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
         fragments=("train.tsv:42", "column 'label'", "'7'"), end_to_end=True),
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
         fragments=("train.jsonl:2",), end_to_end=True),
    Case("JSON line that is not an object", b'{"sentence": "fine", "label": "1"}\n["a", "1"]\n', train_name="train.jsonl",
         fragments=("train.jsonl:2",)),
    Case("missing file", None, train_name="absent.tsv", fragments=("absent.tsv",), end_to_end=True),
]


def _config(tmp_path: Path, case: Case) -> Path:
    return write_config(tmp_path, case.train_name, case.train, name="bad-input", experiment="bad-inputs")


def _invoke(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Config cases: the entry point in this process (nothing starts before the config is read)."""
    monkeypatch.setattr(sys, "argv", ["landing", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out + captured.err


CONFIG_CASES = [c for c in CASES if c.exit_code == 2]
TABLE_ERROR_CASES = [c for c in CASES if c.exit_code != 2]


def _assert_one_clear_message(case: Case, code: int, output: str) -> None:
    assert code == case.exit_code, output[-3000:]
    flat = unwrapped(output)
    for fragment in case.fragments:
        assert unwrapped(fragment) in flat, f"{fragment!r} not in:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert "cache/objects" not in flat  # the user's file is named, not the cached copy


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.name for c in CONFIG_CASES])
def test_config_mistakes_are_refused_before_anything_starts(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LANDING_DEBUG", "0")
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path / "state"))
    argv = [case.command, str(_config(tmp_path, case)), *case.args, "--output-dir", str(tmp_path / "out")]
    _assert_one_clear_message(case, *_invoke(argv, monkeypatch, capsys))
    assert not (tmp_path / "out").exists() and not (tmp_path / "state" / "mlflow.db").exists()


@pytest.mark.parametrize("case", TABLE_ERROR_CASES, ids=[c.name for c in TABLE_ERROR_CASES])
def test_table_mistakes_are_named_by_the_reader_the_flow_uses(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LANDING_DEBUG", "0")
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path / "state"))
    _assert_one_clear_message(case, *_invoke(["validate-data", str(_config(tmp_path, case))], monkeypatch, capsys))


END_TO_END_CASES = [c for c in TABLE_ERROR_CASES if c.end_to_end]


@pytest.mark.parametrize("case", END_TO_END_CASES, ids=[c.name for c in END_TO_END_CASES])
def test_a_failed_run_leaves_nothing_behind(case, prefect_api, flow_env, unpublished_objects):
    from mlflow.tracking import MlflowClient

    out_dir = flow_env / "out"
    argv = [case.command, str(_config(flow_env, case)), *case.args, "--output-dir", str(out_dir)]
    _assert_one_clear_message(case, *run_landing(argv, flow_env, env={"LANDING_DEBUG": "0"}))
    assert not (out_dir / "summary.json").exists()

    db = flow_env / "state" / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs and all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FAILED"]
    assert case.fragments[0] in parents[0].data.tags["landing.error"]
    assert not client.search_model_versions()  # nothing registered
    bucket = (flow_env / "bucket").read_text()
    assert unpublished_objects(f"s3://{bucket}/objects", parents[0].info.run_id) == []
    assert_flow_run_failed_with(parents[0].data.tags.get("prefect.flow_run_id"), case.fragments[0])


def assert_flow_run_failed_with(flow_run_id: str | None, fragment: str) -> None:
    """The Prefect flow run is Failed, and its state message carries the user's message."""
    from prefect.client.orchestration import get_client

    assert flow_run_id, "the parent MLflow run records its Prefect flow run id"
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    assert state.is_failed() and fragment in (state.message or ""), (state.type, state.message)


def test_debug_shows_the_traceback(prefect_api, flow_env):
    case = next(c for c in CASES if c.name == "label outside the enumeration")
    code, output = run_landing(["--debug", "run", str(_config(flow_env, case)), "--output-dir", str(flow_env / "o")],
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
    flat = unwrapped(output)
    assert code == case.exit_code, output
    for fragment in case.fragments:
        assert unwrapped(fragment) in flat, f"{fragment!r} not in:\n{output}"
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
    flat = unwrapped(output)
    assert code == exit_code, output
    for fragment in fragments:
        assert unwrapped(fragment) in flat, f"{fragment!r} not in:\n{output}"
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
    ("inf values", {}, "inf", ("teacher_logits.npz", "expected finite logits")),
    ("a truncated file", {}, "truncate", ("teacher_logits.npz", "not a readable logits .npz")),
]


@pytest.mark.parametrize("name,change,damage,fragments", LOGITS_CASES, ids=[c[0] for c in LOGITS_CASES])
def test_logits_files_that_do_not_fit_are_refused(name, change, damage, fragments, tmp_path):
    from landing.data_contracts.logits import align_logits, read_logits
    from landing.errors import UserError

    path = _logits_file(tmp_path, **change)
    if damage in ("nan", "inf"):
        bad = read_logits(path)
        bad.logits[1, 0] = np.nan if damage == "nan" else np.inf
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


# --- model directories: refused when the config is read (exit 2), and again by the loader itself ---
def _damaged_model_dir(root: Path, damage: str) -> Path:
    from landing.models.loading import build_classifier, save_classifier

    model_dir = root / "model"
    save_classifier(*build_classifier(TINY, ["0", "1"], seed=0), model_dir)
    weights = model_dir / "model.safetensors"
    if damage == "missing config":
        (model_dir / "config.json").unlink()
    elif damage == "corrupt safetensors":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "pickled weights only":
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(weights), model_dir / "pytorch_model.bin")
        weights.unlink()
    elif damage == "not a directory":
        model_dir = root / "nowhere"
    return model_dir


MODEL_CASES = [
    ("missing config", ("no config.json", "save_pretrained")),
    ("corrupt safetensors", ("model.safetensors", "not a readable safetensors file")),
    ("pickled weights only", ("pytorch_model.bin", "safetensors only", "save_pretrained(")),
    ("not a directory", ("nowhere", "no such model directory")),
]


@pytest.mark.parametrize("damage,fragments", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_directories_that_cannot_be_used_are_refused(damage, fragments, tmp_path, monkeypatch, capsys):
    from landing.models.loading import load_classifier
    from landing.models.model_files import ModelFilesError

    model_dir = _damaged_model_dir(tmp_path, damage)
    config = _config(tmp_path, Case("model", train=None))
    teacher = f"teacher.model={{kind: pretrained, name_or_path: {model_dir}}}"
    code, output = _invoke(["run", str(config), "--set", teacher], monkeypatch, capsys)
    flat = unwrapped(output)
    assert code == 2, output
    for fragment in ("run.yaml", "teacher.model.name_or_path", *fragments):
        assert unwrapped(fragment) in flat, f"{fragment!r} not in:\n{output}"
    assert "Traceback" not in output
    with pytest.raises(ModelFilesError) as refused:  # a directory damaged after the config was read
        load_classifier(str(model_dir), ["0", "1"])
    assert all(f in " ".join(str(refused.value).split()) for f in fragments)


def test_a_hub_name_that_cannot_be_resolved_offline_names_the_ways_to_provide_it(monkeypatch):
    from landing.models.loading import load_classifier
    from landing.models.model_files import ModelFilesError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelFilesError, match=r"'bert-base-uncsed': not a local directory, not an offline alias"):
        load_classifier("bert-base-uncsed", ["0", "1"])


def test_predict_refuses_an_onnx_file_that_is_not_onnx(tiny_onnx, tmp_path, monkeypatch, capsys):
    import shutil

    bundle = Path(shutil.copytree(tiny_onnx[0].parent, tmp_path / "bundle"))
    (bundle / tiny_onnx[0].name).write_bytes(b"this is not a protobuf")
    (tmp_path / "input.tsv").write_text("text\nfine\n")
    argv = ["predict", "--model", str(bundle), "--input", str(tmp_path / "input.tsv"), "--output", str(tmp_path / "o.tsv")]
    code, output = _invoke(argv, monkeypatch, capsys)
    flat = unwrapped(output)
    assert code == 1 and tiny_onnx[0].name in flat and unwrapped("cannot load it as an ONNX model") in flat, output
    assert "Traceback" not in output and not (tmp_path / "o.tsv").exists()


# --- remote sources (validate-data, in this process) against real servers on 127.0.0.1 ---
@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    """A plain http server over a folder (missing files answer 404)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path_factory.mktemp("http")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def silent_host():
    """A port that accepts connections and never answers: an unreachable host, as the client sees it."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture(scope="module")
def rclone_s3(tmp_path_factory):
    from landing.infra.s3_server import s3_server

    data = tmp_path_factory.mktemp("rclone-data")
    (data / "data-bucket").mkdir()
    (data / "data-bucket" / "train.tsv").write_bytes(tsv(ROWS5))
    with s3_server("rclone", data, access_key="right-key", secret_key="right-secret-value") as server:
        yield server


SOURCE_CASES = [
    ("http 404", "{http}/absent.tsv", ("{http}/absent.tsv", "HTTP 404")),
    ("unreachable host within the timeout", "{silent}/train.tsv", ("{silent}/train.tsv", "timed out after 1.0s")),
    ("missing S3 bucket", "s3://no-such-bucket-here/train.tsv", ("no such bucket 'no-such-bucket-here'",)),
    ("wrong S3 credentials", "s3://data-bucket/train.tsv",
     ("s3://data-bucket/train.tsv", "refused the credentials", "AWS_SECRET_ACCESS_KEY")),
]


@pytest.mark.parametrize("name,uri,fragments", SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_remote_sources_that_fail_are_named_with_the_reason(name, uri, fragments, http_root, silent_host, rclone_s3,
                                                            s3_env, tmp_path, monkeypatch, capsys):  # fmt: skip
    import time

    where = {"http": http_root, "silent": silent_host}
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LANDING_HTTP_TIMEOUT_S", "1")
    if name == "wrong S3 credentials":
        for key, value in rclone_s3.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    config = _config(tmp_path, Case("source", train=None))
    raw = yaml.safe_load(config.read_text())
    raw["data"]["train"]["sources"] = [{"uri": uri.format(**where)}]
    config.write_text(yaml.safe_dump(raw))
    started = time.monotonic()
    code, output = _invoke(["validate-data", str(config)], monkeypatch, capsys)
    flat = unwrapped(output)
    assert code == 1, output
    for fragment in fragments:
        assert unwrapped(fragment.format(**where)) in flat, f"{fragment!r} not in:\n{output}"
    assert "Traceback" not in output and "wrong-secret-value" not in output and "right-secret" not in output
    assert time.monotonic() - started < 30  # a dead source fails in seconds, not minutes


def test_the_right_s3_credentials_read_the_same_table(rclone_s3, tmp_path, monkeypatch, capsys):
    """The control for the credentials case: the same source with the key the server accepts."""
    for key, value in rclone_s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path / "state"))
    config = _config(tmp_path, Case("source", train=None))
    raw = yaml.safe_load(config.read_text())
    raw["data"]["train"]["sources"] = [{"uri": "s3://data-bucket/train.tsv"}]
    config.write_text(yaml.safe_dump(raw))
    code, output = _invoke(["validate-data", str(config)], monkeypatch, capsys)
    assert code == 0 and unwrapped("train: ok, 5 rows from s3://data-bucket/train.tsv") in unwrapped(output), output


def test_a_bug_keeps_its_traceback_and_says_where_the_logs_are(tmp_path, monkeypatch, capsys):
    import landing.flows.table as flows

    def broken_flow(**_):
        raise RuntimeError("an internal mistake")

    entry = flows.FLOWS["distill"]
    monkeypatch.setitem(flows.FLOWS, "distill", flows.FlowEntry(entry.name, entry.config, broken_flow))
    monkeypatch.setenv("LANDING_STATE_DIR", str(tmp_path / "state"))
    code, output = _invoke(["run", str(_config(tmp_path, Case("bug")))], monkeypatch, capsys)
    flat = unwrapped(output)
    assert code == 1 and "Traceback" in output and "an internal mistake" in output, output
    assert unwrapped("internal error (a bug in landing, not in your input)") in flat and str(tmp_path / "state") in flat
