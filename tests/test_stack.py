"""`python -m landing.infra.stack` end to end: real rclone, MLflow and Prefect servers on free
127.0.0.1 ports in a tmp state dir, driven through the CLI exactly as `make up` does.
Slow (Prefect's server needs ~15-60 s to start on 2 cores), hence its own marker."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from landing.infra.processes import PidRecord, _proc_start_ticks, port_in_use, stop_service
from landing.infra.s3_server import free_port
from landing.infra.stack_config import SERVICES, StackConfig, _write_private

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
UP_TIMEOUT_S = 420  # whole `up`; each service also has its own --timeout inside


def _ports() -> dict[str, int]:
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    s3, mlflow, prefect = sorted(ports)
    return {"s3": s3, "mlflow": mlflow, "prefect": prefect}


def _cli(
    cmd: str, state: Path, ports: dict[str, int], timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [
        sys.executable, "-m", "landing.infra.stack", cmd, "--state-dir", str(state),
        "--s3-port", str(ports["s3"]), "--mlflow-port", str(ports["mlflow"]),
        "--prefect-port", str(ports["prefect"]), "--timeout", "240",
    ]
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status


def _processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line names ``text`` (our tmp state dir)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(f"{p.name}: {cmd[:200]}")
    return found


@pytest.fixture
def stack_dir(tmp_path: Path) -> Iterator[tuple[Path, dict[str, int]]]:
    """State dir + free ports; `down` always runs afterwards so no test leaks servers."""
    ports = _ports()
    yield tmp_path, ports
    _cli("down", tmp_path, ports)


def test_lifecycle_up_use_status_down(stack_dir: tuple[Path, dict[str, int]]) -> None:
    state, ports = stack_dir
    cfg = StackConfig(state, ports["prefect"], ports["mlflow"], ports["s3"])

    t0 = time.monotonic()
    up = _cli("up", state, ports, timeout=UP_TIMEOUT_S)
    took = time.monotonic() - t0
    print(f"\n`up` took {took:.1f}s:\n{up.stdout}")
    assert up.returncode == 0, f"up failed after {took:.0f}s:\n{up.stdout}\n{up.stderr}"

    # Secrets: files are private and the keys are never printed.
    creds = dict(line.split("=", 1) for line in cfg.credentials_path.read_text().splitlines() if "=" in line)
    for f in (cfg.credentials_path, cfg.env_path):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert creds["AWS_SECRET_ACCESS_KEY"] not in up.stdout + up.stderr
    assert f"set -a; . {cfg.env_path}; set +a" in up.stdout

    env_file = dict(line.split("=", 1) for line in cfg.env_path.read_text().splitlines() if "=" in line)
    assert env_file["LANDING_TRACKING_URI"] == f"http://127.0.0.1:{ports['mlflow']}"
    assert env_file["PREFECT_API_URL"] == f"http://127.0.0.1:{ports['prefect']}/api"
    assert env_file["LANDING_OBJECT_STORE_URI"] == "s3://landing/objects"
    assert env_file["LANDING_S3_ENDPOINT_URL"] == f"http://127.0.0.1:{ports['s3']}"
    assert env_file["AWS_ACCESS_KEY_ID"] == creds["AWS_ACCESS_KEY_ID"]

    # Health endpoints and the work pool the worker polls.
    assert _get(f"http://127.0.0.1:{ports['prefect']}/api/health") == 200
    assert _get(f"http://127.0.0.1:{ports['mlflow']}/health") == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['prefect']}/api/work_pools/landing", timeout=10) as r:
        assert json.load(r)["type"] == "process"

    # A run logged with the flows' own settings code, configured only by stack.env, puts its
    # artifact (proxied by the tracking server) into the S3 server's on-disk bucket.
    probe = (
        "from pathlib import Path; import sys\n"
        "from mlflow.tracking import MlflowClient\n"
        "from landing.infra.settings import get_settings\n"
        "from landing.infra.tracking import configure_tracking, ensure_experiment, start_parent_run\n"
        "s = get_settings(); configure_tracking(s)\n"
        "run = start_parent_run(ensure_experiment('stack-test', s), 'probe', {})\n"
        "f = Path(sys.argv[1]); f.write_text('landed')\n"
        "MlflowClient().log_artifact(run, str(f)); print(run)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANDING_", "AWS_", "MLFLOW_TRACKING"))}
    res = subprocess.run(
        [sys.executable, "-c", probe, str(state / "probe.txt")], cwd=ROOT, env={**env, **env_file},
        capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run_id = res.stdout.strip().splitlines()[-1]
    landed = list((cfg.s3_dir / "landing" / "mlartifacts").rglob("probe.txt"))
    assert len(landed) == 1 and run_id in str(landed[0]), landed
    assert landed[0].read_text() == "landed"

    st = _cli("status", state, ports)
    rows = {line.split()[0]: line.split() for line in st.stdout.splitlines()[1:]}
    assert set(rows) == set(SERVICES), st.stdout
    assert all(r[-1] == "running" for r in rows.values()), st.stdout

    again = _cli("up", state, ports)
    assert again.returncode == 0 and again.stdout.count("already running") == 4, again.stdout + again.stderr

    records = {n: PidRecord(**json.loads((cfg.pids / f"{n}.pid").read_text())) for n in SERVICES}
    t0 = time.monotonic()
    down = _cli("down", state, ports)
    print(f"`down` took {time.monotonic() - t0:.1f}s:\n{down.stdout}")
    assert down.returncode == 0, down.stderr
    for name, rec in records.items():
        assert _proc_start_ticks(rec.pid) is None or _proc_start_ticks(rec.pid) != rec.start_ticks, name
    assert not list(cfg.pids.glob("*.pid"))
    assert not [p for p in ports.values() if port_in_use(p)]
    assert not _processes_mentioning(str(state))
    st = _cli("status", state, ports)
    assert all(line.split()[-1] == "stopped" for line in st.stdout.splitlines()[1:]), st.stdout


@pytest.mark.parametrize("busy", ["s3", "prefect"])
def test_port_in_use_fails_naming_port_and_service(stack_dir: tuple[Path, dict[str, int]], busy: str) -> None:
    state, ports = stack_dir
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports[busy]))
        blocker.listen()
        res = _cli("up", state, ports)
    assert res.returncode == 1
    assert f"port {ports[busy]} for {busy} is already in use" in res.stderr, res.stderr
    # Checked before anything starts: nothing is left running, no pid recorded.
    assert not list((state / "stack" / "pids").glob("*.pid"))
    assert not [p for p in ports.values() if port_in_use(p)]
    assert not _processes_mentioning(str(state))


def test_service_dying_at_startup_is_named_and_the_rest_stopped(stack_dir: tuple[Path, dict[str, int]]) -> None:
    """Prefect (third to start) dies on a bad setting: the error names it, its port and its
    log, and the S3 and MLflow servers this `up` had started are stopped again."""
    state, ports = stack_dir
    res = _cli("up", state, ports, timeout=UP_TIMEOUT_S, env={"PREFECT_LOGGING_LEVEL": "NOT-A-LEVEL"})
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"prefect (port {ports['prefect']}) exited with code" in res.stderr, res.stderr
    assert "logs/prefect.log" in res.stderr and "NOT-A-LEVEL" in res.stderr  # the log tail
    assert "mlflow   started" in res.stdout  # it really had started something to clean up
    assert not list((state / "stack" / "pids").glob("*.pid"))
    assert not [p for p in ports.values() if port_in_use(p)]
    assert not _processes_mentioning(str(state))


def test_down_never_kills_a_reused_pid(tmp_path: Path) -> None:
    """A pid file whose pid now belongs to another process (different start time) is dropped, not killed."""
    cfg = StackConfig(tmp_path)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        cmdline = ["sleep", "60"]
        cfg.pids.mkdir(parents=True)
        rec = PidRecord(other.pid, cmdline, (_proc_start_ticks(other.pid) or 0) - 1, None)
        _write_private(cfg.pids / "s3.pid", json.dumps(rec.__dict__))
        assert "stale" in stop_service(cfg, "s3")
        assert other.poll() is None, "an unrelated process was killed"
        assert not (cfg.pids / "s3.pid").exists()
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()


def test_easynlp_commands_share_one_prefect_server_started_on_first_use(stack_dir: tuple[Path, dict[str, int]]) -> None:
    """``reused_prefect_api``: the first call starts the stack's Prefect server alone, the next reuses it; a port
    held by another process (another state directory's server) means a free port, recorded and then reused."""
    from landing.infra.processes import is_ours, read_record
    from landing.infra.stack import reused_prefect_api

    state, ports = stack_dir
    cfg = StackConfig(state, prefect_port=ports["prefect"])
    said: list[str] = []
    url = reused_prefect_api(cfg, out=said.append)
    assert url == cfg.prefect_api_url and _get(f"{url}/health") == 200
    assert len(said) == 1 and "stop it with: python -m landing.infra.stack down" in said[0]
    pid = read_record(cfg, "prefect").pid
    assert reused_prefect_api(cfg, out=said.append) == url and len(said) == 1  # reused: nothing started, nothing said
    assert read_record(cfg, "prefect").pid == pid and is_ours(read_record(cfg, "prefect"))
    assert "running" in _cli("status", state, ports).stdout
    stop_service(cfg, "prefect")
    with socket.socket() as busy:  # another process on the port
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the stopped server's TIME_WAIT
        busy.bind(("127.0.0.1", ports["prefect"]))
        busy.listen()
        moved = reused_prefect_api(cfg, out=said.append)
        assert moved != url and _get(f"{moved}/health") == 200 and len(said) == 2
        assert reused_prefect_api(cfg, out=said.append) == moved and len(said) == 2  # the recorded port, reused
        stop_service(cfg, "prefect")
