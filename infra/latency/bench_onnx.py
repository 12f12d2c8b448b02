#!/usr/bin/env python3
"""Time one ONNX / ORT-format model with onnxruntime and print ONE JSON object on stdout.

Self-contained on purpose (stdlib + numpy + onnxruntime, optionally ``tokenizers``): it is
copied to remote boards and run with *their* Python, where the project is not installed.
Errors are printed as ``{"error": ..., "missing": ...?}`` with exit code 2 so callers can
tell a broken target from a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time

EXIT_ERROR = 2
SAMPLE_TEXTS = (
    "The film is a charming, funny and moving portrait of a family.",
    "An overlong, tedious mess that never finds its footing.",
    "Service was quick and the food arrived hot.",
    "I would not recommend this hotel to anyone travelling with children.",
)


class BenchError(Exception):
    """A failure to report as JSON; ``missing`` names a package the target lacks."""

    def __init__(self, message: str, missing: str | None = None) -> None:
        super().__init__(message)
        self.missing = missing


def _fail(err: BenchError) -> int:
    payload: dict = {"error": str(err)}
    if err.missing:
        payload["missing"] = err.missing
    print(json.dumps(payload))
    return EXIT_ERROR


def _import_runtime():  # noqa: ANN202 - returns modules
    """onnxruntime first: its absence (or numpy's, which it needs) is the common board problem."""
    try:
        import onnxruntime as ort
    except Exception as exc:  # ImportError, or a broken wheel raising something else
        raise BenchError(
            f"{sys.executable} cannot import onnxruntime ({type(exc).__name__}: {exc}); "
            "run `pip install onnxruntime` for this Python",
            missing="onnxruntime",
        ) from exc
    try:
        import numpy as np
    except ImportError as exc:
        raise BenchError(f"{sys.executable} cannot import numpy ({exc}); run `pip install numpy`", "numpy") from exc
    return ort, np


def _stats(np, timings_ms: list[float]) -> dict:  # noqa: ANN001
    arr = np.asarray(timings_ms, dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(arr, [50, 90, 99]))
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": float(arr.mean()), "runs": int(arr.size)}


def _feeds(np, session, batch: int, seq_len: int, rng, id_range: tuple[int, int]) -> dict:  # noqa: ANN001
    """Random-but-valid inputs for the model's declared BERT-style inputs."""
    feeds, (low, high) = {}, id_range
    for inp in session.get_inputs():
        if inp.type != "tensor(int64)":
            raise BenchError(f"input {inp.name!r} has type {inp.type}; only int64 token inputs are supported")
        shape = (batch, seq_len)
        if "mask" in inp.name:
            feeds[inp.name] = np.ones(shape, dtype=np.int64)
        elif "type" in inp.name or "segment" in inp.name:
            feeds[inp.name] = np.zeros(shape, dtype=np.int64)
        elif "position" in inp.name:
            feeds[inp.name] = np.tile(np.arange(seq_len, dtype=np.int64), (batch, 1))
        else:
            feeds[inp.name] = rng.integers(low, high, size=shape, dtype=np.int64)
    return feeds


def _text_feeds(np, session, tokenizer_json: str, texts: list[str], batch: int, seq_len: int) -> dict | None:  # noqa: ANN001
    """Exactly ``seq_len`` real tokens per row: the sample texts joined (repeated while too short), truncated.

    Every model of a comparison gets the same text at the same length (each through its own
    tokenizer; ``models/latency.py`` applies the same rule to PyTorch rows), so rows differ by
    the model alone. None when there is no text to fill the length with.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_json)
    tok.no_padding()
    tok.enable_truncation(max_length=seq_len)
    reps = 1
    while True:  # each non-empty text gives a token, so seq_len repeats always suffice
        enc = tok.encode(" ".join(list(texts) * reps))
        if len(enc.ids) == seq_len:
            break
        if reps >= seq_len:
            return None
        reps *= 2
    feeds = {}
    for inp in session.get_inputs():
        name = inp.name
        row = enc.attention_mask if "mask" in name else enc.type_ids if "type" in name or "segment" in name else (
            list(range(seq_len)) if "position" in name else enc.ids
        )
        feeds[name] = np.asarray([row] * batch, dtype=np.int64)
    return feeds


def _token_id_range(tokenizer_json: str | None) -> tuple[int, int]:
    """Ids for random inputs: ordinary word pieces, inside a (possibly pruned) vocabulary."""
    high = 2000
    if tokenizer_json:
        try:
            with open(tokenizer_json, encoding="utf-8") as fh:
                # max id, not the entry count: a pruned vocabulary may map dropped tokens onto kept ids
                high = min(high, max(json.load(fh)["model"]["vocab"].values()) + 1)
        except (OSError, KeyError, TypeError, ValueError):
            pass
    return min(1000, high // 2), high


def _time_model_only(np, session, feeds: dict, warmup: int, runs: int) -> dict:  # noqa: ANN001
    for _ in range(warmup):
        session.run(None, feeds)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        timings.append((time.perf_counter() - start) * 1000.0)
    return _stats(np, timings)


def _load_tokenizer(path: str, seq_len: int):  # noqa: ANN202
    """A fast tokenizer truncating *and padding* to ``seq_len``, so shapes match model-only runs."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    pad = tok.padding or {}
    pad_token = pad.get("pad_token", "[PAD]")
    pad_id = pad.get("pad_id", tok.token_to_id(pad_token) or 0)
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=pad_id, pad_token=pad_token)
    return tok


