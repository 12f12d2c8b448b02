"""Process management for the local stack: start a service in its own session, wait until it answers,
record it (pid, cmdline, start time) and stop exactly what was started, never a reused pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from landing.infra.s3_server import _scripts_dirs
from landing.infra.stack_config import HOST, WORK_POOL, StackConfig, StackError


@dataclass(frozen=True)
class PidRecord:
    pid: int
    cmdline: list[str]
    start_ticks: int  # /proc/<pid>/stat field 22: tells a reused pid apart from ours
    port: int | None


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else None  # zombies: empty


def _proc_start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # comm may contain spaces/parens
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _pid_path(cfg: StackConfig, name: str) -> Path:
    return cfg.pids / f"{name}.pid"


def read_record(cfg: StackConfig, name: str) -> PidRecord | None:
    try:
        return PidRecord(**json.loads(_pid_path(cfg, name).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def is_ours(rec: PidRecord) -> bool:
    """Alive and still the process we started (same cmdline and start time), never a reused pid."""
    return _proc_cmdline(rec.pid) == rec.cmdline and _proc_start_ticks(rec.pid) == rec.start_ticks


def _record(cfg: StackConfig, name: str, pid: int, port: int | None) -> None:
    # Read after the service answered: launchers (python shebangs, exec) have settled by then.
    cmdline, ticks = _proc_cmdline(pid), _proc_start_ticks(pid)
    if cmdline is None or ticks is None:
        raise StackError(f"{name}: process {pid} vanished right after answering")
    cfg.pids.mkdir(parents=True, exist_ok=True)
    _pid_path(cfg, name).write_text(json.dumps(asdict(PidRecord(pid, cmdline, ticks, port))) + "\n")


def port_in_use(port: int) -> bool:
    """SO_REUSEADDR like the servers themselves, so TIME_WAIT leftovers don't count as busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _script(name: str) -> str:
    """The console script from this interpreter's env, so the stack uses the project's pins."""
    for d in _scripts_dirs():
        if (d / name).is_file():
            return str(d / name)
    raise StackError(f"{name} executable not found next to {sys.executable}")


def _spawn(cfg: StackConfig, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    cfg.logs.mkdir(parents=True, exist_ok=True)
    with (cfg.logs / f"{name}.log").open("ab") as log:
        log.write(f"\n--- {datetime.now().isoformat(timespec='seconds')} starting {name}\n".encode())
        log.flush()
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,  # own process group: survives `up`, killpg'able
        )


def _wait_ready(cfg: StackConfig, name: str, proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    port = cfg.port(name)
    where = f"port {port}" if port else f"pool {WORK_POOL}"
    deadline = time.monotonic() + cfg.startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"{name} ({where}) exited with code {proc.returncode} before answering; "
                f"log {cfg.logs / f'{name}.log'} ends:\n{_tail(cfg.logs / f'{name}.log')}"
            )
        if ready():
            return
        time.sleep(0.5)
    raise StackError(
        f"{name} ({where}) did not answer within {cfg.startup_timeout_s:.0f}s; "
        f"log {cfg.logs / f'{name}.log'} ends:\n{_tail(cfg.logs / f'{name}.log')}"
    )


def _kill_group(pid: int, timeout_s: float, gone: Callable[[], bool]) -> None:
    """SIGTERM the group (we started each service as a session leader), SIGKILL after a timeout."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if gone():
                try:  # leader gone: reap any straggler children still in its group
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            time.sleep(0.1)


def stop_service(cfg: StackConfig, name: str) -> str:
    rec = read_record(cfg, name)
    if rec is None:
        return "not running"
    if not is_ours(rec):
        _pid_path(cfg, name).unlink(missing_ok=True)
        return f"not running (stale pid {rec.pid} ignored)"
    _kill_group(rec.pid, cfg.stop_timeout_s, lambda: not is_ours(rec))
    _pid_path(cfg, name).unlink(missing_ok=True)
    return f"stopped (pid {rec.pid})"


def _stop_proc(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    if proc.poll() is None:
        _kill_group(proc.pid, timeout_s, lambda: proc.poll() is not None)
