"""How much of a table a tokenizer can read: the share of its tokens that come out as ``[UNK]``.

A model whose vocabulary lacks the data's script (MiniLM's English WordPiece on Chinese reviews) turns most
of it into ``[UNK]`` and then trains and reports near-chance accuracy without a word; this measures it
before anything trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

WARN_SHARE = 0.10  # a warning naming the model, the share and an example row
REFUSE_SHARE = 0.50  # the run is refused unless the user allows unknown tokens


@dataclass(frozen=True)
class TokenCoverage:
    tokens: int
    unknown: int
    example_row: int | None  # the row with the largest share of unknown tokens
    example_text: str | None

    @property
    def unknown_share(self) -> float:
        return self.unknown / self.tokens if self.tokens else 0.0


def token_coverage(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                   text_pairs: Sequence[str] | None = None) -> TokenCoverage:  # fmt: skip
    """[UNK] tokens over all tokens of ``texts`` (and ``text_pairs``), special tokens left out. A tokenizer
    without an unknown token (byte-level BPE) reads everything."""
    unk = tokenizer.unk_token_id
    columns = [list(texts), *([list(text_pairs)] if text_pairs is not None else [])]
    if unk is None or not columns[0]:
        return TokenCoverage(0, 0, None, None)
    per_row = [0] * len(columns[0])
    lengths = [0] * len(columns[0])
    for column in columns:
        for i, ids in enumerate(tokenizer(column, add_special_tokens=False, verbose=False)["input_ids"]):  # no length warning
            per_row[i] += ids.count(unk)
            lengths[i] += len(ids)
    worst = max(range(len(per_row)), key=lambda i: (per_row[i] / lengths[i] if lengths[i] else 0.0, -i))
    has_example = per_row[worst] > 0
    return TokenCoverage(sum(lengths), sum(per_row), worst if has_example else None,
                         columns[0][worst] if has_example else None)  # fmt: skip
