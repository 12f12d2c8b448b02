"""The joint intent + slot model on disk and in ONNX: saved as safetensors (encoder folder + heads), exported with
both heads as outputs, checked for parity on both, and served without torch by ``models/slu_predictor.py``, which
returns the intent, its probability and the slot spans with character offsets into the input."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from landing.files import atomic_path, write_bytes_atomic

from .onnx_export import ParityError, copy_tokenizer
from .onnx_predictor import make_session, write_bundle_meta
from .slu import JointIntentSlotModel
from .slu_predictor import OUTPUTS

SLU_META = "slu.json"
HEADS_FILE = "slu_heads.safetensors"
INPUTS = ("input_ids", "attention_mask")


def save_joint(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase, tags: Sequence[str],
               intents: Sequence[str], out_dir: Path) -> Path:  # fmt: skip
    """The encoder (save_pretrained, with the tokenizer), the heads as safetensors beside it and ``slu.json``:
    one folder whose ``*.safetensors`` are the whole model (``weights_sha256``, its identity)."""
    out_dir = Path(out_dir)
    model.encoder.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    heads = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    with atomic_path(out_dir / HEADS_FILE) as tmp:
        save_file(heads, str(tmp))
    meta = {"tags": list(tags), "intents": list(intents), "slot_loss_weight": model.slot_loss_weight}
    write_bytes_atomic(out_dir / SLU_META, (json.dumps(meta, indent=2) + "\n").encode())
    return out_dir


def load_joint(model_dir: Path, attn_implementation: str | None = None) -> tuple[JointIntentSlotModel, PreTrainedTokenizerBase, dict]:
    """(model, tokenizer, meta) of a folder ``save_joint`` wrote; weights through safetensors only."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / SLU_META).read_text(encoding="utf-8"))
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    encoder = AutoModel.from_pretrained(model_dir, use_safetensors=True, **kwargs)
    model = JointIntentSlotModel(encoder, len(meta["intents"]), len(meta["tags"]), meta["slot_loss_weight"])
    model.load_state_dict(load_file(str(model_dir / HEADS_FILE)), strict=False)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir), meta


class _BothHeads(nn.Module):
    def __init__(self, model: JointIntentSlotModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids, attention_mask)
        return out.intent_logits, out.slot_logits


def export_joint_onnx(model_dir: Path, out_path: Path, *, max_length: int = 64, opset: int = 17,
                      check_texts: Sequence[str] = ()) -> Path:  # fmt: skip
    """``out_path`` with both heads as outputs (dynamic batch and sequence), the tokenizer and bundle metadata
    beside it; with ``check_texts``, the parity of both heads against PyTorch (ParityError past 1e-4)."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer, meta = load_joint(model_dir, attn_implementation="eager")  # plain MatMul/Softmax for ORT
    example = tokenizer([["fly", "to", "boston"], ["what", "is", "the", "weather", "in", "new", "york"]],
                        is_split_into_words=True, padding=True, return_tensors="pt")  # fmt: skip
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUTS, "slot_logits")} | {"intent_logits": {0: "batch"}}
    with atomic_path(out_path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(_BothHeads(model).eval(), tuple(example[n] for n in INPUTS), str(tmp), input_names=list(INPUTS),
                          output_names=list(OUTPUTS), dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
                          dynamo=False)  # fmt: skip
    copy_tokenizer(tokenizer, out_path.parent)
    write_bundle_meta(out_path.parent, {
        "format": "landing-onnx-slu/1", "task": "slu", "onnx": out_path.name, "precision": "fp32",
        "tags": meta["tags"], "intents": meta["intents"], "max_length": max_length, "input_names": list(INPUTS),
        "output_names": list(OUTPUTS), "opset": opset, "pad_token_id": tokenizer.pad_token_id,
        "variants": {out_path.name: {"precision": "fp32"}}})  # fmt: skip
    if check_texts:
        check_joint_parity(model, tokenizer, out_path, check_texts, max_length=max_length)
    return out_path


@torch.no_grad()
def check_joint_parity(model: JointIntentSlotModel, tokenizer: PreTrainedTokenizerBase, onnx_path: Path,
                       texts: Sequence[str], *, max_length: int, atol: float = 1e-4) -> dict:  # fmt: skip
    """PyTorch vs onnxruntime on the same padded batch, both heads; the larger |Δ| of the two past ``atol`` fails."""
    enc = tokenizer([t.split() for t in texts], is_split_into_words=True, padding=True, truncation=True,
                    max_length=max_length, return_tensors="pt")  # fmt: skip
    model.eval()  # the export's wrapper, restoring its own mode, may have left the model training
    torch_out = model(enc["input_ids"], enc["attention_mask"])
    ort_out = make_session(onnx_path).run(list(OUTPUTS), {n: enc[n].numpy() for n in INPUTS})
    diffs = {name: float(np.abs(ref.numpy() - got).max()) for name, ref, got in
             zip(OUTPUTS, (torch_out.intent_logits, torch_out.slot_logits), ort_out, strict=True)}  # fmt: skip
    if max(diffs.values()) > atol:
        raise ParityError(f"{onnx_path.name}: max |Δ| intent {diffs['intent_logits']:.3g}, slots "
                          f"{diffs['slot_logits']:.3g} vs PyTorch exceeds atol {atol:g}")  # fmt: skip
    return {"max_abs_diff": diffs, "rows": len(texts)}
