"""HostTarget: a real tiny BERT exported to ONNX, timed by bench_onnx.py in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from landing.infra.latency import BENCH_SCRIPT, HostTarget, LatencyReport, LatencyTargetError, SshTarget, make_target
from landing.models.params import LatencyParams


def check_report(report: LatencyReport, seq_lens: tuple[int, ...], runs: int, *, end_to_end: bool) -> None:
    assert sorted(report.results) == list(seq_lens)
    assert report.onnxruntime and report.python and report.machine
    assert report.threads == 1 and report.model_bytes > 0 and report.peak_rss_bytes > 0
    for seq_len in seq_lens:
        res = report.results[seq_len]
        timings = [res.model_only] + ([res.end_to_end] if end_to_end else [])
        for stats in timings:
            assert stats is not None and stats.runs == runs
            assert 0 < stats.p50_ms <= stats.p90_ms <= stats.p99_ms
            assert stats.mean_ms > 0
        assert report.p50(seq_len) == res.model_only.p50_ms


def test_host_measures_model_only_and_end_to_end(tiny_onnx: tuple[Path, Path]) -> None:
    model, tokenizer_json = tiny_onnx
    report = HostTarget().measure(
        model, LatencyParams(seq_lens=[16, 32], warmup=3, runs=20), tokenizer_json=tokenizer_json,
        texts=["a fine film", "dull and\nlong", "the plot is thin but the acting is great"],
    )
    assert report.target_name == report.target == "host"
    check_report(report, (16, 32), 20, end_to_end=True)
    # Model-only rows time the sample texts tokenised to exactly each length (repeated when too short).
    assert [report.results[s].model_only_inputs for s in (16, 32)] == ["text", "text"]
    assert json.loads(json.dumps(report.to_json()))["results"]["16"]["model_only"]["runs"] == 20


def test_host_without_tokenizer_reports_why_end_to_end_is_missing(tiny_onnx: tuple[Path, Path]) -> None:
    report = HostTarget().measure(tiny_onnx[0], LatencyParams(seq_lens=[16], warmup=1, runs=5))
    res = report.results[16]
    assert res.end_to_end is None and "tokenizer" in res.end_to_end_reason
    assert res.model_only_inputs == "random ids"  # said, not hidden
    with pytest.raises(KeyError, match="end-to-end"):
        report.p50(16, end_to_end=True)


def test_missing_model_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(LatencyTargetError, match="nope.onnx") as info:
        HostTarget().measure(missing, LatencyParams(runs=1))
    assert "host" in str(info.value) and str(missing) in str(info.value)


def test_bad_model_is_a_json_error_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    proc = subprocess.run([sys.executable, str(BENCH_SCRIPT), "--model", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "cannot load model" in json.loads(proc.stdout)["error"]
    with pytest.raises(LatencyTargetError, match="cannot load model"):
        HostTarget().measure(bad, LatencyParams(runs=1))


def test_make_target_registry() -> None:
    assert isinstance(make_target({"kind": "host"}), HostTarget)
    ssh = make_target({"kind": "ssh", "host": "pi.local", "user": "pi", "port": 2222})
    assert isinstance(ssh, SshTarget) and ssh.name == "ssh:pi@pi.local:2222"
    with pytest.raises(ValueError, match="unknown 'phone'"):
        make_target({"kind": "phone"})
    with pytest.raises(ValueError, match="bad parameters"):
        make_target({"kind": "ssh", "hostname": "x"})


def test_pytorch_and_onnx_rows_time_the_same_tokens(tiny_onnx: tuple[Path, Path]) -> None:
    """The PyTorch reference row and the ONNX rows of one table get identical ids at each length."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from landing.infra.latency import bench_onnx
    from landing.models.latency import fixed_length_inputs

    model, tokenizer_json = tiny_onnx
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(model.parent)
    texts = ["a fine film", "dull and long"]
    for seq_len in (8, 16, 48):
        onnx_feeds = bench_onnx._text_feeds(np, session, str(tokenizer_json), texts, 1, seq_len)
        torch_feeds = fixed_length_inputs(tokenizer, texts, seq_len)
        assert onnx_feeds["input_ids"].shape == (1, seq_len)
        np.testing.assert_array_equal(onnx_feeds["input_ids"], torch_feeds["input_ids"].numpy())
        np.testing.assert_array_equal(onnx_feeds["attention_mask"], torch_feeds["attention_mask"].numpy())
