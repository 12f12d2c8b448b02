"""What a teacher costs on this machine (issue #27, item 2): training seconds per step under each speed setting,
logits rows/s in PyTorch and ONNX, and the total for a distill run's teacher.

The teacher (default ``mpnet-base``, real weights, a fresh 2-label head: cost, not accuracy, is measured) takes
the same SST-2 training batches under every setting, timed interleaved round by round so load affects them
alike (the ratios are the claim; the absolute seconds carry the load average recorded with them):

- ``padded``: every batch padded to ``--max-len`` (a naive recipe);
- ``dynamic``: padded to its own longest row (what training does by default);
- ``grouped``: batches of similar lengths (``training.group_by_length``);
- ``grouped + frozen``: also the embeddings and the lower half of the layers frozen (``freeze_embeddings``,
  ``freeze_layers``);
- ``grouped + frozen + bf16``: bf16 autocast, only where the CPU has native bf16 (``bf16: auto``).

A step is forward, backward and AdamW on one batch of ``--batch`` rows, in a plain loop (the Trainer adds the
same work around every setting). Logits: ``--logit-rows`` other sentences through ``predict_logits`` (batched
by length) and through the ONNX FP32 export (``OnnxClassifier``), interleaved. The total is
``ceil(labelled / batch) × epochs`` steps at the fastest setting plus ``labelled + transfer`` rows of logits
at the faster engine. Writes ``benchmarks/results/<name>.{md,json}``.

    python benchmarks/teacher_cost.py [--model mpnet-base] [--threads 2] [--rounds 3] [--name teacher_cost]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared/data/sst2/train.tsv"
RESULTS = ROOT / "benchmarks/results"


def sentences(seed: int) -> list[tuple[str, int]]:
    lines = SST2.read_text(encoding="utf-8").splitlines()[1:]
    rows = sorted({(line.split("\t")[0], int(line.split("\t")[1])) for line in lines})  # deduplicated
    random.Random(seed).shuffle(rows)
    return rows


def batches(rows: list[tuple[str, int]], batch: int, grouped: bool, seed: int) -> list[list[tuple[str, int]]]:
    """Random batches, or (grouped) batches of similar lengths drawn from shuffled mega-batches of 50, as
    transformers' LengthGroupedSampler draws them."""
    if not grouped:
        return [rows[i : i + batch] for i in range(0, len(rows), batch)]
    out, mega = [], 50 * batch
    for start in range(0, len(rows), mega):
        chunk = sorted(rows[start : start + mega], key=lambda r: len(r[0].split()), reverse=True)
        out += [chunk[i : i + batch] for i in range(0, len(chunk), batch)]
    random.Random(seed).shuffle(out)
    return out


def time_steps(model, tokenizer, steps: list[list[tuple[str, int]]], *, max_len: int, padded: bool,
               bf16: bool) -> list[float]:  # fmt: skip
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    model.train()
    seconds = []
    for rows in steps:
        enc = tokenizer([t for t, _ in rows], truncation=True, max_length=max_len, return_tensors="pt",
                        padding="max_length" if padded else True)  # fmt: skip
        labels = torch.tensor([y for _, y in rows])
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds.append(time.perf_counter() - start)
    return seconds


def settings(native_bf16: bool) -> list[dict]:
    found = [{"name": "padded", "padded": True, "grouped": False, "frozen": False, "bf16": False},
             {"name": "dynamic", "padded": False, "grouped": False, "frozen": False, "bf16": False},
             {"name": "grouped", "padded": False, "grouped": True, "frozen": False, "bf16": False},
             {"name": "grouped + frozen", "padded": False, "grouped": True, "frozen": True, "bf16": False}]  # fmt: skip
    if native_bf16:
        found.append({"name": "grouped + frozen + bf16", "padded": False, "grouped": True, "frozen": True, "bf16": True})
    return found


