"""The ``fewshot`` flow: per k and seed, standard fine-tuning and each configured method on the same k-shot
split → the comparison → the best (by validation) registered as the teacher candidate → optional distillation."""

from __future__ import annotations

from prefect import flow

from landing.config import FewshotRunConfig, TrainingConfig
from landing.data_contracts.manifest import DatasetManifest, ModelManifest
from landing.flows.data import prepare_data
from landing.models.specs import AnySpec, tokenizer_name
from landing.tasks.augment import adapt_mlm, mix_transfer
from landing.tasks.context import RunContext
from landing.tasks.data import kshot_tables
from landing.tasks.evaluate import evaluate_model
from landing.tasks.fewshot import best_run, report_comparison
from landing.tasks.predict import export_logits
from landing.tasks.promote import register_models
from landing.tasks.tracking import publish_summary, tracked_run
from landing.tasks.train import teacher_identity, train_model

BASELINE = "fine-tune"
CANDIDATE_ALIAS = "candidate"


def _methods(config: FewshotRunConfig) -> dict[str, tuple[AnySpec, TrainingConfig]]:
    """Name → (model spec, training knobs); the baseline first."""
    methods = {BASELINE: (config.baseline.model, config.baseline.training)}
    return methods | {name: (method.model, method.training) for name, method in config.methods.items()}


def _masked_lm(config: FewshotRunConfig, splits: dict[str, DatasetManifest], ctx: RunContext) -> ModelManifest | None:
    """mlm_adapt on the run's own text (the labelled pool and any unlabelled table), when a prompt method needs it."""
    if config.mlm_adapt is None or not any(m.model.kind == "prompt" and m.model.mlm_model is None
                                           for m in config.methods.values()):  # fmt: skip
        return None
    base = config.mlm_base or config.baseline.model.name_or_path
    texts = [splits["train"], *([splits["transfer"]] if "transfer" in splits else [])]
    return adapt_mlm(base, texts, splits.get("validation"), config.mlm_adapt, ctx)


def _one_run(name: str, spec: AnySpec, training: TrainingConfig, k: int, seed: int, shots: dict[str, DatasetManifest],
             labels: list[str], eval_table: DatasetManifest, masked_lm: ModelManifest | None, ctx: RunContext) -> dict:  # fmt: skip
    """Train one method on one k-shot split and score it on the split's validation rows and on eval."""
    seeded = ctx.model_copy(update={"seed": seed})
    role = f"{name}-k{k}-seed{seed}"
    model = train_model(role, spec, training, labels, shots["train"], seeded, transfer=shots["unlabelled"],
                        masked_lm=masked_lm, validation=shots["validation"])  # fmt: skip
    validation = evaluate_model(f"{role}-validation", model, shots["validation"], seeded, 0)
    evaluation = evaluate_model(role, model, eval_table, seeded, 0)
    return {"method": name, "k": k, "seed": seed, "validation_accuracy": validation["accuracy"],
            "eval_accuracy": evaluation["accuracy"], "eval_macro_f1": evaluation["macro_f1"],
            "parameters": model.parameters, "model": model.model_dump()}  # fmt: skip


def _distil(config: FewshotRunConfig, best: dict, shots: dict[str, DatasetManifest], transfer: DatasetManifest | None,
            labels: list[str], eval_table: DatasetManifest, ctx: RunContext) -> dict:  # fmt: skip
    """The best few-shot model as the teacher of ``student``: KD on its k-shot rows plus the unlabelled ones (the
    pool's other rows and the run's unlabelled table; no labels needed), and the no-KD student on the k shots."""
    teacher = ModelManifest.model_validate(best["model"])
    seeded = ctx.model_copy(update={"seed": best["seed"]})
    unlabelled = mix_transfer(shots["unlabelled"], transfer, None, seeded)
    logits = export_logits(teacher, [shots["train"], *([unlabelled] if unlabelled is not None else [])], seeded)
    spec, training = config.student.model, config.student.training
    students = {
        "student_kd": train_model("student_kd", spec, training, labels, shots["train"], seeded, transfer=unlabelled,
                                  logits=logits, teacher=teacher, distillation=config.distillation,
                                  validation=shots["validation"]),
        "student_baseline": train_model("student_baseline", spec, training, labels, shots["train"], seeded,
                                        validation=shots["validation"]),
    }  # fmt: skip
    return {role: evaluate_model(role, student, eval_table, seeded, config.latency_samples)
            for role, student in students.items()}  # fmt: skip


@flow(name="fewshot", log_prints=True)
def fewshot(config: FewshotRunConfig, config_dir: str = ".", output_dir: str = "runs/fewshot") -> dict:
    with tracked_run(config) as ctx:
        tokenizers = [config.mlm_base, *(tokenizer_name(spec) for spec, _ in _methods(config).values())]
        splits, rejects = prepare_data(config.data, config_dir, ctx, tokenizers)
        contract = config.data.contract
        labels = list(contract.label_enumerate_values or sorted(splits["train"].label_counts))
        masked_lm = _masked_lm(config, splits, ctx)
        pool = [splits[name] for name in ("train", "validation") if name in splits]  # every labelled row
        results, shots_by_run = [], {}
        for k in config.fewshot.shots:
            for seed in config.fewshot.seeds:
                shots = kshot_tables(pool, k, seed, config.fewshot.validation_k, labels, ctx)
                shots_by_run[(k, seed)] = shots
                for name, (spec, training) in _methods(config).items():
                    results.append(_one_run(name, spec, training, k, seed, shots, labels, splits["eval"], masked_lm, ctx))
        report = report_comparison(results, BASELINE, ctx, output_dir)
        best = best_run(results)
        print(report["markdown"])
        print(f"best by validation accuracy: {best['method']} (k={best['k']}, seed {best['seed']})")
        summary = {
            "flow": "fewshot", "mlflow_run_id": ctx.parent_run_id, "prefect_flow_run_id": ctx.flow_run_id,
            "comparison": report["rows"], "runs": results, "report_markdown": report["markdown"],
            "best": {k: best[k] for k in ("method", "k", "seed", "validation_accuracy", "eval_accuracy")},
            "masked_lm": masked_lm.model_dump() if masked_lm is not None else None,
            "kshot": {f"k{k}-seed{seed}": {name: m.model_dump() for name, m in shots.items()}
                      for (k, seed), shots in shots_by_run.items()},
            "data": {name: m.model_dump() for name, m in splits.items()}, "rejects": rejects,
        }  # fmt: skip
        teacher = ModelManifest.model_validate(best["model"])
        if config.registered_teacher:
            summary["registry"] = register_models(
                config.registered_teacher, ctx, pytorch_uri=teacher.mlflow_model_uri,
                weights_sha256=teacher.sha256, variant=best["method"], alias=CANDIDATE_ALIAS,
                data_sha256=shots_by_run[(best["k"], best["seed"])]["train"].sha256,
            )  # fmt: skip
        if config.student is not None:
            summary["distillation"] = _distil(config, best, shots_by_run[(best["k"], best["seed"])],
                                              splits.get("transfer"), labels, splits["eval"], ctx)  # fmt: skip
            summary["distillation"]["teacher"] = teacher_identity(teacher)
        return publish_summary(ctx, summary, output_dir)
