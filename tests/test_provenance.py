"""Provenance: a benchmark's result files never mark the tree it ran from as dirty; code changes do."""

import subprocess

import pytest

from landing.infra import provenance


@pytest.fixture
def repo(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks/results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks/results/seed-1.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    return tmp_path


def test_a_seed_written_into_the_tree_keeps_it_clean(repo):
    (repo / "benchmarks/results/seed-1.json").write_text('{"accuracy": 0.9}\n')
    assert not provenance.git_commit().endswith("-dirty")
    assert provenance.git_diff_sha256() is None


def test_a_code_change_marks_the_tree_dirty(repo):
    (repo / "code.py").write_text("x = 2\n")
    assert provenance.git_commit().endswith("-dirty")
    assert provenance.git_diff_sha256() is not None
