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
the marks kept are the restores of the last year, not every cold restore ever made. A mark keeps
the restored copy's fingerprint (the archive document's ``source_hash``, as the purge compares
it): an order corrected in the source since its restore is one no pass archives again (it is older
than ARCHIVE_COLD_AFTER), its correction held in the source alone (``ColdRestoreMarks.corrected``:
status and verify count it, the purge says it; its mark is never pruned while that lasts).
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from itertools import groupby
from typing import TYPE_CHECKING

from bson import ObjectId
from pymongo import UpdateOne

from order_archiver.cold.files import matching
from order_archiver.cold.manifest import ColdManifest
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdStore, Month
from order_archiver.context import RunContext
from order_archiver.documents import MongoCollection, OrderId, moment_or_none
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.purge import held_as_it_is
from order_archiver.mongodb.source import chunked
from order_archiver.mongodb.storage import Held
from order_archiver.orders.enrichment import as_utc
from order_archiver.orders.pii import PiiPolicy
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

    @staticmethod
    def _query(restored_at: dict[str, object]) -> dict[str, object]:
        """The marks restored in this range, on the marks' ``_id`` prefix (an anchored regular
        expression is a range of the ``_id`` index): the marks alone are read, no index of their own."""
        return {"_id": {"$regex": f"^{MARK}:"}, "kind": MARK, "restored_at": restored_at}

    def hold(self, ids: list[OrderId], at: datetime, copies: Mapping[OrderId, Held] | None = None) -> None:
        """Recorded before the insert (a purge meanwhile holds them); with what the cold file holds
        of each (``copies``: its fingerprint, its erasure), to tell a correction made since."""
        held = copies or {}
        for part in chunked(ids, CHUNK):
            requests = [
                UpdateOne({"_id": self.key(i)}, {"$set": _mark(i, at, held.get(i))}, upsert=True)
                for i in part
            ]
            self._write(functools.partial(self.collection.bulk_write, requests, ordered=False))

    def take_back(self, ids: Iterable[OrderId], at: datetime) -> None:
        """The marks of the orders the source refused, each only if it is still this one."""
        keys = [self.key(i) for i in ids]
        for part in chunked(keys, CHUNK):
            query = {"_id": {"$in": part}, "restored_at": at}
            self._write(functools.partial(self.collection.delete_many, query))

    def prune(self, before: datetime, keep: Iterable[OrderId] = ()) -> int:
        """Remove the marks restored before ``before`` (``purge.MARKS_KEPT`` ago, or RESTORE_HOLD
        if longer: no purge honours them, and one run with a shorter RESTORE_HOLD does not take
        away what the usual one honours). One delete on an index range: the marks' ``_id``
        prefix (an anchored regular expression is a range of the ``_id`` index), so it reads the
        marks alone, which after a prune are the restores of the last year; no index of its own.
        How many were removed: counted on the same range first, and after a retried delete (an
        election kills it mid-way, what it deleted stays deleted) less those read back still
        there (``RunContext.deleted``): no mark older than ``before`` is written meanwhile
        (``hold`` stamps the restore's own time). The marks of ``keep`` stay (the orders corrected
        since their restore: the source holds the only copy of the correction)."""
        keep = list(keep)
        query = self._query({"$lt": before})
        if keep:  # the corrections the purge found held in the source alone: their marks stay
            query["_id"] = {"$regex": f"^{MARK}:", "$nin": [self.key(i) for i in keep]}
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

    def restored_since(self, since: datetime, at_most: int) -> list[OrderId]:
        """The orders restored from the cold tier since ``since`` (RESTORE_HOLD: the purge holds
        them, ``purge.restored_lately``), at most ``at_most``: one read of the marks' range."""
        query = self._query({"$gte": since})
        found = self.context.retrying(
            lambda: list(self.collection.find(query, {"order_id": 1}).limit(at_most)), purpose=Retry.READ
        )
        return [i for entry in found if (i := _order_id(entry)) is not None]

    def corrected(
        self, orders: MongoCollection, pii: PiiPolicy, at_most: int | None = None
    ) -> tuple[list[OrderId], bool]:
        """The orders restored from the cold tier (a mark kept: the last year's, and every one
        corrected since) that the source holds changed since their restore, as the purge compares
        them (``purge.held_as_it_is``): no pass archives them again, the source holds the only
        copy of the correction. The first ``at_most`` marks read (None: every one), then their orders by ``_id``, a
        chunk at a time: bounded by the restores kept, not by the history; whether there were
        more marks than that (not read). A mark written before it kept the fingerprint is not
        counted (its order is said by the purge, that reads the cold file)."""
        query = self._query({"$type": "date"})
        fields = {"order_id": 1, "source_hash": 1, "forgotten_by": 1, "courier_forgotten": 1}
        found = self.context.retrying(
            lambda: list(self.collection.find(query, fields).limit(0 if at_most is None else at_most + 1)),
            purpose=Retry.READ,
        )
        more = at_most is not None and len(found) > at_most
        copies = {
            i: held
            for entry in found[:at_most]
            if (i := _order_id(entry)) is not None and (held := _restored_copy(entry)) is not None
        }
        changed: list[OrderId] = []
        for part in chunked(list(copies), CHUNK):
            current = self.context.retrying(
                functools.partial(lambda ids: list(orders.find({"_id": {"$in": ids}})), part),
                purpose=Retry.READ,
            )
            changed += [o["_id"] for o in current if not held_as_it_is(pii, copies[o["_id"]], o)]
        return changed, more

    def of(self, ids: list[OrderId]) -> dict[OrderId, datetime]:
        keys = {self.key(i): i for i in ids}
        found = self.context.retrying(
            lambda: list(self.collection.find({"_id": {"$in": list(keys)}})), purpose=Retry.READ
        )
        marks = {keys[str(entry["_id"])]: moment_or_none(entry.get("restored_at")) for entry in found}
        return {i: moment for i, moment in marks.items() if moment is not None}

    def _write(self, func: Callable[[], object]) -> None:
        self.context.retrying(func, purpose=Retry.WRITE)


