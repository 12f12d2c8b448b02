"""The latency targets by the name a run config's ``latency.targets[].kind`` uses; one module per target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from landing.infra.latency.adb import AdbTarget, parse_perf_test_output
from landing.infra.latency.base import (
    BENCH_SCRIPT,
    LatencyReport,
    LatencyTarget,
    LatencyTargetError,
    SeqLenResult,
    TimingStats,
)
from landing.infra.latency.host import HostTarget
from landing.infra.latency.ssh import SshTarget

__all__ = ["BENCH_SCRIPT", "TARGETS", "AdbTarget", "HostTarget", "LatencyReport", "LatencyTarget",
           "LatencyTargetError", "SeqLenResult", "SshTarget", "TimingStats", "make_target",
           "parse_perf_test_output"]  # fmt: skip

TARGETS: dict[str, type[LatencyTarget]] = {"host": HostTarget, "ssh": SshTarget, "adb": AdbTarget}


def make_target(spec: Mapping[str, Any]) -> LatencyTarget:
    """Build a target from config, e.g. ``{"kind": "ssh", "host": "pi.local", "user": "pi"}``."""
    params = dict(spec)
    kind = params.pop("kind", None)
    if kind not in TARGETS:
        raise ValueError(f"latency target kind: unknown {kind!r}; expected one of {sorted(TARGETS)}")
    try:
        return TARGETS[kind](**params)
    except TypeError as exc:
        raise ValueError(f"latency target {kind!r}: bad parameters {sorted(params)}: {exc}") from exc
