"""Crash-safe resumption: a checkpoint that was not completely written is never resumed."""

from pathlib import Path

import torch

from landing.models.training import last_complete_checkpoint


def _complete(path: Path) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(path / "model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"state": 1}, path / name)
    (path / "trainer_state.json").write_text("{}")


def test_incomplete_checkpoints_are_quarantined_and_the_newest_complete_one_resumed(tmp_path):
    _complete(tmp_path / "checkpoint-4")
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "config.json").write_text("{}")  # killed right after the first file
    _complete(tmp_path / "checkpoint-8")
    (tmp_path / "checkpoint-8" / "optimizer.pt").write_bytes(b"PK\x03\x04trunc")  # truncated write
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "checkpoint-4" and len(names) == 3
    assert [n.split("-")[:3] for n in names[1:]] == [["incomplete", "checkpoint", "10"], ["incomplete", "checkpoint", "8"]]
    assert not (tmp_path / "checkpoint-10").exists() and not (tmp_path / "checkpoint-8").exists()
