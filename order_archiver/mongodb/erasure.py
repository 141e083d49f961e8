"""Erasing personal data from archived orders.

``erase_personal_data``: the one walk ``forget`` (a person's request) and ARCHIVE_PII_RETENTION
(age) erase with. In chunks of ``CHUNK`` documents read whole, each document erased in memory
(``erasing.Erasure``: pure) and updated with what changed, only if it still holds the version
read (its ``source_hash`` in the filter): a document replaced meanwhile (a correction archived
again) is left to the writer, which erases a forgotten person's orders itself. Every update is
idempotent and may be retried whole; a walk cut by a transient error starts again; a stop ends
it between chunks.

An erasure is a state, not a one-off update: ``forget`` records the person first
(``forgotten.ForgottenPersons``), and every write of the archive respects the record."""

from __future__ import annotations

import threading
from typing import Any

from order_archiver.mongodb.source import chunked
from order_archiver.mongodb.storage import ArchiveWriter, MongoCollection
from order_archiver.orders.erasing import Erasure
from order_archiver.retry import Retry, retrying

CHUNK = 500


def erase_personal_data(
    archive: MongoCollection,
    selection: dict[str, Any],
    erasure: Erasure,
    *,
    stop_event: threading.Event | None,
) -> int:
    """Erase the documents of ``selection`` (``erasure``); how many were changed."""
    changed = 0
    writer = ArchiveWriter(archive, stop_event)

    def walk() -> None:
        nonlocal changed
        with archive.find(selection, batch_size=CHUNK) as cursor:
            for chunk in chunked(cursor, CHUNK):
                changed += writer.erase(chunk, lambda _: erasure)
                if stop_event is not None and stop_event.is_set():
                    return

    retrying(walk, purpose=Retry.WRITE, stop_event=stop_event)
    return changed


def count_holding(
    archive: MongoCollection,
    selection: dict[str, Any],
    erasure: Erasure,
    stop_event: threading.Event | None,
) -> tuple[int, int]:
    """The selected orders, and those still holding personal data ``erasure`` would remove:
    one indexed read (the data tested here, never logged)."""

    def count() -> tuple[int, int]:
        orders = holding = 0
        with archive.find(selection, batch_size=CHUNK) as cursor:
            for document in cursor:
                orders += 1
                holding += erasure.holds(document)
        return orders, holding

    return retrying(count, stop_event=stop_event)
