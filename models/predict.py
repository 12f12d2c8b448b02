"""Batched inference: logits for a whole table, in the table's row order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.inference_mode()
def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    text_pairs: Sequence[str] | None = None,
    batch_size: int = 128,
    max_length: int = 128,
    desc: str = "predict",
    bf16: bool = False,
) -> np.ndarray:
    """Logits of shape [len(texts), num_labels], as float32.

    Rows are batched by length (less padding, several times faster on short
    sentences) and put back in input order before returning. ``bf16``: under bf16 autocast (fast only
    where the CPU has native bf16; the caller decides).
    """
    model.eval()
    order = np.argsort([len(t) + (len(text_pairs[i]) if text_pairs else 0) for i, t in enumerate(texts)])
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start : start + batch_size]
        args = [[texts[i] for i in idx]]
        if text_pairs is not None:
            args.append([text_pairs[i] for i in idx])
        batch = tokenizer(*args, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out[idx] = model(**batch).logits.float().numpy()
    return out
