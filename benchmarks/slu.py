"""Joint intent + slot filling benchmark (issue #28): SNIPS and ATIS through the real ``slu`` flow (Prefect, MLflow,
object store), ERNIE 3.0 Tiny's deployment case from teacher to the INT8 student at sequence 16.

Per dataset and seed it runs ``configs/slu/<dataset>.yaml`` (MiniLM-L6 teacher; 2-layer student from its layers 0
and 5, with KD on both heads plus tag-keeping augmentation, and without KD; the KD student's vocabulary cut,
recovered by KD, QAT-trained, exported to ONNX in FP32 and INT8). Every figure names its split: **eval** = the
set's dev folder, only ever reported; **validation** = rows held out of train (stratified by intent), the split
every INT8 gate reads. Latency: each variant and the uncompressed student's FP32 ONNX timed interleaved in one
run (batch 1, 1 thread), so each speed-up is a ratio of medians measured side by side on the same inputs.

Each seed's result is written as soon as it finishes (``benchmarks/results/slu/<dataset>-seed-N.json``) with the
provenance it ran under; ``--resume`` skips finished seeds. ``--set`` overrides apply to every run (the epochs each
seed's JSON and the results file name them, to fit the 2-core budget). Two processes may run different datasets at
once (each with its own ``--state-dir``); ``--render`` over both then writes the whole table.

    python benchmarks/slu.py [--datasets atis snips] [--seeds 1 2 3] [--set key=value ...] [--resume | --render]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
METRICS = (("intent_accuracy", "intent acc."), ("slot_f1", "slot F1"), ("sentence_accuracy", "sentence acc."))
ROLES = (("teacher", "MiniLM-L6 teacher"), ("student_baseline", "2-layer student, no KD"),
         ("student_kd", "2-layer student, KD + augmentation"))  # fmt: skip
TARGETS = {"teacher_snips_slot_f1": 0.946, "int8_within_points": 0.3, "size_mb": 5.4, "speedup": 2.13}
FINAL = "compressed-int8_embeddings"  # the smallest variant: what would ship
SEQ = "16"


def seed_file(dataset: str, seed: int) -> Path:
    return RESULTS / "slu" / f"{dataset}-seed-{seed}.json"


def run_seed(dataset: str, seed: int, overrides: list[str], state_dir: Path) -> dict:
    from landing.config import load_config
    from landing.flows.slu import slu

    config_path = ROOT / "configs/slu" / f"{dataset}.yaml"
    config = load_config(config_path, [f"seed={seed}", *overrides])
    start = time.perf_counter()
    summary = slu(config=config, config_dir=str(config_path.parent), output_dir=str(state_dir / f"{dataset}-seed-{seed}"))
    return summary | {"wall_s": time.perf_counter() - start}


def mean_sd(values: list[float], scale: float = 100.0) -> str:
    if len(values) == 1:
        return f"{scale * values[0]:.2f}"
    return f"{scale * statistics.mean(values):.2f} ± {scale * statistics.stdev(values):.2f}"


def _variants(run: dict) -> dict[str, dict]:
    return {v["name"]: v for v in run["onnx"]["variants"]}


def speedup(run: dict, name: str, target: str = "host") -> float:
    variants = _variants(run)
    reference = variants[run["onnx"]["reference"]]["latency"][target][SEQ]["median_ms"]
    return reference / variants[name]["latency"][target][SEQ]["median_ms"]


def render_dataset(dataset: str, runs: list[dict]) -> list[str]:
    lines = [f"## {dataset.upper()}", "", f"Seeds: {', '.join(str(r['seed']) for r in runs)}; mean ± sd over seeds; "
             f"eval = dev ({runs[0]['data']['eval']['rows']} rows), validation = {runs[0]['data']['validation']['rows']} "
             f"training rows held out.", "",
             "| model | parameters | size (MB) | split | " + " | ".join(label for _, label in METRICS) + f" | p50 at seq {SEQ} (ms) | speed-up |",
             "| --- | ---: | ---: | --- | " + " | ".join("---:" for _ in METRICS) + " | ---: | ---: |"]  # fmt: skip
    for role, label in ROLES:
        for split in ("eval", "validation"):
            scores = " | ".join(mean_sd([r["models"][role][split][k] for r in runs]) for k, _ in METRICS)
            lines.append(f"| {label} | {runs[0]['models'][role][split]['parameters'] / 1e6:.2f}M | | {split} | {scores} | | |")
    for name in _variants(runs[0]):
        variant = [_variants(r)[name] for r in runs]
        p50 = [v["latency"]["host"][SEQ]["median_ms"] for v in variant]
        size = mean_sd([v["size_bytes"] / 1e6 for v in variant], scale=1.0)
        for split in ("eval", "validation"):
            scores = " | ".join(mean_sd([v[split][k] for v in variant]) for k, _ in METRICS)
            timing = f"{mean_sd(p50, 1.0)} | {mean_sd([speedup(r, name) for r in runs], 1.0)}×" if split == "eval" else " |"
            lines.append(f"| ONNX {name} ({variant[0]['precision']}) | | {size} | {split} | {scores} | {timing} |")
    return lines + ["", *_checks(dataset, runs), ""]


def _checks(dataset: str, runs: list[dict]) -> list[str]:
    """The issue's targets, each with its per-seed paired figures."""
    out = ["Targets (eval split; paired per seed):", ""]
    if dataset == "snips":
        f1 = [r["models"]["teacher"]["eval"]["slot_f1"] for r in runs]
        out.append(f"- teacher slot F1 ≥ {100 * TARGETS['teacher_snips_slot_f1']:.1f}: {mean_sd(f1)} "
                   f"({'met' if statistics.mean(f1) >= TARGETS['teacher_snips_slot_f1'] else 'not met'})")  # fmt: skip
    for name in [n for n in _variants(runs[0]) if n.startswith("compressed-") and n != "compressed-fp32"]:
        for key, label in METRICS:
            diff = [_variants(r)[name]["eval"][key] - _variants(r)["compressed-fp32"]["eval"][key] for r in runs]
            sd = f" (sd {100 * statistics.stdev(diff):.2f})" if len(diff) > 1 else ""
            mean = 100 * statistics.mean(diff)
            out.append(f"- {name} − compressed-fp32, {label}: per seed {', '.join(f'{100 * d:+.2f}' for d in diff)}; "
                       f"mean {mean:+.2f}{sd}; mean within {TARGETS['int8_within_points']} points: "
                       f"{'yes' if abs(mean) <= TARGETS['int8_within_points'] else 'no'}")  # fmt: skip
    size = [_variants(r)[FINAL]["size_bytes"] / 1e6 for r in runs]
    ratio = [speedup(r, FINAL) for r in runs]
    out += [f"- {FINAL} size ≤ {TARGETS['size_mb']} MB: {', '.join(f'{s:.2f}' for s in size)} MB "
            f"({'met' if max(size) <= TARGETS['size_mb'] else 'not met'})",
            f"- {FINAL} ≥ {TARGETS['speedup']}× the uncompressed student's FP32 ONNX at seq {SEQ}: "
            f"{', '.join(f'{x:.2f}×' for x in ratio)} ({'met' if min(ratio) >= TARGETS['speedup'] else 'not met'})"]  # fmt: skip
    return out


