"""Few-shot steps: the method comparison (mean ± sd over seeds per method and k) and the choice of the best."""

from __future__ import annotations

import statistics
from pathlib import Path

import mlflow
from prefect import task
from prefect.artifacts import create_table_artifact

from landing.files import atomic_write
from landing.tasks.context import RunContext


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def comparison_rows(results: list[dict]) -> list[dict]:
    """One row per (method, k): eval and validation accuracy as mean ± sd over seeds, in percent."""
    rows = []
    for method, k in dict.fromkeys((r["method"], r["k"]) for r in results):
        mine = [r for r in results if r["method"] == method and r["k"] == k]
        ev, ev_sd = _mean_sd([r["eval_accuracy"] for r in mine])
        va, va_sd = _mean_sd([r["validation_accuracy"] for r in mine])
        rows.append({"method": method, "k": k, "seeds": len(mine), "eval_accuracy": round(100 * ev, 2),
                     "eval_sd": round(100 * ev_sd, 2), "validation_accuracy": round(100 * va, 2),
                     "validation_sd": round(100 * va_sd, 2)})  # fmt: skip
    return rows


def render_comparison(rows: list[dict], baseline: str) -> str:
    lines = ["# Few-shot comparison (mean ± sd over seeds; eval = held-out split, reported only; "
             "validation = the k-shot validation split, used for every choice)", "",
             "| method | k | eval accuracy (%) | Δ vs " + baseline + " | validation accuracy (%) | seeds |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    base = {r["k"]: r["eval_accuracy"] for r in rows if r["method"] == baseline}
    for r in rows:
        delta = r["eval_accuracy"] - base[r["k"]] if r["k"] in base else None
        lines.append(f"| {r['method']} | {r['k']} | {r['eval_accuracy']:.2f} ± {r['eval_sd']:.2f} | "
                     f"{'—' if delta is None or r['method'] == baseline else f'{delta:+.2f}'} | "
                     f"{r['validation_accuracy']:.2f} ± {r['validation_sd']:.2f} | {r['seeds']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def best_run(results: list[dict]) -> dict:
    """The method with the highest mean validation accuracy at the largest k, then its best seed by validation
    accuracy: chosen on validation only, never on eval."""
    k = max(r["k"] for r in results)
    at_k = [r for r in results if r["k"] == k]
    methods = {m: statistics.mean(r["validation_accuracy"] for r in at_k if r["method"] == m)
               for m in dict.fromkeys(r["method"] for r in at_k)}  # fmt: skip
    method = max(methods, key=methods.get)
    return max((r for r in at_k if r["method"] == method), key=lambda r: r["validation_accuracy"])


@task(name="fewshot-report")
def report_comparison(results: list[dict], baseline: str, ctx: RunContext, output_dir: str) -> dict:
    """The comparison as markdown (printed by the CLI), to MLflow (table and markdown) and as a Prefect table."""
    rows = comparison_rows(results)
    markdown = render_comparison(rows, baseline)
    out = Path(output_dir) / "fewshot_comparison.md"
    with atomic_write(out) as fh:
        fh.write(markdown)
    client = mlflow.MlflowClient()
    client.log_artifact(ctx.parent_run_id, str(out), artifact_path="fewshot")
    client.log_table(ctx.parent_run_id, data={k: [r[k] for r in rows] for k in rows[0]}, artifact_file="fewshot/comparison.json")
    for r in rows:
        client.log_metric(ctx.parent_run_id, f"fewshot.{r['method']}.k{r['k']}.eval_accuracy", r["eval_accuracy"] / 100)
    create_table_artifact(table=rows, key="fewshot-comparison", description=markdown.splitlines()[0].lstrip("# "))
    return {"rows": rows, "markdown": markdown}
