"""What this CPU can do, read from /proc/cpuinfo: the instruction sets that change numbers and speed.

onnxruntime's INT8 kernels and torch's bf16 speed depend on them, so code detects them here instead of
assuming one machine's behaviour, and benchmarks record them (infra/provenance.py).
"""

from __future__ import annotations

import functools
from pathlib import Path

# Native bf16 arithmetic (dot products, matrix tiles); without them torch emulates bf16, slower than FP32.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


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


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether bf16 autocast pays off on this CPU (AVX-512 BF16 or AMX)."""
    return bool((cpu_flags() if flags is None else flags) & BF16_FLAGS)