def render(by_dataset: dict[str, list[dict]], provenance_md: str) -> str:
    from landing.infra.provenance import seed_provenance_markdown

    lines = ["# Joint intent + slot filling: teacher → KD student → compressed INT8 (ERNIE 3.0 Tiny's case)", "",
             provenance_md, "", "The lines above say where this file was rendered; each seed recorded where it ran:", ""]  # fmt: skip
    for dataset, runs in by_dataset.items():
        lines += [f"{dataset}:", "", seed_provenance_markdown(runs), ""]
    for dataset, runs in by_dataset.items():
        overrides = runs[0]["overrides"]
        lines.append(f"- {dataset}: `configs/slu/{dataset}.yaml` with {', '.join(f'`{o}`' for o in overrides) or 'no overrides'}")
    lines += ["", "Sizes are the ONNX files; parameters are the PyTorch models'. Latency: batch 1, 1 thread, on the host, "
              "each variant in a fresh process per round, interleaved; speed-up = the uncompressed KD student's FP32 "
              "ONNX median over the variant's, in the same run. JointBERT's reference figures (BERT-base, on the "
              "sets' *test* splits, which `../shared/data` does not ship) are not directly comparable to dev.", ""]  # fmt: skip
    for dataset, runs in by_dataset.items():
        lines += render_dataset(dataset, runs)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["atis", "snips"], choices=["atis", "snips"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".landing-benchmark-slu")
    parser.add_argument("--resume", action="store_true", help="skip seeds already run with the same overrides")
    parser.add_argument("--render", action="store_true", help="do not run: render the finished seeds' table")
    parser.add_argument("--name", default="slu", help="results name: benchmarks/results/NAME.{md,json}")
    args = parser.parse_args()
    os.environ.setdefault("LANDING_STATE_DIR", str(args.state_dir))
    from landing.files import atomic_write
    from landing.infra.provenance import measured_run, provenance, provenance_markdown
    from landing.infra.settings import prepare_runtime_environment

    prepare_runtime_environment()
    by_dataset: dict[str, list[dict]] = {}
    for dataset in args.datasets:
        for seed in args.seeds:
            path = seed_file(dataset, seed)
            if (args.resume or args.render) and path.is_file():
                done = json.loads(path.read_text())
                if args.resume and done["overrides"] != args.overrides:
                    raise SystemExit(f"{path}: ran with {done['overrides']}, not {args.overrides}; remove it to re-run")
                by_dataset.setdefault(dataset, []).append(done)
                continue
            if args.render:
                raise SystemExit(f"{path}: not run yet (--render only renders finished seeds)")
            with measured_run(threads=1) as seed_info:
                summary = run_seed(dataset, seed, args.overrides, args.state_dir)
            summary |= {"seed": seed, "dataset": dataset, "overrides": args.overrides, "provenance": seed_info}
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as fh:  # --resume must never read a half-written seed
                json.dump(summary, fh, indent=2)
            by_dataset.setdefault(dataset, []).append(summary)
            print(f"{dataset} seed {seed} done in {summary['wall_s']:.0f} s", flush=True)
    info = provenance(threads=1)
    table = render(by_dataset, provenance_markdown(info))
    (RESULTS / f"{args.name}.md").write_text(table)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"rendered": info, "runs": by_dataset}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
