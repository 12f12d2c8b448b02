"""Data preparation shared by every flow: download → validate → deduplicate + split."""

from __future__ import annotations

from collections.abc import Sequence

from landing.config import DataConfig
from landing.data_contracts.manifest import DatasetManifest
from landing.tasks.context import RunContext
from landing.tasks.data import check_token_coverage, download_table, split_tables, validate_table


def prepare_data(data: DataConfig, config_dir: str, ctx: RunContext,
                 tokenizers: Sequence[str | None] = ()) -> tuple[dict[str, DatasetManifest], dict]:  # fmt: skip
    """Returns the split manifests (``train``, ``eval``, optional ``transfer``) and rejects per table; the
    training split's coverage by each of ``tokenizers`` (the run's models' pretrained tokenizers) is checked."""
    contract = data.contract
    tables = {"train": (data.train, contract), "eval": (data.eval, contract)}
    if data.unlabelled is not None:
        tables["unlabelled"] = (data.unlabelled, contract.without_label())
    validated = {
        name: validate_table(
            name, download_table(name, table, config_dir, ctx), table_contract, data.quarantine, table.max_rows, ctx
        )
        for name, (table, table_contract) in tables.items()
        if table is not None
    }
    splits = split_tables(validated["train"], validated.get("eval"), validated.get("unlabelled"), data.split, ctx)
    for name in dict.fromkeys(t for t in tokenizers if t is not None):
        check_token_coverage(name, splits["train"], data.allow_unknown_tokens, ctx)
    return splits, {name: m.rejects for name, m in validated.items()}
