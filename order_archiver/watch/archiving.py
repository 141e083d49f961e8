"""A micro-batch of change events, archived: the orders they say are delivered now, read again
from the primary and enriched (one aggregation; an order over the server's limits rejected
alone), finished by the one ``Finisher``, written by the one ``ArchiveWriter`` (after the
lease's fencing check), and the rejections listed."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pymongo import MongoClient

from order_archiver.batch.job import BatchArchiver
from order_archiver.batch.report import BatchOptions
from order_archiver.context import RunContext
from order_archiver.documents import ChangeEvent, Document, OrderId, mapping_or_empty
from order_archiver.logs import get_logger
from order_archiver.mongodb.checkpoint import checkpoint_key
from order_archiver.mongodb.readings import Readings
from order_archiver.mongodb.source import event_time, orders_to_archive
from order_archiver.mongodb.step import ArchiveCounts, ArchivingStep
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.mongodb.tokens import CatchUpMark
from order_archiver.orders.enrichment import CollectionNames
from order_archiver.orders.finishing import Finisher
from order_archiver.orders.rejection import too_large_id
from order_archiver.reporting.metrics import WatchMetrics
from order_archiver.settings import Settings
from order_archiver.watch.stats import StatsLog, WatchStats

log = get_logger("watch")


@dataclass
class EventArchiver:
    orders_primary: MongoCollection  # the order as it is now, after its event
    names: CollectionNames
    delivered_status: str
    finisher: Finisher
    step: ArchivingStep  # the fence (the lease), the write, the rejections recorded
    stats: WatchStats
    lines: StatsLog
    metrics: WatchMetrics
    stop_event: threading.Event

    @property
    def readings(self) -> Readings:
        """The orders read and archived, each archived copy replaced only as read before them."""
        return Readings(
            self.orders_primary, self.names, self.delivered_status, self.finisher, self.step, self.stop_event
        )

    def archive(self, events: list[ChangeEvent]) -> None:
        self.stats.batches += 1
        self.metrics.event_seen(len(events))
        times = [t for t in (event_time(e) for e in events) if t is not None]
        if times:
            self.stats.last_event_at = max(times)
        ids = orders_to_archive(events, self.delivered_status)
        if not ids:
            self.stats.add(len(events), ArchiveCounts())  # each skipped
            return
        # A first reading asks nothing of the archive before the orders (a delivery, the usual
        # event, is inserted: one round trip less); an order it holds in another version, which
        # may be newer than the one read (``readings``), is read again after its copy.
        done = self.readings.archive(ids, {})
        for document, setting in done.held_back:  # among the skipped: said, one line each
            self.stats.held_back(document, setting)
        self.stats.add(len(events), done.counts)
        self.metrics.add(done.counts, mode="watch")
        if done.finished:
            # The latency is the orders written's only (archived or revised): one found archived
            # already (a replay after a restart, batch running too) waited for nothing of ours.
            latencies = self.lines.archived(done, changed_at(events), self.finisher.clock())
            for seconds in latencies:
                self.metrics.latency.observe(seconds)


def changed_at(events: list[ChangeEvent]) -> dict[OrderId, datetime]:
    """Each order's oldest change among ``events``: the moment from which its archiving waited."""
    oldest: dict[OrderId, datetime] = {}
    for event in events:
        order, moment = mapping_or_empty(event.get("documentKey")).get("_id"), event_time(event)
        if order is not None and moment is not None:
            oldest[order] = min(moment, oldest.get(order, moment))
    return oldest


def catch_up_identity(settings: Settings, name: str) -> str:
    """What a catch-up's mark is valid for besides its stream's start: this watcher (its name),
    the orders it walks (source, delivered status), the archive it writes, and what the archived
    copies keep (ARCHIVE_PII and its fields: another policy revises what a walk went through).
    A mark saved under anything else is ignored (``ResumeState.reach``): the walk starts again."""
    identity = json.dumps(
        [
            checkpoint_key(settings, "watch", None, None),  # source, archive, delivered status
            name,
            settings.archive_pii,
            sorted(settings.pii_policy.fields.declared),  # ARCHIVE_NON_PERSONAL_FIELDS
        ],
        default=str,
    )
    return "catch-up:" + hashlib.sha256(identity.encode()).hexdigest()[:16]


