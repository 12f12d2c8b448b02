"""A full disk: the run stops naming the directory that ran out, publishes nothing half-written, and the
same command completes once space is freed. The state directory is on a small tmpfs the test mounts."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from tiny_runs import parent_runs, run_landing, task_states, write_config

pytestmark = pytest.mark.integration
SIZE_MB, FREE_MB = 64, 22  # a tiny run writes ~50 MB under its state dir: it fails part-way, then fits


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_named_and_the_rerun_completes_after_space_is_freed(prefect_api, tmp_path, small_disk,
                                                                          monkeypatch, unpublished_objects):  # fmt: skip
    state = small_disk / "state"
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"\0" * ((SIZE_MB - FREE_MB) << 20))
    monkeypatch.setenv("LANDING_STATE_DIR", str(state))
    for key in ("LANDING_OBJECT_STORE_URI", "MLFLOW_TRACKING_URI", "LANDING_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)  # everything on the small disk: objects, sqlite, checkpoints
    config = write_config(tmp_path, name=f"disk-{uuid.uuid4().hex[:6]}")
    argv = ["run", str(config), "--output-dir", str(tmp_path / "out")]

    code, output = run_landing(argv, tmp_path)
    flat = " ".join(output.split())
    assert code == 1, output[-3000:]
    assert "no space left on the filesystem of the state directory (LANDING_STATE_DIR)" in flat, output[-3000:]
    assert str(state) in flat and "run the same command again" in flat and "Traceback" not in output
    assert not (tmp_path / "out" / "summary.json").exists()
    failed = parent_runs(state)[-1]  # FAILED, or RUNNING when the full disk held the sqlite store too
    assert unpublished_objects((state / "objects").as_uri(), failed.info.run_id) == []

    filler.unlink()
    code, output = run_landing(argv, tmp_path)
    assert code == 0, output[-3000:]
    failed, finished = parent_runs(state)
    assert (failed.info.status, finished.info.status) == ("FAILED", "FINISHED")  # none left RUNNING
    states = task_states(finished.data.tags["prefect.flow_run_id"], {"download": 1, "validate": 1})
    assert "Cached" in states["download"] and "Cached" in states["validate"], states  # finished steps reused
