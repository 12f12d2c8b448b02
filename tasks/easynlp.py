"""The steps only ``easynlp`` commands need: a teacher's predict file imported as logits keyed by id, a checkpoint
directory both ``easynlp --mode=predict`` and ``landing predict`` read, and EasyNLP's output files."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from prefect import task

from landing.data_contracts.easynlp_files import LogitsColumns, prediction_lines, read_teacher_file, write_sidecar
from landing.data_contracts.logits import LogitsFileError, TeacherLogits, write_logits
from landing.data_contracts.manifest import (
    DatasetManifest,
    LogitsFileManifest,
    LogitsManifest,
    ModelManifest,
    TeacherManifest,
)
from landing.data_contracts.validation import example_id
from landing.easynlp_config import EasynlpPredictConfig, TeacherLogitsFile
from landing.files import atomic_path, sha256_file
from landing.infra.tracking import log_dataset, log_params, step_run
from landing.models.data import label_ids
from landing.models.loading import load_classifier, weights_sha256
from landing.models.metrics import classification_metrics
from landing.models.predict import predict_logits
from landing.tasks.context import STEP_CACHE, RunContext, fetch_dataset, fetch_model_dir, publish_file, scratch_dir
from landing.tasks.train import teacher_identity

CHECKPOINT_META = "landing_easynlp.json"  # the command that wrote a checkpoint, its labels and sequence length
PARITY_ROWS = 32  # rows of the eval table on which the ONNX export must match PyTorch


def checkpoint_identity(path: Path) -> str:
    return f"{path.name}@sha256:{weights_sha256(path)[:16]}"


@task(name="import-teacher-logits")
def import_teacher_logits(
    source: TeacherLogitsFile, train_rows: DatasetManifest, labels: list[str], ctx: RunContext
) -> tuple[LogitsManifest, TeacherManifest]:
    """(the logits as this project's id-keyed file, the teacher's manifest). Not cached: reading the file is
    quick, and the training step's cache key has the result's sha256, so an edited file re-trains."""
    path = Path(source.path)
    read = read_teacher_file(path, LogitsColumns(source.columns, source.logits_name, source.width))
    frame = fetch_dataset(train_rows)  # the training table as read, in file order, before deduplication
    if read.ids is None and len(read.logits) != len(frame):
        raise LogitsFileError(
            f"logits_saved_path={path}: {len(read.logits)} lines, but the training table has {len(frame)} rows. "
            f"A file without ids (no {path.name}.ids.json from this project's predict, as from EasyNLP) is joined "
            "by position, so it needs exactly one line per row; predict the teacher on the same table again"
        )
    if read.labels is not None and read.labels != labels:
        raise LogitsFileError(f"logits_saved_path={path}: the teacher's labels are {read.labels}, this command's "
                              f"label_enumerate_values are {labels}")  # fmt: skip
    if read.model and source.teacher_model and read.model != checkpoint_identity(Path(source.teacher_model)):
        raise LogitsFileError(f"logits_saved_path={path} was predicted by {read.model}, but teacher_model_path is "
                              f"{checkpoint_identity(Path(source.teacher_model))}; give the teacher that wrote it")  # fmt: skip
    ids = read.ids if read.ids is not None else list(frame["id"])
    keep = sorted({ids[i]: i for i in reversed(range(len(ids)))}.values())  # a duplicated row: its first line
    teacher = _teacher_manifest(source, path)
    logits = TeacherLogits(ids=[ids[i] for i in keep], logits=read.logits[keep], teacher_id=teacher_identity(teacher),
                           num_labels=len(labels), label_names=labels)  # fmt: skip
    out = scratch_dir(ctx.run_key, "logits") / "teacher_logits.npz"
    write_logits(out, logits)
    uri, sha = publish_file(out, ctx.key("logits", "teacher_logits.npz"))
    with step_run(ctx.parent_run_id, "import-teacher-logits"):
        log_params({"logits_saved_path": str(path), "join": "id" if read.ids is not None else "position",
                    "teacher": read.model or teacher_identity(teacher), "logits_uri": uri})  # fmt: skip
        mlflow.log_metrics({"lines": len(read.logits), "rows": len(keep)})
    manifest = LogitsManifest(uri=uri, sha256=sha, teacher_id=logits.teacher_id, rows=len(keep), num_labels=len(labels))
    return manifest, teacher


def _teacher_manifest(source: TeacherLogitsFile, path: Path) -> TeacherManifest:
    """The teacher model when given (intermediate-layer losses load it), else the logits file stands for it."""
    if source.teacher_model:
        model_dir = Path(source.teacher_model)
        return ModelManifest(uri=model_dir.resolve().as_uri(), sha256=weights_sha256(model_dir), role="teacher",
                             source=str(model_dir))  # fmt: skip
    return LogitsFileManifest(uri=path.resolve().as_uri(), sha256=sha256_file(path))


@task(name="write-checkpoint")
def write_checkpoint(model: ModelManifest, checkpoint_dir: str, parity_table: DatasetManifest, meta: dict,
                     ctx: RunContext) -> dict:  # fmt: skip
    """The trained model as ``checkpoint_dir``: safetensors + tokenizer (``easynlp --mode=predict``), an ONNX
    bundle with its parity checked (``landing predict --model``), EasyNLP's ``label_mapping.json``. Built
    beside the target and renamed in, so a failed export never leaves half a checkpoint."""
    from landing.models.onnx_export import check_parity_fp32, export_onnx

    target = Path(checkpoint_dir).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        for f in fetch_model_dir(model).iterdir():
            if f.is_file():
                shutil.copy2(f, staging / f.name)
        onnx = export_onnx(staging, staging / "model.onnx", max_length=model.max_seq_length)
        max_length = model.max_seq_length
        texts = list(fetch_dataset(parity_table)["text"][:PARITY_ROWS])
        parity = check_parity_fp32(staging, onnx, texts, max_length=max_length)["max_abs_diff"]
        labels = model.labels
        (staging / "label_mapping.json").write_text(json.dumps({name: i for i, name in enumerate(labels)}))
        (staging / CHECKPOINT_META).write_text(json.dumps({**meta, "labels": labels, "max_seq_length": max_length}))
        _replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with step_run(ctx.parent_run_id, "write-checkpoint"):
        log_params({"checkpoint_dir": str(target), "model": checkpoint_identity(target)})
        mlflow.log_metrics({"onnx_parity_max_abs_diff": float(parity)})
    return {"checkpoint_dir": str(target), "model": checkpoint_identity(target), "onnx_parity_max_abs_diff": float(parity)}


def _replace_dir(new: Path, target: Path) -> None:
    """``target`` becomes ``new``; an old one is moved aside first and removed only after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _checkpoint_model(path: str):
    from landing.models.model_files import check_model_dir

    model_dir = Path(path)
    check_model_dir(model_dir, field="--checkpoint_path")
    model, tokenizer = load_classifier(str(model_dir))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return model_dir, model, tokenizer, labels


