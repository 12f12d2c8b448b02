import io
import random
import re
from collections import Counter

import pytest
from pydantic import ValidationError

from landing.data_contracts.validation import example_id
from landing.models.augment.eda import (
    EdaParams,
    PosVocabulary,
    augment,
    chinese_words_and_tags,
    content_id,
    english_pos_tags,
    is_word,
    join_words,
    ngram_sample,
    show_progress,
    split_words,
    unk_noise,
)

EN = [
    "it 's a charming and often affecting journey .",
    "hide new secretions from the parental units",
    "the movie was great , I loved the acting !",
    "a dull , boring film that never ends .",
    "the actors play their parts with obvious joy .",
    "this is the worst script I have read in years .",
    "a warm and funny story about a lonely boy",
    "the director does n't know when to stop",
    "she sings beautifully and the music is wonderful .",
    "an ugly , cynical and pointless sequel",
]
ZH = [
    "这部电影真好看，演员的表演非常自然。",
    "服务态度很差，再也不来了",
    "房间干净整洁，早餐也很丰富。",
    "物流太慢了，等了一个星期才到货",
    "我用iPhone 12拍的照片很清楚",
    "故事情节拖沓，看得我昏昏欲睡。",
]


def rows_of(texts, prefix="r"):
    return [{"id": f"{prefix}{i}", "text": t, "label": ["neg", "pos"][i % 2]} for i, t in enumerate(texts)]


def many_english(n):
    rng = random.Random(7)
    adj = ["good", "bad", "slow", "funny", "sad", "bright", "dark", "long", "short", "clever"]
    noun = ["film", "movie", "story", "actor", "plot", "script", "scene", "ending", "score", "cast"]
    verb = ["works", "fails", "drags", "shines", "moves", "bores", "delights", "stumbles"]
    adv = ["badly", "well", "slowly", "quickly", "often", "rarely", "really", "always"]
    texts = set()
    while len(texts) < n:
        texts.add(f"the {rng.choice(adj)} {rng.choice(noun)} {rng.choice(verb)} {rng.choice(adv)} and "
                  f"a {rng.choice(adj)} {rng.choice(noun)} {rng.choice(verb)} .")  # fmt: skip
    return sorted(texts)


def by_strategy(rows, name):
    return [r for r in rows if r["strategy"] == name]


# --- parameters --------------------------------------------------------------------------------------


def test_params_defaults_and_validation():
    p = EdaParams()
    assert p.strategies == {"unk": 0.3, "pos": 0.4, "ngram": 0.3} and p.expansion_rate == 10 and p.p == 0.1
    assert p.ngram_range == (2, 6) and EdaParams(language="zh").ngram_range == (2, 10)
    assert EdaParams(ngram_min=3, ngram_max=4).ngram_range == (3, 4)
    for bad in [
        {"strategies": {"unk": 0.5, "pos": 0.4}},  # sums to 0.9
        {"strategies": {"unk": 0.5, "synonym": 0.5}},
        {"strategies": {"unk": 1.5, "pos": -0.5}},
        {"strategies": {}},
        {"p": 1.5},
        {"p": -0.1},
        {"ngram_min": 8},  # above en's default maximum of 6
        {"ngram_min": 0},
        {"expansion_rate": -1},
        {"language": "fr"},
        {"unk_token": ""},
        {"bogus": 1},
    ]:
        with pytest.raises(ValidationError):
            EdaParams(**bad)


def test_rows_are_checked():
    with pytest.raises(ValueError, match="duplicate row id"):
        augment([{"id": 1, "text": "a b"}, {"id": 1, "text": "c d"}])
    with pytest.raises(ValueError, match="has no text"):
        augment([{"id": 1}])


# --- words -------------------------------------------------------------------------------------------


def test_english_words_split_on_punctuation_and_join_reversibly():
    assert split_words("Hello, world! It's fine -- isn't it?", "en") == [
        "Hello", ",", "world", "!", "It's", "fine", "-", "-", "isn't", "it", "?"]  # fmt: skip
    assert split_words("it 's good , does n't it", "en") == ["it", "'s", "good", ",", "does", "n't", "it"]
    for text in EN + ["U.S. e-mail (costs $5.50)...", "don't 'quote' me"]:
        words = split_words(text, "en")
        assert split_words(join_words(words, "en"), "en") == words


