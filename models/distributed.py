"""Data-parallel training on several processes or machines: torchrun + the Trainer's own DDP.

torchrun starts one process per device and handles multi-node rendezvous; each process runs
``python -m landing.models.distributed REQUEST.json``. transformers' Trainer sees torchrun's
environment, joins the process group and wraps the model in DistributedDataParallel itself,
so nothing here is hand-written distributed code. This module only writes the request every
rank reads, builds the torchrun command line, runs it, and reads back what rank 0 saved.
No prefect or mlflow here: the task (tasks/train.py) logs and publishes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.distributed.elastic.multiprocessing.errors import record
from transformers import TrainerCallback

from landing.files import atomic_write
from landing.models.loading import save_classifier
from landing.models.params import KDParams, Launch
from landing.models.specs import AnySpec, as_spec
from landing.models.training import TrainingParams, TrainResult, fit_classifier, world_size

OUTPUT_TAIL_LINES = 40


class DistributedTrainingError(RuntimeError):
    """torchrun failed, or finished without the result rank 0 should have written."""


def process_group_backend(backend: str) -> str:
    """``auto``: nccl when CUDA is there (it is GPU-only), gloo otherwise."""
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return backend


def torchrun_command(launch: Launch, request: Path, python: str = sys.executable) -> list[str]:
    """The torchrun command line; one node without an endpoint uses a private ``--standalone`` rendezvous."""
    cmd = [python, "-m", "torch.distributed.run", "--nnodes", str(launch.nnodes),
           "--nproc_per_node", str(launch.nproc_per_node)]  # fmt: skip
    if launch.nnodes == 1 and launch.rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        cmd += ["--node_rank", str(launch.node_rank), "--rdzv_backend", launch.rdzv_backend,
                "--rdzv_endpoint", str(launch.rdzv_endpoint)]  # fmt: skip
        if launch.rdzv_id:
            cmd += ["--rdzv_id", launch.rdzv_id]
    return cmd + ["-m", "landing.models.distributed", str(request)]


def write_request(
    work_dir: Path,
    *,
    spec: AnySpec,
    labels: Sequence[str],
    texts: Sequence[str],
    label_ids: Sequence[int],
    params: TrainingParams,
    seed: int,
    checkpoint_dir: Path,
    backend: str,
    text_pairs: Sequence[str] | None = None,
    teacher_logits: np.ndarray | None = None,
    distillation: KDParams | None = None,
) -> Path:
    """Everything a rank needs, as files (the ranks may be on other machines sharing ``work_dir``).

    Every rank builds the model from ``spec`` with the same seed, so they start identical
    (DDP also broadcasts rank 0's weights). Any previous output is removed first so a stale
    result can never be mistaken for this run's.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work_dir / "output", ignore_errors=True)
    inputs = {"texts": list(texts), "text_pairs": None if text_pairs is None else list(text_pairs),
              "labels": [int(y) for y in label_ids]}  # fmt: skip
    (work_dir / "inputs.json").write_text(json.dumps(inputs), encoding="utf-8")
    logits_path = None
    if teacher_logits is not None:
        logits_path = work_dir / "teacher_logits.npy"
        np.save(logits_path, np.asarray(teacher_logits, dtype=np.float32))
    request = {
        "model": as_spec(spec).model_dump(mode="json"), "labels": list(labels), "seed": seed, "training": asdict(params),
        "backend": backend,
        "inputs": str(work_dir / "inputs.json"), "teacher_logits": logits_path and str(logits_path),
        "distillation": distillation and asdict(distillation),
        "checkpoint_dir": str(checkpoint_dir), "output_dir": str(work_dir / "output"),
    }  # fmt: skip
    path = work_dir / "request.json"
    path.write_text(json.dumps(request, indent=1), encoding="utf-8")
    return path


class LogHistory(TrainerCallback):
    """Keeps what the Trainer logs (loss, learning rate) so the task can replay it into MLflow."""

    def __init__(self) -> None:
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append({**(logs or {}), "step": state.global_step})


def run_rank(request_path: Path) -> None:
    """One torchrun process: train, then global rank 0 saves the model and ``result.json``."""
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    inputs = json.loads(Path(request["inputs"]).read_text(encoding="utf-8"))
    soft = np.load(request["teacher_logits"]) if request["teacher_logits"] else None
    distillation = KDParams(**request["distillation"]) if request["distillation"] else None
    history = LogHistory()
    model, tokenizer, result = fit_classifier(
        request["model"], request["labels"], inputs["texts"], inputs["labels"], TrainingParams(**request["training"]),
        Path(request["checkpoint_dir"]), seed=request["seed"], text_pairs=inputs["text_pairs"], teacher_logits=soft,
        distillation=distillation, callbacks=[history], ddp_backend=request["backend"],
    )  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        out = Path(request["output_dir"])
        save_classifier(model, tokenizer, out / "model")
        payload = {**asdict(result), "world_size": world_size(), "log_history": history.logs}
        with atomic_write(out / "result.json") as fh:  # the task never reads half a file
            json.dump(payload, fh)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run_torchrun(command: list[str], *, step: str, log: Callable[[str], None] = print) -> None:
    """Run torchrun, streaming its output line by line; a failure names the step, exit code and output tail."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    log(f"{step}: {shlex.join(command)}")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        try:
            for line in proc.stdout:  # \r-separated progress-bar updates arrive as lines too
                if line := line.rstrip():
                    tail.append(line)
                    log(line)
        except BaseException:
            proc.terminate()  # torchrun forwards it to every rank
            raise
        code = proc.wait()
    if code != 0:
        raise DistributedTrainingError(
            f"{step}: distributed training failed: torchrun exited with code {code}\n"
            f"command: {shlex.join(command)}\nlast {len(tail)} lines of its output:\n" + "\n".join(tail)
        )


def read_result(work_dir: Path, step: str) -> tuple[Path, TrainResult, list[dict]]:
    """(saved model dir, result, the Trainer's log history) as written by global rank 0."""
    out = work_dir / "output"
    if not (out / "result.json").is_file():
        raise DistributedTrainingError(
            f"{step}: torchrun succeeded but {out / 'result.json'} is missing; with several nodes, "
            "the state directory must be shared so this node sees what global rank 0 wrote"
        )
    payload = json.loads((out / "result.json").read_text(encoding="utf-8"))
    history = payload.pop("log_history")
    payload.pop("world_size")
    return out / "model", TrainResult(**payload), history


def train_distributed(
    launch: Launch, work_dir: Path, *, step: str, log: Callable[[str], None] = print, **request
) -> tuple[Path, TrainResult, list[dict]]:
    """Write the request (``write_request``'s keywords), run every rank under torchrun, read the result."""
    path = write_request(work_dir, backend=process_group_backend(launch.backend), **request)
    run_torchrun(torchrun_command(launch, path), step=step, log=log)
    return read_result(work_dir, step)


@record  # torchrun's failure summary then carries the failing rank's exception, not just its exit code
def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m landing.models.distributed REQUEST.json  (one torchrun process; see torchrun_command)")
    run_rank(Path(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
