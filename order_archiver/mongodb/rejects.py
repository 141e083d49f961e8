"""Rejected orders, where a person can see them: one document per order in the rejects
collection (``REJECTS_COLLECTION``, archive database).

``{_id: the order's _id, numero_commande, reason, source (the last job to meet it), first_source,
first_seen, last_seen, times_seen, counted_by, batch_news, watch_news, verify_news}``.
A run records what it rejected after the archive write of the same chunk; an order seen for the first time, or rejected for another reason than the list
gave (its number fixed at the source, now taken), is *new*, and only new rejections make a
batch exit 3 (a rejected order does not fail every later run; one fixed at the source into
another refusal is news to whoever fixed it).
Each such event raises flags on the entry (``<source>_news``, the recording job's, and
``batch_news``); a record counts as new the entries among its orders whose own flag is up, then
puts it down: a record that fails before (an election outlasting its retries) leaves it up, and
the record made again (the watcher's micro-batch replayed, the next batch run) tells it; an
order met again, in the same run or a later one, is known. Entries written before the flags
(none up) are known, but one an earlier version's watcher listed first (``first_source`` watch,
or before it a watcher's only meeting; no ``counted_by``: every record since writes it), which that version's batch never told, is
news to the next batch run (``OLD_WATCHER_NEWS``: the documented upgrade replaces batch while the
old watcher runs on). A batch beside a watcher: the watcher meets a rejection first (at its
delivery), and batch would only ever find it listed; the watcher's record raises
``batch_news`` too, and the next batch run to meet it counts it new: batch's *new* is "first
listed, or for a new reason, since a batch run last met it, by any process" (its exit 3,
``-q``'s output and ``order_archiver_batch_last_rejected_new`` agree; ``verify --repair``'s
pass lists as ``verify``, as another job, and leaves the news to batch). Each job puts down
only its own flag, so batch and the watcher meeting the same order at once each tell it once;
a flag is put down only where it still holds the news read (each record's flags carry its tag),
so news raised meanwhile stays up. Two runs of the same job at once may both tell it; a flag
that cannot be put down is told again by the next record: news is told at least once.
An order fixed at the source is archived by
the next run that reaches it, and the end of every completed batch run prunes the entries
whose order is archived, deleted or no longer delivered; listings leave such entries out
already. The store never holds the order itself: ``_id`` and the reason are enough to find it.
An ``_id`` over ``rejection.ID_KEPT_BYTES`` keys no entry: a stand-in does (``listed_id``: its
size, a digest, its first characters), the prune finding its order by its number.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import bson
from pymongo import ASCENDING, UpdateOne

from order_archiver.context import RunContext
from order_archiver.documents import Client, MongoCollection, OrderId, int_or_none
from order_archiver.errors import ArchiverError
from order_archiver.logs import get_logger, plural
from order_archiver.orders.rejection import NUMERO_KEPT_CHARS, Rejection, is_stand_in, listed_id
from order_archiver.retry import Retry
from order_archiver.settings import Settings

log = get_logger("rejects")
T = TypeVar("T")

CHUNK = 1000
DEFAULT_LIST_LIMIT = 50  # rejected orders `rejects` shows unless told (--limit, --all)
BATCH_NEWS = "batch_news"  # news to the next batch run (the module docstring)
# An entry an earlier version's watcher listed first, never recorded since (``counted_by`` is
# written by every record since 5362585): that version's batch never told it, as this one's
# tells a watcher's listing (module docstring). Its news to batch. Before ``first_source``
# (fc56d10, 2026-12-07), one met once (``times_seen`` 1), by a watcher: none other met it since.
LISTED_BY_AN_OLD_WATCHER: dict[str, object] = {
    "counted_by": {"$exists": False},
    "$or": [
        {"first_source": "watch"},
        {"first_source": {"$exists": False}, "source": "watch", "times_seen": 1},
    ],
}
OLD_WATCHER_NEWS: dict[str, object] = {**LISTED_BY_AN_OLD_WATCHER, BATCH_NEWS: {"$exists": False}}


def news_flag(source: str) -> str:
    """The entry's flag for news to ``source`` not told yet: ``batch_news``, ``watch_news``..."""
    return f"{source}_news"


