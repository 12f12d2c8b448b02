"""This machine as a latency target."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from landing.infra.latency.base import (
    BENCH_SCRIPT,
    LatencyReport,
    LatencyTarget,
    PathLike,
    bench_args,
    bench_json,
    run_command,
    write_texts,
)
from landing.models.params import LatencyParams


class HostTarget(LatencyTarget):
    """This machine, in a fresh interpreter so peak RSS and import state belong to the benchmark alone."""

    def __init__(self, python: str | None = None, *, timeout: float = 3600, name: str = "host") -> None:
        self.python = python or sys.executable
        self.timeout = timeout
        self.name = name

    def measure(
        self,
        model_path: PathLike,
        params: LatencyParams | None = None,
        *,
        tokenizer_json: PathLike | None = None,
        texts: Sequence[str] | None = None,
    ) -> LatencyReport:
        model = self._existing(model_path, "model file")
        tok = self._existing(tokenizer_json, "tokenizer file") if tokenizer_json else None
        with tempfile.TemporaryDirectory(prefix="landing-bench-") as tmp:
            texts_file = write_texts(texts, Path(tmp))
            argv = [self.python, str(BENCH_SCRIPT)] + bench_args(
                str(model.resolve()), params or LatencyParams(),
                tokenizer_json=str(tok.resolve()) if tok else None,
                texts_file=str(texts_file) if texts_file else None, target=self.name,
            )
            proc = run_command(self.name, argv, self.timeout)
        return LatencyReport.from_json(bench_json(self.name, proc, self.python), self.name)
