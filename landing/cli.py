"""``landing`` command line: run a flow from a YAML config, or validate a config's data."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from landing.errors import DEBUG_VARIABLE, QuietUserErrors, UserError, debug_enabled, user_error_in

app = typer.Typer(help="Land large pretrained language models in low-resource text classification.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="run config (YAML); see configs/")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: key.path=value (repeatable)")]


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help=f"tracebacks for mistakes in your input too (or {DEBUG_VARIABLE}=1)")] = False,
) -> None:
    if debug:
        os.environ[DEBUG_VARIABLE] = "1"


def main() -> None:
    """The ``landing`` command: a mistake in the user's input ends it with its message alone (exit 1);
    a bug keeps its traceback."""
    try:
        app()
    except Exception as exc:  # typer re-raises what a command raised
        user = explained_or_exit(exc)
        err.print(f"[red]error:[/] {escape(str(user))}", highlight=False)
        err.print(f"(a traceback: --debug or {DEBUG_VARIABLE}=1)", style="dim", highlight=False)
        sys.exit(1)


def explained_or_exit(exc: Exception) -> UserError:
    """The user's mistake (or a machine or service failure) behind ``exc``, to be shown as one message. A bug
    gets its traceback and the logs' places, then exit 1; with --debug the exception is re-raised."""
    user = user_error_in(exc) or _machine_or_service_failure(exc)
    if user is None:
        _report_bug()
        sys.exit(1)
    if debug_enabled():
        raise exc
    return user


def _report_bug() -> None:
    """A bug: its traceback, then where the run's logs are, so a report can carry both."""
    from landing.infra.settings import get_settings

    err.print_exception(max_frames=30)
    settings = get_settings()
    api = os.environ.get("PREFECT_API_URL", "Prefect's temporary local API (its log lines are above)")
    err.print(f"[red]internal error[/] (a bug in landing, not in your input): please report it with the traceback "
              f"above. Logs: the Prefect flow run at {api}; the MLflow run at {settings.resolved_tracking_uri()}; "
              f"step files under {settings.state_dir}.", highlight=False)  # fmt: skip


def _machine_or_service_failure(exc: Exception) -> UserError | None:
    from landing.infra.failures import explain_failure

    return explain_failure(exc)


class _PrefectWarningsOnly(logging.Filter):
    """Prefect's per-task INFO lines (and its server banner) off the console; the Prefect API still gets them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("prefect")


def _quiet_console_logs(prefect_progress: bool = True) -> None:
    """Prefect logs a failed task and flow with the traceback; for a user's mistake the CLI's one line is
    enough (``--debug`` keeps Prefect's records and tracebacks). Our own progress notes (``landing.*`` at
    INFO) are shown; Prefect's INFO lines only with ``prefect_progress`` or ``--debug``."""
    logging.getLogger("landing").setLevel(logging.INFO)
    if debug_enabled():
        return
    filters = [QuietUserErrors(_machine_or_service_failure), *([] if prefect_progress else [_PrefectWarningsOnly()])]
    for handler in [*logging.getLogger().handlers, *logging.getLogger("mlflow").handlers]:  # MLflow has its own
        for new in filters:
            if not any(isinstance(f, type(new)) for f in handler.filters):
                handler.addFilter(new)


def _load(config: Path, overrides: list[str] | None):
    from landing.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def _runtime() -> None:
    """Embedded defaults, or the local stack while `make up`'s services run (said on stderr)."""
    from landing.infra.settings import prepare_runtime_environment

    if (stack_env := prepare_runtime_environment()) is not None:
        err.print(f"using the local stack started by `make up` ({stack_env})", highlight=False)


def _report(summary: dict) -> None:
    from landing.infra.settings import get_settings

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
    console.print(f"Teacher logits: {summary['logits_uri'] or 'asked of the served teacher (online distillation)'}")


@app.command()
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    output_dir: Annotated[Path | None, typer.Option(help="where summary.json goes (default runs/<name>)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="re-run every step, ignoring cached results")] = False,
) -> None:
    """Run the flow that CONFIG names (e.g. distill) as a Prefect flow tracked in MLflow."""
    _runtime()
    cfg = _load(config, set_)
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    from landing.flows.table import FLOWS

    _quiet_console_logs()
    out = output_dir or Path("runs") / cfg.name
    with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: no_cache}):
        summary = FLOWS[cfg.flow].run(config=cfg, config_dir=str(config.resolve().parent), output_dir=str(out))
    if "teacher" in summary:
        _report(summary)
    if "report_markdown" in summary:
        print(summary["report_markdown"])  # plain: a markdown table must not be re-wrapped
    console.print(f"Summary: {out / 'summary.json'}")


@app.command()
def augment(
    config: ConfigArg,
    output: Annotated[Path, typer.Option(help="augmented table to write (.csv, .tsv or .jsonl)")],
    set_: SetOpt = None,
) -> None:
    """Run CONFIG's data and augmentation steps (a distill config) and write the augmented rows: the input
    schema's columns plus source_id and strategy, next to a manifest (OUTPUT.manifest.json)."""
    _runtime()
    cfg = _load(config, [*(set_ or []), "flow=augment"])
    if cfg.augmentation is None:
        err.print(f"[red]error:[/] {config}: augmentation: expected an augmentation block, found none", highlight=False)
        raise typer.Exit(2)
    from landing.flows.table import FLOWS
    from landing.infra.augmented_tables import write_augmented_table

    _quiet_console_logs()
    summary = FLOWS["augment"].run(config=cfg, config_dir=str(config.resolve().parent), output_dir=str(output.parent))
    rows = write_augmented_table(summary["augmented"], cfg.data.contract, output)
    console.print(f"{rows} augmented rows written to {output} (manifest {output}.manifest.json)", highlight=False)