class RejectStore:
    """The rejects collection. ``record`` is idempotent under retries: whether a rejection is
    new is read back from the entry's news flags (raised by the write, set once by its
    retries), not from the write's counts, which a retried upsert would get wrong;
    ``times_seen`` grows once per record, by a statement that holds only where that record's
    tag (``counted_by``) is not yet."""

    def __init__(self, collection: MongoCollection, context: RunContext | None = None) -> None:
        self.collection = collection
        self.context = context or RunContext()  # on the archive's side: its errors name it

    def _retrying(self, func: Callable[[], T]) -> T:
        return self.context.retrying(func, purpose=Retry.WRITE)

    def known(self, ids: list[OrderId]) -> set[OrderId]:
        """The ids among ``ids`` on the list (recorded by an earlier run, or this one)."""
        if not ids:
            return set()
        keys = {_as_bytes(listed_id(i)): i for i in ids}  # an entry's key, by its BSON
        chosen = [listed_id(i) for i in ids]
        found = self._retrying(lambda: list(self.collection.find({"_id": {"$in": chosen}}, {"_id": 1})))
        return {keys[k] for k in (_as_bytes(doc["_id"]) for doc in found) if k in keys}

    def not_news(self, rejections: list[Rejection], to_batch: bool = False) -> set[OrderId]:
        """The orders among ``rejections`` that ``record`` would not count new (a dry run's
        figure is the run's): listed for the same reason; ``to_batch``: and no news up for batch."""
        if not rejections:
            return set()
        query: dict[str, object] = {"_id": {"$in": [r.key for r in rejections]}}
        if to_batch:
            query[BATCH_NEWS] = {"$exists": False}
            query["$nor"] = [LISTED_BY_AN_OLD_WATCHER]
        found = self._retrying(lambda: list(self.collection.find(query, {"reason": 1})))
        listed = {doc["_id"]: doc.get("reason") for doc in found}
        return {r.order_id for r in rejections if r.key in listed and listed[r.key] == r.reason}

    def listed_ids(self, limit: int = 10_000) -> list[OrderId]:
        """The ids on the list (at most ``limit``, newest first): an incremental batch reads
        them again whatever their delivery stamp, so that an order fixed at the source is
        archived by the next run. Cost: the list, not the history."""
        cursor = self.collection.find({}, {"_id": 1}).sort("last_seen", -1).limit(limit)
        return [doc["_id"] for doc in self._retrying(lambda: list(cursor.clone()))]

    def record(self, rejections: list[Rejection], source: str, now: datetime | None = None) -> int:
        """Record ``rejections``; return how many are news to ``source`` (the module docstring),
        and log those at WARNING (known ones at DEBUG: a nightly run does not repeat itself).
        One write, one read, and one more write only when some were news."""
        if not rejections:
            return 0
        now = now or datetime.now(UTC)
        tag = uuid.uuid4().hex  # this record's: its retries set and count nothing twice
        own = news_flag(source)
        raised = {own: tag, BATCH_NEWS: tag}  # news to its source, and to the next batch run
        # First, a listed order met for another reason: flagged before its upsert rewrites the
        # reason. Then the entries. Then ``times_seen``, once per record whatever the retries (a
        # retry of a write an election killed after some of its statements, which MongoDB keeps,
        # would count them again): each holds only where this record's tag is not there yet.
        changed = [
            UpdateOne({"_id": r.key, "reason": {"$ne": r.reason}}, {"$set": raised}) for r in rejections
        ]
        # An earlier version's watcher's listing, before ``counted`` writes ``counted_by``.
        earlier = [
            UpdateOne({"_id": r.key, **OLD_WATCHER_NEWS}, {"$set": {BATCH_NEWS: tag}}) for r in rejections
        ]
        entries = [
            UpdateOne(
                {"_id": r.key},
                {
                    "$set": {
                        "reason": r.reason,
                        "numero_commande": r.numero_commande,
                        "source": source,
                        "last_seen": now,
                    },
                    "$setOnInsert": {"first_seen": now, "first_source": source, **raised},
                },
                upsert=True,
            )
            for r in rejections
        ]
        counted = [
            UpdateOne(
                {"_id": r.key, "counted_by": {"$ne": tag}},
                {"$inc": {"times_seen": 1}, "$set": {"counted_by": tag}},
            )
            for r in rejections
        ]
        # One ``update`` command (each statement one document: a retryable write), applied in
        # order; every statement can be applied again.
        statements = [*changed, *earlier, *entries, *counted]
        self._retrying(lambda: self.collection.bulk_write(statements, ordered=True))
        new = self._take_news([r.key for r in rejections], own)
        for rejection in rejections:
            is_new = rejection.key in new
            log.log(
                logging.WARNING if is_new else logging.DEBUG,
                "order rejected%s",
                "" if is_new else " (already listed)",
                extra={"order_id": str(rejection.key), "reason": rejection.reason},
            )
        return len(new)

    def _take_news(self, ids: list[OrderId], flag: str) -> set[OrderId]:
        """The entries among ``ids`` whose ``flag`` is up, read, then put down where it still
        holds the news read: a record that fails before that leaves it up for the next one (a
        replayed micro-batch, the next batch run); news raised since stays up (another tag). A
        flag that cannot be put down (retries exhausted: some of the statements may be applied)
        stays up: told now, and again by the next record, rather than lost."""
        flagged = self._retrying(
            lambda: list(self.collection.find({"_id": {"$in": ids}, flag: {"$exists": True}}, {flag: 1}))
        )
        if flagged:
            down = [UpdateOne({"_id": d["_id"], flag: d[flag]}, {"$unset": {flag: ""}}) for d in flagged]
            try:
                self._retrying(lambda: self.collection.bulk_write(down, ordered=False))
            except ArchiverError as exc:  # told now, and again by the next record: never lost
                log.warning(
                    "%s said new but not marked told (%s): the next record to meet them says them again",
                    plural(len(flagged), "rejected order"),
                    exc,
                )
        return {d["_id"] for d in flagged}

    def entries(self, limit: int | None = None) -> Iterator[dict[str, object]]:
        """The recorded rejections, newest first seen first. No index gives that order: the list
        is sorted in memory, and may spill to disk (before 6.0 a sort past 100 MB that did not
        ask fails, 292; the invalid orders are never archived nor purged: their list grows with
        the history)."""
        cursor = self.collection.find({}, allow_disk_use=True).sort([("first_seen", -1), ("_id", ASCENDING)])
        if limit:
            cursor = cursor.limit(limit)
        with cursor:
            yield from cursor

    def current(self, archive: MongoCollection, limit: int | None = None) -> Iterator[dict[str, object]]:
        """The entries that still hold, newest first (among the newest ``limit``): an order
        archived since (fixed at the source, then archived by watch or batch) is left out before
        the next run prunes it."""
        chunk: list[dict[str, object]] = []
        for entry in self.entries(limit):
            chunk.append(entry)
            if len(chunk) >= CHUNK:
                yield from self._not_archived(chunk, archive)
                chunk = []
        yield from self._not_archived(chunk, archive)

    def _not_archived(
        self, entries: list[dict[str, object]], archive: MongoCollection
    ) -> list[dict[str, object]]:
        if not entries:
            return []
        ids = [e["_id"] for e in entries]
        archived = {
            d["_id"] for d in self._retrying(lambda: list(archive.find({"_id": {"$in": ids}}, {"_id": 1})))
        }
        return [e for e in entries if e["_id"] not in archived]

    def prune(self, orders: MongoCollection, archive: MongoCollection, delivered: object) -> int:
        """Forget the rejections that no longer hold: the order is archived (fixed at the
        source, then archived), deleted, or no longer delivered. Cost: the rejects, not the
        history. Each chunk of deletes meets the run's limits (``context.gate``)."""
        removed = 0
        for ids in self._id_chunks():
            stand_ins = [i for i in ids if is_stand_in(i)]
            ids = [i for i in ids if not is_stand_in(i)]
            archived = self._ids_found(archive, {"_id": {"$in": ids}}) if ids else set()
            still_delivered = (
                self._ids_found(orders, {"_id": {"$in": ids}, "status": delivered}) if ids else set()
            )
            gone = [i for i in ids if i in archived or i not in still_delivered]
            gone += [key for key in stand_ins if not self._stand_in_holds(key, orders, archive, delivered)]
            if gone:
                self.context.gate.before()  # the run's limits (#34), --max-lag's hold
                removed += self._delete(gone)
                self.context.gate.after(len(gone))  # --max-rate
        if removed:
            log.info(
                "%s left the list (archived since, deleted or no longer delivered)",
                plural(removed, "rejected order"),
            )
        return removed

    def _stand_in_holds(
        self, key: object, orders: MongoCollection, archive: MongoCollection, delivered: object
    ) -> bool:
        """Whether the order a stand-in key names (``listed_id``: its ``_id`` too large to key the
        entry) is still delivered and not archived: found by the entry's number (the orders'
        ``numero_commande`` indexes), then by its key. A number the entry holds shortened finds
        nothing: kept (a person removes it)."""
        entry = self._retrying(lambda: self.collection.find_one({"_id": key}, {"numero_commande": 1}))
        number = entry.get("numero_commande") if entry is not None else None
        if entry is None or (isinstance(number, str) and len(number) > NUMERO_KEPT_CHARS):
            return entry is not None

        def named(collection: MongoCollection, selection: dict[str, object]) -> bool:
            found = self._retrying(lambda: list(collection.find(selection, {"_id": 1})))
            return any(listed_id(d["_id"]) == key for d in found)

        return named(orders, {"numero_commande": number, "status": delivered}) and not named(
            archive, {"numero_commande": number}
        )

    def _ids_found(self, collection: MongoCollection, selection: dict[str, object]) -> set[OrderId]:
        return {d["_id"] for d in self._retrying(lambda: list(collection.find(selection, {"_id": 1})))}

    def _delete(self, ids: list[OrderId]) -> int:
        chosen = {"_id": {"$in": ids}}
        delete = functools.partial(self.collection.delete_many, chosen)
        return self.context.deleted(
            delete, len(ids), functools.partial(self.collection.count_documents, chosen)
        )

    def _id_chunks(self) -> Iterator[list[OrderId]]:
        ids: list[OrderId] = []
        with self.collection.find({}, {"_id": 1}, batch_size=CHUNK) as cursor:
            for doc in cursor:
                ids.append(doc["_id"])
                if len(ids) >= CHUNK:
                    yield ids
                    ids = []
        if ids:
            yield ids


