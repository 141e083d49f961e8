"""Erasing personal data from archived orders: the one way ``forget`` (a client's request) and
ARCHIVE_PII_RETENTION (age) do it.

What is erased: what ARCHIVE_PII governs (``pii.py``), clear or hashed alike: the client's
name, e-mail and phone in the client reference, the delivery address in the document and in
its copy of the source order. The document then gets ``forgotten_at`` and ``forgotten_by``
(who asked: ``forget`` or ``ARCHIVE_PII_RETENTION``). Three updates clear the fields (a field
under a reference that is not an object cannot be set), then a fourth marks only the
documents in which every one of them is null: a document replaced meanwhile (a correction
archived again, personal data and all) is not marked, and the next erasure finds it. Each
update is idempotent and may be retried whole."""

from __future__ import annotations

import functools
import threading
from datetime import UTC, datetime
from typing import Any

from order_archiver.mongodb.storage import MongoCollection
from order_archiver.orders.pii import ORDER_PII_FIELDS, PII_FIELDS
from order_archiver.retry import Retry, retrying

# What ARCHIVE_PII governs (pii.py), in the client's reference and in the order and its copy.
CLIENT_PII = {f"client.{name}": None for name in PII_FIELDS}
ORDER_PII = {name: None for name in ORDER_PII_FIELDS}
SOURCE_PII = {f"source.{name}": None for name in ORDER_PII_FIELDS}
ERASED_FIELDS = (*CLIENT_PII, *ORDER_PII, *SOURCE_PII)

BY_REQUEST = "forget"
BY_AGE = "ARCHIVE_PII_RETENTION"


def holding_personal_data(selection: dict[str, Any]) -> dict[str, Any]:
    """The documents of ``selection`` in which some personal data is left."""
    return {"$and": [selection, {"$or": [{field: {"$ne": None}} for field in ERASED_FIELDS]}]}


def erase_personal_data(
    archive: MongoCollection,
    selection: dict[str, Any],
    *,
    forgotten_by: str,
    stop_event: threading.Event | None,
    now: datetime | None = None,
) -> int:
    """Erase the personal data of the documents of ``selection``; how many were marked."""
    updates = [
        ({"$and": [selection, {"client": {"$type": "object"}}]}, CLIENT_PII),
        ({"$and": [selection, {"source": {"$type": "object"}}]}, SOURCE_PII),
        (selection, ORDER_PII),
    ]
    for chosen, fields in updates:
        retrying(
            functools.partial(archive.update_many, chosen, {"$set": fields}),
            purpose=Retry.WRITE,
            stop_event=stop_event,
        )
    erased = {"$and": [selection, *({field: None} for field in ERASED_FIELDS)]}
    mark = {"forgotten_at": now or datetime.now(UTC), "forgotten_by": forgotten_by}
    result = retrying(
        functools.partial(archive.update_many, erased, {"$set": mark}),
        purpose=Retry.WRITE,
        stop_event=stop_event,
    )
    return int(result.modified_count)