@app.command("validate-data")
def validate_data(config: ConfigArg, set_: SetOpt = None) -> None:
    """Fetch and check every table CONFIG declares against its data contract; no training."""
    from landing.data_contracts.validation import DataValidationError, read_table
    from landing.infra.fetch import FetchError, Source, fetch
    from landing.infra.settings import get_settings

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


data_app = typer.Typer(help="Publish data versions.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("push")
def data_push(
    table: Annotated[Path, typer.Argument(help="labelled table to publish (.tsv, .csv, .jsonl)")],
    dataset: Annotated[str, typer.Option(help="dataset name; deployments with on_data_push: NAME retrain on it")],
    config: Annotated[Path | None, typer.Option(help="run config whose data contract the table must pass")] = None,
    announce: Annotated[bool, typer.Option("--announce/--no-announce", help="emit landing.data.pushed")] = True,
) -> None:
    """Store TABLE as a new version of DATASET (by content hash) and announce it to Prefect."""
    from landing.data_contracts.validation import DataValidationError
    from landing.infra.datasets import DataPushError, announce_data_version, publish_data_version

    _runtime()
    contract = _load(config, None).data.contract if config is not None else None
    try:
        pushed = publish_data_version(table, dataset, contract)
        console.print(f"stored {pushed.uri} (sha256 {pushed.sha256}, rows {pushed.rows or 'not checked'})")
        if announce:
            pushed = announce_data_version(pushed)
            console.print(f"announced {dataset} to Prefect (event {pushed.event_id})")
    except (DataPushError, DataValidationError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def deploy(
    file: Annotated[Path, typer.Argument(help="deployments file")] = Path("configs/deployments.yaml"),
    work_pool: Annotated[str | None, typer.Option(help="work pool (default: the file's work_pool)")] = None,
) -> None:
    """Create or update the Prefect deployments FILE declares (schedules, data and completion triggers)."""
    from landing.config import ConfigError
    from landing.deployments import deploy_all, load_deployments

    _runtime()
    try:
        spec = load_deployments(file)
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    ids = deploy_all(spec, work_pool)
    table = Table(title=f"deployments on work pool {work_pool or spec.work_pool}")
    for column in ("deployment", "flow", "schedule", "triggers", "id"):
        table.add_column(column)
    for d in spec.deployments:
        triggers = ", ".join(filter(None, [d.on_data_push and f"data push: {d.on_data_push}", d.after and f"after {d.after}"]))
        table.add_row(d.name, d.flow, d.cron or "-", triggers or "-", ids[d.name])
    console.print(table)


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="ONNX bundle: a directory, an .onnx/.ort file, or a file:// / s3:// prefix")],
    input: Annotated[Path, typer.Option(help="table to label (.csv, .tsv or .jsonl)")],
    output: Annotated[Path, typer.Option(help="prediction table to write (.csv, .tsv or .jsonl)")],
    text_column: Annotated[str, typer.Option(help="column with the (first) text")] = "text",
    pair_column: Annotated[str | None, typer.Option(help="column with the second text, for pair tasks")] = None,
    id_column: Annotated[str | None, typer.Option(help="column copied to the output as id")] = None,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="texts per onnxruntime run")] = 64,
    logits: Annotated[bool, typer.Option("--logits/--no-logits", help="also write the raw logits")] = False,
) -> None:
    """Label a table with an exported model through onnxruntime alone (torch is never imported).

    The table is streamed in chunks (memory does not grow with it) and the output appears only when complete."""
    from landing.infra import predict_io
    from landing.models.onnx_predictor import OnnxClassifier
    from landing.models.slu_predictor import OnnxSluPredictor

    try:
        predict_io.table_format(output)
        table = predict_io.open_input(input, predict_io.Columns(text_column, pair_column, id_column))
    except predict_io.UnsupportedTableError as exc:
        raise typer.BadParameter(str(exc)) from None
    except predict_io.MissingColumnError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    bundle = _local_bundle(model)
    classifier = (OnnxSluPredictor if _is_slu_bundle(bundle) else OnnxClassifier).load(bundle, threads=threads)
    with predict_io.terminal_progress(input) as advance:
        rows = predict_io.write_predictions(classifier, table, output, batch_size=batch_size, logits=logits,
                                            on_rows=advance)  # fmt: skip
    console.print(f"{rows} predictions written to {output}", highlight=False)


def _is_slu_bundle(bundle: Path) -> bool:
    """An SLU bundle (intent + slots, ``models/slu_export.py``) rather than a classifier's."""
    from landing.models.onnx_predictor import read_bundle_meta

    return bundle.is_dir() and read_bundle_meta(bundle).get("task") == "slu"


def _local_bundle(model: str) -> Path:
    """A local path as is; a registry URI or an object-store prefix is downloaded (and checked) first."""
    import tempfile

    if model.startswith("models:/"):
        _runtime()
        from landing.infra.registry import resolve_onnx_bundle
        from landing.infra.settings import get_settings
        from landing.infra.tracking import configure_tracking

        configure_tracking(get_settings())
        return resolve_onnx_bundle(model, Path(tempfile.mkdtemp(prefix="landing-model-")))
    from landing.infra.uris import is_local, uri_to_path

    if "://" not in model or is_local(model) and uri_to_path(model).exists():
        return uri_to_path(model)
    from landing.infra.object_store import store_for_uri

    target = Path(tempfile.mkdtemp(prefix="landing-model-"))
    return store_for_uri(model).get_dir(model, target)


if __name__ == "__main__":
    main()
