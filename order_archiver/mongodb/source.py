"""Reading the source: delivered orders, enriched, finished into archive documents.

``OrderSource`` hands out the raw (enriched) delivered orders of a window in ``_id`` order,
two ways: one streaming aggregation (the fast path), or short keyset pages (what a run goes
on with after a read failure: each page is a short query, and an order over the server's
limits is rejected alone; and what a full pass reads, skipping archived orders by ``_id``). ``ChunkReader`` owns the rest of a batch read: the switch from
stream to pages, ``limit`` and ``batch_size``, and finishing each order (``finish_one``) into
bounded chunks. ``finish_one``/``finish_all`` are the one way batch, watch and verify turn a
raw order into an archive document or a rejection. ``read_ahead`` runs a reader on a thread
a few items ahead of its consumer; ``scan_by_id`` walks a query through cuts.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

from bson.timestamp import Timestamp
from pymongo import ASCENDING
from pymongo import errors as pymongo_errors

from order_archiver.documents import ChangeEvent, OrderId, mapping_or_empty
from order_archiver.errors import TIME_LIMIT_SOURCES, is_time_limit, is_transient, time_limit_error
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.orders.enrichment import (
    CollectionNames,
    as_utc,
    build_enrichment_pipeline,
    is_status,
    status_match,
)
from order_archiver.orders.finishing import Finished, Finisher
from order_archiver.orders.partition import Partition
from order_archiver.orders.rejection import Rejection, too_large_id
from order_archiver.orders.selection import IdList, build_selection, id_order_key, in_window
from order_archiver.reporting.liveness import waiting_at_most, waiting_on
from order_archiver.retry import Purpose, Retry, RetryPolicy

log = get_logger("batch")
T = TypeVar("T")

PAGE_SIZE = 500  # orders per getMore, and per page once reads fail (see ChunkReader)
WIDEST = 20_000  # ids a --partition share reads per page at most: ~400 KB of ObjectIds in one $in

# One order whose enrichment is over the server's limits: a joined document over 16 MB
# (BSONObjectTooLarge), a $lookup result over its memory limit. Per order, not per run.
OVERSIZE_CODES = frozenset({4568, 10334})

# What a source hands out: an enriched order or a rejection, and (paged reads) the last
# ``_id`` of a page once everything up to it has been handed out.
Item = tuple[dict[str, object] | Rejection | None, OrderId]


def is_oversized(exc: BaseException) -> bool:
    return isinstance(exc, pymongo_errors.OperationFailure) and exc.code in OVERSIZE_CODES


def order_id(item: dict[str, object] | Rejection) -> Any:
    return item.order_id if isinstance(item, Rejection) else item["_id"]


# --- finishing ---------------------------------------------------------------------------


# --- enriching ---------------------------------------------------------------------------


def enrich_each(
    orders: MongoCollection, ids: list[OrderId], delivered_status: str, names: CollectionNames
) -> list[dict[str, object] | Rejection]:
    """The enriched delivered orders among ``ids``: one aggregation; if one order makes it fail
    over the server's limits, the same order by order, and that one is a ``Rejection``."""

    def enrich(match: dict[str, object]) -> list[dict[str, object]]:
        return list(orders.aggregate(build_enrichment_pipeline(match, names)))

    delivered = status_match(delivered_status)
    try:
        return list(enrich({"_id": {"$in": ids}, "status": delivered}))
    except pymongo_errors.OperationFailure as exc:
        if not is_oversized(exc):
            raise
        log.warning(
            "enriching %s failed (code %s): enriching them one by one", plural(len(ids), "order"), exc.code
        )
    found: list[dict[str, object] | Rejection] = []
    for one_id in ids:
        try:
            found.extend(enrich({"_id": one_id, "status": delivered}))
        except pymongo_errors.OperationFailure as exc:
            if not is_oversized(exc):
                raise
            name = (exc.details or {}).get("codeName", "")
            found.append(
                Rejection(one_id, f"enrichment over the server's limits: code {exc.code} {name}".rstrip())
            )
    return found


