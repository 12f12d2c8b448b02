"""Batch-1 latency of a PyTorch classifier: medians of warmed-up runs on real texts."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from landing.models.params import LatencyParams


@torch.inference_mode()
def batch1_latency_ms(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int = 128,
    runs: int = 50,
    warmup: int = 5,
    threads: int = 1,
) -> dict[str, float]:
    """Model-only forward time per single text (tokenisation excluded), p50 and p90 in ms."""
    if not texts:
        raise ValueError("latency needs at least one text")
    model.eval()
    batches = [
        tokenizer(texts[i % len(texts)], truncation=True, max_length=max_length, return_tensors="pt")
        for i in range(warmup + runs)
    ]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for batch in batches[:warmup]:
            model(**batch)
        timings = []
        for batch in batches[warmup:]:
            start = time.perf_counter()
            model(**batch)
            timings.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous_threads)
    return {"p50_ms": float(np.median(timings)), "p90_ms": float(np.percentile(timings, 90)), "runs": runs}


def fixed_length_inputs(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seq_len: int) -> dict:
    """Exactly ``seq_len`` real tokens: the texts joined (repeated while too short), tokenised, truncated.

    The rule of ``infra/latency/bench_onnx.py``'s model-only inputs, so a PyTorch row and the
    ONNX rows of one table time the same tokens.
    """
    reps = 1
    while True:  # each non-empty text gives a token, so seq_len repeats always suffice
        batch = tokenizer(" ".join(list(texts) * reps), truncation=True, max_length=seq_len, return_tensors="pt")
        if batch["input_ids"].shape[1] == seq_len:
            return dict(batch)
        if reps >= seq_len:
            break
        reps *= 2
    raise ValueError(f"no text to fill {seq_len} tokens with: {list(texts)[:3]!r}")


@torch.inference_mode()
def fixed_length_latency_ms(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    params: LatencyParams,
) -> dict[str, dict[str, float]]:
    """PyTorch forward time at exact sequence lengths, on real text (``fixed_length_inputs``), ``params.batch``
    copies of the row a run, as the ONNX targets time them."""
    model.eval()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(params.threads)
    out = {}
    try:
        for seq in params.seq_lens:
            batch = {k: v.repeat(params.batch, 1) for k, v in fixed_length_inputs(tokenizer, texts, seq).items()}
            for _ in range(params.warmup):
                model(**batch)
            timings = []
            for _ in range(params.runs):
                start = time.perf_counter()
                model(**batch)
                timings.append((time.perf_counter() - start) * 1000)
            out[str(seq)] = {"p50_ms": float(np.median(timings)), "p90_ms": float(np.percentile(timings, 90)),
                             "p99_ms": float(np.percentile(timings, 99))}  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)
    return out


def fixed_length_latency_in_fresh_process(
    model_dir: Path, texts: Sequence[str], params: LatencyParams
) -> dict[str, dict[str, float]]:
    """``fixed_length_latency_ms`` in a new Python process, as the ONNX rows are timed.

    In-process timing would inherit the caller's threads, allocator state and warm caches,
    which the ONNX rows (each a fresh process) do not get.
    """
    with tempfile.TemporaryDirectory(prefix="landing-latency-") as tmp:
        texts_file = Path(tmp, "texts.txt")
        texts_file.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
        argv = [sys.executable, "-m", "landing.models.latency", "--model-dir", str(model_dir), "--texts-file", str(texts_file),
                "--params", params.model_dump_json(include=set(LatencyParams.model_fields))]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"PyTorch latency of {model_dir} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    from landing.models.loading import load_classifier

    parser = argparse.ArgumentParser(description="Batch-1 PyTorch latency at fixed lengths; one JSON line on stdout.")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--texts-file", required=True)
    parser.add_argument("--params", required=True, help="LatencyParams as JSON")
    args = parser.parse_args(argv)
    model, tokenizer = load_classifier(args.model_dir)
    texts = [line for line in Path(args.texts_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    result = fixed_length_latency_ms(model, tokenizer, texts, LatencyParams.model_validate_json(args.params))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