def _appended(frame: pd.DataFrame, append_cols: list[str], columns: dict[str, str]) -> list[list[str]]:
    """``--append_cols`` values per row as EasyNLP prints them (a multi-value column comma-joined)."""
    return [[_field(row[columns[c]]) for c in append_cols] for row in frame.to_dict(orient="records")]


@task(name="easynlp-predict")
def predict_to_file(config: EasynlpPredictConfig, table: DatasetManifest, ctx: RunContext) -> dict:
    """Every row of the table, in order, to ``config.outputs`` in EasyNLP's format (written to a temporary name,
    then renamed), with the ids sidecar."""
    model_dir, model, tokenizer, labels = _checkpoint_model(config.checkpoint_path)
    frame = fetch_dataset(table)
    started = time.perf_counter()
    with step_run(ctx.parent_run_id, "easynlp-predict"):
        log_dataset(frame, name=table.name, source_uri=table.uri, digest=table.sha256, context="prediction")
        pairs = list(frame["text_pair"]) if "text_pair" in frame else None
        logits = predict_logits(model, tokenizer, list(frame["text"]), text_pairs=pairs, batch_size=config.batch_size,
                                max_length=config.sequence_length, desc="predict")  # fmt: skip
        probabilities = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
        appended = _appended(frame, config.append_cols, config.columns)
        lines = prediction_lines(logits, probabilities, labels, config.output_schema, appended)
        outputs = Path(config.outputs)
        outputs.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(outputs) as tmp:
            Path(tmp).write_text("".join(lines), encoding="utf-8")
        identity = checkpoint_identity(model_dir)
        write_sidecar(outputs, list(frame["id"]), identity, labels, config.output_schema)
        seconds = time.perf_counter() - started
        log_params({"checkpoint": identity, "outputs": str(outputs), "output_schema": ",".join(config.output_schema)})
        mlflow.log_metrics({"rows": len(lines), "predict_runtime_s": seconds, "rows_per_s": len(lines) / max(seconds, 1e-9)})
    return {"outputs": str(outputs), "rows": len(lines), "model": identity}