# --- the source --------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderSource:
    """The delivered orders of a window, after an ``_id``, in ``_id`` order, enriched.
    ``archived_ids`` says which of some ``_id``s the archive holds; with ``exclude_archived_in``
    (the archive's name, when it is in the source database: a full pass) the pages skip them
    before any join is paid for (``pages``)."""

    orders: MongoCollection
    names: CollectionNames
    delivered_status: str
    date_from: datetime | None
    date_to: datetime | None
    archived_ids: Callable[[list[Any]], set[OrderId]]
    exclude_archived_in: str | None = None
    delivered_since: datetime | None = None  # an incremental pass (see checkpoint.py)
    # Orders read besides the selection, whatever their delivery stamp and even when archived
    # (changed since the last pass, on the rejects list): each chunk of them its own read.
    also_ids: IdList = field(default_factory=IdList)
    # Where ``also_ids`` are read (None: ``orders``): the primary, whatever ``orders`` follows (a
    # full pass's scan: the URI's read preference). They are what the pass's change-history
    # position moves past: read from a secondary behind, a correction just before the pass
    # would look unchanged, and no later pass reads it again. What that read finds of them
    # decides: the scan's copy of one of them, maybe older, is left out.
    also_from: MongoCollection | None = None
    delivered_before: datetime | None = None  # the purge under PURGE_AFTER: old enough to move
    # --partition K/N: only the orders of share K (read in pages: the share is the client's hash)
    partition: Partition | None = None
    # _ids a page reads (of this source's share; None: PAGE_SIZE): under --max-rate, at most a
    # second's worth (``pacing.paced_chunk_size``): a page of archived orders skipped is paid for after it
    page_size: int | None = None

    def selection(
        self, after_id: OrderId = None, among_ids: Sequence[OrderId] | None = None
    ) -> dict[str, object]:
        return build_selection(
            self.delivered_status,
            self.date_from,
            self.date_to,
            after_id,
            delivered_since=None if among_ids is not None else self.delivered_since,
            among_ids=among_ids,
            delivered_before=self.delivered_before,
        )

    def in_window(self, when: datetime) -> bool:
        return in_window(when, self.date_from, self.date_to)

    def owned(self, ids: list[T]) -> list[T]:
        """Those of ``ids`` this source reads: all, or its partition's share."""
        return ids if self.partition is None else self.partition.owned(ids)

    def widened(self, size: int) -> int:
        """How many ``_id``s to read for about ``size`` of this source's (``size`` times N with a
        partition): a share's enrichment and writes keep their batch, its round trips their count.
        At most ``WIDEST``: a page's ids also go to the server as one ``$in`` (``_page``)."""
        return size if self.partition is None else min(size * self.partition.count, WIDEST)

    def delivered_ids_after(self, after_id: OrderId, count: int) -> list[OrderId]:
        """The next ``count`` delivered orders' ``_id``s of the window (keyset on ``status, _id``)."""
        cursor = self.orders.find(self.selection(after_id), {"_id": 1}).sort("_id", ASCENDING).limit(count)
        return [doc["_id"] for doc in cursor]

    def stream(self, after_id: OrderId, limit: int | None) -> Iterator[Item]:
        """The rest of the window in one aggregation, merged in ``_id`` order with the reads of
        ``also_ids`` (a chunk each). The fast path."""
        walk = self._aggregate(
            self._narrow_first(self.selection(after_id), self.delivered_since is not None), limit
        )
        if not self.also_ids:
            yield from walk
            return
        also = (
            item
            for chunk in self.also_ids.chunks(after_id)
            for item in self._aggregate(
                self._narrow_first(self.selection(among_ids=chunk), True), limit, self._also_orders
            )
        )
        if self._also_apart:
            walk = self.also_ids.without(walk, _item_id)
        yield from itertools.islice(merged_by_id([walk, also], _item_id), limit)

    @property
    def _also_orders(self) -> MongoCollection:
        return self.orders if self.also_from is None else self.also_from

    @property
    def _also_apart(self) -> bool:
        """``also_ids`` are read elsewhere than the scan (the primary, the scan a secondary)."""
        return self.also_from is not None and self.also_from is not self.orders

    def _aggregate(
        self, matches: list[dict[str, object]], limit: int | None, orders: MongoCollection | None = None
    ) -> Iterator[Item]:
        pipeline = build_enrichment_pipeline(matches, self.names, sort_by_id=True, limit=limit)
        # allowDiskUse: with a date window the planner may sort in memory (index on the date,
        # then $sort on _id) and a large window would pass the 100 MB sort limit.
        reading = self.orders if orders is None else orders
        with reading.aggregate(pipeline, batchSize=PAGE_SIZE, allowDiskUse=True) as cursor:
            for raw in cursor:
                yield raw, None

    @staticmethod
    def _narrow_first(selection: dict[str, object], narrow: bool) -> list[dict[str, object]]:
        """A narrow filter (an incremental pass's delivery stamp, a chunk of ids) as two
        ``$match`` stages, the narrow one first: MongoDB coalesces them into one (same plan, on
        the ``{status, date_livraison}`` index or ``_id``); a server without that optimisation
        tests the status on the few orders left (nx-27017 evaluates a ``$in`` row by row)."""
        if not narrow:
            return [selection]
        status = {"status": selection.pop("status")}
        return [selection, status]

    def pages(self, after_id: OrderId, skipped: Callable[[int], None] = lambda count: None) -> Iterator[Item]:
        """The same orders in pages of ``page_size`` (keyset pagination on ``status, _id``).
        After each page, ``(None, the page's reach)``: everything up to it has been handed out.
        With ``exclude_archived_in``, the orders the archive holds are skipped before anything
        is joined: one ``archived_ids`` query per page, ``_id`` only (a covered read of the
        archive's ``_id`` index), not a join that would fetch each archive document whole;
        ``skipped`` is told how many, before the page's reach is handed out."""
        while True:
            page = self._page(after_id)
            if page.reach is None:
                return
            ids = self.owned(page.ids)
            # An _id too large to be read with others (``too_large_id``): rejected as it is.
            large = {i: reason for i in ids if (reason := too_large_id(i)) is not None}
            readable = [i for i in ids if i not in large] if large else ids
            # Skipped (a full pass in the source's own database: ``exclude_archived_in``);
            # elsewhere each archived order is compared with its archive document.
            archived = (
                self.archived_ids(readable) - page.also if self.exclude_archived_in and readable else set()
            )
            wanted = [one_id for one_id in readable if one_id not in archived]
            # The status again: an order corrected since the id query is not archived.
            found = self._enriched(wanted, page.also)
            found += [self._rejected_alone(i, reason) for i, reason in large.items()]
            yield from _in_id_order(ids, archived, found, skipped)
            after_id = page.reach
            yield None, after_id

    def _enriched(self, wanted: list[OrderId], also: set[OrderId]) -> list[dict[str, object] | Rejection]:
        """``wanted`` enriched: those of ``also_ids`` read where they are read (``also_from``)."""
        if not wanted:
            return []
        apart = [one for one in wanted if one in also] if self._also_apart else []
        rest = [one for one in wanted if one not in also] if apart else wanted
        found = enrich_each(self.orders, rest, self.delivered_status, self.names) if rest else []
        if apart:
            found += enrich_each(self._also_orders, apart, self.delivered_status, self.names)
        return found

    def _rejected_alone(self, one_id: OrderId, reason: str) -> Rejection:
        """The rejection of an order whose ``_id`` is too large to be read with others: read
        alone, its number only (the rejects list names it by that too)."""
        found = self.orders.find_one({"_id": one_id}, {"numero_commande": 1})
        numero = found.get("numero_commande") if found is not None else None
        return Rejection(one_id, reason, numero if isinstance(numero, str) else None)

    def _page(self, after_id: OrderId) -> Page:
        """The next page: the window's next delivered ids merged with those of ``also_ids``,
        up to the nearer of the two reads' last ids when either read a full page."""
        size = self.widened(self.page_size or PAGE_SIZE)
        walked = self.delivered_ids_after(after_id, size)
        candidates = self.also_ids.following(after_id, size)
        also: list[Any] = []
        scanned = walked
        if candidates:
            cursor = self._also_orders.find(self.selection(among_ids=candidates), {"_id": 1})
            also = sorted((doc["_id"] for doc in cursor), key=id_order_key)
            if self._also_apart:  # read where they are read: the scan's answer for them left out
                asked = set(candidates)
                scanned = [one for one in walked if one not in asked]
        ids = list(merged_by_id([scanned, also], lambda one: one))
        ends = [read[-1] for read in (walked, candidates) if len(read) == size]
        if not ends:
            return Page(ids, set(also), ids[-1] if ids else None)
        reach = min(ends, key=id_order_key)
        return Page([one for one in ids if id_order_key(one) <= id_order_key(reach)], set(also), reach)


