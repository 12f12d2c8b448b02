import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from landing.cli import app
from landing.infra.object_store import open_store
from landing.infra.uris import is_local, path_to_uri, uri_to_path
from landing.tasks.compress import _local_dir

AWKWARD = "state dir 100% ünï"


def test_round_trip_decodes_space_percent_and_unicode(tmp_path):
    path = tmp_path / AWKWARD / "model"
    uri = path_to_uri(path)
    assert "%20" in uri and "%25" in uri and " " not in uri
    assert uri_to_path(uri) == path


def test_decodes_exactly_once():
    # a literal "%20" in a directory name is written %2520; decoding twice would give a space
    assert uri_to_path("file:///tmp/a%2520b") == uri_to_path("file:///tmp/a%2520b").parent / "a%20b"


def test_plain_paths_pass_through_and_other_schemes_are_refused():
    assert uri_to_path("relative/dir") == Path("relative/dir")
    assert is_local("file:///x") and is_local("x/y") and not is_local("s3://b/k")
    with pytest.raises(ValueError, match=r"s3://b/k"):
        uri_to_path("s3://b/k")
    with pytest.raises(ValueError, match=r"host 'otherhost'"):
        uri_to_path("file://otherhost/x")


def test_file_store_and_compress_import_read_a_dir_with_a_space(tmp_path):
    root = tmp_path / AWKWARD
    store = open_store(path_to_uri(root))
    (tmp_path / "c.bin").write_bytes(b"payload")
    uri = store.put_file(tmp_path / "c.bin", "a b/c.bin")
    assert uri_to_path(uri).read_bytes() == b"payload"
    assert _local_dir(path_to_uri(root)) == root


def test_predict_on_a_file_uri_of_a_dir_with_a_space_and_percent(tmp_path, tiny_onnx):
    onnx_path, _ = tiny_onnx
    bundle = tmp_path / AWKWARD / "bundle"
    shutil.copytree(onnx_path.parent, bundle)
    table = tmp_path / "in.tsv"
    pd.DataFrame({"text": ["a fine film", "a dull film"]}).to_csv(table, sep="\t", index=False)
    out = tmp_path / "out.tsv"
    result = CliRunner().invoke(app, ["predict", "--model", path_to_uri(bundle), "--input", str(table), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out, sep="\t")) == 2
