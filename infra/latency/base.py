"""What every latency target shares: the report format, the target interface and the bench-script plumbing.

Every target returns the same ``LatencyReport`` so results from a laptop, a Raspberry Pi
and a phone can be compared in one table. Host and SSH targets run ``bench_onnx.py`` (a
self-contained script) with the target's own Python; the adb target runs onnxruntime's
C++ ``onnxruntime_perf_test`` because phones have no Python.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from landing.models.params import LatencyParams

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
        params: LatencyParams | None = None,
        *,
        tokenizer_json: PathLike | None = None,
        texts: Sequence[str] | None = None,
    ) -> LatencyReport:
        """Time ``model_path`` as ``params`` says (default ``LatencyParams()``), on ``texts`` when given."""

    def _existing(self, path: PathLike, what: str) -> Path:
        p = Path(path)
        if not p.is_file():
            raise LatencyTargetError(self.name, f"{what} not found: {p}")
        return p




def bench_args(
    model: str, params: LatencyParams, *, tokenizer_json: str | None, texts_file: str | None, target: str
) -> list[str]:
    args = ["--model", model, "--seq-lens", ",".join(str(s) for s in params.seq_lens), "--batch", str(params.batch),
            "--threads", str(params.threads), "--warmup", str(params.warmup), "--runs", str(params.runs),
            "--target", target]  # fmt: skip
    if tokenizer_json:
        args += ["--tokenizer-json", tokenizer_json]
    if texts_file:
        args += ["--texts-file", texts_file]
    return args


def write_texts(texts: Sequence[str] | None, directory: Path) -> Path | None:
    if not texts:
        return None
    path = directory / "texts.txt"
    path.write_text("".join(t.replace("\r", " ").replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
    return path


def output_tail(text: str, n: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= n else "…" + text[-n:]


def bench_json(target: str, proc: subprocess.CompletedProcess[str], python: str) -> dict[str, Any]:
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
            f"benchmark exited with {proc.returncode} without a JSON result; stderr: {output_tail(proc.stderr) or '(empty)'}",
        )
    return payload


def run_command(target: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise LatencyTargetError(target, f"executable {argv[0]!r} not found ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise LatencyTargetError(target, f"{shlex.join(argv[:3])} … timed out after {timeout:.0f} s") from exc
