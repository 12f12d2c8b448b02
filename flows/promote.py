"""The ``promote`` flow: evaluate challenger and champion on one held-out table → gates → move ``champion``."""

from __future__ import annotations

from prefect import flow

from landing.config import PromoteRunConfig
from landing.flows.data import prepare_data
from landing.infra.registry import CHALLENGER, CHAMPION
from landing.tasks.promote import apply_promotion, decide_promotion, evaluate_candidate, onnx_model_name
from landing.tasks.tracking import publish_summary, tracked_run


@flow(name="promote", log_prints=True)
def promote(config: PromoteRunConfig, config_dir: str = ".", output_dir: str = "runs/promote") -> dict:
    with tracked_run(config) as ctx:
        # Same preparation (and seed) as training, so an eval_size split is the same held-out rows.
        splits, rejects = prepare_data(config.data, config_dir, ctx)
        name, seq = onnx_model_name(config.registered_model), config.gates.latency_seq_len
        held_out = {"validation_table": splits.get("validation")}  # the gates decide on validation, eval is reported
        challenger = evaluate_candidate(
            name, CHALLENGER, splits["eval"], config.latency, seq, ctx, required=True, **held_out
        )
        champion = evaluate_candidate(
            name, CHAMPION, splits["eval"], config.latency, seq, ctx, reuse=challenger, **held_out
        )
        decision = apply_promotion(
            config.registered_model, challenger, champion, decide_promotion(challenger, champion, config.gates), ctx
        )
        print(("promoted" if decision["promote"] else "kept champion") + ": " + "; ".join(decision["reasons"]))
        summary = {
            "flow": "promote",
            "mlflow_run_id": ctx.parent_run_id,
            "prefect_flow_run_id": ctx.flow_run_id,
            "registered_model": name,
            "challenger": challenger,
            "champion": champion,
            "decision": decision,
            "champion_version": decision["challenger_version" if decision["promote"] else "champion_version"],
            "data": {name: splits[name].model_dump() for name in ("validation", "eval") if name in splits},
            "rejects": rejects,
        }
        return publish_summary(ctx, summary, output_dir)