def test_chinese_words_are_jieba_posseg_words_joined_without_spaces():
    import jieba.posseg

    text = "我用iPhone 12拍的照片很清楚"
    words = split_words(text, "zh")
    assert words == [p.word for p in jieba.posseg.cut(text) if not p.word.isspace()]
    assert join_words(words, "zh") == text  # a blank only where two ASCII words meet
    assert join_words(["电影", "真", "好看"], "zh") == "电影真好看"


# --- the mixer ---------------------------------------------------------------------------------------


def test_labels_fields_and_source_ids_are_kept():
    rows = [{**r, "extra": i} for i, r in enumerate(rows_of(EN))]
    out, stats = augment(rows, expansion_rate=5, p=0.3, seed=3)
    sources = {r["id"]: r for r in rows}
    assert by_strategy(out, "original") == [{**r, "source_id": r["id"], "strategy": "original"} for r in rows]
    copies = [r for r in out if r["strategy"] != "original"]
    assert copies and {r["strategy"] for r in copies} == {"unk", "pos", "ngram"}
    for row in out:
        source = sources[row["source_id"]]
        assert row["label"] == source["label"] and row["extra"] == source["extra"]
    assert stats["rows_in"] == len(rows) and stats["rows_out"] == len(out)
    produced = sum(stats["per_strategy"][s]["produced"] for s in ("unk", "pos", "ngram"))
    assert stats["copies_kept"] == len(copies) == produced
    # Throughput is reported, not asserted (wall clock on a shared machine); it must be the counts over the time.
    if stats["seconds"] > 0:
        assert stats["rows_per_second"] == pytest.approx(len(rows) / stats["seconds"], rel=0.05, abs=0.01)

    without = augment(rows, expansion_rate=5, p=0.3, seed=3, keep_originals=False).rows
    assert without == copies


def test_copy_ids_derive_from_the_source_id_and_the_example_id_of_the_text():
    rows = [{"id": f"p{i}", "text": a, "text_pair": b, "label": i % 2} for i, (a, b) in enumerate(zip(EN, EN[1:]))]
    out, _ = augment(rows, expansion_rate=6, p=0.4, seed=0)
    copies = [r for r in out if r["strategy"] != "original"]
    assert copies
    for row in copies:
        assert row["id"] == f"{row['source_id']}-{example_id(row['text'], row['text_pair'])}"
    assert len({r["id"] for r in out}) == len(out)
    assert content_id("a", "b") == example_id("a", "b") and content_id("a") == example_id("a")
    # both texts of a pair are augmented by the copy's strategy
    assert any(r["text_pair"] != next(s for s in rows if s["id"] == r["source_id"])["text_pair"] for r in copies)


def test_reproducible_with_a_seed_and_different_with_another():
    rows = rows_of(EN)
    a = augment(rows, expansion_rate=5, p=0.3, seed=11).rows
    assert augment(rows, expansion_rate=5, p=0.3, seed=11).rows == a
    assert augment(rows, EdaParams(expansion_rate=5, p=0.3), seed=11).rows == a
    assert augment(rows, expansion_rate=5, p=0.3, seed=12).rows != a
    # each copy has its own random stream: the first copies survive a larger expansion rate
    more = augment(rows, expansion_rate=8, p=0.3, seed=11).rows
    assert {r["id"] for r in a} <= {r["id"] for r in more}


def test_duplicates_are_dropped_and_counted():
    rows = rows_of(["good movie", "a good movie", "fine", "the plot is thin but the cast is great"])
    out, stats = augment(rows, strategies={"ngram": 1.0}, ngram_min=2, ngram_max=2, expansion_rate=10, seed=0)
    counts = stats["per_strategy"]["ngram"]
    originals = {r["text"] for r in rows}
    copies = by_strategy(out, "ngram")
    assert not originals & {r["text"] for r in copies}  # "good movie" from "a good movie" is an input row
    assert len({r["text"] for r in copies}) == len(copies)
    assert counts["produced"] == len(copies) and counts["dropped_duplicate"] >= 20  # rows 0 and 2 give only themselves
    assert counts["produced"] + counts["dropped_duplicate"] + counts["dropped_empty"] == 10 * len(rows)
    assert not any(r["source_id"] in ("r0", "r2") for r in copies)

    # nothing replaced: every copy is its source
    out, stats = augment(rows_of(EN), strategies={"unk": 1.0}, p=0.0, expansion_rate=3, seed=0)
    assert out == by_strategy(out, "original") and stats["per_strategy"]["unk"]["dropped_duplicate"] == 3 * len(EN)

    # spacing does not hide a repeat: copies are compared as joined words
    out, stats = augment(rows_of(["good  movie ,ok"]), strategies={"ngram": 1.0}, ngram_min=9, ngram_max=9,
                         expansion_rate=2, seed=0)  # fmt: skip
    assert stats["per_strategy"]["ngram"]["dropped_duplicate"] == 2 and len(out) == 1


