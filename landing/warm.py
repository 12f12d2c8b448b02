"""A warm process for the ``easynlp`` command: torch, transformers, Prefect and MLflow are imported once, and
each later command runs in a fork of that process, so a short command costs its work, not its imports.

Written by hand because nothing does this for a command line: Prefect's ``serve`` and its workers start a new
Python process per flow run, which is the very cost avoided here. It is Gradle's daemon (or nailgun) for this
CLI. The first command runs as before ("cold") and then leaves the warm process behind; it exits after
``LANDING_WARM_IDLE_MINUTES`` without a command, on ``python -m landing.infra.stack down``, and whenever it
could not run a command exactly as a new process would:

- its Python, its environment (after the same preparation as a cold command) and every module file it has
  loaded must be the command's; a changed file or variable makes the command run cold, and the stale process
  exits (the cold command leaves a fresh one);
- the command's own terminal is its stdin, stdout and stderr (the client passes its file descriptors over a
  Unix socket), so progress bars, pipes and redirections behave as in a new process; Ctrl-C is forwarded.

``LANDING_WARM_COMMANDS=false`` runs every command in a new process.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import traceback
from pathlib import Path

# Per console script: the module, its main(argv), the preparation a command does before Prefect's first
# import (Prefect reads its settings once, then), and what to import ahead of a command.
ENTRIES = {"easynlp": ("landing.easynlp_cli", "main", "prepare_process", "warm_imports")}
# Differ between two shells running the same command, and change nothing a command reads.
VOLATILE_ENV = frozenset({"_", "PWD", "OLDPWD", "SHLVL", "COLUMNS", "LINES"})
HEADER = struct.Struct("!Q")
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def easynlp() -> None:
    """The ``easynlp`` console script."""
    run("easynlp", sys.argv[1:])


def run(entry: str, argv: list[str]) -> None:
    """Serve the command warm when a matching warm process answers, else run it here and leave one behind."""
    from landing.infra.settings import get_settings

    environment, settings = dict(os.environ), get_settings()
    if settings.warm_commands:
        code = served_warm(entry, argv, settings.state_dir)
        if code is not None:
            sys.exit(code)
    code = _call(entry, argv)
    if settings.warm_commands:
        _start_warm_process(entry, environment, settings.state_dir)
    exit_now(code)


def socket_path(state_dir: Path, entry: str) -> Path:
    """Short (a Unix socket path has ~100 bytes), private to the user, one per state dir, Python and command."""
    key = hashlib.sha256(f"{Path(state_dir).resolve()}\0{sys.prefix}\0{entry}".encode()).hexdigest()[:24]
    folder = Path(tempfile.gettempdir()) / f"landing-warm-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{key}.sock"


def exit_now(code: int) -> None:
    """Exit after the exit handlers (Prefect's log and event drains, MLflow's), without the seconds the
    interpreter spends tearing down torch and transformers module by module."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _call(entry: str, argv: list[str]) -> int:
    module, main, *_ = ENTRIES[entry]
    try:
        getattr(importlib.import_module(module), main)(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        return 130
    except BaseException:  # --debug re-raises; a new process would print it and exit 1
        traceback.print_exc()
        return 1
    return 0


# ---------------------------------------------------------------- client


def served_warm(entry: str, argv: list[str], state_dir: Path) -> int | None:
    """The command's exit code when the warm process ran it; None when there is none, or it is stale."""
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(socket_path(state_dir, entry)))
        payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(client, [HEADER.pack(len(payload))], [0, 1, 2])
        client.sendall(payload)
    except OSError:
        return None
    with client, client.makefile("r") as replies:
        first = _reply(replies)
        if first is None or "pid" not in first:
            return None  # stale: the process has gone, and this command runs cold
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, lambda number, _frame: _forward(first["pid"], number))
        last = _reply(replies)
    if last is None:
        print(f"{entry}: the command's process ({first['pid']}) ended without an exit status", file=sys.stderr)
        return 1
    return last["exit"]


def _reply(replies) -> dict | None:
    line = replies.readline()
    return json.loads(line) if line else None


def _forward(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _start_warm_process(entry: str, environment: dict[str, str], state_dir: Path) -> None:
    """In its own process group (Ctrl-C in the terminal is not for it), but in the user's session: a new
    session is a new scheduler autogroup, where ``nice`` stops working against the user's other jobs. It
    gets the command's environment as it was before the command changed it, and exits at once when another
    warm process holds the socket."""
    import subprocess

    log = Path(state_dir) / "logs" / f"{entry}-warm.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        subprocess.Popen([sys.executable, "-m", "landing.warm", entry], env=environment, stdin=subprocess.DEVNULL,
                         stdout=out, stderr=out, process_group=0, close_fds=True)  # fmt: skip


# ---------------------------------------------------------------- server