@task(name="easynlp-evaluate", cache_policy=STEP_CACHE, persist_result=True)
def evaluate_checkpoint(checkpoint_path: str, table: DatasetManifest, sequence_length: int, batch_size: int,
                        ctx: RunContext) -> dict:  # fmt: skip
    """Accuracy and macro-F1 of a checkpoint directory on a labelled table (cached by the checkpoint's files)."""
    model_dir, model, tokenizer, labels = _checkpoint_model(checkpoint_path)
    frame = fetch_dataset(table)
    with step_run(ctx.parent_run_id, "easynlp-evaluate"):
        log_dataset(frame, name=table.name, source_uri=table.uri, digest=table.sha256, context="evaluation")
        pairs = list(frame["text_pair"]) if "text_pair" in frame else None
        logits = predict_logits(model, tokenizer, list(frame["text"]), text_pairs=pairs, batch_size=batch_size,
                                max_length=sequence_length, desc="evaluate")  # fmt: skip
        metrics = classification_metrics(label_ids(frame["label"], labels), logits.argmax(-1), len(labels))
        mlflow.log_metrics({"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]})
        log_params({"checkpoint": checkpoint_identity(model_dir), "eval": table.uri})
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "rows": len(frame),
            "confusion_matrix": metrics["confusion_matrix"], "model": checkpoint_identity(model_dir)}  # fmt: skip


@task(name="easynlp-write-augmented")
def write_augmented_rows(original: DatasetManifest, augmented: DatasetManifest, columns: dict[str, str],
                         keep_originals: bool, outputs: str, ctx: RunContext) -> dict:  # fmt: skip
    """The data_augmentation app's ``--outputs``: per input row (in order) the row itself (unless
    ``append_original=False``) and then its copies, each in the input schema's column order, no header; the
    other columns copied from the source row. ``columns``: the input schema's columns (in order) → their names in
    the validated table. Where each line came from goes to ``<outputs>.provenance.jsonl``."""
    rows = fetch_dataset(original).to_dict(orient="records")
    copies: dict[str, list[dict]] = {}
    for copy in fetch_dataset(augmented).to_dict(orient="records"):
        copies.setdefault(copy["source_id"], []).append(copy)
    lines, provenance, written = [], [], set()
    for row in rows:
        made = [] if row["id"] in written else copies.get(row["id"], [])  # a duplicated input row: its copies once
        written.add(row["id"])
        for out in ([{**row, "strategy": "original", "source_id": row["id"]}] if keep_originals else []) + made:
            merged = {**row, **{k: out[k] for k in ("text", "text_pair") if k in out}}
            lines.append("\t".join(_field(merged[column]) for column in columns.values()) + "\n")
            # The id the written line gets when a later command reads it (and the logits sidecar records).
            line_id = example_id(merged["text"], merged.get("text_pair"))
            provenance.append({"id": line_id, "source_id": out["source_id"], "strategy": out["strategy"]})
    path = Path(outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(lines), encoding="utf-8")
    side = path.with_name(path.name + ".provenance.jsonl")
    with atomic_path(side) as tmp:
        Path(tmp).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in provenance), encoding="utf-8")
    counts = pd.Series([p["strategy"] for p in provenance]).value_counts().to_dict()
    with step_run(ctx.parent_run_id, "easynlp-write-augmented"):
        log_dataset(fetch_dataset(original), name=original.name, source_uri=original.uri, digest=original.sha256,
                    context="augmentation")  # fmt: skip
        log_params({"outputs": str(path), "append_original": keep_originals})
        mlflow.log_metrics({"rows_in": len(rows), "rows_out": len(lines), **{f"rows_{k}": v for k, v in counts.items()}})
    return {"outputs": str(path), "rows_in": len(rows), "rows_out": len(lines), "by_strategy": counts,
            "provenance": str(side)}  # fmt: skip


def _field(value) -> str:
    """A value as EasyNLP prints it; a multi-value column comma-joined, as it was read."""
    return ",".join(str(x) for x in value) if isinstance(value, list | tuple | np.ndarray) else str(value)


# ---------------------------------------------------------------- sequence_labeling (the slu flow's joint model)


@task(name="write-labeling-checkpoint")
def write_labeling_checkpoint(model: ModelManifest, checkpoint_dir: str, parity_table: DatasetManifest, meta: dict,
                              ctx: RunContext) -> dict:  # fmt: skip
    """The joint model as ``checkpoint_dir``: its safetensors folder (``easynlp`` evaluate / predict), the ONNX
    bundle of both heads with their parity checked (``landing predict --model``) and ``label_mapping.json``;
    built beside the target and renamed in."""
    from landing.models.slu_export import export_joint_onnx, load_joint

    from .slu import read_utterances

    target = Path(checkpoint_dir).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        shutil.copytree(fetch_model_dir(model), staging, dirs_exist_ok=True)
        texts = [r["text"] for r in read_utterances(parity_table)[:PARITY_ROWS]]
        export_joint_onnx(staging, staging / "model.onnx", max_length=model.max_seq_length, check_texts=texts)
        tags = load_joint(staging)[2]["tags"]
        (staging / "label_mapping.json").write_text(json.dumps({name: i for i, name in enumerate(tags)}))
        (staging / CHECKPOINT_META).write_text(json.dumps({**meta, "labels": tags, "max_seq_length": model.max_seq_length}))
        _replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with step_run(ctx.parent_run_id, "write-checkpoint"):
        log_params({"checkpoint_dir": str(target), "model": checkpoint_identity(target)})
    return {"checkpoint_dir": str(target), "model": checkpoint_identity(target)}


