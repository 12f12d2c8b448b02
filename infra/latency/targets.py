"""Pluggable latency targets: this host, a board over SSH, an Android phone over adb.

Every target returns the same ``LatencyReport`` so results from a laptop, a Raspberry Pi
and a phone can be compared in one table. Host and SSH targets run ``bench_onnx.py`` (a
self-contained script) with the target's own Python; the adb target runs onnxruntime's
C++ ``onnxruntime_perf_test`` because phones have no Python.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

BENCH_SCRIPT = Path(__file__).with_name("bench_onnx.py")
PathLike = str | Path


class LatencyTargetError(RuntimeError):
    """Any target failure; the message starts with the target so multi-target runs stay readable."""

    def __init__(self, target: str, cause: str) -> None:
        super().__init__(f"latency target {target}: {cause}")
        self.target = target
        self.cause = cause


@dataclass(frozen=True)
class TimingStats:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    runs: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TimingStats:
        return cls(**{k: data[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "runs")})


@dataclass(frozen=True)
class SeqLenResult:
    model_only: TimingStats
    end_to_end: TimingStats | None = None
    end_to_end_reason: str | None = None  # why end_to_end is missing
    model_only_inputs: str = "random ids"  # or "text": the sample texts tokenised to exactly seq_len


@dataclass
class LatencyReport:
    """One target's measurement of one model; mirrors bench_onnx.py's JSON plus ``target_name``."""

    target_name: str
    target: str
    onnxruntime: str | None
    python: str | None
    machine: str | None
    threads: int
    model_bytes: int
    results: dict[int, SeqLenResult]
    peak_rss_bytes: int | None
    batch: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # target-specific raw numbers

    def p50(self, seq_len: int, *, end_to_end: bool = False) -> float:
        if seq_len not in self.results:
            raise KeyError(f"{self.target_name}: no result for seq_len {seq_len}; have {sorted(self.results)}")
        res = self.results[seq_len]
        stats = res.end_to_end if end_to_end else res.model_only
        if stats is None:
            raise KeyError(f"{self.target_name}: no end-to-end result at seq_len {seq_len}: {res.end_to_end_reason}")
        return stats.p50_ms

    @classmethod
    def from_json(cls, data: Mapping[str, Any], target_name: str) -> LatencyReport:
        results = {
            int(seq): SeqLenResult(
                model_only=TimingStats.from_json(r["model_only"]),
                end_to_end=TimingStats.from_json(r["end_to_end"]) if r.get("end_to_end") else None,
                end_to_end_reason=r.get("end_to_end_reason"),
                model_only_inputs=r.get("model_only_inputs", "random ids"),
            )
            for seq, r in data["results"].items()
        }
        return cls(
            target_name=target_name,
            target=data["target"],
            onnxruntime=data.get("onnxruntime"),
            python=data.get("python"),
            machine=data.get("machine"),
            threads=int(data["threads"]),
            model_bytes=int(data["model_bytes"]),
            results=results,
            peak_rss_bytes=data.get("peak_rss_bytes"),
            batch=int(data.get("batch", 1)),
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["results"] = {str(k): v for k, v in out["results"].items()}
        return out


class LatencyTarget(ABC):
    """Somewhere a model can be timed. ``name`` identifies it in reports and errors."""

    name: str

    @abstractmethod
    def measure(
        self,
        model_path: PathLike,
        *,
        seq_lens: Sequence[int] = (16, 32),
        threads: int = 1,
        warmup: int = 20,
        runs: int = 200,
        tokenizer_json: PathLike | None = None,
        texts: Sequence[str] | None = None,
        batch: int = 1,
    ) -> LatencyReport: ...

    def _existing(self, path: PathLike, what: str) -> Path:
        p = Path(path)
        if not p.is_file():
            raise LatencyTargetError(self.name, f"{what} not found: {p}")
        return p


# --------------------------------------------------------------------------- bench_onnx.py runners


def _bench_args(
    model: str,
    *,
    seq_lens: Sequence[int],
    batch: int,
    threads: int,
    warmup: int,
    runs: int,
    tokenizer_json: str | None,
    texts_file: str | None,
    target: str,
) -> list[str]:
    args = ["--model", model, "--seq-lens", ",".join(str(s) for s in seq_lens), "--batch", str(batch),
            "--threads", str(threads), "--warmup", str(warmup), "--runs", str(runs), "--target", target]
    if tokenizer_json:
        args += ["--tokenizer-json", tokenizer_json]
    if texts_file:
        args += ["--texts-file", texts_file]
    return args


def _write_texts(texts: Sequence[str] | None, directory: Path) -> Path | None:
    if not texts:
        return None
    path = directory / "texts.txt"
    path.write_text("".join(t.replace("\r", " ").replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
    return path


def _tail(text: str, n: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= n else "…" + text[-n:]


def _bench_json(target: str, proc: subprocess.CompletedProcess[str], python: str) -> dict[str, Any]:
    """The script's JSON line, or a LatencyTargetError saying why there is none."""
    payload = None
    for line in reversed(proc.stdout.splitlines()):
        if line.lstrip().startswith("{"):
            try:
                payload = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if payload is not None and "error" in payload:
        if payload.get("missing") == "onnxruntime":
            raise LatencyTargetError(
                target,
                f"python {python!r} there cannot import onnxruntime; install it on that target "
                f"(`pip install onnxruntime`, or `{python} -m pip install onnxruntime`) or pass a python that has it. "
                f"Detail: {payload['error']}",
            )
        raise LatencyTargetError(target, f"benchmark failed: {payload['error']}")
    if proc.returncode != 0 or payload is None:
        raise LatencyTargetError(
            target,
            f"benchmark exited with {proc.returncode} without a JSON result; stderr: {_tail(proc.stderr) or '(empty)'}",
        )
    return payload


