"""The fine-tuned teacher served over HTTP for online distillation (FastAPI + uvicorn).

Why not ``mlflow models serve``: the transformers flavour serves a text-classification
pipeline, which answers labels and softmax scores, not logits, and would need the model
re-logged as a custom pyfunc; this server is a few lines on the same maintained stack and
answers exactly what the KD losses consume, plus the teacher's identity so a client can
refuse logits from another model.

    POST /v1/logits  {"texts": [...], "text_pairs": [...] | null}
      → {"logits": [[...], ...], "teacher_id": "...", "labels": [...]}
    GET  /health     → {"status": "ok", "teacher_id": "..."}

One process, one model; requests are computed one at a time (a lock) so a 2-core machine is
not oversubscribed, each request as one batch.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, Field

from landing.errors import UserError

MAX_ROWS_PER_REQUEST = 1024


class LogitsRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=MAX_ROWS_PER_REQUEST)
    text_pairs: list[str] | None = None


class LogitsResponse(BaseModel):
    logits: list[list[float]]
    teacher_id: str
    labels: list[str]


def create_app(model_dir: Path, teacher_id: str, max_length: int):
    """The ASGI app serving one saved classifier directory."""
    import torch
    from fastapi import FastAPI, HTTPException

    from landing.models.loading import load_classifier

    model, tokenizer = load_classifier(str(model_dir))
    model.eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    lock = threading.Lock()
    app = FastAPI(title="landing teacher", docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "teacher_id": teacher_id}

    @app.post("/v1/logits")
    def logits(request: LogitsRequest) -> LogitsResponse:
        if request.text_pairs is not None and len(request.text_pairs) != len(request.texts):
            raise HTTPException(422, f"text_pairs has {len(request.text_pairs)} rows, texts {len(request.texts)}")
        args = (request.texts, request.text_pairs) if request.text_pairs is not None else (request.texts,)
        with lock, torch.inference_mode():
            encoded = tokenizer(*args, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            out = model(**encoded).logits.float().numpy()
        return LogitsResponse(logits=out.tolist(), teacher_id=teacher_id, labels=labels)

    return app


class TeacherServerError(UserError):
    """The teacher service could not be started."""


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving_teacher(model_dir: Path, teacher_id: str, max_length: int, *, host: str = "127.0.0.1", port: int = 0,
                    threads: int = 1, startup_timeout_s: float = 120) -> Iterator[str]:  # fmt: skip
    """Serve the teacher in a process of its own for the block; yields its base URL."""
    port = port or _free_port(host)
    url = f"http://{host}:{port}"
    cmd = [sys.executable, "-m", "landing.infra.teacher_server", "--model", str(model_dir), "--teacher-id",
           teacher_id, "--max-length", str(max_length), "--host", host, "--port", str(port)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    log = Path(model_dir).parent / f"teacher-server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # fmt: skip
    try:
        _wait_healthy(proc, url, log, startup_timeout_s)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TeacherServerError(f"teacher server exited with code {proc.returncode} before answering at {url}; "
                                     f"its log ({log}) ends:\n{log.read_text(errors='replace')[-2000:]}")  # fmt: skip
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TeacherServerError(f"teacher server did not answer at {url} within {timeout_s:g} s; see {log}")


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve a saved classifier's logits for online distillation.")
    parser.add_argument("--model", type=Path, required=True, help="saved model directory (safetensors)")
    parser.add_argument("--teacher-id", required=True)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    app = create_app(args.model, args.teacher_id, args.max_length)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