def _in_id_order(
    ids: list[OrderId],
    archived: set[OrderId],
    found: list[dict[str, object] | Rejection],
    skipped: Callable[[int], None],
) -> Iterator[Item]:
    """A page's orders found, in ``_id`` order; ``skipped`` told of the archived ones skipped
    before each (and of the rest at the end): a reader stopped at an order (``--limit``) has
    counted exactly those before it."""
    by_id = {order_id(item): item for item in found}
    pending = 0
    for one_id in ids:
        if one_id in archived:
            pending += 1
        elif one_id in by_id:
            if pending:
                skipped(pending)
                pending = 0
            yield by_id[one_id], None
    if pending:
        skipped(pending)


@dataclass(frozen=True)
class Page:
    ids: list[OrderId]  # delivered orders to read, in _id order
    also: set[OrderId]  # those of them from also_ids: read even when archived
    reach: Any  # everything up to it is covered (None: nothing left)


def merged_by_id(reads: Iterable[Iterable[T]], id_of: Callable[[T], Any]) -> Iterator[T]:
    """Reads each in ``_id`` order, merged into one in ``_id`` order, each ``_id`` once."""
    last: Any = _NONE
    for item in heapq.merge(*reads, key=lambda item: id_order_key(id_of(item))):
        one = id_of(item)
        if last is not _NONE and one == last:
            continue
        last = one
        yield item


