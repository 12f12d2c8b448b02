"""The augmented table ``landing augment`` writes: the user's own column names, plus where each row came from."""

from __future__ import annotations

import json
from pathlib import Path

from landing.data_contracts.manifest import DatasetManifest
from landing.data_contracts.schema import TableContract
from landing.files import atomic_path, write_bytes_atomic
from landing.infra.object_store import store_for_uri
from landing.infra.settings import get_settings

FORMATS = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".jsonl": None, ".json": None}


def write_augmented_table(manifest: dict, contract: TableContract, output: Path) -> int:
    """Fetch the augmented rows of ``manifest`` and write them to ``output`` (format by extension, written
    to a temporary name then renamed), with ``output.manifest.json``; returns the row count."""
    from landing.data_contracts.validation import read_canonical

    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{output}: unsupported extension {suffix!r}; expected .csv, .tsv or .jsonl")
    manifest = DatasetManifest.model_validate(manifest)
    local = get_settings().cache_dir / "objects" / f"{manifest.sha256}.jsonl"
    if not local.is_file():
        store_for_uri(manifest.uri).get_file(manifest.uri, local)
    frame = read_canonical(local)
    names = {"text": contract.first_sequence, "text_pair": contract.second_sequence, "label": contract.label_column}
    frame = frame.rename(columns={k: v for k, v in names.items() if v}).drop(columns=["id"])
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        if FORMATS[suffix] is None:
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_csv(tmp, sep=FORMATS[suffix], index=False)
    write_bytes_atomic(output.with_name(output.name + ".manifest.json"),
                       json.dumps(manifest.model_dump(), indent=2).encode())  # fmt: skip
    return len(frame)
