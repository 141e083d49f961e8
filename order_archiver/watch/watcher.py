"""Watch mode: archive each order the moment it becomes delivered, on MongoDB change streams.

Delivery is at-least-once and writes are idempotent, so the archive is exactly-once:

- The stream's server-side ``$match`` lets through only what can mean "delivered now":
  inserts and replaces of a delivered order, updates that set ``status`` to the delivered
  value, and ``invalidate``. ``full_document="updateLookup"`` gives the order as it is now.
- Events are drained into micro-batches (what the stream has buffered, up to
  ``WATCH_MAX_BATCH``), enriched by one aggregation (the batch pipeline, on ``_id $in``),
  written by one unordered insert (``storage.ArchiveWriter``: an order archived already is
  refused on its ``_id`` and compared, never rewritten), and only then is the stream's
  position saved (``position_after``). A crash between write and save replays events
  whose writes are no-ops.
- A quiet stream saves its post-batch resume token every ``WATCH_HEARTBEAT_S``, so the saved
  token never ages out of the oplog on a quiet night; a clean stop saves it too.
- The position is the driver's (``ChangeStream.resume_token``): once a micro-batch has drained
  the server's batch, its ``postBatchResumeToken``, a high-water mark past every entry the
  server scanned, where one was scanned past the last event. Resuming after an *event* needs
  that event again: MongoDB 6.0+ applies the stream's ``$match`` to it first, its order looked
  up as it is now, and fails the resume (280) when the order was purged or is no longer
  delivered (docs/guarantees.md): a catch-up.
- Without a usable token (first start, or a token the server rejects: history lost,
  invalid, fatal), the stream is opened first, its starting point saved (marked
  ``catching_up``: whoever resumes from it catches up again), every delivered order not yet
  archived is archived (the batch path), then the stream is consumed from that starting point:
  nothing delivered or corrected during the catch-up is missed, even by a watcher that takes
  over from this one mid-catch-up, and nothing is ever silently restarted from "now". ``--from-now`` skips the catch-up on a first start.
- Transient errors (network, failover; pymongo resumes once by itself) reconnect with capped
  exponential backoff and full jitter, forever, from the last saved token. Fatal ones
  (authentication, authorisation, no change streams on this server) end the process, exit 1.
- SIGINT/SIGTERM set the stop event: the micro-batch in hand is finished and its token
  saved, the stream closed, exit 0.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pymongo import MongoClient
from pymongo import errors as pymongo_errors

from order_archiver.cold.record import RecordedBoundary, read_record
from order_archiver.context import RunContext
from order_archiver.documents import ChangeEvent, Document
from order_archiver.errors import (
    EXIT_OK,
    ArchiverError,
    NotSupportedError,
    as_archiver_error,
    classify,
)
from order_archiver.logs import get_logger
from order_archiver.mongodb.deployment import check_deployments, is_standalone
from order_archiver.mongodb.indexes import UniqueIndexCheck, UniqueIndexMissing
from order_archiver.mongodb.lease import LeaseLost
from order_archiver.mongodb.rejects import RejectStore
from order_archiver.mongodb.step import ArchivingStep
from order_archiver.mongodb.storage import ArchiveWriter, Collections
from order_archiver.mongodb.stream import ChangeStream, micro_batch, next_event
from order_archiver.mongodb.tokens import (
    NO_TOKEN,
    UNUSABLE,
    CatchUpMark,
    ResumeState,
)
from order_archiver.orders.finishing import Finisher
from order_archiver.orders.rejection import Rejection
from order_archiver.reporting.metrics import WatchMetrics
from order_archiver.retry import Retry, RetryPolicy
from order_archiver.settings import Settings
from order_archiver.watch.archiving import CatchUpProgress, EventArchiver, catch_up, catch_up_identity
from order_archiver.watch.leadership import Leadership, token_store_and_lease
from order_archiver.watch.opening import TokenUnusable, open_stream, say_resuming
from order_archiver.watch.reconnects import Reconnects, sides
from order_archiver.watch.stats import StatsLog, WatchStats

NO_CHANGE_STREAMS = (
    "this MongoDB deployment has no change streams: watch needs a replica set, a sharded cluster "
    "or Atlas (a standalone server can only run batch)"
)
log = get_logger("watch")

# --- the watcher -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchOptions:
    from_now: bool = False
    name: str = "default"
    token_store: Literal["file", "mongo"] = "file"
    stop_file: str | None = None  # --stop-file: recorded with a clean stop while it is there


class Watcher:
    def __init__(
        self,
        client: MongoClient[Document],
        settings: Settings,
        options: WatchOptions,
        *,
        context: RunContext | None = None,
        archive_client: MongoClient[Document] | None = None,
        metrics: WatchMetrics | None = None,
    ) -> None:
        self.client, self.settings, self.options = client, settings, options
        self.context = context = context or RunContext()
        self.stop_event, self.clock = context.stop, context.clock
        collections = Collections.of(client, settings, archive_client)
        self.archive_client = archive_client
        self.orders = collections.orders
        # The order as it is now, after its event: from the primary (see Collections.of).
        self.orders_primary = collections.orders_primary
        self.rejects = RejectStore(collections.rejects, context.on(collections.archive_side))
        self.metrics = (metrics or WatchMetrics()).led_by(self._leading)  # served early: cli
        self.writer = ArchiveWriter.of(
            collections,
            settings,
            context,
            on_retry=lambda exc: self.metrics.retries.labels(kind=type(exc).__name__).inc(),
        )
        self.namespace = f"{settings.mongodb_database}.{settings.orders_collection}"
        shared = options.token_store == "mongo"
        self.store, self.lease = token_store_and_lease(
            collections.checkpoints, settings, options.name, self.namespace, shared, context
        )
        self.stats = WatchStats()
        self.reconnects = Reconnects(sides(client, archive_client), settings, self.metrics, self.stats)
        self.leadership = Leadership(self.lease, options.name, self.stop_event, self.reconnects.back)
        self.lines = StatsLog(self.stats, settings.watch_log_interval_s)
        self.events = EventArchiver(
            self.orders_primary,
            collections.names,
            settings.delivered_status,
            watch_finisher(settings, context, collections),
            ArchivingStep(self.writer, self._record_rejections, self.lease.check if self.lease else None),
            self.stats,
            self.lines,
            self.metrics,
            self.stop_event,
        )
        self._distrust_saved_token = False
        self.unique_index = UniqueIndexCheck(self.writer.archive, self.stop_event)

    def _leading(self) -> bool:
        """Leads now (the metrics' ``order_archiver_watch_leader``): a file store's always."""
        return self.lease is None or self.lease.held()

    def _record_rejections(self, met: list[Rejection]) -> None:
        # News once: an order met again is known; a record that failed is told by its replay.
        new = self.rejects.record(met, source="watch", now=self.clock())
        self.metrics.rejections_listed(new, mode="watch")

    # -- service loop

    def run(self) -> int:
        """Until stopped: stream, and on a transient failure reconnect with backoff."""
        # Forever (a service), for what classify() calls transient; a stop ends the wait and the loop (exit 0).
        policy = RetryPolicy(Retry.SERVICE, on_stop="end", retryable=lambda exc: classify(exc) == "transient")
        check_deployments(self.client, self.settings, self.archive_client)
        if is_standalone(self.client):
            # Said now, not once the archive's unique index is there (a watcher waits for it,
            # and said only that, every ten minutes, where it could never run); its one line.
            raise NotSupportedError(NO_CHANGE_STREAMS)
        log.info("watching %s (token store: %s)", self.namespace, self.options.token_store)
        try:
            self._serve(policy)
            if self.context.faults.first is None:
                self._mark_stopped()
        finally:
            if self.lease is not None:
                self.lease.release()
        log.info(self.stats.stopped_line())
        # Stopped by a fault of a thread working for it (its stop file's look, its lease's renewal): its token
        # saved after its last write, its counts said, the fault in one line, exit 1 (context.ThreadFaults).
        self.context.faults.raise_first()
        return EXIT_OK

    def _mark_stopped(self) -> None:
        """After a clean stop (a signal), say so where ``status`` looks (a crash says nothing)."""
        if self.stats.last_saved_at == 0.0 or (self.lease is not None and not self.lease.held()):
            return  # never saved a token (a standby), or no longer leading
        try:
            self.store.mark_stopped(
                None if self.lease is None else self.lease.term, stop_file_there(self.options)
            )
        except ArchiverError as exc:
            log.warning("could not record the clean stop (%s)", exc)

    def _serve(self, policy: RetryPolicy) -> None:
        while not self.stop_event.is_set():
            try:
                # Nothing is written without the archive's unique index (a watcher's user cannot
                # build it: batch --run does): waited for, and looked at again before writes.
                self.reconnects.probe()  # away: one bounded ping first (the wait said is true)
                if not self.unique_index.ready():
                    break
                if not self.leadership.lead():
                    continue
                self._stream_once(policy)
            except LeaseLost as exc:
                log.warning("%s: back to standby", exc)
                self.metrics.stood_down()
                self.unique_index.forget()
            except UniqueIndexMissing as exc:
                log.warning("%s", exc)  # the micro-batch in hand is replayed from the saved token
            except (ArchiverError, pymongo_errors.PyMongoError) as exc:
                if self.stop_event.is_set() and isinstance(exc, ArchiverError):
                    break  # a catch-up stopped by a signal: it resumes on the next start
                self._after_failure(exc, policy)

    def _after_failure(self, exc: BaseException, policy: RetryPolicy) -> None:
        """One decision per failure, by ``classify``: catch up, reconnect, or stop."""
        kind = classify(exc)
        self.unique_index.forget()
        if kind == "token_unusable":
            # The stream's own resume point is gone (e.g. a long cut, then pymongo's automatic
            # resume): the saved token is older still, so catch up.
            log.warning("the change stream cannot resume (%s): catching up", getattr(exc, "code", "?"))
            self._distrust_saved_token = True
            return
        if kind == "no_change_streams":
            raise NotSupportedError(NO_CHANGE_STREAMS) from exc
        if kind == "fatal":
            raise exc if isinstance(exc, ArchiverError) else as_archiver_error(exc) from exc
        delay = policy.increment(exc)
        self.reconnects.failed(exc, delay)
        policy.wait(delay, exc)

    def _stream_once(self, policy: RetryPolicy) -> None:
        saved = UNUSABLE if self._distrust_saved_token else self.store.load()
        # A restart that sees no event keeps saying when the last one was (status reads it);
        # an old leader leading again has its own, older than its successor's: the later one.
        self.stats.last_event_at = latest(self.stats.last_event_at, saved.last_event_at)
        stream = None
        say_resuming(saved, self.clock(), first=self.stats.last_saved_at == 0.0)  # a restart, a takeover
        if saved.usable:
            try:
                stream = self._open(saved)
            except TokenUnusable as reason:
                log.warning("the saved resume token cannot be used (%s): catching up instead", reason)
            if stream is not None and (saved.invalidated or saved.catching_up):
                # Dropped or replaced (a rename, $out, a restore with --drop: no insert events), or
                # a catch-up from here not done (below): the stream is open, nothing is missed.
                self._catch_up(saved)
                if saved.catching_up and saved.token is not None:  # done: a reconnect need not redo it
                    self._save_token(saved.token, invalidated=saved.invalidated)
        if stream is None:
            stream = self._open(NO_TOKEN)
            start_token = stream.resume_token
            # --from-now only ever skips the catch-up of a watcher that never had a token.
            if self.options.from_now and saved.first_start and self.stats.catch_ups == 0:
                log.info("starting from now (--from-now): deliveries before this moment are not archived")
            else:
                self._catch_up(ResumeState("token", start_token))
            if start_token is not None:
                self._save_token(start_token)
            self._distrust_saved_token = False
        with stream:
            self.reconnects.back(policy)  # the backoff starts over
            self._consume(stream, policy)

    def _open(self, state: ResumeState) -> ChangeStream:
        return open_stream(self.orders, self.settings, state)

    def _catch_up(self, start: ResumeState = NO_TOKEN) -> None:
        """``start``: where the stream starts, saved first as not caught up (a watcher taking over
        mid-catch-up catches up again: guarantees.md), again before each chunk's write, the lease
        checked (``CatchUpSaves``, ``fence``), with its reach: restarted, it goes on (``CatchUpProgress``)."""
        self.stats.catch_ups += 1
        with CatchUpSaves.of(self, start) as saves:  # stopped: how far it got, saved; work in hand
            parts = (self.client, self.archive_client, self.settings, self.context, self.events)
            catch_up(*parts, saves.heartbeat, self.events.step.fence, saves.progress)

    # -- consuming

    def _consume(self, stream: ChangeStream, policy: RetryPolicy) -> None:
        """Micro-batches until stopped: each archived, then the stream's position saved."""
        while not self.stop_event.is_set():
            if self.lease is not None:
                self.lease.check()
            event = next_event(stream, self.stop_event)
            if event is None:
                self._on_quiet(stream)
                if not stream.alive:
                    return
                continue
            events, invalidate = micro_batch(stream, event, self.settings.watch_max_batch)
            if events:
                with self.context.grace.in_hand():  # a stop past its grace: an error now
                    self.unique_index.still_there()
                    self._archive(events)
                    self._save_token(position_after(stream, events, invalidate))
            if invalidate is not None:
                self._on_invalidate(invalidate)
                return
            policy.reset()
            self.lines.maybe()
        self._on_quiet(stream, stopping=True)

    def _archive(self, events: list[ChangeEvent]) -> None:
        self.events.archive(events)

    def _save_token(
        self,
        token: Mapping[str, object],
        invalidated: bool = False,
        catching_up: bool = False,
        catch_up: CatchUpMark | None = None,
    ) -> None:
        term, last = (self.lease.term if self.lease is not None else None), self.stats.last_event_at
        self.store.save(
            token,
            invalidated=invalidated,
            last_event_at=last,
            term=term,
            catching_up=catching_up,
            catch_up=catch_up,
        )
        self.stats.last_saved_at = time.monotonic()
        self.metrics.token_saved()

    def _on_quiet(self, stream: ChangeStream, stopping: bool = False) -> None:
        """Heartbeat: a quiet stream's post-batch token moves on; keep it fresh (and at a clean stop, if leading)."""
        due = time.monotonic() - self.stats.last_saved_at >= self.settings.watch_heartbeat_s
        token = stream.resume_token if due or (stopping and self._leading()) else None
        if token is not None:
            self._save_token(token)
        self.lines.maybe()

    def _on_invalidate(self, event: ChangeEvent) -> None:
        log.warning("the orders collection was dropped or renamed (invalidate): waiting for it to come back")
        self._save_token(event["_id"], invalidated=True)


@dataclass
class CatchUpSaves:
    """A catch-up's saves of its stream's start (``start``), marked not caught up."""

    watcher: Watcher
    start: ResumeState
    progress: CatchUpProgress

    @classmethod
    def of(cls, watcher: Watcher, start: ResumeState) -> CatchUpSaves:
        """The catch-up from ``start``, going on from its mark if it is this catch-up's."""
        identity = catch_up_identity(watcher.settings, watcher.options.name)
        return cls(watcher, start, CatchUpProgress(identity, start.reach(identity)))

    def __enter__(self) -> CatchUpSaves:
        self.watcher.context.grace.in_hand().acquire()  # a stop past its grace: an error
        try:
            self.heartbeat(first=True)
        except BaseException:
            self.watcher.context.grace.in_hand().release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.after()
        finally:
            self.watcher.context.grace.in_hand().release()

    def heartbeat(self, first: bool = False) -> None:
        """Before a catch-up reads (``first``), and before each of its chunks' writes (the unique
        index looked at again): the stream's start saved as not caught up, with the catch-up's
        reach (the chunks written before: ``CatchUpProgress``), then again once WATCH_HEARTBEAT_S
        has passed (status's heartbeat: a catch-up can last hours)."""
        watcher = self.watcher
        if not first:
            watcher.unique_index.still_there()
        due = first or time.monotonic() - watcher.stats.last_saved_at >= watcher.settings.watch_heartbeat_s
        if due and self.start.token is not None:
            mark = self.progress.mark()
            watcher._save_token(self.start.token, self.start.invalidated, catching_up=True, catch_up=mark)
            self.progress.saved = True

    def after(self) -> None:
        """Stopped (SIGTERM, a stop file) with a reach not saved yet: saved, for the next start
        to go on from, if this watcher still leads (a save under a lost term is refused anyway)."""
        if not self.watcher.stop_event.is_set() or self.progress.saved or not self.watcher._leading():
            return
        try:
            self.heartbeat(first=True)
        except ArchiverError as exc:  # the stop is what matters; the next start redoes a little more
            log.warning("could not save how far the catch-up got (%s)", exc)


def stopped_idle(watcher: Watcher) -> None:
    """A stop past its grace with nothing in hand (between micro-batches: a getMore, a
    reconnect or the lease's release held by a server that answers nothing): a clean stop,
    its token where the last write left it. Recorded in a file store (a local write); the
    mongo store's record needs the server that does not answer: status sees it as a crash."""
    log.info("the server does not answer, and nothing was in hand: stopping without it")
    if watcher.options.token_store == "file" and watcher.context.faults.first is None:
        watcher._mark_stopped()
    log.info(watcher.stats.stopped_line())


def position_after(
    stream: ChangeStream, events: list[ChangeEvent], invalidate: ChangeEvent | None
) -> Mapping[str, object]:
    """Where the stream resumes once ``events`` are archived: the driver's position, which is
    the last event's token while the server's batch holds more, and once it is drained the
    batch's ``postBatchResumeToken`` (pymongo's ``ChangeStream.try_next``; the driver
    specification's "resumeToken"): past the entries the server scanned after the last event,
    a high-water mark, which MongoDB resumes from without needing that event (MongoDB 6.0+ would
    refuse one its ``$match`` now drops). The last event's own when an ``invalidate`` was read
    after it (the invalidate is saved apart, marked)."""
    token = stream.resume_token
    return events[-1]["_id"] if invalidate is not None or token is None else token


def watch_finisher(settings: Settings, context: RunContext, collections: Collections) -> Finisher:
    """The settings' finisher, with the cold tier's recorded boundary read again while the
    watcher runs (``cold.record.RecordedBoundary``): a move made meanwhile reaches it."""
    on_archive = context.on(collections.archive_side)
    boundary = RecordedBoundary(
        lambda: read_record(collections.checkpoints, on_archive),
        settings.cold_moved_before,
        cold_url=settings.archive_cold_url,
    )
    return dataclasses.replace(settings.finisher("watch", context.clock), cold_boundary=boundary)


def latest(*moments: datetime | None) -> datetime | None:
    """The latest of ``moments`` known (None when none is)."""
    known = [moment for moment in moments if moment is not None]
    return max(known) if known else None


def stop_file_there(options: WatchOptions) -> str | None:
    """The watcher's --stop-file, by its absolute path, if it is there now (its stop's cause)."""
    if options.stop_file is None:
        return None
    path = Path(options.stop_file).expanduser().absolute()
    try:
        return str(path) if path.exists() else None
    except OSError:
        return None
