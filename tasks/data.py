"""Data steps: download → validate → deduplicate + split. Each returns manifests."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pandas as pd
from prefect import task

from landing.config import SplitConfig, TableConfig
from landing.data_contracts.kshot import kshot_split
from landing.data_contracts.manifest import DatasetManifest, RawTableManifest
from landing.data_contracts.schema import TableContract
from landing.data_contracts.splitting import (
    assert_disjoint,
    deduplicate,
    inside_rows,
    length_matched_rows,
    remove_overlap,
    stratified_split,
    whole_text_rows,
)
from landing.data_contracts.validation import read_table, write_canonical
from landing.errors import UserError
from landing.files import atomic_write
from landing.infra.fetch import Source, fetch
from landing.infra.settings import get_settings
from landing.infra.tracking import log_dataset, log_params, step_run
from landing.tasks.context import STEP_CACHE, RunContext, fetch_dataset, fetch_file, publish_file, scratch_dir

log = logging.getLogger("landing.data")


@task(name="download", cache_policy=STEP_CACHE, persist_result=True)
def download_table(name: str, table: TableConfig, base_dir: str, ctx: RunContext) -> RawTableManifest:
    """Fetch the first reachable source and keep a content-addressed copy in the object store."""
    settings = get_settings()
    with step_run(ctx.parent_run_id, f"download-{name}"):
        sources = [Source(uri=s.uri, sha256=s.sha256, member=s.member) for s in table.sources]
        result = fetch(sources, settings.cache_dir, base_dir=Path(base_dir), timeout_s=settings.http_timeout_s)
        member = next((s.member for s in sources if s.uri == result.uri), None)
        source = f"{result.uri}!{member}" if member else result.uri
        suffix = "".join(Path(sources[0].member or result.uri).suffixes[-1:])
        uri, sha = publish_file(result.path, f"raw/{result.sha256}{suffix}")
        mlflow.log_params({"table": name, "source": source, "sha256": sha, "from_cache": result.from_cache})
    return RawTableManifest(uri=uri, sha256=sha, source=source, suffix=suffix)


@task(name="validate", cache_policy=STEP_CACHE, persist_result=True)
def validate_table(
    name: str, raw: RawTableManifest, contract: TableContract, quarantine: bool, max_rows: int | None, ctx: RunContext
) -> DatasetManifest:
    """Check the table against its contract and publish it in canonical JSONL (id, text, [text_pair], [label])."""
    work = scratch_dir(ctx.run_key, "data")
    local = fetch_file(raw, raw.suffix)
    with step_run(ctx.parent_run_id, f"validate-{name}"):
        rejects_path = work / f"{name}.rejects.jsonl" if quarantine else None
        table = read_table(local, contract, quarantine_path=rejects_path, require_label=contract.label_column is not None,
                           source=raw.source)  # errors name the user's file, not the cached copy
        frame = table.frame if max_rows is None else table.frame.head(max_rows)
        out = work / f"{name}.jsonl"
        write_canonical(frame, out)
        uri, _ = publish_file(out, ctx.key("data", f"{name}.jsonl"))
        rejects_uri = None
        if table.rejects and rejects_path is not None:
            rejects_uri, _ = publish_file(rejects_path, ctx.key("data", f"{name}.rejects.jsonl"))
            mlflow.log_artifact(str(rejects_path), artifact_path="rejects")
        mlflow.log_metrics({"rows_valid": len(table.frame), "rows_kept": len(frame), "rows_rejected": table.rejects})
        log_params({"table": name, "source": raw.source, "max_rows": max_rows})
        return DatasetManifest.from_frame(
            frame, uri=uri, local_path=out, input_schema=contract.input_schema, name=name,
            rejects=table.rejects, rejects_uri=rejects_uri,
        )  # fmt: skip


def _split_sizes(cfg: SplitConfig, has_eval_table: bool, labelled_rows: int) -> dict[str, int | float]:
    """Requested size per split; ``validation`` is a row count (0 = no validation split)."""
    sizes = {
        "eval": None if has_eval_table else cfg.eval_size,
        "validation": cfg.validation_rows(labelled_rows) or None,
        "transfer": cfg.transfer_size,
        "train": cfg.train_size,
    }
    return {k: v for k, v in sizes.items() if v is not None}


def write_conflicts(rows: pd.DataFrame, path: Path) -> None:
    """Rejects-file lines for rows whose input also occurs with another label (kept or not, per policy)."""
    with atomic_write(path) as fh:
        for rec in rows.to_dict(orient="records"):
            issue = f"input occurs with labels {rec['labels_seen']}"
            fh.write(json.dumps({**rec, "issue": issue}, ensure_ascii=False, default=str) + "\n")


@task(name="split", cache_policy=STEP_CACHE, persist_result=True)
def split_tables(
    train: DatasetManifest,
    eval_table: DatasetManifest | None,
    unlabelled: DatasetManifest | None,
    cfg: SplitConfig,
    ctx: RunContext,
    validation_needed: bool = True,
) -> dict[str, DatasetManifest]:
    """Deduplicate, keep held-out texts out of training, split stratified and seeded.

    ``validation_needed``: whether the flow selects or gates on validation rows, so that a split without
    them is worth a warning (easynlp's train does not: it trains on all of ``tables[0]``, as EasyNLP does).

    Returns ``train``, ``validation`` (labelled rows for selection and tuning, so ``eval`` is only
    ever reported; absent when ``validation_size`` is 0) and ``eval`` manifests, and ``transfer``
    (unlabelled rows for distillation: labels of rows moved out of the labelled table are discarded)
    when there is any. Rows left over after the requested sizes are counted in
    the run's metrics as ``rows_unused``.
    """
    work = scratch_dir(ctx.run_key, "data")
    counts: dict[str, int] = {}
    conflict_files: list[Path] = []

    def dedup(manifest: DatasetManifest, role: str) -> pd.DataFrame:
        result = deduplicate(fetch_dataset(manifest), conflicts=cfg.conflicts, where=f"{role} table ({manifest.uri})")
        counts[f"duplicates_{role}"] = result.removed
        if result.conflicts:
            counts[f"conflicts_{role}"] = result.conflicts
            out = work / f"{role}.conflicts.jsonl"
            write_conflicts(result.conflict_rows, out)
            conflict_files.append(out)
            log.warning("%s table: %d input(s) occur with different labels (%d rows, policy %r); listed in rejects/%s",
                        role, result.conflicts, len(result.conflict_rows), cfg.conflicts, out.name)  # fmt: skip
        return result.frame

    labelled = dedup(train, "train")
    held_out = None
    if eval_table is not None:
        held_out = dedup(eval_table, "eval")
        labelled, counts["overlap_train_eval"] = remove_overlap(labelled, held_out)
    sizes = _split_sizes(cfg, eval_table is not None, len(labelled))
    if "validation" not in sizes and validation_needed:
        log.warning("data.split.validation_size is 0: no validation split, so nothing is selected or tuned on "
                    "held-out labelled rows; gates fall back to eval, which is then no longer an unbiased report")
    parts, labelled_rows = {}, len(labelled)
    if "validation" in sizes and (cfg.validation_from != "all_rows" or cfg.validation_like != "train"):
        parts["validation"], labelled = _validation_first(labelled, held_out, sizes.pop("validation"), cfg, ctx.seed,
                                                          counts)  # fmt: skip
    parts |= stratified_split(labelled, sizes, seed=ctx.seed) if sizes else {}
    taken = set().union(*(set(p["id"]) for p in parts.values())) if parts else set()
    parts.setdefault("train", labelled[~labelled["id"].isin(taken)])
    counts["rows_unused"] = int(labelled_rows - sum(len(p) for p in parts.values()))
    if held_out is not None:
        parts["eval"] = held_out
    transfer_parts = [parts.pop("transfer").drop(columns=["label"])] if "transfer" in parts else []
    if unlabelled is not None:
        extra = dedup(unlabelled, "unlabelled")
        for other in (*parts.values(), *transfer_parts):  # train, validation, eval
            extra, removed = remove_overlap(extra, other)
            counts["overlap_unlabelled"] = counts.get("overlap_unlabelled", 0) + removed
        transfer_parts.append(extra.drop(columns=["label"], errors="ignore"))
    if transfer_parts:
        parts["transfer"] = pd.concat(transfer_parts, ignore_index=True)
    assert_disjoint(parts)

    manifests: dict[str, DatasetManifest] = {}
    with step_run(ctx.parent_run_id, "split"):
        mlflow.log_metrics({**counts, **{f"rows_{k}": len(v) for k, v in parts.items()}})
        log_params({"split": cfg.model_dump(), "seed": ctx.seed})
        for path in conflict_files:
            publish_file(path, ctx.key("data", path.name))
            mlflow.log_artifact(str(path), artifact_path="rejects")
        for name, frame in parts.items():
            out = work / f"split-{name}.jsonl"
            write_canonical(frame, out)
            uri, _ = publish_file(out, ctx.key("data", f"split-{name}.jsonl"))
            manifests[name] = DatasetManifest.from_frame(
                frame, uri=uri, local_path=out, input_schema=train.input_schema, name=name
            )
            context = {"train": "training", "validation": "validation", "eval": "evaluation",
                       "transfer": "distillation"}[name]  # fmt: skip
            log_dataset(frame, name=name, source_uri=uri, digest=manifests[name].sha256, context=context)
    return manifests


def _validation_first(labelled: pd.DataFrame, held_out: pd.DataFrame | None, rows: int, cfg: SplitConfig, seed: int,
                      counts: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """The validation rows drawn before the other splits (``validation_from`` / ``validation_like`` set), and the
    labelled rows left for them; what it withholds is counted in ``counts``."""
    candidates = labelled
    if cfg.validation_from == "whole_texts":
        candidates = labelled[whole_text_rows(labelled)].reset_index(drop=True)
        if len(candidates) < rows:
            raise UserError(f"data.split.validation_from: whole_texts: {len(candidates)} labelled rows occur inside "
                            f"no other row, and the validation split needs {rows}; lower data.split.validation_size")  # fmt: skip
    if cfg.validation_like == "eval" and held_out is not None:
        validation = length_matched_rows(candidates, held_out, rows, seed=seed)
        counts["validation_length_shortfall"] = validation.attrs["length_shortfall"]
    else:
        validation = stratified_split(candidates, {"validation": rows}, seed=seed)["validation"]
    rest = labelled[~labelled["id"].isin(set(validation["id"]))].reset_index(drop=True)
    if cfg.validation_from == "whole_texts":
        inside = inside_rows(rest, validation)
        counts["rows_inside_validation"] = int(inside.sum())  # withheld: part of a validation row's text
        rest = rest[~inside].reset_index(drop=True)
    return validation, rest


@task(name="token-coverage")  # not cached: cheap, and a cached pass must not skip the warning or the refusal
def check_token_coverage(model: str, table: DatasetManifest, allow_unknown_tokens: bool, ctx: RunContext) -> float:
    """The share of ``table``'s tokens that ``model``'s tokenizer reads as [UNK], logged to MLflow; a warning
    above ``WARN_SHARE``, and above ``REFUSE_SHARE`` a refusal unless unknown tokens are allowed."""
    from landing.models.coverage import REFUSE_SHARE, WARN_SHARE, token_coverage
    from landing.models.pretrained import load_tokenizer

    frame = fetch_dataset(table)
    coverage = token_coverage(load_tokenizer(model), list(frame["text"]),
                              list(frame["text_pair"]) if "text_pair" in frame.columns else None)  # fmt: skip
    share = coverage.unknown_share
    with step_run(ctx.parent_run_id, "token-coverage"):
        log_params({"model": model, "table": table.name})
        mlflow.log_metrics({"unknown_token_share": share, "tokens": coverage.tokens, "unknown_tokens": coverage.unknown})
    if share <= WARN_SHARE:
        return share
    what = (f"{table.name} rows: {share:.1%} of the tokens are unknown ([UNK]) to the tokenizer of {model}, "
            f"e.g. {coverage.example_text[:80]!r}")  # fmt: skip
    if share > REFUSE_SHARE and not allow_unknown_tokens:
        raise UserError(f"{what}. The model cannot read this text: pick a model whose vocabulary covers it, or train "
                        "anyway with data.allow_unknown_tokens: true (easynlp: allow_unknown_tokens=True)")  # fmt: skip
    log.warning("%s: the model reads this text poorly; a model whose vocabulary covers it will do better", what)
    return share


@task(name="kshot-split", cache_policy=STEP_CACHE, persist_result=True)
def kshot_tables(pool: list[DatasetManifest], k: int, seed: int, validation_k: int | None, labels: list[str],
                 ctx: RunContext) -> dict[str, DatasetManifest]:  # fmt: skip
    """k per class to train on and as many to validate on, drawn from the labelled pool (every labelled split);
    the pool's other rows become ``unlabelled`` (labels dropped) for prompt methods' auxiliary MLM and for
    distillation."""
    frame = pd.concat([fetch_dataset(table) for table in pool], ignore_index=True)
    parts = kshot_split(frame, k, seed, validation_k, labels)
    parts["unlabelled"] = parts.pop("rest").drop(columns=["label"])
    assert_disjoint(parts)
    work = scratch_dir(ctx.run_key, "data", f"k{k}-seed{seed}")
    manifests: dict[str, DatasetManifest] = {}
    with step_run(ctx.parent_run_id, f"kshot-k{k}-seed{seed}"):
        log_params({"k": k, "seed": seed, "validation_k": validation_k if validation_k is not None else k})
        mlflow.log_metrics({f"rows_{name}": len(frame) for name, frame in parts.items()})
        for name, frame in parts.items():
            out = work / f"{name}.jsonl"
            write_canonical(frame, out)
            uri, _ = publish_file(out, ctx.key("data", f"k{k}-seed{seed}", f"{name}.jsonl"))
            manifests[name] = DatasetManifest.from_frame(frame, uri=uri, local_path=out, input_schema=pool[0].input_schema,
                                                         name=f"{name}-k{k}-seed{seed}")  # fmt: skip
            log_dataset(frame, name=manifests[name].name, source_uri=uri, digest=manifests[name].sha256,
                        context={"train": "training", "validation": "validation", "unlabelled": "distillation"}[name])  # fmt: skip
    return manifests
