"""One run at a time per state directory: a second run waits for the first, or says who holds the lock."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from tiny_runs import landing_command, parent_runs, run_landing, task_states, write_config

from landing.infra.state_lock import StateDirLockedError, state_dir_lock

HOLD = "from landing.infra.state_lock import state_dir_lock as s; import time, sys\nwith s(): print('held', flush=True); time.sleep(60)"


def _holder_process(state_dir, env=None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD], env={"LANDING_STATE_DIR": str(state_dir), **(env or {})},
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    with state_dir_lock(tmp_path, timeout_s=0), state_dir_lock(tmp_path, timeout_s=0):
        assert (tmp_path / "run.lock.holder").is_file()


def test_a_held_lock_times_out_with_the_holder_named(tmp_path):
    holder = _holder_process(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(StateDirLockedError) as refused, state_dir_lock(tmp_path, timeout_s=0.5):
            pass
        assert time.monotonic() - started < 5
        message = str(refused.value)
        assert str(tmp_path / "run.lock") in message and f"pid {holder.pid}" in message
        assert "LANDING_LOCK_TIMEOUT_S" in message and "LANDING_STATE_DIR" in message
    finally:
        holder.kill()
        holder.wait()
    with state_dir_lock(tmp_path, timeout_s=0):  # a killed holder leaves no stale lock behind (flock dies with it)
        pass


@pytest.mark.integration
def test_landing_run_refuses_when_told_not_to_wait(prefect_api, flow_env):
    config = write_config(flow_env)
    holder = _holder_process(flow_env / "state", {"PATH": ""})
    try:
        code, output = run_landing(["run", str(config), "--output-dir", str(flow_env / "out")], flow_env,
                                   env={"LANDING_LOCK_TIMEOUT_S": "0"})  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    flat = " ".join(output.split())
    assert code == 1 and f"pid {holder.pid}" in flat and "run.lock" in flat and "Traceback" not in output, output
    assert not parent_runs(flow_env / "state")  # refused before any run was opened


@pytest.mark.integration
def test_two_runs_on_one_state_dir_both_finish_and_the_second_reuses_the_first(prefect_api, flow_env):
    config = write_config(flow_env)
    procs = [landing_command(["run", str(config), "--output-dir", str(flow_env / f"out{i}")], flow_env) for i in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    # Usually one waits ("waiting for the run that holds ..."); when process start-up staggers them, the
    # second simply starts after the first: either way one ran at a time and the later reused the first.
    summaries = [json.loads((flow_env / f"out{i}" / "summary.json").read_text()) for i in (0, 1)]
    for role in ("teacher", "student_kd", "student_baseline"):
        assert summaries[0][role]["accuracy"] == summaries[1][role]["accuracy"]
    first, later = parent_runs(flow_env / "state")
    assert first.info.end_time <= later.info.start_time or any("waiting for the run" in out for out in outputs)
    second = next(s for s in summaries if s["mlflow_run_id"] == later.info.run_id)
    states = task_states(second["prefect_flow_run_id"], {"train": 1, "validate": 1})
    assert set(states["train"]) == {"Cached"} and set(states["validate"]) == {"Cached"}, states
    assert (first.info.status, later.info.status) == ("FINISHED", "FINISHED")
