"""A board over SSH (Raspberry Pi, Jetson, ...) as a latency target: copy the model and bench script, run, parse."""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from landing.infra.latency.base import (
    BENCH_SCRIPT,
    LatencyReport,
    LatencyTarget,
    LatencyTargetError,
    PathLike,
    bench_args,
    bench_json,
    output_tail,
    run_command,
    write_texts,
)
from landing.models.params import LatencyParams


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
        proc = run_command(self.name, argv, self.timeout)
        if proc.returncode == 255:  # ssh's own failure: connection, auth or host key
            raise LatencyTargetError(
                self.name,
                f"cannot reach {self.host}:{self.port} over ssh during {step} "
                f"(unreachable, refused, or key rejected); ssh said: {output_tail(proc.stderr) or '(nothing)'}",
            )
        return proc

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
        rd = self.remote_dir
        proc = self._checked(self.ssh_argv(f"mkdir -p {shlex.quote(rd)}"), "mkdir")
        if proc.returncode != 0:
            raise LatencyTargetError(self.name, f"cannot create {rd}: {output_tail(proc.stderr)}")

        with tempfile.TemporaryDirectory(prefix="landing-ssh-") as tmp:
            staging = Path(tmp)
            # Fixed remote names except the model's, whose extension (.onnx/.ort) matters.
            uploads = {"bench_onnx.py": BENCH_SCRIPT, model.name: model}
            if tok:
                uploads["tokenizer.json"] = tok
            texts_file = write_texts(texts, staging)
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
                raise LatencyTargetError(self.name, f"scp to {self.destination}:{rd} failed: {output_tail(proc.stderr)}")

        remote = f"{rd}/"
        args = bench_args(
            remote + model.name, params or LatencyParams(),
            tokenizer_json=remote + "tokenizer.json" if tok else None,
            texts_file=remote + "texts.txt" if texts else None, target=self.name,
        )
        command = shlex.join([*shlex.split(self.python), remote + "bench_onnx.py", *args])
        proc = self._checked(self.ssh_argv(command), "benchmark")
        if proc.returncode == 127:
            raise LatencyTargetError(
                self.name, f"remote python {self.python!r} not found; stderr: {output_tail(proc.stderr)}"
            )
        return LatencyReport.from_json(bench_json(self.name, proc, self.python), self.name)
