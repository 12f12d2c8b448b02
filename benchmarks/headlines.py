"""The README's table of headline benchmark results, generated from ``benchmarks/results/*.json`` only.

``python benchmarks/headlines.py`` rewrites the block between the README's ``headlines`` markers;
``--check`` exits 1 when the README's block differs from what the results say (``make test`` runs it),
so no figure in that table can drift from its results file. Every "A beats B" cell is the paired per-seed
difference (mean ± sd over seeds) where the results have seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START, END = "<!-- headlines:start (benchmarks/headlines.py writes this table) -->", "<!-- headlines:end -->"


def pct(values: list[float]) -> str:
    """Mean ± sd in percentage points (± omitted for one value)."""
    mean = 100 * statistics.mean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def paired(a: list[float], b: list[float]) -> str:
    """A − B per seed, in points: mean ± sd (the sd of the differences, not of either side)."""
    return pct([x - y for x, y in zip(a, b, strict=True)])


def seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def kd_sst2(data: dict) -> tuple[str, str]:
    runs = data["runs"]
    acc = {role: [r[role]["accuracy"] for r in runs] for role in ("teacher", "student_kd", "student_baseline")}
    gap = [(k - b) / (t - b) for t, k, b in zip(acc["teacher"], acc["student_kd"], acc["student_baseline"], strict=True)]
    figure = (f"teacher {pct(acc['teacher'])}, KD student {pct(acc['student_kd'])}, no-KD {pct(acc['student_baseline'])}; "
              f"{100 * statistics.mean(gap):.0f}% of the gap recovered")  # fmt: skip
    claim = f"KD − no KD: {paired(acc['student_kd'], acc['student_baseline'])}"
    if all("student_baseline_steps" in r for r in runs):
        claim += f"; KD − step-matched no KD: {paired(acc['student_kd'], [r['student_baseline_steps']['accuracy'] for r in runs])}"
    return f"{figure} ({seeds(len(runs))})", claim


def compress_sst2(data: dict) -> tuple[str, str]:
    variants = {v["name"]: v for v in data["summary"]["variants"]}
    final = variants[data["summary"]["registry_candidate"]["variant"]]
    fp32 = variants["student_fp32"]
    figure = (f"{final['name']}: {final['size_bytes'] / 1e6:.2f} MB at {100 * final['accuracy']:.2f}% "
              f"(FP32 student {fp32['size_bytes'] / 1e6:.1f} MB at {100 * fp32['accuracy']:.2f}%)")
    return figure + " (1 seed)", f"accuracy change: {100 * (final['accuracy'] - fp32['accuracy']):+.2f} points"


def augment_sst2(data: dict) -> tuple[str, str]:
    cells, claims = [], []
    for student in sorted({r["student"] for r in data["runs"]}):
        rows = [r for r in data["runs"] if r["student"] == student]
        by_variant: dict[str, dict[int, float]] = {}
        for r in rows:
            by_variant.setdefault(r["variant"], {})[r["seed"]] = r["student_kd"]["accuracy"]
        best = max(by_variant, key=lambda v: statistics.mean(by_variant[v].values()))
        common = sorted(by_variant[best])
        no_kd = {r["seed"]: r["student_baseline"]["accuracy"] for r in rows if r["variant"] == best}
        cells.append(f"{student}: best {best} {pct(list(by_variant[best].values()))}, no KD {pct(list(no_kd.values()))}")
        claims.append(f"{student}: {paired([by_variant[best][s] for s in common], [no_kd[s] for s in common])}")
    return "; ".join(cells) + f" ({seeds(len(common))})", "best − no KD: " + "; ".join(claims)


def fewshot(data: dict) -> tuple[str, str]:
    runs = data["summary"]["runs"]
    k = max(r["k"] for r in runs)
    at_k = [r for r in runs if r["k"] == k]
    methods = {r["method"] for r in at_k}
    by = {m: {r["seed"]: r["eval_accuracy"] for r in at_k if r["method"] == m} for m in methods}
    best = max(methods - {"fine-tune"}, key=lambda m: statistics.mean(by[m].values()))
    common = sorted(by[best])
    figure = f"k = {k}: fine-tune {pct(list(by['fine-tune'].values()))}, {best} {pct(list(by[best].values()))}"
    claim = f"{best} − fine-tune: {paired([by[best][s] for s in common], [by['fine-tune'][s] for s in common])}"
    return f"{figure} ({seeds(len(common))})", claim


def metakd_blitzer(data: dict) -> tuple[str, str]:
    runs = data["runs"]
    meta_row = "student, Meta-KD"
    # the KD students Meta-KD is compared with: every student row but itself and the one without KD
    controls = [row for row in runs[0]["mean"] if row.startswith("student, ") and row not in (meta_row, "student, no KD")]
    meta = [r["mean"][meta_row] for r in runs]
    best = [max(r["mean"][c] for c in controls) for r in runs]
    return (f"Meta-KD student {pct(meta)}, each seed's best of {len(controls)} KD controls {pct(best)}, mean over 4 "
            f"domains ({seeds(len(runs))}, reduced: 1,600 rows, sequence 64)",
            f"Meta-KD − best KD control: {paired(meta, best)}")  # fmt: skip


def easynlp_mrpc(data: dict) -> tuple[str, str]:
    mrpc = [r for r in data["runs"] if r.get("chain", "MRPC").startswith("MRPC")]  # older results: MRPC only
    acc = {r["command"]: r.get("accuracy") for r in mrpc}
    kd, no_kd = acc["student KD"], acc["student without KD (reference)"]
    startup = ""
    if data.get("startup"):  # newer results: the start-up overhead, new process vs warm
        import statistics

        over = {p: statistics.median(r["overhead_s"] for r in data["startup"] if r["process"] == p)
                for p in ("new process", "warm")}  # fmt: skip
        startup = f"; start-up overhead {over['warm']:.1f} s warm, {over['new process']:.1f} s in a new process"
    return (f"teacher {100 * acc['teacher fine-tuning']:.2f}, KD student {100 * kd:.2f}, no-KD {100 * no_kd:.2f} "
            f"(1 run){startup}",
            f"KD − no KD: {100 * (kd - no_kd):+.2f} (one run: no sd)")  # fmt: skip


def slu(data: dict) -> tuple[str, str]:
    """Per dataset: slot F1 of the teacher, both students and the shipped INT8 student, its size and speed-up."""
    figures, claims = [], []
    for dataset, runs in data["runs"].items():
        def f1(role: str, rs=runs) -> list[float]:
            return [r["models"][role]["eval"]["slot_f1"] for r in rs]

        final = [next(v for v in r["onnx"]["variants"] if v["name"] == "compressed-int8_embeddings") for r in runs]
        fp32 = [next(v for v in r["onnx"]["variants"] if v["name"] == "compressed-fp32") for r in runs]
        reference = [next(v for v in r["onnx"]["variants"] if v["name"] == r["onnx"]["reference"]) for r in runs]
        speedup = [ref["latency"]["host"]["16"]["median_ms"] / v["latency"]["host"]["16"]["median_ms"]
                   for ref, v in zip(reference, final, strict=True)]  # fmt: skip
        figures.append(f"{dataset.upper()} slot F1: teacher {pct(f1('teacher'))}, KD student {pct(f1('student_kd'))}, "
                       f"no-KD {pct(f1('student_baseline'))}, INT8 student {pct([v['eval']['slot_f1'] for v in final])} "
                       f"at {max(v['size_bytes'] for v in final) / 1e6:.2f} MB, "
                       f"{statistics.mean(speedup):.2f}× its FP32 ONNX at seq 16 ({seeds(len(runs))})")  # fmt: skip
        claims.append(f"{dataset.upper()} KD − no KD: {paired(f1('student_kd'), f1('student_baseline'))}; INT8 − FP32: "
                      f"{paired([v['eval']['slot_f1'] for v in final], [v['eval']['slot_f1'] for v in fp32])}")  # fmt: skip
    return "; ".join(figures), "; ".join(claims)


# (results name, what it measures, its extractor); a missing results file is left out of the table.
HEADLINES: list[tuple[str, str, Callable[[dict], tuple[str, str]]]] = [
    ("kd_sst2", "KD, SST-2, 4,000 labelled + 20,000 transfer", kd_sst2),
    ("kd_sst2_layers", "KD with hidden and attention MSE, SST-2", kd_sst2),
    ("kd_sst2_mpnet", "KD from MPNet-base, SST-2, 1,000 labelled + 20,000 transfer", kd_sst2),
    ("compress_sst2", "compression of the KD student, SST-2", compress_sst2),
    ("augment_sst2", "augmentation and data distillation, SST-2, 1,000 labelled", augment_sst2),
    ("fewshot_sst2", "few-shot, SST-2", fewshot),
    ("fewshot_bbc", "few-shot, BBC News", fewshot),
    ("fewshot_sst2_large", "few-shot, SST-2, MPNet-base", fewshot),
    ("metakd_blitzer", "Meta-KD, Amazon reviews, 4 domains", metakd_blitzer),
    ("easynlp_mrpc", "EasyNLP's MRPC KD tutorial as `easynlp` commands", easynlp_mrpc),
    ("slu", "joint intent + slot filling, teacher → KD → compressed INT8 (slot F1)", slu),
]


def _provenances(node) -> list[dict]:
    """Every provenance record in a results file (one per seed where seeds recorded their own)."""
    if isinstance(node, dict):
        if "git_commit" in node:
            return [node]
        return [p for value in node.values() for p in _provenances(value)]
    if isinstance(node, list):
        return [p for value in node for p in _provenances(value)]
    return []


def protocol(data: dict) -> str:
    """Whether the results meet the benchmark protocol (issue #26): each run's commit clean (or its diff's
    hash recorded) and the machine's load recorded; what is missing otherwise."""
    records = [p for key, value in data.items() if key != "rendered" for p in _provenances(value)] or _provenances(data)
    missing = []
    if any(str(p["git_commit"]).endswith("-dirty") and not p.get("git_diff_sha256") for p in records):
        missing.append("dirty tree")
    if not all(any(k.startswith("load_average") for k in p) for p in records):
        missing.append("no load average")
    return "yes" if records and not missing else "pre-protocol: " + (", ".join(missing) or "no provenance")


def table() -> str:
    lines = [START, "", "| benchmark | eval accuracy (%) | paired difference (points) | per-run provenance | results |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, what, extract in HEADLINES:
        data = _load(name)
        if data is None:
            continue
        figure, claim = extract(data)
        lines.append(f"| {what} | {figure} | {claim} | {protocol(data)} | [`{name}.md`](benchmarks/results/{name}.md) |")
    return "\n".join([*lines, "", END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's table is not what the results say")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    if START not in text or END not in text:
        sys.exit(f"{README}: no headlines markers ({START!r} … {END!r})")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    updated = before + table() + after
    if args.check:
        if updated != text:
            sys.exit(f"{README}: the headline table is out of date with benchmarks/results; run python {__file__}")
        return
    README.write_text(updated, encoding="utf-8")


if __name__ == "__main__":
    main()
