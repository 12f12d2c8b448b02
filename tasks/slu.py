"""Steps of the ``slu`` flow (joint intent + slot filling): utterances in, a teacher and students trained, the
teacher's logits per word, metrics on a split, the KD student compressed (vocabulary, QAT) and exported to ONNX
with both heads (FP32 and the INT8 variants)."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from functools import partial
from pathlib import Path

import mlflow
import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact

from landing.config import (
    CompressionConfig,
    SluAugmentationConfig,
    SluDataConfig,
    SluDistillationConfig,
    SluModelConfig,
)
from landing.data_contracts.manifest import DatasetManifest, LogitsManifest, ModelManifest
from landing.data_contracts.token_labels import (
    TokenLabelContract,
    deduplicate_utterances,
    jointbert_label_sets,
    read_token_table,
    split_utterances,
)
from landing.data_contracts.validation import example_id
from landing.files import atomic_write, sha256_file
from landing.infra.tracking import log_params, step_run
from landing.models.loading import count_parameters, weights_sha256
from landing.models.slu import slu_metrics
from landing.models.slu_compression import (
    check_joint_agreement,
    fake_quantized,
    prune_joint_vocabulary,
    prune_joint_width,
)
from landing.models.slu_export import check_joint_parity, export_joint_onnx, load_joint, save_joint
from landing.models.slu_predictor import OnnxSluPredictor
from landing.models.slu_training import (
    JointDistillation,
    Utterances,
    build_joint_model,
    joint_teacher_logits,
    predict_joint,
    train_joint,
)
from landing.tasks.compress import reduce_range
from landing.tasks.context import (
    STEP_CACHE,
    RunContext,
    fetch_file,
    fetch_model_dir,
    publish_dir,
    publish_file,
    scratch_dir,
)
from landing.tasks.train import MlflowMetricsCallback, resumable_checkpoints, teacher_identity

SCHEMA = "slu:jsonl(id,text,tokens,tags,intent)"
METRICS = ("intent_accuracy", "slot_f1", "sentence_accuracy")


@task(name="slu-data")  # not cached: cheap; its files are named by their content, so later steps' keys stay put
def prepare_utterances(data: SluDataConfig, config_dir: str, seed: int, ctx: RunContext) -> dict:
    """Train and eval read under the contract, train deduplicated on its tokens and without eval's token
    sequences, a validation split stratified by intent; the label sets (declared, or train's own)."""
    base = Path(config_dir)
    contract = data.contract
    if data.labels_from is not None:
        slots, intents = jointbert_label_sets(base / data.labels_from)
        contract = contract.model_copy(update={"slot_labels": slots, "intents": intents})
    train = read_token_table(base / data.train, contract, source=data.train)
    evaluation = read_token_table(base / data.eval, contract.model_copy(update={"undeclared_tags": data.eval_undeclared_tags}),
                                  source=data.eval)  # fmt: skip
    deduped = deduplicate_utterances(train, data.conflicts, where=data.train)
    train = deduped.frame[~deduped.frame["text"].isin(set(evaluation["text"]))].reset_index(drop=True)
    if data.max_train_rows is not None:
        train = train.iloc[: data.max_train_rows]
    validation_rows = data.validation_size if isinstance(data.validation_size, int) else round(data.validation_size * len(train))
    parts = split_utterances(train, {"validation": validation_rows, "train": len(train) - validation_rows}, seed) if (
        validation_rows) else {"train": train}  # fmt: skip
    parts["eval"] = evaluation
    tags = contract.slot_labels or sorted({t for row in train["tags"] for t in row} | {"O"})
    intents = contract.intents or sorted(set(train["intent"]))
    manifests = {name: _publish_utterances(frame, name, ctx) for name, frame in parts.items()}
    mlflow.log_metrics({"slu/train_duplicates_removed": deduped.removed, "slu/train_conflicts": deduped.conflicts,
                        **{f"slu/{name}_rows": m.rows for name, m in manifests.items()}}, run_id=ctx.parent_run_id)  # fmt: skip
    return {"splits": manifests, "tags": list(tags), "intents": list(intents)}


@task(name="slu-read")
def read_utterance_table(path: str, contract: TokenLabelContract, name: str, ctx: RunContext) -> DatasetManifest:
    """Every row of one table under the contract, in file order (nothing deduplicated or dropped)."""
    return _publish_utterances(read_token_table(path, contract), name, ctx)


def _publish_utterances(frame, name: str, ctx: RunContext) -> DatasetManifest:
    out = scratch_dir(ctx.run_key, "slu") / f"{name}.jsonl"
    with atomic_write(out) as fh:
        for row in frame.itertuples(index=False):
            line = {"line": int(row.line)} if hasattr(row, "line") else {}  # where a read row came from
            fh.write(json.dumps({"id": row.id, "text": row.text, "tokens": list(row.tokens), "tags": list(row.tags),
                                 "intent": row.intent, **line}, ensure_ascii=False) + "\n")  # fmt: skip
    sha = sha256_file(out)
    uri, _ = publish_file(out, f"slu/{sha}.jsonl")
    counts = frame["intent"].astype(str).value_counts()
    return DatasetManifest(uri=uri, sha256=sha, rows=len(frame), label_counts={k: int(counts[k]) for k in sorted(counts.index)},
                           input_schema=SCHEMA, name=name)  # fmt: skip


def read_utterances(manifest: DatasetManifest) -> list[dict]:
    return [json.loads(line) for line in fetch_file(manifest, ".jsonl").read_text(encoding="utf-8").splitlines()]


@task(name="slu-augment", cache_policy=STEP_CACHE, persist_result=True)
def augment_utterances(train: DatasetManifest, augmentation: SluAugmentationConfig, ctx: RunContext) -> DatasetManifest:
    """Tag-keeping copies of each training utterance (slot-value substitution, then EDA on O tokens), seeded."""
    from landing.models.augment.slots import SlotValues, eda_on_outside_tokens, substitute_slot_values

    rows = read_utterances(train)
    values = SlotValues([(r["tokens"], r["tags"]) for r in rows])
    made, seen = [], {r["text"] for r in rows}
    for index, row in enumerate(rows):
        for copy in range(augmentation.copies):
            rng = random.Random(f"{ctx.seed}:{row['id']}:{copy}")
            tokens, tags = substitute_slot_values(row["tokens"], row["tags"], values, rng, augmentation.substitute_p)
            tokens, tags = eda_on_outside_tokens(tokens, tags, rng, augmentation.swap_p, augmentation.delete_p)
            text = " ".join(tokens)
            if text not in seen:  # one row per token sequence, as everywhere
                seen.add(text)
                made.append({"tokens": tokens, "tags": tags, "intent": row["intent"], "source": index})
    frame = pd.DataFrame([{"id": example_id(" ".join(r["tokens"])), "text": " ".join(r["tokens"]), **r} for r in made])
    with step_run(ctx.parent_run_id, "slu-augment"):
        log_params({"augmentation": augmentation.model_dump()})
        mlflow.log_metrics({"rows_in": len(rows), "rows_out": len(frame)})
        return _publish_utterances(frame, "augmented", ctx)


@task(name="slu-train", cache_policy=STEP_CACHE, persist_result=True)
def train_slu(role: str, model: SluModelConfig, tags: list[str], intents: list[str], tables: list[DatasetManifest],
              ctx: RunContext, *, logits: LogitsManifest | None = None, distillation: SluDistillationConfig | None = None,
              teacher: ModelManifest | None = None) -> ModelManifest:  # fmt: skip
    """The joint model on the rows of ``tables`` (labelled); with ``distillation``, also on the teacher's logits
    for every one of those rows, joined by example id and word index, and on ``teacher``'s hidden states or
    attentions for intermediate-layer losses."""
    rows = [r for table in tables for r in read_utterances(table)]
    rows_in = Utterances([r["tokens"] for r in rows], [r["tags"] for r in rows], [r["intent"] for r in rows])
    if distillation is not None:
        by_id = _read_logits(logits)
        missing = [r["id"] for r in rows if r["id"] not in by_id]
        if missing:
            raise ValueError(f"{role}: the teacher's logits lack {len(missing)} of {len(rows)} rows (e.g. {missing[0]})")
        rows_in = Utterances(rows_in.tokens, rows_in.tags, rows_in.intents, [by_id[r["id"]][0] for r in rows],
                             [by_id[r["id"]][1] for r in rows])  # fmt: skip
    fingerprint = {"role": role, "model": model.model_dump(mode="json"), "tables": [t.sha256 for t in tables],
                   "logits": logits and logits.sha256, "distillation": distillation and distillation.model_dump(),
                   "seed": ctx.seed}  # fmt: skip
    kd = distillation and JointDistillation(distillation.kd, distillation.intent_weight, distillation.slot_weight)
    with step_run(ctx.parent_run_id, role), resumable_checkpoints(role, fingerprint) as checkpoints:
        log_params({"role": role, "model": model.model_dump(mode="json"), "seed": ctx.seed})
        if distillation is not None:
            log_params({"distillation": distillation.model_dump(), "teacher": logits.teacher_id})
        joint, tokenizer = build_joint_model(model.model, tags, intents, model.slot_loss_weight, seed=ctx.seed)
        layer_teacher = _layer_teacher(teacher, tokenizer) if kd and kd.kd.needs_teacher_model else None
        result = train_joint(joint, tokenizer, rows_in, tags, intents, model.training, model.training.max_seq_length,
                             checkpoints, seed=ctx.seed, distillation=kd, teacher_model=layer_teacher,
                             callbacks=[MlflowMetricsCallback()])  # fmt: skip
        parameters = count_parameters(joint)
        mlflow.log_metrics({"train_loss": result.train_loss, "train_runtime_s": result.train_runtime_s,
                            "train_rows": len(rows), "parameters": parameters, "global_step": result.global_step})  # fmt: skip
        out = save_joint(joint, tokenizer, tags, intents, scratch_dir(ctx.run_key, "models", role))
        uri = publish_dir(out, ctx.key("models", role))
        mlflow.log_artifacts(str(out), artifact_path="model")
        return ModelManifest(uri=uri, sha256=weights_sha256(out), role=role, labels=intents, parameters=parameters,
                             max_seq_length=model.training.max_seq_length, eval_batch_size=model.training.eval_batch_size,
                             train_runtime_s=result.train_runtime_s, global_step=result.global_step, bf16=result.bf16,
                             mlflow_run_id=mlflow.active_run().info.run_id)  # fmt: skip


def _layer_teacher(teacher: ModelManifest | None, student_tokenizer):
    """The teacher model for the intermediate-layer losses (eager attention: its probabilities are returned),
    refused when its vocabulary differs from the student's: both read the same input ids."""
    from landing.models.kd_layers import LayerMapError, same_vocabulary

    if teacher is None:
        raise ValueError("intermediate-layer distillation needs the teacher model")
    model, tokenizer, _ = load_joint(fetch_model_dir(teacher), attn_implementation="eager")
    if not same_vocabulary(student_tokenizer, tokenizer):
        raise LayerMapError("distillation.type: intermediate-layer losses read the teacher and the student on the same "
                            "input ids, but their tokenizers differ (e.g. an MPNet teacher and a BERT student); "
                            "use vanilla_kd alone, which joins the two by word index")  # fmt: skip
    return model


@task(name="slu-logits", cache_policy=STEP_CACHE, persist_result=True)
def export_slu_logits(teacher: ModelManifest, tables: list[DatasetManifest], ctx: RunContext) -> LogitsManifest:
    """Per row (by example id): the teacher's intent logits and each word's slot logits (first sub-word)."""
    model, tokenizer, meta = load_joint(fetch_model_dir(teacher))
    rows = [r for table in tables for r in read_utterances(table)]
    with step_run(ctx.parent_run_id, "slu-logits"):
        start = time.perf_counter()
        intents, slots = joint_teacher_logits(model, tokenizer, [r["tokens"] for r in rows], teacher.max_seq_length,
                                              teacher.eval_batch_size)  # fmt: skip
        out = scratch_dir(ctx.run_key, "logits") / "slu_teacher_logits.jsonl"
        with atomic_write(out) as fh:
            for row, intent, slot in zip(rows, intents, slots, strict=True):
                fh.write(json.dumps({"id": row["id"], "intent_logits": intent, "slot_logits": slot}) + "\n")
        uri, sha = publish_file(out, ctx.key("logits", "slu_teacher_logits.jsonl"))
        mlflow.log_metrics({"rows": len(rows), "predict_runtime_s": time.perf_counter() - start})
    return LogitsManifest(uri=uri, sha256=sha, teacher_id=teacher_identity(teacher), rows=len(rows),
                          num_labels=len(meta["intents"]))  # fmt: skip


def _read_logits(manifest: LogitsManifest) -> dict[str, tuple[list[float], list[list[float]]]]:
    lines = fetch_file(manifest, ".jsonl").read_text(encoding="utf-8").splitlines()
    return {(r := json.loads(line))["id"]: (r["intent_logits"], r["slot_logits"]) for line in lines}


@task(name="slu-evaluate", cache_policy=STEP_CACHE, persist_result=True)
def evaluate_slu(role: str, model: ModelManifest, table: DatasetManifest, ctx: RunContext) -> dict:
    """Intent accuracy, slot F1 (seqeval) and sentence accuracy of ``model`` on ``table``."""
    joint, tokenizer, meta = load_joint(fetch_model_dir(model))
    rows = read_utterances(table)
    with step_run(ctx.parent_run_id, f"{role}-{table.name}"):
        intents, tags = predict_joint(joint, tokenizer, [r["tokens"] for r in rows], meta["tags"], meta["intents"],
                                      model.max_seq_length, model.eval_batch_size)  # fmt: skip
        metrics = slu_metrics([r["tags"] for r in rows], tags, [r["intent"] for r in rows], intents)
        mlflow.log_metrics(metrics)
    return {**metrics, "rows": len(rows), "split": table.name, "parameters": model.parameters}


@task(name="slu-compress", cache_policy=STEP_CACHE, persist_result=True)
def compress_slu(student: ModelManifest, tables: list[DatasetManifest], compression: CompressionConfig,
                 distillation: SluDistillationConfig, ctx: RunContext) -> ModelManifest:  # fmt: skip
    """Vocabulary and FFN width pruning with one KD recovery, then QAT, as ``compression.strategies`` name them;
    both distil from the uncompressed student's logits per word (joined by word index, so the pruned tokenizer
    may differ)."""
    model, tokenizer, meta = load_joint(fetch_model_dir(student))
    rows = [r for table in tables for r in read_utterances(table)]
    tokens, length = [r["tokens"] for r in rows], compression.max_seq_length
    intents, slots = joint_teacher_logits(model, tokenizer, tokens, length, student.eval_batch_size)
    utterances = Utterances(tokens, [r["tags"] for r in rows], [r["intent"] for r in rows], intents, slots)
    kd = JointDistillation(compression.recover_distillation, distillation.intent_weight, distillation.slot_weight)
    strategies, stats = compression.strategy_list, {}
    fingerprint = {"student": student.sha256, "tables": [t.sha256 for t in tables], "seed": ctx.seed,
                   "compression": dataclasses.asdict(compression), "distillation": distillation.model_dump()}  # fmt: skip
    train = partial(train_joint, tags=meta["tags"], intents=meta["intents"], max_length=length, seed=ctx.seed,
                    distillation=kd, callbacks=[MlflowMetricsCallback()])  # fmt: skip
    with step_run(ctx.parent_run_id, "slu-compress"):
        log_params({"strategies": compression.strategies, "compression": dataclasses.asdict(compression)})
        if "vocab" in strategies:
            model, tokenizer, stats = prune_joint_vocabulary(model, tokenizer, [r["text"] for r in rows], compression)
        if "width" in strategies:
            width = prune_joint_width(model, tokenizer, utterances, meta["tags"], meta["intents"], compression)
            stats |= {"neurons_per_layer": width["neurons_per_layer"], "params_after": width["params_after"]}
        if compression.pruning:
            with resumable_checkpoints("slu-pruned", fingerprint) as checkpoints:
                mlflow.log_metric("recover_runtime_s", train(model, tokenizer, utterances, params=compression.recover,
                                                             checkpoint_dir=checkpoints).train_runtime_s)  # fmt: skip
            mlflow.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, int | float)})
        if "qat" in strategies:
            mlflow.log_param("quantize.reduce_range", reduce_range(compression))
            with (resumable_checkpoints("slu-qat", fingerprint) as checkpoints,
                  fake_quantized(model, embeddings=compression.qat_embeddings_on, reduce_range=reduce_range(compression))):  # fmt: skip
                mlflow.log_metric("qat_runtime_s", train(model, tokenizer, utterances, params=compression.qat,
                                                         checkpoint_dir=checkpoints).train_runtime_s)  # fmt: skip
        out = save_joint(model, tokenizer, meta["tags"], meta["intents"], scratch_dir(ctx.run_key, "models", "compressed"))
        uri = publish_dir(out, ctx.key("models", "compressed"))
        parameters = count_parameters(model)
        mlflow.log_metric("parameters", parameters)
    return student.model_copy(update={"uri": uri, "sha256": weights_sha256(out), "role": "compressed", "parameters": parameters,
                                      "max_seq_length": length, "pruning": stats or None})  # fmt: skip


