"""Data preparation shared by every flow: download → validate → deduplicate + split."""

from __future__ import annotations

from landing.config import DataConfig
from landing.data_contracts.manifest import DatasetManifest
from landing.tasks.context import RunContext
from landing.tasks.data import download_table, split_tables, validate_table


def prepare_data(data: DataConfig, config_dir: str, ctx: RunContext) -> tuple[dict[str, DatasetManifest], dict]:
    """Returns the split manifests (``train``, ``eval``, optional ``transfer``) and rejects per table."""
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
    return splits, {name: m.rejects for name, m in validated.items()}