_NONE = object()


def _item_id(item: Item) -> Any:
    raw = item[0]
    return None if raw is None else order_id(raw)


@dataclass
class Chunk(Finished):
    """Finished orders in ``_id`` order, sorted by the one sort (``Finisher.place``);
    ``last_id`` covers everything read before it."""

    last_id: OrderId = None
    # Orders up to ``last_id`` the read skipped as archived already (``OrderSource.pages``): not
    # examined, but gone through: scanned, and already archived.
    skipped: int = 0

    @property
    def size(self) -> int:
        """The orders examined (``--limit`` counts them)."""
        return len(self.documents) + len(self.rejections)

    @property
    def scanned(self) -> int:
        """The orders gone through: examined, or skipped as archived (``--max-rate`` pays for them)."""
        return self.size + self.skipped


class ReadCounts(Protocol):
    """Where a reader counts what it did (a ``BatchReport``)."""

    # Orders of the pass gone through: archived, already archived (examined, or skipped by the
    # read as the archive holds them), revised or rejected; in every kind of pass.
    scanned: int
    already_archived: int
    outside_window: int  # string dates that turned out to be outside the window
    past_retention: int  # delivered longer ago than ARCHIVE_RETENTION: not archived
    past_cold_after: int  # delivered longer ago than ARCHIVE_COLD_AFTER: not archived (the cold tier's)
    read_retries: int  # transient read failures gone on through