def test_texts_without_words_are_dropped_as_empty():
    out, stats = augment(rows_of(["", "   ", "a fine day"]), expansion_rate=4, p=0.5, seed=0)
    dropped = sum(c.get("dropped_empty", 0) for c in stats["per_strategy"].values())
    assert dropped == 8
    assert {r["source_id"] for r in out if r["strategy"] != "original"} <= {"r2"}


def test_every_source_id_exists_and_proportions_are_roughly_respected():
    rows = rows_of(many_english(200))
    shares = {"unk": 0.2, "pos": 0.5, "ngram": 0.3}
    out, stats = augment(rows, strategies=shares, expansion_rate=10, p=0.3, seed=5)
    ids = {r["id"] for r in rows}
    assert all(r["source_id"] in ids for r in out)
    drawn = {s: sum(stats["per_strategy"][s].values()) for s in shares}
    assert sum(drawn.values()) == stats["copies_drawn"] == 2000
    for s, share in shares.items():
        assert abs(drawn[s] / 2000 - share) < 0.04, drawn


# --- strategies --------------------------------------------------------------------------------------


def test_unk_rate_is_close_to_p_over_many_words():
    words = [f"w{i}" for i in range(20000)]
    for p in (0.1, 0.3):
        out = unk_noise(words, random.Random(0), p)
        assert len(out) == len(words)
        assert all(o in (w, "[UNK]") for o, w in zip(out, words))
        assert abs(out.count("[UNK]") / len(words) - p) < 0.01
    assert unk_noise(words, random.Random(0), 0.0) == words
    assert unk_noise([], random.Random(0), 0.5) is None
    assert unk_noise([",", ".", "a"], random.Random(0), 1.0, "<unk>") == [",", ".", "<unk>"]
    assert unk_noise([",", "."], random.Random(0), 1.0, punctuation=True) == ["[UNK]", "[UNK]"]


def test_unk_copies_replace_whole_words():
    out, _ = augment(rows_of(EN), strategies={"unk": 1.0}, p=0.4, unk_token="<unk>", expansion_rate=5, seed=2)
    sources = {r["id"]: r for r in rows_of(EN)}
    for row in by_strategy(out, "unk"):
        src, got = split_words(sources[row["source_id"]]["text"], "en"), row["text"].split(" ")
        assert len(got) == len(src) and all(g in (w, "<unk>") for g, w in zip(got, src))
        assert "<unk>" in got


def test_pos_replacement_swaps_words_of_the_same_tag_drawn_from_the_data_set():
    texts = many_english(30) + EN
    split = [split_words(text, "en") for text in texts]
    tagged_pairs = {(w, t) for words in split for w, t in zip(words, english_pos_tags(words))}
    vocabulary = {w for w, _ in tagged_pairs}
    rows = rows_of(texts)
    out, stats = augment(rows, strategies={"pos": 1.0}, p=0.5, expansion_rate=4, seed=1)
    sources = {r["id"]: r["text"] for r in rows}
    swaps = 0
    for row in by_strategy(out, "pos"):
        src = split_words(sources[row["source_id"]], "en")
        got = row["text"].split(" ")
        assert len(got) == len(src)
        tags = english_pos_tags(src)  # the source's words tagged in context, as the augmentation did
        for g, w, tag in zip(got, src, tags):
            if g != w:
                swaps += 1
                assert g in vocabulary and (g, tag) in tagged_pairs, (g, w, tag)
                assert is_word(w) and is_word(g)
    assert swaps > 100 and stats["per_strategy"]["pos"]["produced"] > 0


def test_the_english_tagger_uses_context_and_works_offline():
    assert english_pos_tags(["I", "love", "this", "movie", "!"]) == ["PRP", "VBP", "DT", "NN", "."]
    assert english_pos_tags(["she", "walks", "home"])[1] == "VBZ"
    assert english_pos_tags([]) == []


