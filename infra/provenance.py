"""Where a number came from: git commit, package versions, CPU, ISA flags, thread settings, date.

Every benchmark result and every compression report carries this, because onnxruntime's INT8
kernels (and so accuracy and latency) differ by instruction set, and timings by machine.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "prefect", "mlflow", "numpy", "tokenizers")
# The x86 flags that pick onnxruntime's INT8 (u8s8) GEMM kernels: VNNI computes exact int32 dot
# products; AVX2 without VNNI sums pairs into int16 with saturation (vpmaddubsw).
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ORT_NUM_THREADS")
ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 ``flags``, ARM ``Features``); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


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


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


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
        "threads": threads,
        "thread_env": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
    }


def provenance_markdown(info: dict) -> str:
    """A short block for the top of a results file."""
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    return "\n".join([
        f"- date: {info['date']}; git commit: `{info['git_commit']}`",
        f"- CPU: {info['cpu']} ({info['machine']}, {info['cores']} cores); INT8-relevant flags: "
        f"{', '.join(info['int8_isa_flags']) or 'none'}; exact INT8 dot products: {info['int8_dot_product_exact']}",
        f"- threads: {info['threads']}; thread variables: {info['thread_env'] or 'none set'}",
        f"- Python {info['python']}; {packages}",
    ])  # fmt: skip
