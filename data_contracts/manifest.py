"""Manifests: what a dataset/artifact is (content hash, size, schema) so runs are reproducible and auditable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

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
    """Identity of a model or logits file."""

    uri: str
    sha256: str
    kind: str
    metadata: dict[str, Any] = {}

    @classmethod
    def from_file(cls, uri: str, local_path: str | Path, kind: str, metadata: dict[str, Any] | None = None) -> ArtifactManifest:
        """Hash local_path and record it under uri."""
        return cls(uri=uri, sha256=sha256_file(local_path), kind=kind, metadata=dict(metadata or {}))
