"""Erasing personal data from archived orders: the one way ``forget`` (a client's request) and
ARCHIVE_PII_RETENTION (age) do it.

What is erased: what ARCHIVE_PII governs (``pii.py``), clear or hashed alike: the client's
name, e-mail and phone in the client reference, the delivery address in the document and in
its copy of the source order. The document then gets ``forgotten_at`` and ``forgotten_by``
(who asked: ``forget`` or ``ARCHIVE_PII_RETENTION``).

One walk over the selection, in chunks of ``CHUNK`` documents read with just enough to know
which references are objects (a field under a null reference cannot be set); per chunk,
updates by ``_id`` clear the fields, then a last one marks only the documents in which every
one of them is now null: a document replaced meanwhile (a correction archived again,
personal data and all) is not marked, and the next erasure finds it. Every update is
idempotent and may be retried whole; a walk cut by a transient error starts again (what it
marked is out of a "not erased yet" selection); a stop ends it between chunks."""

from __future__ import annotations

import functools
import threading
from datetime import UTC, datetime
from typing import Any

from order_archiver.mongodb.source import chunked
from order_archiver.mongodb.storage import Document, MongoCollection
from order_archiver.orders.pii import ORDER_PII_FIELDS, PII_FIELDS
from order_archiver.retry import Retry, retrying

# What ARCHIVE_PII governs (pii.py), in the client's reference and in the order and its copy.
CLIENT_PII = {f"client.{name}": None for name in PII_FIELDS}
ORDER_PII = {name: None for name in ORDER_PII_FIELDS}
SOURCE_PII = {f"source.{name}": None for name in ORDER_PII_FIELDS}
ERASED_FIELDS = (*CLIENT_PII, *ORDER_PII, *SOURCE_PII)
CHUNK = 500

BY_REQUEST = "forget"
BY_AGE = "ARCHIVE_PII_RETENTION"


def holds_personal_data(document: Document) -> bool:
    """Whether some personal data is left in ``document`` (read with ``PERSONAL_FIELDS``): a
    field of ``ERASED_FIELDS`` neither null nor missing (what ``{field: {$ne: null}}`` selects)."""
    return any(_at(document, field) is not None for field in ERASED_FIELDS)


def _at(document: Any, path: str) -> Any:
    """The value at a dotted ``path``; None when missing or under a non-object (a null reference)."""
    for name in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(name)
    return document


PERSONAL_FIELDS = dict.fromkeys(ERASED_FIELDS, 1)  # the projection holds_personal_data reads


def erase_personal_data(
    archive: MongoCollection,
    selection: dict[str, Any],
    *,
    forgotten_by: str,
    stop_event: threading.Event | None,
    now: datetime | None = None,
) -> int:
    """Erase the personal data of the documents of ``selection``; how many were marked."""
    mark = {"forgotten_at": now or datetime.now(UTC), "forgotten_by": forgotten_by}
    marked = 0

    def walk() -> None:
        nonlocal marked
        shapes = {"client.id": 1, "source._id": 1}  # which references are objects, nothing more
        with archive.find(selection, shapes, batch_size=CHUNK) as cursor:
            for chunk in chunked(cursor, CHUNK):
                marked += _erase_chunk(archive, chunk, mark, stop_event)
                if stop_event is not None and stop_event.is_set():
                    return

    retrying(walk, purpose=Retry.WRITE, stop_event=stop_event)
    return marked


def _erase_chunk(
    archive: MongoCollection, chunk: list[Document], mark: dict[str, Any], stop_event: threading.Event | None
) -> int:
    """Clear the chunk's fields, then mark those left with none; how many those are."""
    ids = [d["_id"] for d in chunk]
    clients = [d["_id"] for d in chunk if isinstance(d.get("client"), dict)]
    copies = [d["_id"] for d in chunk if isinstance(d.get("source"), dict)]

    def update(chosen: list[Any], fields: dict[str, Any], **condition: None) -> int:
        result = retrying(
            functools.partial(archive.update_many, {"_id": {"$in": chosen}, **condition}, {"$set": fields}),
            purpose=Retry.WRITE,
            stop_event=stop_event,
        )
        # Matched, not modified: a retry after a write-concern error finds the write applied
        # (modified 0) and must count the same documents.
        return int(result.matched_count)

    for chosen, fields in ((clients, CLIENT_PII), (copies, SOURCE_PII), (ids, ORDER_PII)):
        if chosen:
            update(chosen, fields)
    return update(ids, mark, **dict.fromkeys(ERASED_FIELDS))  # only the documents left with none
