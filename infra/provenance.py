"""Where a number came from: git commit, package versions, CPU, ISA flags, thread settings, load, date.

Every benchmark result and every compression report carries this, because onnxruntime's INT8
kernels (and so accuracy and latency) differ by instruction set, and timings by machine and load.
A benchmark takes it per seed (``measured_run``), when the seed runs, not when its table is rendered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from landing.models.cpu import cpu_flags, native_bf16

PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "prefect", "mlflow", "numpy", "tokenizers")
# The x86 flags that pick onnxruntime's INT8 (u8s8) GEMM kernels: VNNI computes exact int32 dot
# products; AVX2 without VNNI sums pairs into int16 with saturation (vpmaddubsw).
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ORT_NUM_THREADS")
ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_dot_product_exact(flags: frozenset[str] | None = None) -> bool:
    """Whether onnxruntime's u8s8 INT8 GEMM accumulates exactly on this CPU.

    x86 without VNNI (AVX2 only, or AVX-512 without VNNI) uses ``vpmaddubsw``, whose int16 pair
    sums saturate unless weights use 7 bits (onnxruntime's ``reduce_range``). ARM with dot-product
    instructions and x86 with (AVX-)VNNI or AMX accumulate in int32.
    """
    flags = cpu_flags() if flags is None else flags
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


# A benchmark's own result files are its output, not what it ran: a seed written into the tree must not
# make the next seed of the same run "dirty".
RESULTS_PATHSPEC = ("--", ".", ":(exclude)benchmarks/results")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *RESULTS_PATHSPEC],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def git_diff_sha256() -> str | None:
    """sha256 of ``git diff HEAD`` (tracked files, results excluded): what a dirty tree ran, beyond its commit; None when clean."""
    try:
        diff = subprocess.run(["git", "diff", "HEAD", "--binary", *RESULTS_PATHSPEC], cwd=ROOT, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return hashlib.sha256(diff.stdout).hexdigest() if diff.returncode == 0 and diff.stdout else None


def load_average_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not on every platform
        return None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(threads: int | None = None) -> dict:
    """Everything a benchmark table must say about where it was measured."""
    flags = cpu_flags()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "int8_isa_flags": sorted(flags & set(INT8_FLAGS)),
        "int8_dot_product_exact": int8_dot_product_exact(flags),
        "native_bf16": native_bf16(flags),  # training.bf16: auto autocasts only then
        "threads": threads,
        "thread_env": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "git_diff_sha256": git_diff_sha256(),
        "cpu_flags": sorted(flags),
        "load_average_1m": load_average_1m(),
    }


@contextmanager
def measured_run(threads: int | None = None) -> Iterator[dict]:
    """Provenance of one measured unit (a seed, a run), taken as it starts; the 1-minute load average at its
    start and end and its finish time are added when it ends, so a table can say how busy the machine was."""
    info = provenance(threads) | {"load_average_1m_start": load_average_1m()}
    del info["load_average_1m"]
    yield info
    info |= {"load_average_1m_end": load_average_1m(),
             "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip


def seed_provenance_markdown(runs: list[dict]) -> str:
    """One row per seed from the provenance each seed's JSON recorded itself ("not recorded" for older ones)."""
    lines = ["| seed | git commit | CPU | threads | load 1 min (start → end) | finished |", "| --- | --- | --- | ---: | --- | --- |"]
    for run in runs:
        info = run.get("provenance")
        if not info:
            lines.append(f"| {run.get('seed', '?')} | not recorded (ran before per-seed provenance) | | | | |")
            continue
        commit = info["git_commit"] + (f" (diff sha256 {info['git_diff_sha256'][:12]})" if info.get("git_diff_sha256") else "")
        lines.append(f"| {run.get('seed', '?')} | `{commit}` | {info['cpu']}, {info['cores']} cores | {info['threads']} | "
                     f"{info.get('load_average_1m_start')} → {info.get('load_average_1m_end')} | {info.get('finished', '')} |")
    return "\n".join(lines)


def _load_text(info: dict) -> str:
    if "load_average_1m_start" in info:
        return f"{info['load_average_1m_start']} at the start, {info.get('load_average_1m_end')} at the end"
    return str(info.get("load_average_1m", "not recorded"))


def provenance_markdown(info: dict) -> str:
    """A short block for the top of a results file."""
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    return "\n".join([
        f"- date: {info['date']}; git commit: `{info['git_commit']}`"
        + (f" (uncommitted diff sha256 `{info['git_diff_sha256']}`)" if info.get("git_diff_sha256") else ""),
        f"- CPU: {info['cpu']} ({info['machine']}, {info['cores']} cores); INT8-relevant flags: "
        f"{', '.join(info['int8_isa_flags']) or 'none'}; exact INT8 dot products: {info['int8_dot_product_exact']}"
        f"; native bf16: {info.get('native_bf16', 'not recorded')}",
        f"- threads: {info['threads']}; thread variables: {info['thread_env'] or 'none set'}; 1-minute load average: "
        f"{_load_text(info)}",
        f"- Python {info['python']}; {packages}",
    ])  # fmt: skip
