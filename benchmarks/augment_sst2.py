"""Augmentation and data-distillation benchmark on SST-2 (issue #12), through the real pipeline.

Protocol: 1,000 labelled training sentences (stratified, seeded), 20,000 further training
sentences as the unlabelled transfer set, ``dev.tsv`` held out and only reported; every choice on
the validation split. MiniLM-L6 teacher. For each seed and each student (the 2-layer student of
the teacher's layers 0 and 5, and a BiLSTM over a word vocabulary) the ``distill`` flow runs once
per row of ``VARIANTS``; the no-KD student is the run's ``student_baseline``. The teacher, split
and no-KD student are the same in every run of a seed (cached steps of one state directory).
Writes ``benchmarks/results/augment_sst2.{md,json}`` with provenance.

    python benchmarks/augment_sst2.py [--seeds 1 2 3] [--students 2-layer bilstm] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/sst2/augment_benchmark.yaml"
RESULTS = ROOT / "benchmarks/results"
STUDENTS = {
    "2-layer": [],
    "bilstm": ["student.model={kind: bilstm, embedding_dim: 128, hidden_size: 128}",
               "student.training={epochs: 5, batch_size: 64, learning_rate: 0.002, max_seq_length: 64}"],
}  # fmt: skip
VARIANTS = {
    "KD on the 1,000": ["augmentation={eda: {expansion_rate: 0}, unlabelled_rows: 0}"],
    "KD + ERNIE-Slim ×10": ["augmentation={eda: {expansion_rate: 10}, unlabelled_rows: 0}"],
    "KD + mlm_da ×10 (adapted MiniLM)": [
        "augmentation={mlm_da: {expansion_rate: 10, max_seq_length: 64}, unlabelled_rows: 0,"
        " mlm_adapt: {max_steps: 800, train_layers: 2, learning_rate: 5.0e-4, max_seq_length: 64}}"],
    "KD + 20,000 unlabelled": [],
}  # fmt: skip


def run(seed: int, student: str, variant: str, state_dir: Path) -> dict:
    from landing.config import load_config
    from landing.flows.distill import distill

    overrides = [f"seed={seed}", *STUDENTS[student], *VARIANTS[variant]]
    out = state_dir / "runs" / f"seed-{seed}" / student / variant.replace(" ", "_")
    summary = distill(config=load_config(CONFIG, overrides), config_dir=str(CONFIG.parent), output_dir=str(out))
    return {"seed": seed, "student": student, "variant": variant, **summary}


def fmt(values: list[float]) -> str:
    spread = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * 100:.2f} ± {spread:.2f}"


def per_seed(runs: list[dict], role: str) -> list[float]:
    """One value per seed of a model that every run of that seed shares (the teacher, the no-KD student)."""
    return list({r["seed"]: r[role]["accuracy"] for r in runs}.values())


def fastest(runs: list[dict], role: str) -> str:
    """The lowest batch-1 latency over runs of one architecture: other jobs on the machine only add time."""
    timings = [r[role]["latency_batch1_ms"] for r in runs if r[role].get("latency_batch1_ms")]
    return f"{min(timings):.2f}" if timings else "—"


def render(runs: list[dict], provenance_md: str) -> str:
    from landing.infra.provenance import seed_provenance_markdown

    seeds = sorted({r["seed"] for r in runs})
    lines = ["# Augmentation and data distillation on SST-2 (1,000 labelled; dev held out)", "", provenance_md, "",
             "The lines above say where this table was rendered. It is rendered from the seeds' own JSON files, and each seed recorded where it ran:", "", seed_provenance_markdown(runs), "",
             f"Mean ± sd over seeds {seeds}; **eval** = dev.tsv (reported only), validation = the run's validation "
             "split (selection). Gap recovered = (KD − no KD) / (teacher − no KD) per seed, averaged. Batch-1 ms: "
             "PyTorch, 1 thread, the lowest over the runs of that architecture (some runs shared the machine).", "",
             "| student | training | eval accuracy (%) | validation (%) | gap recovered | parameters | batch-1 ms |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for student in dict.fromkeys(r["student"] for r in runs):
        mine = [r for r in runs if r["student"] == student]
        lines.append(f"| {student} | no KD | {fmt(per_seed(mine, 'student_baseline'))} | | "
                     f"| {mine[0]['student_baseline']['params'] / 1e6:.2f}M | {fastest(mine, 'student_baseline')} |")  # fmt: skip
        for variant in dict.fromkeys(r["variant"] for r in mine):
            rs = [r for r in mine if r["variant"] == variant]
            gap = [(r["student_kd"]["accuracy"] - r["student_baseline"]["accuracy"])
                   / (r["teacher"]["accuracy"] - r["student_baseline"]["accuracy"]) for r in rs]  # fmt: skip
            lines.append(f"| {student} | {variant} | {fmt([r['student_kd']['accuracy'] for r in rs])} "
                         f"| {fmt([r['student_kd']['validation']['accuracy'] for r in rs])} "
                         f"| {100 * statistics.mean(gap):.0f}% | {rs[0]['student_kd']['params'] / 1e6:.2f}M "
                         f"| {fastest(mine, 'student_kd')} |")  # fmt: skip
    lines += ["", f"Teacher (MiniLM-L6 fine-tuned on the 1,000, the same in every run of a seed): "
              f"{fmt(per_seed(runs, 'teacher'))} on eval, {runs[0]['teacher']['params'] / 1e6:.2f}M parameters, "
              f"{fastest(runs, 'teacher')} ms at batch 1."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".landing-benchmark-augment")
    args = parser.parse_args()
    os.environ.setdefault("LANDING_STATE_DIR", str(args.state_dir))
    from landing.files import atomic_write
    from landing.infra.provenance import measured_run, provenance, provenance_markdown
    from landing.infra.settings import prepare_runtime_environment

    prepare_runtime_environment()
    done = RESULTS / "augment_sst2"
    done.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        for student in args.students:
            for variant in args.variants:
                keep = done / f"{seed}-{student}-{variant.replace(' ', '_')}.json"
                if keep.is_file():
                    runs.append(json.loads(keep.read_text()))
                    continue
                with measured_run(threads=1) as run_info:
                    result = run(seed, student, variant, args.state_dir)
                result["provenance"] = run_info
                with atomic_write(keep) as fh:  # an interrupted benchmark loses one run at most, never half of one
                    json.dump(result, fh, indent=2)
                runs.append(result)
    info = provenance(threads=1)
    table = render(runs, provenance_markdown(info))
    (RESULTS / "augment_sst2.md").write_text(table)
    (RESULTS / "augment_sst2.json").write_text(json.dumps({"rendered": info, "runs": runs}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
