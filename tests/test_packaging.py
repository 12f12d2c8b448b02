"""The wheel exposes one import package, `landing`, and runs from a folder with its own models/ and flows/.

The fresh venv gets the wheel only (``--no-deps``); its dependencies are read from this venv's
site-packages through a plain path line, so no editable finder of this checkout is installed there.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs/smoke/distill.yaml"
SST2 = ROOT.parent / "shared/data/sst2"
SHADOWING_PACKAGES = ("models", "flows", "tasks", "infra", "data_contracts")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.shared_data("sst2/train.tsv", "sst2/dev.tsv"),
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(ROOT)], check=True)  # fmt: skip
    return next(out.glob("landing-*.whl"))


def test_the_wheel_has_one_top_level_package(wheel):
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if not name.startswith("landing-")}
    assert tops == {"landing"}
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("landing/models/kd.py", "landing/flows/distill.py", "landing/infra/latency/bench_onnx.py"):
        assert module in names


def test_smoke_distill_from_a_folder_that_shadows_the_subpackages(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    target = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                            check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    deps = [p for p in (*site.getsitepackages(), sysconfig.get_path("purelib")) if Path(p).is_dir()]
    (Path(target) / "dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True)  # fmt: skip

    user_dir = tmp_path / "project"
    marker = tmp_path / "imported-from-user-dir"
    for name in SHADOWING_PACKAGES:
        (user_dir / name).mkdir(parents=True)
        (user_dir / name / "__init__.py").write_text(
            f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\n"
        )
    config = user_dir / "distill.yaml"
    config.write_text(SMOKE.read_text())
    overrides = [f"data.train.sources=[{{uri: {SST2 / 'train.tsv'}}}]", f"data.eval.sources=[{{uri: {SST2 / 'dev.tsv'}}}]",
                 "data.train.max_rows=300", "data.split.train_size=120", "data.split.transfer_size=120",
                 "teacher.training.epochs=2", "student.training.epochs=2", "latency_samples=2"]  # fmt: skip
    # As a user's shell: no test's tracking, stack or Prefect API settings (the run starts its own server).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LANDING_", "PYTHON", "AWS_", "PREFECT_API"))}
    env.update(LANDING_STATE_DIR=str(tmp_path / "state"), LANDING_USE_STACK="false")
    run = subprocess.run([env_dir / "bin" / "landing", "run", str(config), *[a for o in overrides for a in ("--set", o)],
                          "--output-dir", str(user_dir / "out")],
                         cwd=user_dir, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (user_dir / "out" / "summary.json").is_file()
    assert not marker.exists(), f"imported the user's own packages: {marker.read_text()}"
    where = subprocess.run([python, "-c", "import landing.models.kd as m; print(m.__file__)"], cwd=user_dir, env=env,
                           check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert where.strip().startswith(target), where
