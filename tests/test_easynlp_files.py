"""EasyNLP's prediction lines byte for byte, and teacher files with and without our ids sidecar."""

from __future__ import annotations

import numpy as np
import pytest

from landing.data_contracts.easynlp_files import (
    LogitsColumns,
    prediction_lines,
    read_teacher_file,
    sidecar_path,
    write_sidecar,
)
from landing.data_contracts.logits import LogitsFileError

LOGITS = np.array([[0.25, -1.5], [2.0, 0.5]], dtype=np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    import torch

    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def _easynlp_reference(logits: np.ndarray, labels: list[str], columns: list[str], appended: list[list[str]]) -> list[str]:
    """What EasyNLP's SequenceClassificationPredictor.postprocess and SimplePredictorManager write, restated from
    its code with torch's float32 softmax."""
    import torch

    probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    lines = []
    for b, order in enumerate(np.argsort(-probs, axis=-1)):
        output = [{"pred": labels[p], "prob": float(probs[b][p]), "logit": float(logits[b][p])} for p in order]
        row = {"predictions": output[0]["pred"], "probabilities": ",".join(str(t) for t in probs[b]),
               "logits": ",".join(str(t) for t in logits[b]), "output": output}  # fmt: skip
        lines.append("\t".join([str(row[c]) for c in columns] + appended[b]) + "\n")
    return lines


def test_prediction_lines_match_easynlps_format():
    columns = ["predictions", "probabilities", "logits", "output"]
    appended = [["a film", "1"], ["another", "0"]]
    ours = prediction_lines(LOGITS, _softmax(LOGITS), ["neg", "pos"], columns, appended)
    assert ours == _easynlp_reference(LOGITS, ["neg", "pos"], columns, appended)
    label, probabilities, logits, output, *rest = ours[0].rstrip("\n").split("\t")
    assert (label, logits, rest) == ("neg", "0.25,-1.5", ["a film", "1"])
    assert probabilities.startswith("0.8519") and output.startswith("[{'pred': 'neg', 'prob': 0.8519")


def test_a_logits_only_file_is_what_a_kd_command_reads(tmp_path):
    path = tmp_path / "pred.tsv"
    path.write_text("".join(prediction_lines(LOGITS, _softmax(LOGITS), ["0", "1"], ["logits"], [[], []])))
    assert path.read_text() == "0.25,-1.5\n2.0,0.5\n"
    read = read_teacher_file(path, LogitsColumns(["logits"], "logits", 2))
    assert read.ids is None and np.array_equal(read.logits, LOGITS)  # positional: no sidecar


def test_the_sidecar_gives_ids_only_while_the_file_is_unchanged(tmp_path):
    path = tmp_path / "pred.tsv"
    path.write_text("0.25,-1.5\n2.0,0.5\n")
    write_sidecar(path, ["a", "b"], "teacher@sha256:00", ["0", "1"], ["logits"])
    assert read_teacher_file(path, LogitsColumns(["logits"], "logits", 2)).ids == ["a", "b"]
    path.write_text("0.25,-1.5\n2.0,0.6\n")  # edited after predict: the ids no longer vouch for it
    assert read_teacher_file(path, LogitsColumns(["logits"], "logits", 2)).ids is None
    assert sidecar_path(path).is_file()


def test_bad_teacher_lines_are_named(tmp_path):
    path = tmp_path / "pred.tsv"
    path.write_text("0.25,-1.5\n2.0\n")
    with pytest.raises(LogitsFileError, match=r"pred.tsv, line 2, column logits: expected 2 finite floats, found '2.0'"):
        read_teacher_file(path, LogitsColumns(["logits"], "logits", 2))
    path.write_text("1\t0.25,-1.5\n")
    with pytest.raises(LogitsFileError, match=r"line 1: expected 1 tab-separated column\(s\) \(logits\), found 2"):
        read_teacher_file(path, LogitsColumns(["logits"], "logits", 2))
