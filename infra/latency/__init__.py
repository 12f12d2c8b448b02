"""Latency of exported models on pluggable targets: this host, SSH boards, Android phones."""

from landing.infra.latency.targets import (
    BENCH_SCRIPT,
    TARGETS,
    AdbTarget,
    HostTarget,
    LatencyReport,
    LatencyTarget,
    LatencyTargetError,
    SeqLenResult,
    SshTarget,
    TimingStats,
    make_target,
    parse_perf_test_output,
)

__all__ = [
    "BENCH_SCRIPT",
    "TARGETS",
    "AdbTarget",
    "HostTarget",
    "LatencyReport",
    "LatencyTarget",
    "LatencyTargetError",
    "SeqLenResult",
    "SshTarget",
    "TimingStats",
    "make_target",
    "parse_perf_test_output",
]