def _time_end_to_end(np, session, tok, texts: list[str], batch: int, warmup: int, runs: int) -> dict:  # noqa: ANN001
    names = [i.name for i in session.get_inputs()]

    def once(i: int) -> None:
        chunk = [texts[(i * batch + j) % len(texts)] for j in range(batch)]
        encs = tok.encode_batch(chunk)
        feeds = {}
        for name in names:
            if "mask" in name:
                rows = [e.attention_mask for e in encs]
            elif "type" in name or "segment" in name:
                rows = [e.type_ids for e in encs]
            else:
                rows = [e.ids for e in encs]
            feeds[name] = np.asarray(rows, dtype=np.int64)
        session.run(None, feeds)

    for i in range(warmup):
        once(i)
    timings = []
    for i in range(runs):
        start = time.perf_counter()
        once(i)
        timings.append((time.perf_counter() - start) * 1000.0)
    return _stats(np, timings)


def _peak_rss_bytes() -> int | None:
    # Linux: VmHWM belongs to this process's own address space. ru_maxrss is carried over
    # execve from the parent that forked us, so a big parent would inflate it.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model.onnx or model.ort")
    p.add_argument("--seq-lens", default="16,32", help="comma-separated sequence lengths")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="intra_op_num_threads")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--tokenizer-json", default=None, help="tokenizer.json for end-to-end timing")
    p.add_argument("--texts-file", default=None, help="UTF-8 sample texts, one per line")
    p.add_argument("--target", default=None, help="name to report; default: this host's name")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    try:
        seq_lens = [int(s) for s in args.seq_lens.split(",") if s.strip()]
    except ValueError as exc:
        raise BenchError(f"--seq-lens must be comma-separated integers, got {args.seq_lens!r}") from exc
    if not seq_lens or min(seq_lens) <= 0 or args.runs <= 0 or args.batch <= 0 or args.warmup < 0:
        raise BenchError("need at least one positive sequence length, runs > 0, batch > 0 and warmup >= 0")
    if not os.path.isfile(args.model):
        raise BenchError(f"model file not found: {args.model}")
    ort, np = _import_runtime()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(args.model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BenchError(f"cannot load model {args.model}: {type(exc).__name__}: {exc}") from exc

    e2e_reason = None
    texts = list(SAMPLE_TEXTS)
    if args.tokenizer_json is None:
        e2e_reason = "no --tokenizer-json given"
    else:
        try:
            import tokenizers  # noqa: F401
        except ImportError:
            e2e_reason = f"the `tokenizers` package is not importable by {sys.executable}"
        if args.texts_file:
            with open(args.texts_file, encoding="utf-8") as fh:
                texts = [line.rstrip("\n") for line in fh if line.strip()] or texts

    rng = np.random.default_rng(0)
    results: dict[str, dict] = {}
    for seq_len in seq_lens:
        feeds = _text_feeds(np, session, args.tokenizer_json, texts, args.batch, seq_len) if e2e_reason is None else None
        inputs = "text" if feeds is not None else "random ids"
        if feeds is None:
            feeds = _feeds(np, session, args.batch, seq_len, rng, _token_id_range(args.tokenizer_json))
        try:
            model_only = _time_model_only(np, session, feeds, args.warmup, args.runs)
        except Exception as exc:
            raise BenchError(f"inference failed at seq_len {seq_len}: {type(exc).__name__}: {exc}") from exc
        entry: dict = {"model_only": model_only, "model_only_inputs": inputs, "end_to_end": None}
        if e2e_reason is None:
            tok = _load_tokenizer(args.tokenizer_json, seq_len)
            entry["end_to_end"] = _time_end_to_end(np, session, tok, texts, args.batch, args.warmup, args.runs)
        else:
            entry["end_to_end_reason"] = e2e_reason
        results[str(seq_len)] = entry

    return {
        "target": args.target or socket.gethostname(),
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": args.threads,
        "batch": args.batch,
        "model_bytes": os.path.getsize(args.model),
        "results": results,
        "peak_rss_bytes": _peak_rss_bytes(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except BenchError as err:
        return _fail(err)
    except Exception as exc:  # anything else still ends as one JSON line
        return _fail(BenchError(f"{type(exc).__name__}: {exc}"))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