def _label_rows(checkpoint_path: str, table: DatasetManifest, sequence_length: int, batch_size: int):
    from landing.models.slu_export import load_joint
    from landing.models.slu_training import predict_joint

    from .slu import read_utterances

    model, tokenizer, meta = load_joint(Path(checkpoint_path))
    rows = read_utterances(table)
    _, tags = predict_joint(model, tokenizer, [r["tokens"] for r in rows], meta["tags"], meta["intents"],
                            sequence_length, batch_size)  # fmt: skip
    return rows, tags


@task(name="easynlp-labeling-evaluate", cache_policy=STEP_CACHE, persist_result=True)
def evaluate_labeling_checkpoint(checkpoint_path: str, table: DatasetManifest, sequence_length: int, batch_size: int,
                                 ctx: RunContext) -> dict:  # fmt: skip
    """Span-level slot precision, recall and F1 (seqeval) and sentence accuracy of a checkpoint on a table."""
    from seqeval.metrics import precision_score, recall_score

    from landing.models.slu import slu_metrics

    rows, tags = _label_rows(checkpoint_path, table, sequence_length, batch_size)
    gold = [r["tags"] for r in rows]
    metrics = slu_metrics(gold, tags, [r["intent"] for r in rows], [r["intent"] for r in rows])
    metrics = {"slot_f1": metrics["slot_f1"], "slot_precision": float(precision_score(gold, tags)),
               "slot_recall": float(recall_score(gold, tags)), "sentence_accuracy": metrics["sentence_accuracy"]}  # fmt: skip
    with step_run(ctx.parent_run_id, "easynlp-evaluate"):
        mlflow.log_metrics(metrics)
        log_params({"checkpoint": checkpoint_identity(Path(checkpoint_path)), "eval": table.uri})
    return {**metrics, "rows": len(rows), "model": checkpoint_identity(Path(checkpoint_path))}


@task(name="easynlp-labeling-predict")
def predict_labels_to_file(config, table: DatasetManifest, ctx: RunContext) -> dict:
    """Every row, in order: ``output`` (the spans as JSON, EasyNLP's keys word / tag / start / end, with character
    offsets into the content) and ``predictions`` (one tag per token), then ``append_cols``; written to a
    temporary name, then renamed, with the ids sidecar."""
    from landing.models.slu_spans import slot_spans

    rows, tags = _label_rows(config.checkpoint_path, table, config.sequence_length, config.batch_size)
    raw = {r["line"]: r for r in read_token_table_rows(config)}
    lines = []
    for row, row_tags in zip(rows, tags, strict=True):
        content = raw[row["line"]][config.contract.tokens_column]  # as written: offsets index the user's text
        spans = [{"word": s["text"], "tag": s["slot"], "start": s["start"], "end": s["end"]}
                 for s in slot_spans(content, row_tags)]  # fmt: skip
        values = {"output": json.dumps(spans, ensure_ascii=False), "predictions": " ".join(row_tags)}
        lines.append("\t".join([values[c] for c in config.output_schema] + [raw[row["line"]][c] for c in config.append_cols]) + "\n")
    outputs = Path(config.outputs)
    outputs.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(outputs) as tmp:
        Path(tmp).write_text("".join(lines), encoding="utf-8")
    identity = checkpoint_identity(Path(config.checkpoint_path))
    write_sidecar(outputs, [r["id"] for r in rows], identity, [], list(config.output_schema))
    with step_run(ctx.parent_run_id, "easynlp-predict"):
        log_params({"checkpoint": identity, "outputs": str(outputs), "output_schema": ",".join(config.output_schema)})
        mlflow.log_metrics({"rows": len(lines)})
    return {"outputs": str(outputs), "rows": len(lines), "model": identity}


def read_token_table_rows(config) -> list[dict]:
    """The predict table's raw columns per line number (what ``append_cols`` copies)."""
    lines = Path(config.tables[0]).read_text(encoding="utf-8").removesuffix("\n").split("\n")
    start = 2 if config.contract.skip_first_line else 1
    return [dict(zip(config.contract.columns, line.rstrip("\r").split("\t"), strict=False)) | {"line": number}
            for number, line in enumerate(lines[start - 1:], start=start) if line.strip()]  # fmt: skip