@task(name="slu-export", cache_policy=STEP_CACHE, persist_result=True)
def export_slu(model: ModelManifest, quantizers: list[str], splits: dict[str, DatasetManifest],
               compression: CompressionConfig, ctx: RunContext) -> list[dict]:  # fmt: skip
    """``model`` in ONNX with both heads (FP32, parity-checked) and its INT8 copies by ``quantizers`` (argmax
    agreement with PyTorch on validation, the gate split), each scored through the ONNX predictor on every
    split; published only when every check passed."""
    from landing.models.quantize import PRECISION, QUANTIZERS

    gate_split = "validation" if "validation" in splits else "eval"
    gate = read_utterances(splits[gate_split])
    model_dir, length = fetch_model_dir(model), model.max_seq_length
    joint, tokenizer, _ = load_joint(model_dir)
    bundle = scratch_dir(ctx.run_key, "models", f"{model.role}-onnx")
    with step_run(ctx.parent_run_id, f"{model.role}-onnx"):
        fp32 = export_joint_onnx(model_dir, bundle / "model.onnx", max_length=length)
        parity = {"fp32": check_joint_parity(joint, tokenizer, fp32, [r["text"] for r in gate[:64]], max_length=length,
                                             atol=compression.fp32_max_abs_diff), "split": gate_split}  # fmt: skip
        files = {"fp32": (fp32, parity)}
        for name in quantizers:
            out = QUANTIZERS[name](fp32, bundle / f"model.{name}.onnx", max_length=length,
                                   per_channel=compression.per_channel, reduce_range=reduce_range(compression))  # fmt: skip
            agreement = check_joint_agreement(joint, tokenizer, out, [r["tokens"] for r in gate], max_length=length,
                                              min_agreement=compression.int8_min_agreement)  # fmt: skip
            files[name] = (out, parity | {"int8": agreement | {"reduce_range": reduce_range(compression)}})
        variants = []
        for name, (path, checks) in files.items():
            scores = {split: _onnx_scores(bundle, path.name, read_utterances(table)) for split, table in splits.items()
                      if split in ("eval", "validation")}  # fmt: skip
            size = path.stat().st_size
            mlflow.log_metrics({f"{name}/{split}_{k}": v for split, m in scores.items() for k, v in m.items()}
                               | {f"{name}/size_bytes": size})  # fmt: skip
            variants.append({"name": f"{model.role}-{name}", "precision": PRECISION.get(name, "fp32"),
                             "model_file": path.name, "size_bytes": size, "sha256": sha256_file(path), "parity": checks,
                             **scores})  # fmt: skip
        mlflow.log_dict({v["name"]: v["parity"] for v in variants}, "parity.json")
        uri = publish_dir(bundle, ctx.key("models", f"{model.role}-onnx"))
    return [v | {"uri": uri} for v in variants]