@dataclass
class ChunkReader:
    """Finished chunks of at most ``batch_size`` orders, ``limit`` in all, in ``_id`` order.
    One streaming aggregation first; after a transient read error the read goes on in short
    pages from the last order read, so that a connection cut every few seconds still lets it
    progress (the backoff resets whenever a chunk is handed out). A pass that skips archived
    orders (``exclude_archived_in``) reads in pages from the start (``OrderSource.pages``)."""

    source: OrderSource
    counts: ReadCounts
    finisher: Finisher
    batch_size: int
    limit: int | None
    stop_event: threading.Event
    exhausted: bool = False  # the read got to the end of the window
    skipped: int = 0  # orders the read skipped as archived, not in a chunk yet (``Chunk.skipped``)

    def chunks(self, after_id: OrderId, *, counted: bool = True) -> Iterator[Chunk]:
        """The chunks after ``after_id``, each counted into ``counts`` as it is handed out; with
        ``counted`` False the consumer counts each one it is done with (``count``): a reader
        ahead on a thread (``read_ahead``) reads chunks the run may never write (a stop, a limit
        at the chunk boundary before them): those are the next run's, not this one's scanned."""
        for chunk in self._read(after_id):
            if counted:
                self.count(chunk)
            yield chunk

    def _read(self, after_id: OrderId) -> Iterator[Chunk]:
        handed = 0  # orders handed out in full chunks, against the limit
        paged = False
        policy = self._policy(lambda: paged)
        chunk, now = Chunk(), self.finisher.clock()
        while not self.stop_event.is_set():
            remaining = self._remaining(handed)
            cap, read = self._cap(paged, remaining, chunk), 0
            try:
                for raw, page_end in self._items(after_id, paged, cap):
                    if raw is not None:
                        if self._reached(chunk, remaining):
                            break  # (the orders skipped before ``raw`` are the next run's)
                        self._take(raw, now, chunk)
                        after_id, read = chunk.last_id, read + 1
                    if page_end is not None:
                        chunk.last_id = after_id = page_end
                        chunk.skipped, self.skipped = chunk.skipped + self.skipped, 0
                    if self._full(chunk, remaining):
                        handed += chunk.size
                        remaining = self._remaining(handed)
                        yield chunk
                        policy.reset()
                        chunk, now = Chunk(), self.finisher.clock()
                        if self.stop_event.is_set() or remaining == 0:
                            return
                # A read that ended at its own $limit ended at --limit's count of orders read, not
                # at the end of the window: those it did not archive (past ARCHIVE_RETENTION, a
                # string date outside the window) left its chunk short. The next run goes on.
                self.exhausted = cap is None or read < cap
                break
            except pymongo_errors.PyMongoError as exc:
                self._wait_after_failure(exc, policy, paged)
                paged = True
        if chunk.last_id is not None:
            yield chunk

    def _remaining(self, handed: int) -> int | None:
        return None if self.limit is None else self.limit - handed

    @staticmethod
    def _reached(chunk: Chunk, remaining: int | None) -> bool:
        return remaining is not None and chunk.size >= remaining

    def _full(self, chunk: Chunk, remaining: int | None) -> bool:
        """A batch of orders gone through, those skipped as archived included: a full sweep over
        an archived history hands out chunks as it goes (each paced, its reach checkpointed), not
        one at its end."""
        return chunk.scanned >= self.batch_size or self._reached(chunk, remaining)

    def _paged(self, paged: bool) -> bool:
        return paged or bool(self.source.exclude_archived_in) or self.source.partition is not None

    def _cap(self, paged: bool, remaining: int | None, chunk: Chunk) -> int | None:
        """The ``$limit`` of the next read (``--limit``'s orders still wanted), or None: pages
        (``_reached`` cuts them) or no limit."""
        return None if remaining is None or self._paged(paged) else remaining - chunk.size

    def _items(self, after_id: OrderId, paged: bool, cap: int | None) -> Iterator[Item]:
        if self._paged(paged):
            return self.source.pages(after_id, self._skip)
        return self.source.stream(after_id, cap)

    def _skip(self, count: int) -> None:
        self.skipped += count

    def _take(self, item: dict[str, object] | Rejection, now: datetime, chunk: Chunk) -> None:
        chunk.last_id = order_id(item)
        chunk.skipped, self.skipped = chunk.skipped + self.skipped, 0  # those before it
        self.finisher.place(item, now, chunk, self.source.in_window)

    def count(self, chunk: Chunk) -> None:
        """A chunk handed out (or written: ``chunks(counted=False)``): what it read into the run's counts."""
        self.counts.scanned += chunk.scanned
        self.counts.already_archived += chunk.skipped
        self.counts.past_retention += chunk.past_retention
        self.counts.past_cold_after += chunk.past_cold_after
        self.counts.outside_window += chunk.outside_window

    def _policy(self, paged: Callable[[], bool]) -> RetryPolicy:
        """Transient errors are retried; one order over the server's limits stops the stream
        too, and is retried once as pages, which reject it alone."""
        return RetryPolicy(
            Retry.READ,
            on_stop="end",  # the read ends; the run then reports itself interrupted
            stop_event=self.stop_event,
            retryable=lambda exc: is_transient(exc) or (is_oversized(exc) and not paged()),
        )

    def _wait_after_failure(self, exc: pymongo_errors.PyMongoError, policy: RetryPolicy, paged: bool) -> None:
        """Raise what the policy will not retry; otherwise say so, wait, and go on in pages.
        (A stop during the wait ends the read; the run then reports itself interrupted.)"""
        if is_time_limit(exc):
            self._after_time_limit(exc, paged)
            return
        delay = policy.increment(exc)
        self.counts.read_retries += 1
        if not paged:
            log.warning("reading orders failed (%s); going on in pages of %d", type(exc).__name__, PAGE_SIZE)
        log.warning("reading orders failed (%s); reading again in %.1fs", type(exc).__name__, delay)
        policy.wait(delay, exc)

    def _after_time_limit(self, exc: pymongo_errors.PyMongoError, paged: bool) -> None:
        """The server's time limit stopped the read (``errors.is_time_limit``): the stream, which
        goes on in pages at once (no wait: the limit is the read's length, not the server's
        load); or a page, a short read, which is the deployment's fault (raised)."""
        if self._paged(paged):
            size = self.source.widened(self.source.page_size or PAGE_SIZE)
            raise time_limit_error(exc, f"a page of {size} orders") from exc
        self.counts.read_retries += 1
        log.warning(
            "the server's time limit ended the long read of the orders (%s): going on in pages of %d "
            "after the last order read",
            TIME_LIMIT_SOURCES,
            PAGE_SIZE,
        )