def _mark(order_id: OrderId, at: datetime, held: Held | None) -> dict[str, object]:
    mark: dict[str, object] = {"kind": MARK, "restored_at": at, "order_id": order_id}
    if held is not None and held.source_hash is not None:
        mark.update(
            source_hash=held.source_hash,
            forgotten_by=held.forgotten_by,
            courier_forgotten=held.courier_forgotten,
        )
    return mark


def _restored_copy(entry: Mapping[str, object]) -> Held | None:
    """What the cold file held of the order a mark is for, as ``_mark`` kept it (None: not kept)."""
    fingerprint, forgotten_by = entry.get("source_hash"), entry.get("forgotten_by")
    if not isinstance(fingerprint, str):
        return None
    by = forgotten_by if isinstance(forgotten_by, str) else None
    return Held(fingerprint, by, courier_forgotten=entry.get("courier_forgotten") is True)


def _order_id(entry: Mapping[str, object]) -> OrderId | None:
    """The order a mark is for: its ``order_id`` (a mark written before it was kept: its key's
    ``repr``, read back for the types an order's ``_id`` takes here: a string, an integer, an ObjectId)."""
    if "order_id" in entry:
        return entry["order_id"]
    text = str(entry.get("_id", "")).removeprefix(f"{MARK}:")
    found = re.fullmatch(r"ObjectId\('([0-9a-f]{24})'\)", text)
    if found:
        return ObjectId(found.group(1))
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


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

    def prune_restore_marks(self, before: datetime, keep: Iterable[OrderId] = ()) -> int:
        """After the purge: the restore marks older than ``before``, removed (not those of ``keep``)."""
        return self.marks.prune(before, keep)

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
