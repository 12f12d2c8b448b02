"""Manifests: what a dataset/artifact is (content hash, size, schema) so runs are reproducible and auditable."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from landing.files import sha256_file


class DatasetManifest(BaseModel):
    """Identity and shape of one validated dataset file."""

    uri: str
    sha256: str
    rows: int
    label_counts: dict[str, int] = {}
    input_schema: str
    rejects: int = 0
    rejects_uri: str | None = None
    name: str = ""

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        uri: str,
        local_path: str | Path,
        input_schema: str,
        name: str,
        rejects: int = 0,
        rejects_uri: str | None = None,
    ) -> DatasetManifest:
        """Describe the file at local_path (hash) whose content is frame (rows, label counts)."""
        counts: dict[str, int] = {}
        if "label" in frame.columns:
            vc = frame["label"].astype(str).value_counts()
            counts = {str(k): int(vc[k]) for k in sorted(vc.index)}
        return cls(
            uri=uri, sha256=sha256_file(local_path), rows=len(frame), label_counts=counts,
            input_schema=input_schema, rejects=rejects, rejects_uri=rejects_uri, name=name,
        )


class ArtifactManifest(BaseModel):
    """Identity of one published file or folder: where it is and the hash of its content. Each kind of artifact
    below says what else a reader may rely on, as typed fields (not a free-form dict read by key)."""

    model_config = ConfigDict(extra="forbid")

    uri: str
    sha256: str


class RawTableManifest(ArtifactManifest):
    """A user's table as fetched, before validation."""

    kind: Literal["raw_table"] = "raw_table"
    source: str = Field(description="where the user said it is: what errors name, never the cached copy")
    suffix: str = Field(description="its file extension, which says how to parse it")


class LogitsManifest(ArtifactManifest):
    """A teacher's logits over a run's rows (``data_contracts/logits.py``'s .npz)."""

    kind: Literal["teacher_logits"] = "teacher_logits"
    teacher_id: str
    rows: int
    num_labels: int


class ModelManifest(ArtifactManifest):
    """A saved model folder (safetensors and tokenizer), with what its readers need to use it."""

    kind: Literal["model"] = "model"
    role: str = Field(description="its step (teacher, student_kd, pruned, ...): part of its identity")
    labels: list[str] = Field(default_factory=list)
    parameters: int | None = None
    max_seq_length: int | None = Field(None, description="the row length it was trained at")
    eval_batch_size: int = 128
    mlflow_model_uri: str | None = None
    mlflow_run_id: str | None = None
    train_runtime_s: float | None = None
    global_step: int | None = None
    bf16: bool = Field(False, description="trained in bf16 autocast (training.bf16: auto on a native-bf16 CPU): "
                       "its logits export runs in bf16 too where the exporting CPU has native bf16")
    source: str | None = Field(None, description="imported models: where from")
    pruning: dict[str, Any] | None = Field(None, description="pruned models: the pruning statistics")
    word_student: Literal["bow", "bilstm"] | None = Field(None, description="a word student (not transformers)")
    onnx_bundle: str | None = Field(None, description="word students: their ONNX bundle")
    adaptation: dict[str, Any] | None = Field(None, description="mlm_adapt results: the base model and metrics")


class LogitsFileManifest(ArtifactManifest):
    """A teacher known only by the logits file a user gave (``easynlp``'s ``logits_saved_path``): it stands
    for the teacher's identity when no teacher model is given."""

    kind: Literal["teacher_logits_file"] = "teacher_logits_file"
    role: Literal["easynlp-logits"] = "easynlp-logits"


TeacherManifest = ModelManifest | LogitsFileManifest
