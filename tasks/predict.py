"""Export the teacher's logits, keyed by example id, to the object store."""

from __future__ import annotations

import time

import mlflow
import numpy as np
from prefect import task

from landing.data_contracts.logits import TeacherLogits, write_logits
from landing.data_contracts.manifest import DatasetManifest, LogitsManifest, ModelManifest
from landing.infra.tracking import step_run
from landing.models.loading import load_classifier
from landing.models.predict import predict_logits
from landing.tasks.context import STEP_CACHE, RunContext, fetch_dataset, fetch_model_dir, publish_file, scratch_dir
from landing.tasks.train import teacher_identity


@task(name="export-logits", cache_policy=STEP_CACHE, persist_result=True)
def export_logits(teacher: ModelManifest, tables: list[DatasetManifest], ctx: RunContext) -> LogitsManifest:
    """One ``.npz`` for all given tables: ids, logits, teacher identity and label names. A teacher trained in bf16
    is run in bf16 where this CPU has native bf16 (the step's ``precision`` parameter says which)."""
    from landing.models.cpu import native_bf16

    labels = teacher.labels
    bf16 = teacher.bf16 and native_bf16()
    model, tokenizer = load_classifier(str(fetch_model_dir(teacher)))
    frames = [fetch_dataset(t) for t in tables]
    with step_run(ctx.parent_run_id, "export-logits"):
        start = time.perf_counter()
        ids, blocks = [], []
        for table, frame in zip(tables, frames, strict=True):
            pairs = list(frame["text_pair"]) if "text_pair" in frame else None
            blocks.append(
                predict_logits(
                    model, tokenizer, list(frame["text"]), text_pairs=pairs, desc=f"teacher logits: {table.name}",
                    batch_size=teacher.eval_batch_size, max_length=teacher.max_seq_length, bf16=bf16,
                )  # fmt: skip
            )
            ids += list(frame["id"])
        logits = TeacherLogits(
            ids=ids, logits=np.concatenate(blocks).astype(np.float32), teacher_id=teacher_identity(teacher),
            num_labels=len(labels), label_names=labels,
        )  # fmt: skip
        out = scratch_dir(ctx.run_key, "logits") / "teacher_logits.npz"
        write_logits(out, logits)
        uri, sha = publish_file(out, ctx.key("logits", "teacher_logits.npz"))
        mlflow.log_params({"teacher": logits.teacher_id, "tables": ",".join(t.name for t in tables), "logits_uri": uri,
                           "precision": "bf16 autocast" if bf16 else "fp32"})  # fmt: skip
        mlflow.log_metrics({"rows": len(ids), "predict_runtime_s": time.perf_counter() - start})
    return LogitsManifest(uri=uri, sha256=sha, teacher_id=logits.teacher_id, rows=len(ids), num_labels=len(labels))
