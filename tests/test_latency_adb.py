"""AdbTarget: command building, the onnxruntime_perf_test parser, and a run through a FAKE adb.

No Android phone is reachable from the test machine, so the fake ``adb`` below is the only
mock: it records its argv and answers ``shell`` commands with the perf_test outputs
in tests/fixtures/adb/ (hand-written in the format of onnxruntime_perf_test, not recorded on a device).
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from landing.infra.latency import AdbTarget, LatencyTargetError, make_target, parse_perf_test_output
from landing.models.params import LatencyParams

FIXTURES = Path(__file__).parent / "fixtures" / "adb"

FAKE_ADB = f"""#!{sys.executable}
import json, os, re, sys
from landing.models.params import LatencyParams
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_ADB_NO_DEVICE"):
    sys.stderr.write("adb: no devices/emulators found\\n")
    sys.exit(1)
if args[:1] == ["-s"]:
    args = args[2:]
if args[0] == "push":
    print(f"{{args[1]}}: 1 file pushed, 0 skipped. 41.3 MB/s (1024 bytes in 0.001s)")
elif args[0] == "shell":
    command = " ".join(args[1:])
    if command == "uname -m":
        print("aarch64")
    elif "./onnxruntime_perf_test " in command:
        seq = re.search(r"sequence:(\\d+)", command).group(1)
        sys.stdout.write(open(os.path.join(os.environ["FAKE_ADB_FIXTURES"], f"perf_test_seq{{seq}}.txt")).read())
"""


@pytest.fixture
def fake_adb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(path of the fake adb, its argv log)."""
    adb = tmp_path / "bin" / "adb"
    adb.parent.mkdir()
    adb.write_text(FAKE_ADB)
    adb.chmod(adb.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_FIXTURES", str(FIXTURES))
    return adb, log


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    binary = tmp_path / "onnxruntime_perf_test"
    binary.write_bytes(b"\x7fELF fake")
    model = tmp_path / "student.ort"
    model.write_bytes(b"ORTM" + b"\0" * 1000)
    return binary, model


def test_parse_hand_written_outputs() -> None:
    p16 = parse_perf_test_output((FIXTURES / "perf_test_seq16.txt").read_text())
    assert p16["mean_ms"] == pytest.approx(2.70963)
    assert p16["p50_ms"] == pytest.approx(2.65339)
    assert p16["p90_ms"] == pytest.approx(2.87167)
    assert p16["p99_ms"] == pytest.approx(3.89271)
    assert p16["runs"] == 200 and p16["peak_working_set_bytes"] == 41316352
    assert p16["session_creation_s"] == pytest.approx(0.0841673)
    p32 = parse_perf_test_output((FIXTURES / "perf_test_seq32.txt").read_text())  # log noise, exponent notation
    assert p32["p99_ms"] == pytest.approx(10.297) and p32["p999_ms"] == pytest.approx(12.1847)
    assert p32["min_ms"] <= p32["p50_ms"] <= p32["p90_ms"] <= p32["p99_ms"] <= p32["max_ms"]


def test_parse_old_format_and_garbage() -> None:
    old = "Average time cost:58.8053 ms\nP50 Latency is 0.0587108sec\nP90 Latency is 0.0599845sec\n"
    assert parse_perf_test_output(old) == {"p50_ms": pytest.approx(58.7108), "p90_ms": pytest.approx(59.9845)}
    assert parse_perf_test_output("failed to initialize.") == {}


def test_build_commands(files: tuple[Path, Path]) -> None:
    binary, model = files
    target = AdbTarget("R58M123", perf_test_binary=binary)
    cmds = target.build_commands(model, LatencyParams(seq_lens=[16, 32], threads=2, runs=50))
    assert all(c[:3] == ["adb", "-s", "R58M123"] for c in cmds)
    assert cmds[1] == ["adb", "-s", "R58M123", "push", str(binary), "/data/local/tmp/landing/onnxruntime_perf_test"]
    assert ["adb", "-s", "R58M123", "push", str(model), "/data/local/tmp/landing/model.ort"] in cmds
    run16 = cmds[-2][-1]
    assert run16.startswith("cd /data/local/tmp/landing && LD_LIBRARY_PATH=/data/local/tmp/landing ")
    assert "./onnxruntime_perf_test -e cpu -m times -r 50 -x 2 -y 1 -I -s -f batch:1 -f sequence:16 model.ort" in run16
    assert "-f sequence:32" in cmds[-1][-1]
    # fixed-shape exports: one model per seq_len, no free-dimension overrides
    fixed = AdbTarget(perf_test_binary=binary, seq_dim=None, batch_dim=None)
    cmds = fixed.build_commands({16: model, 32: model.with_name("s32.ort")}, LatencyParams(seq_lens=[16, 32]))
    assert cmds[0][:2] == ["adb", "shell"]
    assert cmds[-1][-1].endswith("-I -s model_s32.ort") and "-f" not in cmds[-1][-1].split()
    with pytest.raises(LatencyTargetError, match="fixed-shape"):
        fixed.build_commands(model, LatencyParams(seq_lens=[16, 32]))


def test_measure_through_fake_adb(fake_adb: tuple[Path, Path], files: tuple[Path, Path]) -> None:
    adb, log = fake_adb
    binary, model = files
    target = make_target({"kind": "adb", "serial": "R58M123", "perf_test_binary": binary, "adb": str(adb)})
    report = target.measure(model, LatencyParams(seq_lens=[16, 32], threads=1, runs=200))
    assert report.target_name == "adb:R58M123" and report.machine == "aarch64"
    assert report.p50(16) == pytest.approx(2.65339) and report.p50(32) == pytest.approx(5.31458)
    assert report.results[32].model_only.p99_ms == pytest.approx(10.297)
    assert report.results[16].model_only.mean_ms == pytest.approx(2.70963)
    assert report.results[16].end_to_end is None and "model only" in report.results[16].end_to_end_reason
    assert report.peak_rss_bytes == 44986368 and report.model_bytes == 1004
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [c[1:] for c in target.build_commands(model, LatencyParams(seq_lens=[16, 32], runs=200))]


def test_no_device_is_a_clear_error(
    fake_adb: tuple[Path, Path], files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    adb, _ = fake_adb
    monkeypatch.setenv("FAKE_ADB_NO_DEVICE", "1")
    with pytest.raises(LatencyTargetError, match="adb:default-device.*no usable Android device"):
        AdbTarget(perf_test_binary=files[0], adb=str(adb)).measure(files[1], LatencyParams(seq_lens=[16]))


def test_missing_binary_and_adb(tmp_path: Path, files: tuple[Path, Path]) -> None:
    binary, model = files
    with pytest.raises(LatencyTargetError, match="onnxruntime_perf_test binary not found"):
        AdbTarget(perf_test_binary=tmp_path / "missing").measure(model)
    with pytest.raises(LatencyTargetError, match="'/nonexistent/adb' not found"):
        AdbTarget(perf_test_binary=binary, adb="/nonexistent/adb").measure(model, LatencyParams(seq_lens=[16]))
