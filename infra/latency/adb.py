"""An Android phone over adb as a latency target, timed with onnxruntime's C++ ``onnxruntime_perf_test``."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from landing.infra.latency.base import (
    LatencyReport,
    LatencyTarget,
    LatencyTargetError,
    PathLike,
    SeqLenResult,
    TimingStats,
    output_tail,
    run_command,
)
from landing.models.params import LatencyParams

_PERF_FLOAT = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_PERF_PATTERNS: dict[str, tuple[str, float]] = {
    # key: (regex, factor to the unit in the key)
    "mean_ms": (rf"Average inference time cost:\s*{_PERF_FLOAT}\s*ms", 1.0),
    "session_creation_s": (rf"Session creation time cost:\s*{_PERF_FLOAT}\s*s", 1.0),
    "first_inference_ms": (rf"First inference time cost:\s*{_PERF_FLOAT}\s*ms", 1.0),
    "runs": (r"(?:Total inference requests:\s*|^Runs:\s*)(\d+)", 1.0),
    "peak_working_set_bytes": (r"Peak working set size:\s*(\d+)", 1.0),
    "avg_cpu_percent": (rf"Avg CPU usage:\s*{_PERF_FLOAT}", 1.0),
    "min_ms": (rf"Min Latency(?::| is)\s*{_PERF_FLOAT}\s*s", 1000.0),
    "max_ms": (rf"Max Latency(?::| is)\s*{_PERF_FLOAT}\s*s", 1000.0),
    "p50_ms": (rf"P50 Latency(?::| is)\s*{_PERF_FLOAT}\s*s", 1000.0),
    "p90_ms": (rf"P90 Latency(?::| is)\s*{_PERF_FLOAT}\s*s", 1000.0),
    "p95_ms": (rf"P95 Latency(?::| is)\s*{_PERF_FLOAT}\s*s", 1000.0),
    "p99_ms": (rf"P99 Latency(?::| is)\s*{_PERF_FLOAT}\s*s", 1000.0),
    "p999_ms": (rf"P999 Latency(?::| is)\s*{_PERF_FLOAT}\s*s", 1000.0),
}
_PERF_INT_KEYS = {"runs", "peak_working_set_bytes"}


def parse_perf_test_output(text: str) -> dict[str, float | int]:
    """Numbers from ``onnxruntime_perf_test -s`` output; latencies (printed in seconds) become ms.

    Only keys found are returned; callers decide which are required.
    """
    out: dict[str, float | int] = {}
    for key, (pattern, factor) in _PERF_PATTERNS.items():
        m = re.search(pattern, text, flags=re.MULTILINE)
        if m:
            out[key] = int(m.group(1)) if key in _PERF_INT_KEYS else float(m.group(1)) * factor
    return out


class AdbTarget(LatencyTarget):
    """An Android device over adb, timed with onnxruntime's C++ ``onnxruntime_perf_test``.

    perf_test takes shapes from the model: ``-I`` generates inputs with free dimensions set
    to 1 unless overridden with ``-f name:value`` (by dim_param name). So a model exported
    with dynamic axes named ``batch_dim``/``seq_dim`` is timed at each seq_len through ``-f``;
    a fixed-shape export needs one model per seq_len: pass ``{seq_len: path}`` as model_path
    and ``seq_dim=None``. Generated int inputs are zeros (no ``-S`` seed: random ids could
    exceed the vocabulary). perf_test does exactly one warm-up run, so ``warmup`` is ignored;
    tokenisation is not timed (no end-to-end numbers).
    """

    PERF_TEST_NAME: ClassVar[str] = "onnxruntime_perf_test"

    def __init__(
        self,
        serial: str | None = None,
        *,
        perf_test_binary: PathLike,
        device_dir: str = "/data/local/tmp/landing",
        adb: str = "adb",
        batch_dim: str | None = "batch",
        seq_dim: str | None = "sequence",
        extra_files: Sequence[PathLike] = (),
        execution_provider: str = "cpu",
        timeout: float = 3600,
        name: str | None = None,
    ) -> None:
        self.serial = serial
        self.perf_test_binary = Path(perf_test_binary)
        self.device_dir = device_dir.rstrip("/")
        self.adb = adb
        self.batch_dim, self.seq_dim = batch_dim, seq_dim
        self.extra_files = [Path(p) for p in extra_files]  # e.g. libonnxruntime.so for a shared build
        self.execution_provider = execution_provider
        self.timeout = timeout
        self.name = name or f"adb:{serial or 'default-device'}"

    def _adb(self, *args: str) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def _models(
        self, model_path: PathLike | Mapping[int, PathLike], seq_lens: Sequence[int]
    ) -> dict[int, tuple[Path, str]]:
        """seq_len -> (local model, device file name)."""
        if isinstance(model_path, Mapping):
            missing = [s for s in seq_lens if s not in model_path]
            if missing:
                raise LatencyTargetError(self.name, f"no model given for seq_len {missing}; have {sorted(model_path)}")
            return {s: (Path(model_path[s]), f"model_s{s}{Path(model_path[s]).suffix}") for s in seq_lens}
        if self.seq_dim is None and len(seq_lens) > 1:
            raise LatencyTargetError(
                self.name, "seq_dim=None means a fixed-shape model; pass {seq_len: path} to time several seq_lens"
            )
        path = Path(model_path)
        return {s: (path, f"model{path.suffix}") for s in seq_lens}

    def _setup_commands(self, models: Mapping[int, tuple[Path, str]]) -> list[list[str]]:
        d = self.device_dir
        cmds = [self._adb("shell", f"mkdir -p {shlex.quote(d)}"),
                self._adb("push", str(self.perf_test_binary), f"{d}/{self.PERF_TEST_NAME}"),
                self._adb("shell", f"chmod 755 {shlex.quote(f'{d}/{self.PERF_TEST_NAME}')}")]
        cmds += [self._adb("push", str(p), f"{d}/{p.name}") for p in self.extra_files]
        for remote_name, local in {name: local for local, name in models.values()}.items():
            cmds.append(self._adb("push", str(local), f"{d}/{remote_name}"))
        return cmds

    def _perf_command(self, device_model: str, seq_len: int, *, threads: int, runs: int, batch: int) -> list[str]:
        argv = [f"./{self.PERF_TEST_NAME}", "-e", self.execution_provider, "-m", "times", "-r", str(runs),
                "-x", str(threads), "-y", "1", "-I", "-s"]
        if self.batch_dim:
            argv += ["-f", f"{self.batch_dim}:{batch}"]
        if self.seq_dim:
            argv += ["-f", f"{self.seq_dim}:{seq_len}"]
        argv.append(device_model)
        d = shlex.quote(self.device_dir)
        return self._adb("shell", f"cd {d} && LD_LIBRARY_PATH={d} {shlex.join(argv)}")

    def build_commands(
        self,
        model_path: PathLike | Mapping[int, PathLike],
        params: LatencyParams | None = None,
    ) -> list[list[str]]:
        """Every adb argv ``measure`` runs, in order: setup, ``uname -m``, then one perf_test per seq_len."""
        params = params or LatencyParams()
        models = self._models(model_path, params.seq_lens)
        return [
            *self._setup_commands(models),
            self._adb("shell", "uname -m"),
            *(self._perf_command(models[s][1], s, threads=params.threads, runs=params.runs, batch=params.batch)
              for s in params.seq_lens),
        ]  # fmt: skip

    def _call(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        proc = run_command(self.name, argv, self.timeout)
        if proc.returncode != 0:
            output = output_tail(proc.stderr + "\n" + proc.stdout)
            if re.search(r"no devices|device .* not found|device offline|unauthorized", output):
                raise LatencyTargetError(self.name, f"no usable Android device ({shlex.join(argv[:4])}): {output}")
            raise LatencyTargetError(self.name, f"`{shlex.join(argv)}` exited with {proc.returncode}: {output}")
        return proc

    def measure(
        self,
        model_path: PathLike | Mapping[int, PathLike],
        params: LatencyParams | None = None,
        *,
        tokenizer_json: PathLike | None = None,
        texts: Sequence[str] | None = None,
    ) -> LatencyReport:
        params = params or LatencyParams()
        seq_lens, threads, runs, batch = params.seq_lens, params.threads, params.runs, params.batch
        self._existing(self.perf_test_binary, "onnxruntime_perf_test binary")
        models = self._models(model_path, seq_lens)
        for local, _ in models.values():
            self._existing(local, "model file")
        for extra in self.extra_files:
            self._existing(extra, "extra file")

        commands = self.build_commands(model_path, params)
        n_setup = len(commands) - len(seq_lens) - 1
        for argv in commands[:n_setup]:
            self._call(argv)
        machine = self._call(commands[n_setup]).stdout.strip() or None

        results: dict[int, SeqLenResult] = {}
        raw: dict[str, dict[str, float | int]] = {}
        for seq_len, argv in zip(seq_lens, commands[n_setup + 1 :], strict=True):
            proc = self._call(argv)
            parsed = parse_perf_test_output(proc.stdout)
            needed = {"p50_ms", "p90_ms", "p99_ms", "mean_ms"} - parsed.keys()
            if needed:
                raise LatencyTargetError(
                    self.name,
                    f"onnxruntime_perf_test output at seq_len {seq_len} lacks {sorted(needed)}: {output_tail(proc.stdout)}",
                )
            raw[str(seq_len)] = parsed
            stats = TimingStats(
                p50_ms=float(parsed["p50_ms"]), p90_ms=float(parsed["p90_ms"]), p99_ms=float(parsed["p99_ms"]),
                mean_ms=float(parsed["mean_ms"]), runs=int(parsed.get("runs", runs)),
            )
            results[seq_len] = SeqLenResult(stats, None, "onnxruntime_perf_test times the model only")
        peaks = [int(p["peak_working_set_bytes"]) for p in raw.values() if "peak_working_set_bytes" in p]
        return LatencyReport(
            target_name=self.name,
            target=self.name,
            onnxruntime=None,  # perf_test does not print its version
            python=None,
            machine=machine,
            threads=threads,
            model_bytes=models[seq_lens[0]][0].stat().st_size,
            results=results,
            peak_rss_bytes=max(peaks) if peaks else None,
            batch=batch,
            extra={"perf_test": raw},
        )