@dataclass
class CatchUpProgress:
    """How far one catch-up from a stream's start has got, for the watcher to save with that
    start's token (``tokens.CatchUpMark``). Why a catch-up may go on after ``through_id`` once
    restarted: it walks the delivered orders in ``_id`` order, and began after its stream was
    opened at the start token T. An order at or below the mark that was delivered before T was
    gone through then (archived, or found archived, read from the primary after T); anything
    that changed it after T, a delivery included, is an event after T, which the stream, consumed
    from T once the catch-up is done, replays. So only the orders past the mark remain; a mark
    tied to another start (``ResumeState.reach``: another token is another catch-up) could
    leave out orders delivered between the two starts, and is never used."""

    identity: str
    through_id: object = None  # the catch-up's reach: None, nothing yet
    saved: bool = True  # ``through_id`` is the one saved with the token

    def written(self, last_id: object) -> None:
        """A chunk's writes acknowledged (``BatchOptions.written``): the reach, to be saved. Not
        an ``_id`` too large to keep (a rejected order's: ``rejection.too_large_id``): one near
        16 MB made the token's record over it (17419 on every save, the watcher failing at each
        start); the reach stays the chunk's before, and the next chunk's moves it on."""
        if too_large_id(last_id) is None:
            self.through_id, self.saved = last_id, False

    def mark(self) -> CatchUpMark | None:
        return None if self.through_id is None else CatchUpMark(self.through_id, self.identity)


def catch_up(
    client: MongoClient[Document],
    archive_client: MongoClient[Document] | None,
    settings: Settings,
    context: RunContext,
    events: EventArchiver,
    before_write: Callable[[], None] | None = None,
    fence: Callable[[], None] | None = None,
    progress: CatchUpProgress | None = None,
) -> None:
    """Every delivered order not yet archived, by the batch path, counted as the watcher's:
    at a first start, after a lost token, after an invalidate. ``fence``: the watcher's lease
    check, before each chunk written, as before each micro-batch (``BatchOptions.fence``).
    ``progress``: where this catch-up goes on from, and where it is told how far it got."""
    after_id = progress.through_id if progress is not None else None
    if after_id is None:
        log.info("catching up: archiving delivered orders not yet archived")
    else:
        log.info("catching up: going on after _id %s, where this catch-up had got to", after_id)
    # resume=False: batch's checkpoint of an interrupted catch-up may be another stream's (a
    # token lost since), whose start is earlier than this stream's: orders delivered between
    # the two with smaller _ids than its mark would be skipped for good. This catch-up's own
    # mark (``after_id``) is its stream's start's only (``CatchUpProgress``).
    options = BatchOptions(
        run=True,
        batch_size=settings.batch_size,
        archived_by="watch",
        samples=0,
        resume=False,
        require_source=False,  # a collection that does not exist yet may be created later
        # Every delivered order, not the new ones only: a catch-up happens at a first start
        # or after a lost token, when nothing says since when orders went unarchived.
        full=True,
        full_reason="the watcher's catch-up: every delivered order not archived yet",
        name="catch-up",
        read_primary=True,
        maintain=False,  # indexes and retentions are batch --run's (the watcher's role: neither)
        # A first start's catch-up can be a whole history's backfill: paced as batch is (watch
        # --max-rate/--max-lag, or BATCH_MAX_RATE/BATCH_MAX_LAG). The stream itself is not: it
        # follows the deliveries, and holding it back would only let the oplog run out under it.
        max_rate=settings.batch_max_rate,
        max_lag=settings.batch_max_lag,
        before_write=before_write,  # the watcher's look at the unique index, before each chunk
        # Written as the stream writes: fenced by the lease, and no archived copy replaced
        # unless read before its order (a catch-up paused past its lease wakes after its
        # successor archived a correction of an order it read): read again, the stream's way.
        fence=fence,
        as_read=True,
        after_id=after_id,
        written=progress.written if progress is not None else None,
    )
    # The cold tier's boundary as the watcher knows it now (read again while it runs): a
    # catch-up after an invalidate, days after the start, skips what moves took meanwhile.
    settings = settings.with_overrides(cold_moved_before=events.finisher.cold_boundary())
    archiver = BatchArchiver(client, settings, options, context=context, archive_client=archive_client)
    try:
        report = archiver.run()
    finally:  # stopped (a signal, a stop file) or failed mid-way: its chunks written count too
        report = archiver.report  # the stopped line says them ("catch-up: N orders: ...")
        events.stats.caught_up = events.stats.caught_up.plus(report.counts())
        events.metrics.add(report.counts(), mode="catch-up")
        events.metrics.rejections_listed(report.rejected_new, mode="catch-up")
    log.info("%s", report.summary_line())  # "catch-up done: ..."
