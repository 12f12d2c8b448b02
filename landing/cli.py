"""``landing`` command line: run a flow from a YAML config, or validate a config's data."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Land large pretrained language models in low-resource text classification.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="run config (YAML); see configs/")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: key.path=value (repeatable)")]


def _prepare_environment() -> None:
    """Embedded defaults: Prefect state under the landing state dir, no usage analytics."""
    from infra.settings import get_settings

    prefect_home = get_settings().state_dir / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _load(config: Path, overrides: list[str] | None):
    from landing.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _report(summary: dict) -> None:
    from infra.settings import get_settings

    table = Table(title=f"{summary['flow']}: held-out results")
    for column in ("model", "parameters", "accuracy", "macro-F1", "batch-1 latency (ms)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for role in ("teacher", "student_kd", "student_baseline"):
        row = summary[role]
        latency = row.get("latency_batch1_ms")
        table.add_row(
            role, f"{row['params'] / 1e6:.2f}M", f"{row['accuracy'] * 100:.2f}", f"{row['macro_f1'] * 100:.2f}",
            "-" if latency is None else f"{latency:.2f}",
        )  # fmt: skip
    console.print(table)
    teacher, kd, base = (summary[r]["accuracy"] for r in ("teacher", "student_kd", "student_baseline"))
    if teacher - base >= 0.01:  # a ratio of a gap under a point is noise
        console.print(f"KD recovers {100 * (kd - base) / (teacher - base):.0f}% of the teacher–baseline gap.")
    tracking = get_settings().resolved_tracking_uri()
    console.print(f"MLflow run: {summary['mlflow_run_id']}  (tracking URI: {tracking})")
    if tracking.startswith("sqlite:"):
        console.print(f"Browse it with: mlflow ui --backend-store-uri {tracking}")
    console.print(f"Teacher logits: {summary['logits_uri']}")


@app.command()
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    output_dir: Annotated[Path | None, typer.Option(help="where summary.json goes (default runs/<name>)")] = None,
) -> None:
    """Run the flow that CONFIG names (e.g. distill) as a Prefect flow tracked in MLflow."""
    _prepare_environment()
    cfg = _load(config, set_)
    from flows.distill import distill

    out = output_dir or Path("runs") / cfg.name
    summary = distill(config=cfg, config_dir=str(config.resolve().parent), output_dir=str(out))
    _report(summary)
    console.print(f"Summary: {out / 'summary.json'}")


@app.command("validate-data")
def validate_data(config: ConfigArg, set_: SetOpt = None) -> None:
    """Fetch and check every table CONFIG declares against its data contract; no training."""
    from data_contracts.validation import DataValidationError, read_table
    from infra.fetch import FetchError, Source, fetch
    from infra.settings import get_settings

    cfg = _load(config, set_)
    settings = get_settings()
    contract = cfg.data.contract
    tables = {"train": (cfg.data.train, contract), "eval": (cfg.data.eval, contract)}
    if cfg.data.unlabelled is not None:
        tables["unlabelled"] = (cfg.data.unlabelled, contract.without_label())
    failed = False
    for name, (table, table_contract) in tables.items():
        if table is None:
            continue
        try:
            sources = [Source(uri=s.uri, sha256=s.sha256, member=s.member) for s in table.sources]
            got = fetch(sources, settings.cache_dir, base_dir=config.resolve().parent, timeout_s=settings.http_timeout_s)
            checked = read_table(got.path, table_contract, require_label=table_contract.label_column is not None)
        except (FetchError, DataValidationError, FileNotFoundError) as exc:
            failed = True
            err.print(f"[red]{name}: invalid[/]\n{exc}", highlight=False)
            continue
        counts = checked.frame["label"].value_counts().to_dict() if "label" in checked.frame else {}
        console.print(f"{name}: ok, {len(checked.frame)} rows from {got.uri}; labels {counts}", highlight=False)
    raise typer.Exit(1 if failed else 0)


def main() -> None:  # pragma: no cover
    sys.exit(app())