def serve(entry: str) -> None:
    """The warm process: prepare, import, then fork one child per command until idle or stale."""
    import fcntl

    from landing.infra.settings import get_settings

    settings = get_settings()
    path = socket_path(settings.state_dir, entry)
    lock = open(path.with_suffix(".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another warm process serves this command
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # outlives the terminal that started it
    _record(settings.state_dir, entry)  # from the start: `stack down` also stops one still importing
    try:
        _serve(entry, path, lock, settings.warm_idle_minutes * 60)
    finally:
        _unrecord(settings.state_dir, entry)


def _serve(entry: str, path: Path, lock, idle_s: float) -> None:
    original = dict(os.environ)
    module_name, _, prepare, warm_imports = ENTRIES[entry]
    module = importlib.import_module(module_name)
    getattr(module, prepare)()
    prepared = dict(os.environ)
    getattr(module, warm_imports)()
    loaded = loaded_module_files()
    listener, inode = _listen(path)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the commands
    listener.settimeout(idle_s)
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                return
            with conn:
                request, fds = _request(conn)
                if request is None:
                    continue
                if (changed := changed_module_file(loaded)) is not None:
                    _send(conn, stale=f"{changed} changed since this process imported it")
                    return
                if os.fork() == 0:
                    listener.close()
                    lock.close()
                    _run_child(entry, conn, fds, request, original, prepared)
                for fd in fds:
                    os.close(fd)
    finally:
        _unlink_if_ours(path, inode)
        listener.close()


def loaded_module_files() -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file a loaded module came from: the process's whole code, libraries included."""
    files = {}
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if name and name not in files:
            try:
                stat = os.stat(name)
            except OSError:
                continue
            files[name] = (stat.st_mtime_ns, stat.st_size)
    return files


def changed_module_file(loaded: dict[str, tuple[int, int]]) -> str | None:
    for name, (mtime, size) in loaded.items():
        try:
            stat = os.stat(name)
        except OSError:
            return name
        if (stat.st_mtime_ns, stat.st_size) != (mtime, size):
            return name
    return None


def environment_difference(original: dict[str, str], prepared: dict[str, str], request: dict[str, str],
                           after: dict[str, str]) -> str | None:
    """The first variable (its name only: values may be secrets) by which a command's environment differs from
    this process's, ignoring ``VOLATILE_ENV``: before the preparation (``original`` / ``request``), then after
    it (``prepared`` / ``after``), where only variables that imports set (``prepared`` alone) may differ."""
    names = (set(original) | set(request)) - VOLATILE_ENV
    before = next((n for n in sorted(names) if original.get(n) != request.get(n)), None)
    return before or next((n for n in sorted(set(after) - VOLATILE_ENV) if prepared.get(n) != after[n]), None)


def _listen(path: Path) -> tuple[socket.socket, int]:
    """Bound under a temporary name, then renamed: a client never meets a socket that does not answer yet.
    Returns the listener and the socket file's inode, to remove only our own file at exit."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    listener.bind(str(temporary))
    listener.listen(16)
    os.replace(temporary, path)
    return listener, path.stat().st_ino


def _unlink_if_ours(path: Path, inode: int) -> None:
    try:
        if path.stat().st_ino == inode:
            path.unlink()
    except OSError:
        pass


def _request(conn: socket.socket) -> tuple[dict | None, list[int]]:
    try:
        header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
        size = HEADER.unpack(header)[0]
        body = b""
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ConnectionError("client went away")
            body += chunk
        return json.loads(body), fds
    except (OSError, ValueError, struct.error):
        return None, []


def _send(conn: socket.socket, **message) -> None:
    try:
        conn.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        pass


def _run_child(entry: str, conn: socket.socket, fds: list[int], request: dict, original: dict[str, str],
               prepared: dict[str, str]) -> None:
    """One command, in the client's terminal, directory and environment; never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [entry, *request["argv"]]
    module_name, _, prepare, _ = ENTRIES[entry]
    getattr(importlib.import_module(module_name), prepare)()
    if (name := environment_difference(original, prepared, request["env"], dict(os.environ))) is not None:
        _send(conn, stale=f"the environment variable {name} differs")
        os.kill(os.getppid(), signal.SIGTERM)  # this process cannot serve that environment: a cold run replaces it
        os._exit(0)
    os.environ.update({k: v for k, v in prepared.items() if k not in os.environ})  # set by imports, as in a new process
    _send(conn, pid=os.getpid())
    code = _call(entry, request["argv"])
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    _send(conn, exit=code)
    os._exit(code)


def _record(state_dir: Path, entry: str) -> None:
    """A pid record beside the stack's services, so ``python -m landing.infra.stack down`` stops it too."""
    from landing.infra.processes import _record as record
    from landing.infra.stack_config import StackConfig

    record(StackConfig(state_dir), f"{entry}-warm", os.getpid(), None)


def _unrecord(state_dir: Path, entry: str) -> None:
    from landing.infra.stack_config import StackConfig

    (StackConfig(state_dir).pids / f"{entry}-warm.pid").unlink(missing_ok=True)


if __name__ == "__main__":
    serve(sys.argv[1])
