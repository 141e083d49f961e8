"""The list of the cold files published, one entry a file (in the checkpoints collection, beside
the move's journal), so that ``verify`` notices a file that is gone (removed by hand, lost with
a bucket's lifecycle rule): its orders are in no place at all.

Kept in step with the files: an entry is added once a file is published and removed before the
file is (a rewrite's old file, a month past ARCHIVE_RETENTION), so that a listed file that is not
there is lost, never one about to be replaced; a crash between the two is settled with the
journal (``move.ColdMove.settle``). Its cost grows with the number of files (a few a month),
which ``verify`` lists anyway, not with the orders.

An entry also holds the cutoff its file was erased to for ARCHIVE_PII_RETENTION (the footer's
``META_ERASED_BEFORE``; null: none), so that ``status`` and ``doctor`` count the cold orders past
it without opening the files done (``retention.count_by_age``). An entry written before it was
recorded has no such field: its footer says.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from order_archiver.cold.files import FileSummary, footer_metadata
from order_archiver.cold.schema import erased_before_of
from order_archiver.cold.store import ColdFile, ColdStore
from order_archiver.context import RunContext
from order_archiver.documents import Document, MongoCollection
from order_archiver.orders.enrichment import as_utc
from order_archiver.retry import Retry

KIND = "cold-file"
NOT_RECORDED = "unrecorded"  # an entry of an earlier version: its erasure's cutoff is in the footer only


@dataclass(frozen=True)
class Listed:
    """A published file as the list has it."""

    url: str  # the file's URL (under ARCHIVE_COLD_URL)
    path: str  # in the store's file system
    rows: int
    # ARCHIVE_PII_RETENTION's cutoff the file was erased to (None: never); NOT_RECORDED: its footer says
    erased_before: datetime | str | None = NOT_RECORDED


class ColdManifest:
    """The cold files published at one ``ARCHIVE_COLD_URL``."""

    def __init__(self, store: ColdStore, collection: MongoCollection, context: RunContext) -> None:
        self.store, self.collection, self.context = store, collection, context

    def _key(self, path: str) -> str:
        return f"{KIND}:{self.store.url_of(path)}"

    def _write(self, func: Callable[[], object]) -> None:
        self.context.retrying(func, purpose=Retry.WRITE)

    def add(self, path: str, rows: int | None = None, erased_before: datetime | None = None) -> None:
        """``path`` published (idempotent: a settled crash adds it again); ``rows`` read from its
        footer when not given; ``erased_before``: the cutoff its footer records (a rewrite's)."""
        if rows is None:  # a settled crash's file: its footer says both
            metadata = footer_metadata(self.store, path)
            rows, erased_before = FileSummary.of(metadata).rows, erased_before_of(metadata)
        month = ColdFile(path, 0).month
        entry: Document = {"kind": KIND, "path": path, "rows": rows, "month": str(month) if month else None}
        entry["pii_erased_before"] = erased_before
        key = self._key(path)
        self._write(lambda: self.collection.update_one({"_id": key}, {"$set": entry}, upsert=True))

    def remove(self, path: str) -> None:
        """``path`` about to be removed (or renamed away): no longer expected there."""
        key = self._key(path)
        self._write(lambda: self.collection.delete_one({"_id": key}))

    def entries(self) -> Iterator[Listed]:
        """Every file listed at this URL (an anchored prefix of ``_id``: its index)."""
        prefix = {"_id": {"$regex": f"^{re.escape(self._key(self.store.root))}/"}}
        found = self.context.retrying(lambda: list(self.collection.find(prefix)), purpose=Retry.READ)
        for entry in found:
            yield self._listed(entry)

    def page(self, after: str | None, limit: int) -> list[tuple[str, Listed]]:
        """Up to ``limit`` files listed at this URL after the entry ``after`` (an ``_id``), in
        ``_id`` order on its index, each with its ``_id``: a bounded part of the list."""
        bounds: dict[str, object] = {"$regex": f"^{re.escape(self._key(self.store.root))}/"}
        if after is not None:
            bounds["$gt"] = after
        found = self.context.retrying(
            lambda: list(self.collection.find({"_id": bounds}).sort("_id", 1).limit(limit)),
            purpose=Retry.READ,
        )
        return [(str(entry["_id"]), self._listed(entry)) for entry in found]

    def _listed(self, entry: Document) -> Listed:
        path = str(entry.get("path"))
        rows = entry.get("rows")
        stamp = entry.get("pii_erased_before", NOT_RECORDED)
        erased_before = (
            as_utc(stamp) if isinstance(stamp, datetime) else None if stamp is None else NOT_RECORDED
        )
        return Listed(self.store.url_of(path), path, rows if isinstance(rows, int) else 0, erased_before)

    def still_listed(self, path: str) -> bool:
        key = self._key(path)
        found = self.context.retrying(lambda: self.collection.find_one({"_id": key}), purpose=Retry.READ)
        return found is not None
