"""One flow per ``easynlp`` command (``landing.easynlp_cli``): train, evaluate, predict, data_augmentation, and
sequence_labeling's train, evaluate and predict (the ``slu`` flow's joint model and steps).

Each is a Prefect flow run with its MLflow parent run, like the YAML flows; the tables pass the same data
contracts (EasyNLP's input_schema), and training goes through the same cached ``train`` step.
"""

from __future__ import annotations

from prefect import flow

from landing.config import SluDataConfig, SplitConfig
from landing.data_contracts.manifest import DatasetManifest
from landing.easynlp_config import (
    EasynlpAugmentConfig,
    EasynlpCommand,
    EasynlpEvaluateConfig,
    EasynlpLabelingEvaluateConfig,
    EasynlpLabelingPredictConfig,
    EasynlpLabelingTrainConfig,
    EasynlpPredictConfig,
    EasynlpTrainConfig,
)
from landing.models.specs import tokenizer_name
from landing.tasks.augment import adapt_mlm, augment_rows
from landing.tasks.context import RunContext
from landing.tasks.data import check_token_coverage, download_table, split_tables, validate_table
from landing.tasks.easynlp import (
    evaluate_checkpoint,
    evaluate_labeling_checkpoint,
    import_teacher_logits,
    predict_labels_to_file,
    predict_to_file,
    write_augmented_rows,
    write_checkpoint,
    write_labeling_checkpoint,
)
from landing.tasks.evaluate import evaluate_accuracy
from landing.tasks.slu import evaluate_slu, prepare_utterances, read_utterance_table, train_slu
from landing.tasks.tracking import publish_summary, tracked_run
from landing.tasks.train import train_model


def _read(config: EasynlpCommand, index: int, name: str, ctx: RunContext, *, labelled: bool) -> DatasetManifest:
    """``--tables`` entry ``index``, validated against the command's schema: every row, in file order."""
    contract = config.contract if labelled else config.contract.without_label()
    raw = download_table(name, config.tables[index], ".", ctx)
    return validate_table(name, raw, contract, False, None, ctx)


def _summary(config: EasynlpCommand, ctx: RunContext, **parts) -> dict:
    return {"flow": f"easynlp-{config.mode}", "app_name": config.app_name, "mlflow_run_id": ctx.parent_run_id,
            "prefect_flow_run_id": ctx.flow_run_id, **parts}  # fmt: skip


@flow(name="easynlp-train", log_prints=True)
def easynlp_train(config: EasynlpTrainConfig, output_dir: str) -> dict:
    """Train on ``tables[0]`` (all of it, as EasyNLP does: nothing is selected, so no validation split is taken;
    deduplicated and without eval rows, as every flow), with teacher logits when distilling; report on
    ``tables[-1]``; write ``checkpoint_dir``."""
    with tracked_run(config) as ctx:
        train_rows = _read(config, 0, "train", ctx, labelled=True)
        eval_rows = _read(config, -1, "eval", ctx, labelled=True)
        splits = split_tables(train_rows, eval_rows, None, SplitConfig(validation_size=0), ctx, validation_needed=False)
        check_token_coverage(tokenizer_name(config.model) or config.mlm_base, splits["train"],
                             config.allow_unknown_tokens, ctx)  # fmt: skip
        logits = teacher = None
        if config.logits is not None:
            logits, teacher = import_teacher_logits(config.logits, train_rows, config.labels, ctx)
        masked_lm = adapt_mlm(config.mlm_base, [splits["train"]], splits["eval"], config.mlm_adapt, ctx) if (
            config.mlm_adapt is not None) else None  # fmt: skip
        model = train_model("model", config.model, config.training, config.labels, splits["train"], ctx,
                            logits=logits, teacher=teacher, distillation=config.distillation, masked_lm=masked_lm)  # fmt: skip
        evaluation = evaluate_accuracy("model", model, splits["eval"], ctx)
        checkpoint = write_checkpoint(model, config.checkpoint_dir, splits["eval"], {"argv": config.argv}, ctx)
        summary = _summary(config, ctx, eval=evaluation, checkpoint=checkpoint, train_rows=splits["train"].rows,
                           data={name: m.model_dump() for name, m in splits.items()})  # fmt: skip
        return publish_summary(ctx, summary, output_dir)