def measure(args) -> dict:
    import torch

    from landing.models.cpu import native_bf16
    from landing.models.loading import count_parameters, load_classifier, save_classifier
    from landing.models.onnx_export import export_onnx
    from landing.models.onnx_predictor import OnnxClassifier
    from landing.models.params import TrainingParams
    from landing.models.predict import predict_logits
    from landing.models.pretrained import encoder_layers
    from landing.models.training import freeze

    torch.set_num_threads(args.threads)
    rows = sentences(args.seed)
    train, held = rows[: args.steps * args.batch * 50], rows[-args.logit_rows :]
    base, tokenizer = load_classifier(args.model, ["0", "1"])
    half = len(encoder_layers(base)) // 2
    plans = settings(native_bf16())
    step_s: dict[str, list[float]] = {p["name"]: [] for p in plans}
    for round_ in range(args.rounds):
        for plan in plans:
            model = copy.deepcopy(base)
            if plan["frozen"]:
                freeze(model, TrainingParams(freeze_embeddings=True, freeze_layers=half))
            picked = batches(train, args.batch, plan["grouped"], seed=args.seed + round_)[: args.steps]
            step_s[plan["name"]] += time_steps(model, tokenizer, picked, max_len=args.max_len, padded=plan["padded"],
                                               bf16=plan["bf16"])[1:]  # the first step warms up  # fmt: skip
            print(f"round {round_ + 1}: {plan['name']}: {statistics.median(step_s[plan['name']]):.2f} s/step", flush=True)
    texts = [t for t, _ in held]
    logits_s: dict[str, list[float]] = {"pytorch": [], "onnx fp32": []}
    with tempfile.TemporaryDirectory(prefix="teacher-cost-") as scratch:
        save_classifier(base, tokenizer, Path(scratch) / "model")
        onnx = OnnxClassifier.load(export_onnx(Path(scratch) / "model", Path(scratch) / "bundle" / "model.onnx",
                                               max_length=args.max_len).parent, threads=args.threads)  # fmt: skip
        base.eval()
        for _ in range(args.rounds):
            start = time.perf_counter()
            predict_logits(base, tokenizer, texts, batch_size=64, max_length=args.max_len)
            logits_s["pytorch"].append(time.perf_counter() - start)
            start = time.perf_counter()
            onnx.logits(texts, batch_size=64)
            logits_s["onnx fp32"].append(time.perf_counter() - start)
    return {"parameters": count_parameters(base), "frozen_layers": half, "native_bf16": native_bf16(),
            "step_s": step_s, "logits_s": logits_s, "settings": plans}  # fmt: skip


def render(result: dict, args, provenance_md: str) -> str:
    steps = math.ceil(args.labelled / args.batch) * args.epochs
    medians = {name: statistics.median(v) for name, v in result["step_s"].items()}
    padded = medians["padded"]
    rows_per_s = {name: args.logit_rows / statistics.median(v) for name, v in result["logits_s"].items()}
    best_step, best_engine = min(medians, key=medians.get), max(rows_per_s, key=rows_per_s.get)
    total = steps * medians[best_step] + (args.labelled + args.transfer) / rows_per_s[best_engine]
    lines = [f"# Teacher cost: `{args.model}` ({result['parameters'] / 1e6:.1f}M parameters) on this machine", "",
             provenance_md, "",
             f"{args.threads} torch/onnxruntime threads; batches of {args.batch} SST-2 training sentences (max length "
             f"{args.max_len}); {args.steps - 1} timed steps per setting and round after one warm-up step, "
             f"{args.rounds} interleaved rounds; median over all timed steps. Frozen: the embeddings and "
             f"{result['frozen_layers']} lower layers. Native bf16 on this CPU: {result['native_bf16']}"
             + ("" if result["native_bf16"] else " (so no bf16 row: `bf16: auto` trains in FP32 here)") + ".", "",
             "| training setting | s/step (median) | × padded |", "| --- | ---: | ---: |"]  # fmt: skip
    lines += [f"| {name} | {s:.2f} | {padded / s:.2f}× |" for name, s in medians.items()]
    lines += ["", f"Logits of {args.logit_rows} other sentences, batches of 64 by length, median of {args.rounds} "
              "interleaved rounds:", "", "| engine | rows/s |", "| --- | ---: |"]  # fmt: skip
    lines += [f"| {name} | {r:.1f} |" for name, r in rows_per_s.items()]
    lines += ["", f"A distill run's teacher with {args.labelled:,} labelled and {args.transfer:,} unlabelled sentences, "
              f"{args.epochs} epochs: {steps} steps × {medians[best_step]:.2f} s ({best_step}) + "
              f"{args.labelled + args.transfer:,} rows of logits at {rows_per_s[best_engine]:.1f} rows/s "
              f"({best_engine}) ≈ **{total / 60:.0f} min** (target ≤ 20: {'met' if total <= 1200 else 'not met'})."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mpnet-base")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="steps per setting and round, the first untimed")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--logit-rows", type=int, default=512)
    parser.add_argument("--labelled", type=int, default=1000)
    parser.add_argument("--transfer", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="teacher_cost")
    args = parser.parse_args()
    from landing.files import atomic_write
    from landing.infra.provenance import measured_run, provenance_markdown

    with measured_run(threads=args.threads) as info:
        result = measure(args)
    table = render(result, args, provenance_markdown(info))
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_write(RESULTS / f"{args.name}.json") as fh:
        json.dump({"provenance": info, "args": vars(args), **result}, fh, indent=2)
    with atomic_write(RESULTS / f"{args.name}.md") as fh:
        fh.write(table)
    print(table)


if __name__ == "__main__":
    main()