def _as_bytes(key: object) -> bytes:
    return bson.encode({"_id": key})


def describe_reject(entry: dict[str, object]) -> dict[str, object]:
    """One listed rejection, for reports: the order's id as text, the rest as stored."""
    return {
        "id": str(entry["_id"]),
        "numero_commande": entry.get("numero_commande"),
        "reason": entry.get("reason"),
        "source": entry.get("source"),  # the last to meet it
        "first_source": entry.get("first_source") or entry.get("source"),  # the first (before: the last)
        "first_seen": entry.get("first_seen"),
        "last_seen": entry.get("last_seen"),
        "times_seen": entry.get("times_seen"),
    }


@dataclass
class RejectsReport:
    """``main.py rejects``: the rejected orders that still hold, newest first."""

    total: int = 0
    entries: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"total": self.total, "shown": len(self.entries), "rejected": self.entries}

    def lines(self) -> list[str]:
        if not self.total:
            return ["no rejected orders"]
        out = [
            f"{plural(self.total, 'rejected order')} (not archived until fixed at the source; newest first):"
        ]
        for entry in self.entries:
            first = entry["first_seen"].isoformat() if isinstance(entry["first_seen"], datetime) else "?"
            out.append(
                f"{entry['id']}  {entry.get('numero_commande') or '-'}  {entry['reason']}  "
                f"(first seen {first} by {entry.get('first_source')}, last by {entry.get('source')}, "
                f"seen {plural(int_or_none(entry.get('times_seen')) or 0, 'time')})"
            )
        if self.total > len(self.entries):
            out.append(f"... and {self.total - len(self.entries)} more (--all, --limit N, or --json)")
        return out


def list_rejects(
    client: Client, settings: Settings, limit: int | None, context: RunContext | None = None
) -> RejectsReport:
    database = client[settings.archive_db_name]
    archive = database[settings.archive_collection]
    report = RejectsReport()
    for entry in RejectStore(database[settings.rejects_collection], context).current(archive):
        report.total += 1
        if limit is None or len(report.entries) < limit:
            report.entries.append(describe_reject(entry))
    return report