def _onnx_scores(bundle: Path, model_file: str, rows: list[dict]) -> dict:
    predicted = OnnxSluPredictor(bundle, model_file).analyse([r["text"] for r in rows])
    return slu_metrics([r["tags"] for r in rows], [p["tags"] for p in predicted], [r["intent"] for r in rows],
                       [p["intent"] for p in predicted])  # fmt: skip


@task(name="slu-report")
def report_slu(results: dict, onnx: dict, ctx: RunContext) -> str:
    """The summary as tables: each model on eval (reported) and validation (for selection); each ONNX variant's
    size, eval figures and p50 latency per target and length, with its speed-up over the reference variant."""
    lines = ["| model | parameters | split | intent accuracy | slot F1 | sentence accuracy |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for role, by_split in results.items():
        for split, m in by_split.items():
            lines.append(f"| {role} | {m['parameters'] / 1e6:.2f}M | {split} | " + " | ".join(f"{100 * m[k]:.2f}" for k in METRICS) + " |")
    reference = next(v for v in onnx["variants"] if v["name"] == onnx["reference"])
    lines += ["", f"ONNX variants (batch 1; p50 = median of interleaved rounds; speed-up vs {onnx['reference']}):", "",
              "| variant | precision | size (MB) | intent accuracy | slot F1 | sentence accuracy | target | seq | p50 (ms) | speed-up |",
              "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]  # fmt: skip
    for v in onnx["variants"]:
        scores = " | ".join(f"{100 * v['eval'][k]:.2f}" for k in METRICS)
        for target, by_seq in v["latency"].items():
            for seq, r in by_seq.items():
                speedup = reference["latency"][target][seq]["median_ms"] / r["median_ms"]
                lines.append(f"| {v['name']} | {v['precision']} | {v['size_bytes'] / 1e6:.2f} | {scores} | {target} | {seq} | "
                             f"{r['median_ms']:.2f} | {speedup:.2f}× |")  # fmt: skip
    markdown = "\n".join(lines)
    mlflow.MlflowClient().log_text(ctx.parent_run_id, markdown, "slu_report.md")
    create_table_artifact(table=[{"variant": v["name"], "precision": v["precision"], "size_mb": round(v["size_bytes"] / 1e6, 3),
                                  **{k: round(100 * v["eval"][k], 2) for k in METRICS},
                                  **{f"p50_ms_{t}_seq{seq}": round(r["median_ms"], 3) for t, by_seq in v["latency"].items()
                                     for seq, r in by_seq.items()}} for v in onnx["variants"]],
                          key="slu-report", description="ONNX variants: size, eval figures, p50 latency")  # fmt: skip
    return markdown
