"""The ``metakd`` flow: prototype weights → meta-teacher → per target domain the two-stage Meta-KD student, against
the student without KD, vanilla KD from a single-domain and from an all-domain teacher, and two controls for the
Meta-KD student's recipe from the all-domain teacher, all in the same run:

- *step-matched*: vanilla KD trained as many optimizer steps as Meta-KD's two stages together;
- *two-stage layers*: Meta-KD's stage 1 (intermediate layers) then stage 2, without the meta-teacher and the
  prototype weights, so the difference is what the meta-teacher and the weighting add."""

from __future__ import annotations

import dataclasses

from prefect import flow

from landing.config import MetakdRunConfig, TrainingConfig
from landing.data_contracts.manifest import DatasetManifest, ModelManifest
from landing.flows.data import prepare_data
from landing.models.specs import base_model_name, tokenizer_name
from landing.tasks.context import RunContext
from landing.tasks.evaluate import evaluate_model
from landing.tasks.metakd import domain_tables, report_metakd, stage1_table, train_meta_teacher, weigh_examples
from landing.tasks.predict import export_logits
from landing.tasks.tracking import publish_summary, tracked_run
from landing.tasks.train import train_model

ROWS = ("teacher (domain)", "teacher (all)", "meta-teacher", "student, no KD", "student, KD from teacher (domain)",
        "student, KD from teacher (all)", "student, KD from teacher (all), step-matched",
        "student, two-stage layers from teacher (all)", "student, Meta-KD")  # fmt: skip
CONTROLS = ROWS[4:-1]  # the students Meta-KD is compared with (paired per seed, by the benchmark)


def _kd(role: str, config: MetakdRunConfig, labels: list[str], train: DatasetManifest, teacher: ModelManifest,
        ctx: RunContext, distillation=None, training=None, **extra) -> ModelManifest:  # fmt: skip
    logits = export_logits(teacher, [train], ctx)
    return train_model(role, config.student.model, training or config.student.training, labels, train, ctx,
                       logits=logits, teacher=teacher, distillation=distillation or config.distillation, **extra)  # fmt: skip


def _twice(training: TrainingConfig) -> TrainingConfig:
    """The same run, twice the optimizer steps: the budget of Meta-KD's two stages (each one ``training``)."""
    if training.max_steps > 0:
        return dataclasses.replace(training, max_steps=2 * training.max_steps)
    return dataclasses.replace(training, epochs=2 * training.epochs)


def _two_stage(role: str, config: MetakdRunConfig, labels: list[str], train: DatasetManifest, teacher: ModelManifest,
               ctx: RunContext) -> ModelManifest:  # fmt: skip
    """Meta-KD's two stages (``metakd.stage1`` then ``stage2``) from an ordinary teacher, on unweighted rows."""
    stage1 = _kd(f"{role}-stage1", config, labels, train, teacher, ctx, distillation=config.metakd.stage1)
    return _kd(role, config, labels, train, teacher, ctx, distillation=config.metakd.stage2, init_from=stage1)


def _domain(config: MetakdRunConfig, domain: str, tables: dict, labels: list[str], all_teacher: ModelManifest,
            meta: ModelManifest, ctx: RunContext) -> dict[str, float]:  # fmt: skip
    """Every row of the domain's table: teachers, baselines and the Meta-KD student, scored on its eval rows."""
    train, weighted, held_out = tables["train"][domain], tables["weighted"][domain], tables["eval"][domain]
    domain_teacher = train_model(f"teacher-{domain}", config.teacher.model, config.teacher.training, labels, train, ctx)
    student_spec = config.student.model
    no_kd = train_model(f"student-{domain}", student_spec, config.student.training, labels, train, ctx)
    meta_logits = export_logits(meta, [weighted], ctx)
    stage1_rows = stage1_table(weighted, meta_logits, labels, ctx)
    stage1 = train_model(f"student-{domain}-stage1", student_spec, config.student.training, labels, stage1_rows, ctx,
                         logits=meta_logits, teacher=meta, distillation=config.metakd.stage1)  # fmt: skip
    stage2 = train_model(f"student-{domain}-metakd", student_spec, config.student.training, labels, train, ctx,
                         logits=export_logits(meta, [train], ctx), teacher=meta, distillation=config.metakd.stage2,
                         init_from=stage1)  # fmt: skip
    models = dict(zip(ROWS, (domain_teacher, all_teacher, meta, no_kd,
                             _kd(f"student-{domain}-kd-domain", config, labels, train, domain_teacher, ctx),
                             _kd(f"student-{domain}-kd-all", config, labels, train, all_teacher, ctx),
                             _kd(f"student-{domain}-kd-all-steps", config, labels, train, all_teacher, ctx,
                                 training=_twice(config.student.training)),
                             _two_stage(f"student-{domain}-layers-all", config, labels, train, all_teacher, ctx),
                             stage2), strict=True))  # fmt: skip
    return {row: evaluate_model(f"{row} [{domain}]", model, held_out, ctx, 0)["accuracy"] for row, model in models.items()}


def render(results: dict[str, dict[str, float]]) -> str:
    domains = list(results)
    lines = ["# Meta-KD: accuracy (%) on each target domain's held-out rows", "",
             "| model | " + " | ".join(domains) + " | mean |", "| --- |" + " ---: |" * (len(domains) + 1)]  # fmt: skip
    for row in ROWS:
        values = [100 * results[d][row] for d in domains]
        lines.append(f"| {row} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {sum(values) / len(values):.2f} |")
    return "\n".join(lines) + "\n"


@flow(name="metakd", log_prints=True)
def metakd(config: MetakdRunConfig, config_dir: str = ".", output_dir: str = "runs/metakd") -> dict:
    with tracked_run(config) as ctx:
        tokenizers = [tokenizer_name(config.teacher.model), tokenizer_name(config.student.model)]
        splits, rejects = prepare_data(config.data, config_dir, ctx, tokenizers)
        labels = list(config.data.contract.label_enumerate_values or sorted(splits["train"].label_counts))
        column, targets = config.metakd.domain_column, config.metakd.target_domains
        base = base_model_name(config.teacher.model)
        weighted = weigh_examples(splits["train"], base, config.metakd, config.teacher.training.max_seq_length, ctx)
        all_teacher = train_model("teacher-all", config.teacher.model, config.teacher.training, labels, splits["train"],
                                  ctx)  # fmt: skip
        meta = train_meta_teacher(config.teacher.model, config.teacher.training, labels, weighted, config.metakd, ctx)
        tables = {"train": domain_tables(splits["train"], column, targets, ctx),
                  "weighted": domain_tables(weighted, column, targets, ctx),
                  "eval": domain_tables(splits["eval"], column, targets, ctx)}  # fmt: skip
        results = {d: _domain(config, d, tables, labels, all_teacher, meta, ctx) for d in tables["train"]}
        markdown = render(results)
        print(markdown)
        summary = {
            "flow": "metakd", "mlflow_run_id": ctx.parent_run_id, "prefect_flow_run_id": ctx.flow_run_id,
            "domains": results, "mean": {row: sum(r[row] for r in results.values()) / len(results) for row in ROWS},
            "report_markdown": markdown, "weighted": weighted.model_dump(),
            "data": {name: m.model_dump() for name, m in splits.items()}, "rejects": rejects,
        }  # fmt: skip
        report_metakd(markdown, [{"domain": d, **{k: round(100 * v, 2) for k, v in r.items()}}
                                 for d, r in results.items()], ctx)  # fmt: skip
        return publish_summary(ctx, summary, output_dir)