# --- what is wrong with the source --------------------------------------------------------


def missing_source(orders: Any) -> str | None:
    """Why the orders collection cannot be read as configured, or None: it does not exist
    (a typo in ``ORDERS_COLLECTION`` or ``MONGODB_DATABASE`` otherwise reads as "0 orders").
    A user without ``listCollections`` gets None: the run goes on."""
    database = orders.database
    try:
        names = database.list_collection_names()
    except pymongo_errors.OperationFailure as exc:
        log.debug("cannot list collections (%s): the orders collection is not checked", exc.code)
        return None
    if orders.name in names:
        return None
    if not names:
        return f"database {database.name} has no collections: check MONGODB_DATABASE (and ORDERS_COLLECTION)"
    shown = ", ".join(sorted(n for n in names if not n.startswith("system."))[:12])
    return (
        f"collection {database.name}.{orders.name} does not exist: check ORDERS_COLLECTION "
        f"(this database has: {shown})"
    )


def unknown_status_hint(orders: Any, delivered_status: str) -> str | None:
    """When no order at all has the delivered status: the statuses that do exist (a typo in
    ``DELIVERED_STATUS`` otherwise reads as "nothing to archive"). Asked only after a run
    found no delivered order; one ``distinct`` on the status index."""
    if orders.find_one({"status": status_match(delivered_status)}, {"_id": 1}) is not None:
        return None
    try:
        present = [str(s) for s in orders.distinct("status")][:12]
    except pymongo_errors.OperationFailure:
        present = []
    if not present:
        return None
    return (
        f"no order has status {delivered_status!r}: check DELIVERED_STATUS "
        f"(the statuses present are: {', '.join(sorted(present))})"
    )