def _run(target: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise LatencyTargetError(target, f"executable {argv[0]!r} not found ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise LatencyTargetError(target, f"{shlex.join(argv[:3])} … timed out after {timeout:.0f} s") from exc


class HostTarget(LatencyTarget):
    """This machine, in a fresh interpreter so peak RSS and import state belong to the benchmark alone."""

    def __init__(self, python: str | None = None, *, timeout: float = 3600, name: str = "host") -> None:
        self.python = python or sys.executable
        self.timeout = timeout
        self.name = name

    def measure(
        self,
        model_path: PathLike,
        *,
        seq_lens: Sequence[int] = (16, 32),
        threads: int = 1,
        warmup: int = 20,
        runs: int = 200,
        tokenizer_json: PathLike | None = None,
        texts: Sequence[str] | None = None,
        batch: int = 1,
    ) -> LatencyReport:
        model = self._existing(model_path, "model file")
        tok = self._existing(tokenizer_json, "tokenizer file") if tokenizer_json else None
        with tempfile.TemporaryDirectory(prefix="landing-bench-") as tmp:
            texts_file = _write_texts(texts, Path(tmp))
            argv = [self.python, str(BENCH_SCRIPT)] + _bench_args(
                str(model.resolve()), seq_lens=seq_lens, batch=batch, threads=threads, warmup=warmup, runs=runs,
                tokenizer_json=str(tok.resolve()) if tok else None,
                texts_file=str(texts_file) if texts_file else None, target=self.name,
            )
            proc = _run(self.name, argv, self.timeout)
        return LatencyReport.from_json(_bench_json(self.name, proc, self.python), self.name)


class SshTarget(LatencyTarget):
    """A board reachable over SSH: scp the model and bench_onnx.py, run them with the board's Python.

    Non-interactive by design (BatchMode): key auth only, so a missing key fails fast instead of
    hanging on a password prompt. Host keys are accepted on first use unless ``known_hosts`` pins them.
    """

    def __init__(
        self,
        host: str,
        user: str | None = None,
        port: int = 22,
        identity_file: PathLike | None = None,
        python: str = "python3",
        remote_dir: str = "/tmp/landing-bench",
        ssh_options: Sequence[str] = (),
        *,
        known_hosts: PathLike | None = None,
        connect_timeout: int = 10,
        timeout: float = 3600,
        legacy_scp: bool = False,
        name: str | None = None,
    ) -> None:
        self.host, self.user, self.port = host, user, int(port)
        self.identity_file = Path(identity_file) if identity_file else None
        self.python = python  # may carry flags, e.g. "python3 -I"; split with shlex
        self.remote_dir = remote_dir.rstrip("/") or "/"
        self.ssh_options = list(ssh_options)
        self.known_hosts = Path(known_hosts) if known_hosts else None
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.legacy_scp = legacy_scp  # scp -O, for servers without an sftp subsystem (e.g. dropbear)
        self.name = name or f"ssh:{self.destination}:{self.port}"

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        else:
            opts += ["-o", "StrictHostKeyChecking=accept-new"]
        if self.identity_file:
            opts += ["-i", str(self.identity_file), "-o", "IdentitiesOnly=yes"]
        return opts + self.ssh_options

    def ssh_argv(self, remote_command: str) -> list[str]:
        return ["ssh", *self._options(), "-p", str(self.port), self.destination, remote_command]

    def scp_argv(self, files: Sequence[PathLike], remote_dir: str) -> list[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        dest = f"{self.user}@{host}" if self.user else host
        legacy = ["-O"] if self.legacy_scp else []
        return ["scp", "-q", *legacy, *self._options(), "-P", str(self.port), *map(str, files), f"{dest}:{remote_dir}/"]

    def _checked(self, argv: list[str], step: str) -> subprocess.CompletedProcess[str]:
        proc = _run(self.name, argv, self.timeout)
        if proc.returncode == 255:  # ssh's own failure: connection, auth or host key
            raise LatencyTargetError(
                self.name,
                f"cannot reach {self.host}:{self.port} over ssh during {step} "
                f"(unreachable, refused, or key rejected); ssh said: {_tail(proc.stderr) or '(nothing)'}",
            )
        return proc

    def measure(
        self,
        model_path: PathLike,
        *,
        seq_lens: Sequence[int] = (16, 32),
        threads: int = 1,
        warmup: int = 20,
        runs: int = 200,
        tokenizer_json: PathLike | None = None,
        texts: Sequence[str] | None = None,
        batch: int = 1,
    ) -> LatencyReport:
        model = self._existing(model_path, "model file")
        tok = self._existing(tokenizer_json, "tokenizer file") if tokenizer_json else None
        rd = self.remote_dir
        proc = self._checked(self.ssh_argv(f"mkdir -p {shlex.quote(rd)}"), "mkdir")
        if proc.returncode != 0:
            raise LatencyTargetError(self.name, f"cannot create {rd}: {_tail(proc.stderr)}")

        with tempfile.TemporaryDirectory(prefix="landing-ssh-") as tmp:
            staging = Path(tmp)
            # Fixed remote names except the model's, whose extension (.onnx/.ort) matters.
            uploads = {"bench_onnx.py": BENCH_SCRIPT, model.name: model}
            if tok:
                uploads["tokenizer.json"] = tok
            texts_file = _write_texts(texts, staging)
            if texts_file:
                uploads["texts.txt"] = texts_file
            staged = []
            for remote_name, src in uploads.items():
                link = staging / "up" / remote_name
                link.parent.mkdir(exist_ok=True)
                link.symlink_to(src.resolve())
                staged.append(link)
            proc = self._checked(self.scp_argv(staged, rd), "scp upload")
            if proc.returncode != 0:
                raise LatencyTargetError(self.name, f"scp to {self.destination}:{rd} failed: {_tail(proc.stderr)}")

        remote = f"{rd}/"
        args = _bench_args(
            remote + model.name, seq_lens=seq_lens, batch=batch, threads=threads, warmup=warmup, runs=runs,
            tokenizer_json=remote + "tokenizer.json" if tok else None,
            texts_file=remote + "texts.txt" if texts else None, target=self.name,
        )
        command = shlex.join([*shlex.split(self.python), remote + "bench_onnx.py", *args])
        proc = self._checked(self.ssh_argv(command), "benchmark")
        if proc.returncode == 127:
            raise LatencyTargetError(
                self.name, f"remote python {self.python!r} not found; stderr: {_tail(proc.stderr)}"
            )
        return LatencyReport.from_json(_bench_json(self.name, proc, self.python), self.name)


# --------------------------------------------------------------------------- Android (adb)

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
        *,
        seq_lens: Sequence[int] = (16, 32),
        threads: int = 1,
        runs: int = 200,
        batch: int = 1,
    ) -> list[list[str]]:
        """Every adb argv ``measure`` runs, in order: setup, ``uname -m``, then one perf_test per seq_len."""
        models = self._models(model_path, seq_lens)
        return [
            *self._setup_commands(models),
            self._adb("shell", "uname -m"),
            *(self._perf_command(models[s][1], s, threads=threads, runs=runs, batch=batch) for s in seq_lens),
        ]

    def _call(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        proc = _run(self.name, argv, self.timeout)
        if proc.returncode != 0:
            output = _tail(proc.stderr + "\n" + proc.stdout)
            if re.search(r"no devices|device .* not found|device offline|unauthorized", output):
                raise LatencyTargetError(self.name, f"no usable Android device ({shlex.join(argv[:4])}): {output}")
            raise LatencyTargetError(self.name, f"`{shlex.join(argv)}` exited with {proc.returncode}: {output}")
        return proc

    def measure(
        self,
        model_path: PathLike | Mapping[int, PathLike],
        *,
        seq_lens: Sequence[int] = (16, 32),
        threads: int = 1,
        warmup: int = 20,
        runs: int = 200,
        tokenizer_json: PathLike | None = None,
        texts: Sequence[str] | None = None,
        batch: int = 1,
    ) -> LatencyReport:
        self._existing(self.perf_test_binary, "onnxruntime_perf_test binary")
        models = self._models(model_path, seq_lens)
        for local, _ in models.values():
            self._existing(local, "model file")
        for extra in self.extra_files:
            self._existing(extra, "extra file")

        commands = self.build_commands(model_path, seq_lens=seq_lens, threads=threads, runs=runs, batch=batch)
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
                    f"onnxruntime_perf_test output at seq_len {seq_len} lacks {sorted(needed)}: {_tail(proc.stdout)}",
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


# --------------------------------------------------------------------------- registry

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
