"""Batch-1 latency of a PyTorch classifier: medians of warmed-up runs on real texts."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


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


@torch.inference_mode()
def fixed_length_latency_ms(
    model: PreTrainedModel, seq_lens: Sequence[int], *, runs: int = 200, warmup: int = 20, threads: int = 1
) -> dict[str, dict[str, float]]:
    """Batch-1 PyTorch forward time at exact sequence lengths (random in-vocabulary ids), per length."""
    model.eval()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    out = {}
    try:
        for seq in seq_lens:
            ids = torch.randint(1000, 2000, (1, seq), generator=generator)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            for _ in range(warmup):
                model(**batch)
            timings = []
            for _ in range(runs):
                start = time.perf_counter()
                model(**batch)
                timings.append((time.perf_counter() - start) * 1000)
            out[str(seq)] = {"p50_ms": float(np.median(timings)), "p90_ms": float(np.percentile(timings, 90)),
                             "p99_ms": float(np.percentile(timings, 99))}  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)
    return out