# --- walking and reading ahead -----------------------------------------------------------


def scan_by_id(
    open_cursor: Callable[[Any], Any],
    *,
    stop_event: threading.Event | None = None,
    purpose: Purpose = Retry.READ,
) -> Iterator[dict[str, object]]:
    """The documents of ``open_cursor(after_id)``, a query in ``_id`` order (``after_id`` is
    None at first), through cuts: a transient error (network, failover, a cursor the server
    lost) reopens the query after the last ``_id`` read, by the ``RetryPolicy`` (``purpose.attempts``
    failures in a row without a document in between raise; a stop during a wait raises, so a
    walk that ended early never looks complete). For long read-only walks (``verify``).
    The server's time limit on the one long read (``errors.is_time_limit``) makes the walk go on
    in pages of ``PAGE_SIZE`` (``open_cursor``'s query with a ``limit``: it must be a ``find``
    cursor), each a short read; a page stopped by it raises (``errors.time_limit_error``)."""
    policy = RetryPolicy(purpose, on_stop="raise", stop_event=stop_event)
    after_id: OrderId = None
    page: int | None = None  # once the time limit stopped the long read: each read a page
    while True:
        try:
            cursor = open_cursor(after_id) if page is None else open_cursor(after_id).limit(page)
            read = 0
            with cursor as documents:
                for document in documents:
                    after_id, read = document["_id"], read + 1
                    policy.reset()
                    yield document
            if page is None or read < page:
                return
        except pymongo_errors.PyMongoError as exc:
            if is_time_limit(exc):
                if page is not None:
                    raise time_limit_error(exc, f"a page of {page} documents") from exc
                page = PAGE_SIZE
                log.warning(
                    "the server's time limit ended a long read (%s): going on in pages of %d after the "
                    "last _id read",
                    TIME_LIMIT_SOURCES,
                    page,
                )
                continue
            delay = policy.increment(exc)
            log.warning(
                "reading failed (%s); reading on after the last _id in %.1fs", type(exc).__name__, delay
            )
            policy.wait(delay, exc)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter): a walk handled a chunk at a time."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_END = object()
_NOTHING = object()  # ReadAhead: no item taken ahead


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class _Handoff:
    """The queue between ``read_ahead``'s producer thread and its consumer."""

    def __init__(self, size: int) -> None:
        self.items: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.gone = threading.Event()  # the consumer stopped: the producer stops at its next item

    def put(self, item: Any) -> bool:
        while not self.gone.is_set():
            try:
                self.items.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce(self, source: Iterable[OrderId]) -> None:
        try:
            for item in source:
                if not self.put(item):
                    return
        except BaseException as exc:  # handed to the consumer
            self.put(_Failed(exc))
            return
        self.put(_END)


# A consumer that stops early waits this long at most for the producer's current item (a read).
RELEASE_WAIT_S = 30.0


