"""``landing data push``: publish a new version of a labelled table and announce it to Prefect.

The table is checked against a run config's data contract (when given), stored once per
content hash under ``datasets/<name>/<sha256>/`` in the object store, and only then a
``landing.data.pushed`` event is emitted; deployments with ``on_data_push: <name>`` (see
landing/deployments.py) start retraining on exactly that version (URI + hash).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from landing.data_contracts.schema import TableContract
from landing.files import sha256_file
from landing.infra.object_store import open_store
from landing.infra.settings import LandingSettings, get_settings

DATA_PUSHED_EVENT = "landing.data.pushed"


def dataset_resource_id(dataset: str) -> str:
    """The Prefect event resource a dataset's pushes are about (what data triggers match on)."""
    return f"landing.dataset.{dataset}"


_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class DataPushError(RuntimeError):
    """The table was not published or not announced; the message says which and why."""


@dataclass(frozen=True)
class PushedData:
    dataset: str
    uri: str
    sha256: str
    rows: int | None
    event_id: str | None = None


def publish_data_version(
    path: Path, dataset: str, contract: TableContract | None = None, settings: LandingSettings | None = None
) -> PushedData:
    """Validate ``path`` (if a contract is given) and store it under its content hash."""
    from landing.data_contracts.validation import read_table

    if not _DATASET_NAME.match(dataset):
        raise DataPushError(f"dataset name {dataset!r}: expected letters, digits, '_', '.' or '-' (max 100)")
    if not path.is_file():
        raise DataPushError(f"{path}: no such file")
    rows = None
    if contract is not None:  # raises DataValidationError naming file, line and column
        rows = len(read_table(path, contract, require_label=contract.label_column is not None).frame)
    sha = sha256_file(path)
    store = open_store(settings=settings or get_settings())
    uri = store.put_file(path, f"datasets/{dataset}/{sha}/{path.name}")  # put_file is atomic
    return PushedData(dataset, uri, sha, rows)


def announce_data_version(pushed: PushedData) -> PushedData:
    """Emit ``landing.data.pushed`` to the Prefect API; waits until the server has it."""
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        raise DataPushError(
            f"{pushed.uri} was stored, but no Prefect server is configured to announce it to: set PREFECT_API_URL "
            "(after `make up`: source <state_dir>/stack/stack.env)"
        )
    event = Event(
        event=DATA_PUSHED_EVENT,
        resource={"prefect.resource.id": dataset_resource_id(pushed.dataset), "prefect.resource.name": pushed.dataset},
        payload={k: v for k, v in asdict(pushed).items() if k != "event_id"},
    )

    async def send() -> None:
        # A client of its own, not emit_event's background worker: the CLI exits right after, and
        # checkpoint_every=1 waits for the server's pong, i.e. until it has the event.
        async with PrefectEventsClient(api_url=api_url, checkpoint_every=1) as client:
            await client.emit(event)

    try:
        asyncio.run(send())
    except Exception as exc:  # connection refused, DNS, HTTP errors: all mean "not announced"
        raise DataPushError(f"{pushed.uri} was stored, but announcing it to {api_url} failed: {exc}") from exc
    return PushedData(**{**asdict(pushed), "event_id": str(event.id)})