def test_a_custom_tagger_replaces_the_built_in_one():
    rows = rows_of(EN)
    by_length = lambda ws: [str(len(w)) for w in ws]  # noqa: E731
    out, _ = augment(rows, strategies={"pos": 1.0}, p=1.0, expansion_rate=2, seed=0, tagger=by_length)
    sources = {r["id"]: r["text"] for r in rows}
    for row in by_strategy(out, "pos"):
        src = split_words(sources[row["source_id"]], "en")
        assert [len(w) for w in row["text"].split(" ")] == [len(w) for w in src]


def test_pos_vocabulary_draws_by_frequency_and_never_the_word_itself():
    vocab = PosVocabulary.from_tagged([(["a"] * 90 + ["b"] * 10 + ["c"], ["N"] * 101), (["run", ","], ["V", ","])])
    rng = random.Random(0)
    draws = Counter(vocab.draw("N", rng, exclude="c") for _ in range(5000))
    assert set(draws) == {"a", "b"} and abs(draws["a"] / 5000 - 0.9) < 0.02
    assert set(vocab.draw("N", rng, exclude="a") for _ in range(500)) == {"b", "c"}
    assert vocab.draw("V", rng, exclude="run") is None and vocab.draw("ADJ", rng) is None
    assert vocab.counts(",") == Counter()  # punctuation is not a replacement


def test_ngram_spans_are_contiguous_and_within_bounds():
    words = [f"w{i}" for i in range(30)]
    rng = random.Random(0)
    lengths = Counter()
    for _ in range(2000):
        span = ngram_sample(words, rng)  # en defaults: 2-6 words
        lengths[len(span)] += 1
        start = words.index(span[0])
        assert span == words[start : start + len(span)]
    assert set(lengths) == {2, 3, 4, 5, 6}
    assert ngram_sample(["a"], rng) == ["a"] and ngram_sample([], rng) is None

    rows = rows_of(EN)
    out, _ = augment(rows, strategies={"ngram": 1.0}, ngram_min=3, ngram_max=4, expansion_rate=6, seed=4)
    sources = {r["id"]: split_words(r["text"], "en") for r in rows}
    for row in by_strategy(out, "ngram"):
        span, src = row["text"].split(" "), sources[row["source_id"]]
        assert 3 <= len(span) <= 4
        assert any(src[i : i + len(span)] == span for i in range(len(src)))


# --- Chinese -----------------------------------------------------------------------------------------


def test_chinese_copies_have_no_spurious_spaces_and_keep_jieba_words_whole():
    rows = rows_of(ZH)
    out, stats = augment(rows, language="zh", p=0.3, expansion_rate=10, seed=0)
    sources = {r["id"]: r["text"] for r in rows}
    tagged = [chinese_words_and_tags(t) for t in ZH]
    same_tag: dict[str, set[str]] = {}
    for pairs in tagged:
        for w, t in pairs:
            same_tag.setdefault(t, set()).add(w)
    seen = Counter()
    for row in out:
        text = row["text"]
        if "iPhone" not in sources[row["source_id"]]:
            assert " " not in text, text
        else:
            assert " " not in text.replace("iPhone 12", "")
        pairs = chinese_words_and_tags(sources[row["source_id"]])
        words = [w for w, _ in pairs]
        seen[row["strategy"]] += 1
        if row["strategy"] == "ngram":  # a contiguous run of 2-10 whole words
            assert any(join_words(words[i:j], "zh") == text
                       for i in range(len(words)) for j in range(i + 2, min(i + 10, len(words)) + 1)), text  # fmt: skip
        elif row["strategy"] == "unk":  # each whole word kept or replaced
            assert re.fullmatch("".join(f"(?:{re.escape(w)}|\\[UNK\\])" for w in words), text.replace(" ", "")), text
        elif row["strategy"] == "pos":  # each whole word kept or swapped for a data-set word with its tag
            alternatives = ["|".join(sorted({re.escape(x) for x in same_tag[t] | {w}}, key=len, reverse=True))
                            for w, t in pairs]  # fmt: skip
            assert re.fullmatch("".join(f"(?:{a})" for a in alternatives), text.replace(" ", "")), text
    assert seen["ngram"] and seen["unk"] and seen["pos"] and seen["original"] == len(ZH)
    assert stats["language"] == "zh"


# --- progress ----------------------------------------------------------------------------------------


def test_progress_bar_only_on_a_terminal_for_many_rows(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not show_progress(10**6)
    assert show_progress(10, progress=True) and not show_progress(10**6, progress=False)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    assert show_progress(10**6) and not show_progress(10)