@flow(name="easynlp-evaluate", log_prints=True)
def easynlp_evaluate(config: EasynlpEvaluateConfig, output_dir: str) -> dict:
    with tracked_run(config) as ctx:
        table = _read(config, -1, "eval", ctx, labelled=True)
        result = evaluate_checkpoint(config.checkpoint_path, table, config.sequence_length, config.batch_size, ctx)
        return publish_summary(ctx, _summary(config, ctx, eval=result), output_dir)


@flow(name="easynlp-predict", log_prints=True)
def easynlp_predict(config: EasynlpPredictConfig, output_dir: str) -> dict:
    with tracked_run(config) as ctx:
        table = _read(config, 0, "predict", ctx, labelled=False)
        result = predict_to_file(config, table, ctx)
        return publish_summary(ctx, _summary(config, ctx, predict=result), output_dir)


@flow(name="easynlp-augment", log_prints=True)
def easynlp_augment(config: EasynlpAugmentConfig, output_dir: str) -> dict:
    with tracked_run(config) as ctx:
        table = _read(config, 0, "augment", ctx, labelled=config.contract.label_column is not None)
        aug = config.augmentation
        masked_lm = adapt_mlm(aug.mlm_base, [table], table, aug.mlm_adapt, ctx) if (
            aug.mlm_da is not None and aug.mlm_model is None) else None  # fmt: skip
        augmented = augment_rows(table, aug, masked_lm, ctx)
        keep = (aug.mlm_da or aug.eda).keep_originals
        result = write_augmented_rows(table, augmented, config.columns, keep, config.outputs, ctx)
        return publish_summary(ctx, _summary(config, ctx, augment=result), output_dir)




@flow(name="easynlp-labeling-train", log_prints=True)
def easynlp_labeling_train(config: EasynlpLabelingTrainConfig, output_dir: str) -> dict:
    """Train the tagger on ``tables[0]`` (deduplicated on its tokens, without eval's), report on ``tables[-1]``,
    write ``checkpoint_dir``."""
    with tracked_run(config) as ctx:
        data = SluDataConfig(contract=config.contract, train=config.tables[0], eval=config.tables[-1], validation_size=0)
        prepared = prepare_utterances(data, ".", config.seed, ctx)
        splits = prepared["splits"]
        model = train_slu("model", config.model, prepared["tags"], prepared["intents"], [splits["train"]], ctx)
        evaluation = evaluate_slu("model", model, splits["eval"], ctx)
        checkpoint = write_labeling_checkpoint(model, config.checkpoint_dir, splits["eval"], {"argv": config.argv}, ctx)
        summary = _summary(config, ctx, eval={k: v for k, v in evaluation.items() if k != "intent_accuracy"},
                           checkpoint=checkpoint, train_rows=splits["train"].rows,
                           data={name: m.model_dump() for name, m in splits.items()})  # fmt: skip
        return publish_summary(ctx, summary, output_dir)


@flow(name="easynlp-labeling-evaluate", log_prints=True)
def easynlp_labeling_evaluate(config: EasynlpLabelingEvaluateConfig, output_dir: str) -> dict:
    with tracked_run(config) as ctx:
        table = read_utterance_table(config.tables[-1], config.contract, "eval", ctx)
        result = evaluate_labeling_checkpoint(config.checkpoint_path, table, config.sequence_length, config.batch_size, ctx)
        return publish_summary(ctx, _summary(config, ctx, eval=result), output_dir)


@flow(name="easynlp-labeling-predict", log_prints=True)
def easynlp_labeling_predict(config: EasynlpLabelingPredictConfig, output_dir: str) -> dict:
    with tracked_run(config) as ctx:
        table = read_utterance_table(config.tables[0], config.contract, "predict", ctx)
        result = predict_labels_to_file(config, table, ctx)
        return publish_summary(ctx, _summary(config, ctx, predict=result), output_dir)
