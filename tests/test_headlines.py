"""benchmarks/headlines.py: the README's headline table is what the results files say, and its claims are paired."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "headlines.py"


@pytest.fixture(scope="module")
def headlines():
    spec = importlib.util.spec_from_file_location("headlines", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_matches_the_results_files():
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_paired_difference_is_the_sd_of_the_per_seed_differences_not_of_either_side(headlines):
    # Both sides vary by 10 points across seeds, but A beats B by exactly 2 points on every seed.
    a, b = [0.70, 0.80, 0.90], [0.68, 0.78, 0.88]
    assert headlines.pct(a) == "80.00 ± 10.00"
    assert headlines.paired(a, b) == "2.00 ± 0.00"
    assert headlines.seeds(1) == "1 seed" and headlines.seeds(3) == "3 seeds"
