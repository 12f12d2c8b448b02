"""Benchmark 4 of issue #27: is the validation split representative of what is reported?

SST-2's training rows are mostly short phrases, dev.tsv (eval) has full sentences, so a validation split drawn
from the training rows can rank and stop models on the wrong kind of text. For each finished ``kd_sst2``-style run
named on the command line (its seeds' JSON files in ``benchmarks/results/<name>/``), this re-predicts the
run's own saved models (teacher, KD student, no-KD student) on the run's own validation and eval splits, and
reports:

- accuracy by sentence length (words), validation and eval side by side, mean ± sd over seeds;
- how far validation accuracy is from eval accuracy per model (the overstatement), paired per seed;
- between two runs (the default split and ``data.split.validation_like: eval``), whether the remedy closes it.

Overall accuracies are checked against the ones each run recorded (the same models on the same rows must agree).
Nothing is trained here; writes ``benchmarks/results/length_accuracy.{md,json,png}``.

    python benchmarks/length_accuracy.py [--runs kd_sst2_mpnet kd_sst2_mpnet_vlike]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
MODELS = {"teacher": "teacher", "student_kd": "KD student", "student_baseline": "no-KD student"}
EDGES = [0, 5, 10, 20, 30]  # word-count bins: 1–5, 6–10, 11–20, 21–30, 31+
SPLITS = ("validation", "eval")


def bin_labels() -> list[str]:
    return [f"{lo + 1}–{hi}" for lo, hi in zip(EDGES, EDGES[1:], strict=False)] + [f"{EDGES[-1] + 1}+"]


def length_bins(frame) -> np.ndarray:
    from landing.data_contracts.splitting import word_counts

    return np.digitize(word_counts(frame), EDGES[1:], right=True)


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise SystemExit(f"{uri}: this benchmark reads the run's local object store (file://), found {parsed.scheme!r}")
    return Path(parsed.path)


def correct_by_row(model_dir: Path, frame, max_length: int) -> np.ndarray:
    """1 where the saved model predicts the row's label, else 0."""
    from landing.models.loading import load_classifier
    from landing.models.predict import predict_logits

    model, tokenizer = load_classifier(str(model_dir))
    logits = predict_logits(model, tokenizer, list(frame["text"]), max_length=max_length, desc=model_dir.name)
    label2id = {str(k): v for k, v in model.config.label2id.items()}
    return (logits.argmax(axis=1) == frame["label"].astype(str).map(label2id).to_numpy()).astype(float)


def measure_seed(run: dict, max_length: int) -> dict:
    """Per model and split: accuracy overall and by length bin, from the run's own models and splits."""
    import pandas as pd

    from landing.data_contracts.splitting import inside_rows
    from landing.data_contracts.validation import read_canonical

    frames = {s: read_canonical(local_path(run["data"][s]["uri"])) for s in SPLITS}
    bins = {s: length_bins(frames[s]) for s in SPLITS}
    trained_on = [read_canonical(local_path(run["data"][s]["uri"])) for s in ("train", "transfer")]
    inside = inside_rows(frames["validation"], pd.concat(trained_on, ignore_index=True))
    out = {"rows_by_bin": {s: np.bincount(bins[s], minlength=len(EDGES)).tolist() for s in SPLITS},
           "validation_inside_training_rows": float(inside.mean()), "models": {}}  # fmt: skip
    for role in MODELS:
        model_dir = local_path(run[role]["artifact_uri"])
        per_split = {}
        for split in SPLITS:
            correct = correct_by_row(model_dir, frames[split], max_length)
            recorded = run[role]["accuracy"] if split == "eval" else run[role]["validation"]["accuracy"]
            if abs(correct.mean() - recorded) > 0.005:  # padding differs from the run's; more is a wrong model
                raise SystemExit(f"seed {run['seed']} {role} {split}: re-predicted {correct.mean():.4f}, the run "
                                 f"recorded {recorded:.4f}; the state directory does not hold this run's models")  # fmt: skip
            if split == "validation":  # the rows no training or transfer row contains
                per_split["validation, not inside a training row"] = {"accuracy": float(correct[~inside].mean())}
            per_split[split] = {
                "accuracy": float(correct.mean()),
                "by_bin": [float(correct[bins[split] == b].mean()) if (bins[split] == b).any() else None
                           for b in range(len(EDGES))],
            }  # fmt: skip
        out["models"][role] = per_split
    return out