class ReadAhead(Iterator[T]):
    """``source``'s items, produced on a thread up to ``size`` ahead of the consumer: the
    producer puts each item, then an end mark or its exception; the consumer iterates. A
    consumer that stops early (an error, a stop, ``close``) releases the producer at its next
    item. ``ready()`` shows the next item when the producer has handed it over already, without
    waiting: the batch's writer reads the record of forgotten persons for it after the write
    before it (``batch.writing.ChunkWriting``). With watch's ``stop``, a consumer waiting for the
    next item is as alive as the producer (``liveness.waiting_on``): a catch-up's chunk read in
    many batches, longer than WATCH_LIVENESS_S, is not taken for a hung watcher."""

    def __init__(self, source: Iterable[T], size: int, stop: threading.Event | None = None) -> None:
        self._stop = stop
        self._handoff = _Handoff(size)
        self._producer = threading.Thread(
            target=self._handoff.produce, args=(source,), name="read-ahead", daemon=True
        )
        self._producer.start()
        self._taken: object = _NOTHING  # taken from the queue by ready(), not handed out yet
        self._items = self._consume()

    def __next__(self) -> T:
        return next(self._items)

    def close(self) -> None:
        self._items.close()
        self._release()

    def ready(self) -> T | None:
        """The next item if the producer has handed it over already (None: not yet, or none)."""
        if self._taken is _NOTHING:
            try:
                self._taken = self._handoff.items.get_nowait()
            except queue.Empty:
                return None
        item = self._taken
        return None if item is _END or isinstance(item, _Failed) else cast(T, item)

    def _take(self) -> object:
        item, self._taken = self._taken, _NOTHING
        if item is not _NOTHING:
            return item
        if self._stop is None:
            return self._handoff.items.get()
        with waiting_on(self._stop, self._producer):
            return self._handoff.items.get()

    def _consume(self) -> Generator[T, None, None]:
        try:
            while True:
                item = self._take()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield cast(T, item)  # what the producer put: the source's items
        finally:
            self._release()

    def _release(self) -> None:
        self._handoff.gone.set()
        if self._producer.is_alive() and self._producer is not threading.current_thread():
            if self._stop is not None:  # watch's loop: back within the join (/healthz)
                waiting_at_most(self._stop, RELEASE_WAIT_S)
            self._producer.join(timeout=RELEASE_WAIT_S)


def read_ahead(source: Iterable[T], size: int, stop: threading.Event | None = None) -> ReadAhead[T]:
    """``source``'s items read up to ``size`` ahead on a thread (``ReadAhead``)."""
    return ReadAhead(source, size, stop)


# --- changes: what a change stream says about the orders (watch, and an incremental batch) ---


# What watch and an incremental batch read of an event; the rest never leaves the server.
# The resume token (_id) stays: a change stream refuses a projection without it.
EVENT_FIELDS = (
    "operationType",
    "documentKey",
    "clusterTime",
    "wallTime",
    "fullDocument._id",
    "fullDocument.status",
)


def build_change_stream_pipeline(delivered_status: str) -> list[dict[str, object]]:
    """Only what can mean "delivered now" reaches the client, projected down to what the
    handler reads: with ``updateLookup`` an event carries the whole order (and an update's
    changed fields), and an event over 16 MB is an error no resume gets past
    (``BSONObjectTooLarge``); the handler re-reads the order by its ``_id`` anyway."""
    status = status_match(delivered_status)
    return [
        {
            "$match": {
                "$or": [
                    {"operationType": {"$in": ["insert", "replace"]}, "fullDocument.status": status},
                    # Delivered now, or corrected while delivered (a refund, a fixed address):
                    # the looked-up order is delivered either way.
                    {"operationType": "update", "fullDocument.status": status},
                    {"operationType": "invalidate"},
                ]
            }
        },
        {"$project": {field: 1 for field in EVENT_FIELDS}},
    ]


def event_time(event: Mapping[str, object]) -> datetime | None:
    """When the change happened: ``wallTime`` (MongoDB 6.0+), else ``clusterTime``."""
    wall = event.get("wallTime")
    if isinstance(wall, datetime):
        return as_utc(wall)
    cluster = event.get("clusterTime")
    if isinstance(cluster, Timestamp):
        return cluster.as_datetime()
    if isinstance(cluster, datetime):
        return as_utc(cluster)
    return None


def orders_to_archive(events: list[ChangeEvent], delivered_status: str) -> list[OrderId]:
    """The ids of the orders that a micro-batch of events says are delivered now, in order,
    once each. An event whose looked-up document is gone (deleted since) or is no longer
    delivered is skipped: the archive reflects what the server holds now."""
    ids: dict[OrderId, None] = {}
    for event in events:
        key = mapping_or_empty(event.get("documentKey")).get("_id")
        document = event.get("fullDocument")
        if key is None:
            continue
        if document is None:
            log.info("order %s was deleted before it could be archived; skipped", key)
            continue
        if not is_status(document.get("status"), delivered_status):
            log.debug("order %s is no longer delivered (%r); skipped", key, document.get("status"))
            continue
        ids.setdefault(key, None)
    return list(ids)
