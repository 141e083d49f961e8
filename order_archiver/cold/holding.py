"""What the cold tier holds of some source orders, for ``--purge-source``: an order moved to the
cold tier before the purge reached it (a cold tier set on a history never purged) is no longer
in the archive, so the archive cannot vouch for it; its cold file can.

A source order is held by the cold tier when it lies in exactly one listed cold file (published:
read back and checked before its publication, ``manifest.ColdManifest``), found in its delivery
month's files only, on the row groups whose ``date_livraison`` statistics cover it. The purge
then deletes it only in the version that file holds (its ``source_hash``), as for the archive.
Anything unsure (a file replaced while it was read, an order in two files, a source delivery
date that is not a date) leaves the order in the source: the next run looks again.

``restore`` of a cold order records when (``ColdRestoreMarks``, in the checkpoints collection:
the file is not rewritten for it), so that RESTORE_HOLD holds it as it holds an archived one.
A purge removes the marks older than a year (or RESTORE_HOLD if longer; ``ColdRestoreMarks.prune``):
the marks kept are the restores of the last year, not every cold restore ever made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from itertools import groupby
from typing import TYPE_CHECKING

from pymongo import UpdateOne

from order_archiver.cold.files import matching
from order_archiver.cold.manifest import ColdManifest
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdStore, Month
from order_archiver.context import RunContext
from order_archiver.documents import MongoCollection, OrderId, moment_or_none
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.source import chunked
from order_archiver.mongodb.storage import Held
from order_archiver.orders.enrichment import as_utc
from order_archiver.retry import Retry

if TYPE_CHECKING:
    from pyarrow.dataset import Expression

log = get_logger("cold")
MARK = "cold-restored"
CHUNK = 1_000  # ids a read asks for at a time
SLACK = timedelta(seconds=1)  # around the deliveries' range, for the row groups' statistics only


class ColdRestoreMarks:
    """When ``restore`` last put back an order of the cold tier (one small entry an order)."""

    def __init__(self, collection: MongoCollection, context: RunContext) -> None:
        self.collection, self.context = collection, context

    @staticmethod
    def key(order_id: OrderId) -> str:
        return f"{MARK}:{order_id!r}"  # the id's type too: "1" and 1 are two orders

    def hold(self, ids: list[OrderId], at: datetime) -> None:
        """Recorded before the insert (a purge meanwhile holds them)."""
        for part in chunked(ids, CHUNK):
            requests = [
                UpdateOne({"_id": self.key(i)}, {"$set": {"kind": MARK, "restored_at": at}}, upsert=True)
                for i in part
            ]
            self._write(functools.partial(self.collection.bulk_write, requests, ordered=False))

    def take_back(self, ids: Iterable[OrderId], at: datetime) -> None:
        """The marks of the orders the source refused, each only if it is still this one."""
        keys = [self.key(i) for i in ids]
        for part in chunked(keys, CHUNK):
            query = {"_id": {"$in": part}, "restored_at": at}
            self._write(functools.partial(self.collection.delete_many, query))

    def prune(self, before: datetime) -> int:
        """Remove the marks restored before ``before`` (``purge.MARKS_KEPT`` ago, or RESTORE_HOLD
        if longer: no purge honours them, and one run with a shorter RESTORE_HOLD does not take
        away what the usual one honours). One delete on an index range: the marks' ``_id``
        prefix (an anchored regular expression is a range of the ``_id`` index), so it reads the
        marks alone, which after a prune are the restores of the last year; no index of its own.
        How many were removed: counted on the same range first, and after a retried delete (an
        election kills it mid-way, what it deleted stays deleted) less those read back still
        there (``RunContext.deleted``): no mark older than ``before`` is written meanwhile
        (``hold`` stamps the restore's own time)."""
        query = {"_id": {"$regex": f"^{MARK}:"}, "kind": MARK, "restored_at": {"$lt": before}}
        count = functools.partial(self.collection.count_documents, query)
        asked = int(self.context.retrying(count, purpose=Retry.READ))
        if not asked:
            return 0
        removed = self.context.deleted(functools.partial(self.collection.delete_many, query), asked, count)
        if removed:
            log.info(
                "cold tier: %s older than a year (and RESTORE_HOLD) removed",
                plural(removed, "restore mark"),
            )
        return removed

    def of(self, ids: list[OrderId]) -> dict[OrderId, datetime]:
        keys = {self.key(i): i for i in ids}
        found = self.context.retrying(
            lambda: list(self.collection.find({"_id": {"$in": list(keys)}})), purpose=Retry.READ
        )
        marks = {keys[str(entry["_id"])]: moment_or_none(entry.get("restored_at")) for entry in found}
        return {i: moment for i, moment in marks.items() if moment is not None}

    def _write(self, func: Callable[[], object]) -> None:
        self.context.retrying(func, purpose=Retry.WRITE)


class ColdHolding:
    """``--purge-source``'s second witness: the cold tier's copy of source orders the archive
    does not hold (``purge.SourcePurge``'s ``cold``)."""

    def __init__(
        self,
        store: ColdStore,
        orders: MongoCollection,
        checkpoints: MongoCollection,
        cutoff: datetime,
        context: RunContext,
    ) -> None:
        self.store, self.orders, self.cutoff, self.context = store, orders, cutoff, context
        self.manifest = ColdManifest(store, checkpoints, context)
        self.marks = ColdRestoreMarks(checkpoints, context)
        self._listed: set[str] | None = None

    def __call__(self, ids: list[OrderId]) -> dict[OrderId, Held]:
        """Of ``ids`` (source orders the archive does not hold), those in exactly one listed cold
        file, with what it holds of each (and when restore last put it back)."""
        deliveries = self._delivered_before_cutoff(ids)
        if not deliveries:
            return {}
        found: dict[OrderId, list[Held]] = {}
        by_month = sorted(deliveries.items(), key=lambda item: item[1])
        for month, group in groupby(by_month, key=lambda item: Month.of(item[1])):
            try:
                self._look_in(month, dict(group), found)
            except (OSError, ValueError) as exc:  # a file replaced while read: the next run looks again
                log.warning(
                    "cold tier: %s not read for the purge (%s): its orders stay in the source", month, exc
                )
        held = {i: places[0] for i, places in found.items() if len(places) == 1}
        restored = self.marks.of(list(held)) if held else {}
        return {i: h._replace(restored_at=restored.get(i, h.restored_at)) for i, h in held.items()}

    def prune_restore_marks(self, before: datetime) -> int:
        """After the purge: the restore marks older than ``before``, removed."""
        return self.marks.prune(before)

    def _delivered_before_cutoff(self, ids: list[OrderId]) -> dict[OrderId, datetime]:
        """The source's delivery date of each of ``ids`` delivered before the cold tier's cutoff
        (only those can have moved; one read on ``_id``)."""
        query = {"_id": {"$in": ids}, "date_livraison": {"$lt": self.cutoff}}
        found = self.context.retrying(
            lambda: list(self.orders.find(query, {"date_livraison": 1})), purpose=Retry.READ
        )
        dates = {d["_id"]: moment_or_none(d.get("date_livraison")) for d in found}
        return {i: as_utc(moment) for i, moment in dates.items() if moment is not None}

    def _listed_paths(self) -> set[str]:
        """The files published (read once a run: one published later waits for the next run)."""
        if self._listed is None:
            self._listed = {entry.path for entry in self.manifest.entries()}
        return self._listed

    def _look_in(
        self, month: Month, deliveries: dict[OrderId, datetime], found: dict[OrderId, list[Held]]
    ) -> None:
        listed = self._listed_paths()
        paths = [f.path for f in self.store.files(month) if f.path in listed]
        if not paths:
            return
        by_text = {str(i): i for i in deliveries}
        where = _rows_of(by_text, deliveries.values())
        for _path, table in matching(self.store, paths, where, ["document"]):
            for text in table.column("document").to_pylist():
                document = document_of(text)
                order_id = by_text.get(str(document["_id"]))
                if order_id is not None and document["_id"] == order_id:
                    found.setdefault(order_id, []).append(Held.of(document))


def _rows_of(by_text: dict[str, OrderId], dates: Iterable[datetime]) -> Expression:
    """These ids, on the row groups whose delivery dates may hold them (the file's order)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    moments = list(dates)
    moment = pa.timestamp("ms", tz="UTC")
    low, high = pa.scalar(min(moments) - SLACK, type=moment), pa.scalar(max(moments) + SLACK, type=moment)
    delivered = (ds.field("date_livraison") >= low) & (ds.field("date_livraison") <= high)
    return ds.field("_id").isin(list(by_text)) & delivered
