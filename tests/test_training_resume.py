"""kill -9 at random points, including inside a checkpoint write: the re-run finishes with the same weights."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("fixtures") / "train_tiny.py"
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def _start(checkpoints: Path, output: Path, slow_save: bool) -> subprocess.Popen:
    env = {**os.environ, "LANDING_TEST_SLOW_SAVE": "1" if slow_save else "0"}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(checkpoints), str(output)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _half_written(checkpoints: Path) -> bool:
    return any(
        p.is_dir() and not (p / "trainer_state.json").exists()
        for p in checkpoints.glob("checkpoint-*")
    )


def _kill_during_a_checkpoint_write(proc: subprocess.Popen, checkpoints: Path, timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if _half_written(checkpoints):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def _finish(proc: subprocess.Popen) -> None:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]


def test_kill_9_anywhere_then_rerun_gives_the_uninterrupted_weights(tmp_path):
    reference = tmp_path / "reference.safetensors"
    _finish(_start(tmp_path / "ref-checkpoints", reference, slow_save=False))

    checkpoints, output = tmp_path / "checkpoints", tmp_path / "resumed.safetensors"
    killed_in_write = 0
    for _ in range(2):  # inside a checkpoint write: the folder exists, trainer_state.json not yet
        proc = _start(checkpoints, output, slow_save=True)
        killed_in_write += _kill_during_a_checkpoint_write(proc, checkpoints)
    rng = random.Random(0)
    for _ in range(2):  # at random moments (start-up, a training step, or a write)
        proc = _start(checkpoints, output, slow_save=True)
        time.sleep(rng.uniform(4.0, 12.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert killed_in_write == 2
    _finish(_start(checkpoints, output, slow_save=False))
    assert len(list(checkpoints.glob("incomplete-checkpoint-*"))) >= 2  # the half-written ones, moved aside

    expected, resumed = load_file(reference), load_file(output)
    assert expected.keys() == resumed.keys()
    # Resumption restores optimizer, scheduler, RNG and data order: on CPU the weights match exactly.
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