def _cell(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"


def _paired(diffs: list[float]) -> str:
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return f"{100 * statistics.mean(diffs):+.2f} ± {100 * sd:.2f}"


def render_run(name: str, seeds: list[dict], runs: list[dict], overrides: list[str]) -> list[str]:
    rows_v = [s["rows_by_bin"]["validation"] for s in seeds]
    lines = [f"## `{name}`", "",
             f"Seeds {', '.join(str(r['seed']) for r in runs)}; overrides of `configs/sst2/benchmark.yaml`: "
             + ", ".join(f"`{o}`" for o in overrides) + ".", "",
             f"Rows per length bin: eval {seeds[0]['rows_by_bin']['eval']}; validation (mean over seeds) "
             f"{[round(statistics.mean(c)) for c in zip(*rows_v, strict=True)]}.",
             "", "| model | split | " + " | ".join(f"{b} words" for b in bin_labels()) + " | all |",
             "| --- | --- |" + " ---: |" * (len(EDGES) + 1)]  # fmt: skip
    for role, title in MODELS.items():
        for split in SPLITS:
            cells = [_cell([s["models"][role][split]["by_bin"][b] for s in seeds]) for b in range(len(EDGES))]
            cells.append(_cell([s["models"][role][split]["accuracy"] for s in seeds]))
            lines.append(f"| {title} | {split} | " + " | ".join(cells) + " |")
    inside = [s["validation_inside_training_rows"] for s in seeds]
    lines += ["", f"{_cell(inside)} % of the validation rows occur inside a train or transfer row (a phrase of a "
              "sentence kept for training). Accuracy on the other validation rows: "
              + "; ".join(f"{t} {_cell([s['models'][r]['validation, not inside a training row']['accuracy'] for s in seeds])}"
                          for r, t in MODELS.items()) + ".",
              "", "Validation − eval accuracy (points; paired per seed, mean ± sd), the amount validation overstates:", ""]  # fmt: skip
    lines += [f"- {title}: {_paired(overstatement(seeds, role))}" for role, title in MODELS.items()]
    return lines + [""]


def overstatement(seeds: list[dict], role: str) -> list[float]:
    return [s["models"][role]["validation"]["accuracy"] - s["models"][role]["eval"]["accuracy"] for s in seeds]


def render_comparison(names: list[str], measured: dict[str, list[dict]]) -> list[str]:
    """The remedy's effect: the overstatement under each run's split, per model."""
    if len(names) != 2:
        return []
    a, b = names
    lines = [f"## Does `{b}` make validation look like eval?", "",
             "| model | " + f"validation − eval, `{a}`" + " | " + f"validation − eval, `{b}`" + " |",
             "| --- | ---: | ---: |"]  # fmt: skip
    for role, title in MODELS.items():
        lines.append(f"| {title} | {_paired(overstatement(measured[a], role))} | {_paired(overstatement(measured[b], role))} |")
    lines += ["", "Each cell: points, mean ± sd over that run's seeds. The two runs are different splits of the "
              "same training table (the validation rows differ), so their models differ too; the paired "
              "quantity is within a seed, across splits of one run."]  # fmt: skip
    return lines + [""]


def plot(names: list[str], measured: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), sharey=True, squeeze=False)
    x = np.arange(len(EDGES))
    for ax, name in zip(axes[0], names, strict=True):
        for colour, (role, title) in enumerate(MODELS.items()):
            for split, style in zip(SPLITS, ("--", "-"), strict=True):  # one colour per model, dashed = validation
                means = [np.nanmean([np.nan if (v := s["models"][role][split]["by_bin"][b]) is None else v
                                     for s in measured[name]])
                         for b in range(len(EDGES))]  # fmt: skip
                ax.plot(x, 100 * np.array(means), style, color=f"C{colour}", marker="o", label=f"{title}, {split}")
        ax.set(title=name, xticks=x, xticklabels=bin_labels(), xlabel="words per row", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["kd_sst2_mpnet", "kd_sst2_mpnet_vlike"])
    parser.add_argument("--max-length", type=int, default=64, help="tokens, as the runs evaluated")
    args = parser.parse_args()
    import torch

    from landing.infra.provenance import provenance, provenance_markdown

    torch.set_num_threads(1)
    measured, lines = {}, []
    for name in args.runs:
        runs = [json.loads(p.read_text()) for p in sorted((RESULTS / name).glob("seed-*.json"))]
        if not runs or not (RESULTS / f"{name}.json").is_file():
            raise SystemExit(f"benchmarks/results/{name}: no rendered seeds; run benchmarks/kd_sst2.py --name {name} first")
        overrides = json.loads((RESULTS / f"{name}.json").read_text())["overrides"]
        measured[name] = [measure_seed(r, args.max_length) for r in runs]
        lines += render_run(name, measured[name], runs, overrides)
    info = provenance(threads=1) | {"runs": args.runs}
    head = ["# Accuracy by sentence length, validation vs eval (SST-2; eval = dev.tsv, only reported)", "",
            provenance_markdown(info), "",
            "Every model is the run's own, re-predicted on the run's own splits (see each run's table for how it was "
            "trained). Validation = labelled training rows held out of training; eval = dev.tsv.", ""]  # fmt: skip
    text = "\n".join(head + lines + render_comparison(args.runs, measured)) + "\n"
    plot(args.runs, measured, RESULTS / "length_accuracy.png")
    (RESULTS / "length_accuracy.md").write_text(text + "\n![accuracy by length](length_accuracy.png)\n")
    (RESULTS / "length_accuracy.json").write_text(json.dumps({"rendered": info, "measured": measured}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
