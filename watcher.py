"""Watch mode: archive each order the moment it becomes delivered, on MongoDB change streams.

Delivery is at-least-once and writes are idempotent, so the archive is exactly-once:

- The stream's server-side ``$match`` lets through only what can mean "delivered now":
  inserts and replaces of a delivered order, updates that set ``status`` to the delivered
  value, and ``invalidate``. ``full_document="updateLookup"`` gives the order as it is now.
- Events are drained into micro-batches (what the stream has buffered, up to
  ``WATCH_MAX_BATCH``), enriched by one aggregation (the batch pipeline, on ``_id $in``),
  written by one unordered bulk of ``$setOnInsert`` upserts, and only then is the resume
  token of the batch's last event saved. A crash between write and save replays events
  whose writes are no-ops.
- A quiet stream saves its post-batch resume token every ``WATCH_HEARTBEAT_S``, so the saved
  token never ages out of the oplog on a quiet night.
- Without a usable token (first start, or a token the server rejects: history lost,
  invalid, fatal), the stream is opened first, its starting point kept, every delivered
  order not yet archived is archived (the batch path), then the stream is consumed from
  that starting point: nothing delivered during the catch-up is missed, and nothing is ever
  silently restarted from "now". ``--from-now`` skips the catch-up on a first start.
- Transient errors (network, failover; pymongo resumes once by itself) reconnect with capped
  exponential backoff and full jitter, forever, from the last saved token. Fatal ones
  (authentication, authorisation, no change streams on this server) end the process, exit 1.
- SIGINT/SIGTERM set the stop event: the micro-batch in hand is finished and its token
  saved, the stream closed, exit 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pymongo import MongoClient
from pymongo import errors as pymongo_errors
from pymongo.change_stream import CollectionChangeStream

from archiver import BatchArchiver, BatchOptions
from config import Settings
from logger import STATS, get_logger, plural
from order_archiver.errors import (
    EXIT_OK,
    ArchiverError,
    Attempts,
    Backoff,
    NotSupportedError,
    RetryPolicy,
    as_archiver_error,
    classify,
    is_authorisation_error,
    retrying,
)
from order_archiver.mongodb.deployment import check_deployments
from order_archiver.mongodb.lease import Lease, LeaseLost
from order_archiver.mongodb.rejects import RejectStore
from order_archiver.mongodb.source import (
    build_change_stream_pipeline,
    enrich_each,
    event_time,
    finish_all,
    orders_to_archive,
)
from order_archiver.mongodb.storage import ArchiveWriter, Collections, Document
from order_archiver.mongodb.tokens import (
    NO_TOKEN,
    UNUSABLE,
    FileTokenStore,
    MongoTokenStore,
    ResumeState,
    TokenStore,
)
from order_archiver.reporting.metrics import WatchMetrics

log = get_logger("watch")

MIN_EMPTY_POLL_S = 0.005  # see _next_event


# --- the watcher -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchOptions:
    from_now: bool = False
    name: str = "default"
    token_store: Literal["file", "mongo"] = "file"


@dataclass
class WatchStats:
    events: int = 0
    archived: int = 0
    already_archived: int = 0
    revised: int = 0
    rejected: int = 0
    skipped: int = 0
    batches: int = 0
    last_event_at: datetime | None = None
    last_saved_at: float = 0.0
    reconnects: int = 0
    catch_ups: int = 0
    last_latency_s: float | None = None  # change to archive write acknowledged, last batch


class _TokenUnusable(Exception):
    """The saved resume token was refused by the server: catch up, then stream."""


class Watcher:
    def __init__(
        self,
        client: MongoClient[Document],
        settings: Settings,
        options: WatchOptions,
        *,
        stop_event: threading.Event | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        archive_client: MongoClient[Document] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.options = options
        self.stop_event = stop_event or threading.Event()
        self.clock = clock
        collections = Collections.of(client, settings, archive_client)
        self.archive_client = archive_client
        self.orders = collections.orders
        # The order as it is now, after its event: from the primary (see Collections.of).
        self.orders_primary = collections.orders_primary
        self.names = collections.names
        self.rejects = RejectStore(collections.rejects, self.stop_event, side=collections.archive_side)
        self.metrics = WatchMetrics()
        self.writer = ArchiveWriter(
            collections.archive,
            self.stop_event,
            on_retry=lambda exc: self.metrics.retries.labels(kind=type(exc).__name__).inc(),
            side=collections.archive_side,
        )
        self.namespace = f"{settings.mongodb_database}.{settings.orders_collection}"
        self.lease: Lease | None = None
        if options.token_store == "mongo":
            self.store: TokenStore = MongoTokenStore(
                collections.checkpoints, options.name, self.namespace, self.stop_event
            )
            # A shared store is what lets a standby take over: leases come with it.
            self.lease = Lease(
                collections.checkpoints,
                options.name,
                ttl_s=settings.watch_lease_ttl_s,
                renew_s=settings.watch_lease_renew_s,
                stop_event=self.stop_event,
            )
        else:
            self.store = FileTokenStore(settings.resume_token_file, self.namespace)
        self.pipeline = build_change_stream_pipeline(settings.delivered_status)
        self.stats = WatchStats()
        self._logged_at = time.monotonic()
        self._events_at_last_log = 0
        self._distrust_saved_token = False
        self._standby_announced = False

    # -- service loop

    def run(self) -> int:
        """Until stopped: stream, and on a transient failure reconnect with backoff."""
        # Forever (a service), for what classify() calls transient; a stop ends the wait.
        policy = RetryPolicy(
            Attempts.SERVICE,
            backoff=Backoff(initial=0.5, maximum=30.0),
            retryable=lambda exc: classify(exc) == "transient",
        )
        log.info("watching %s (token store: %s)", self.namespace, self.options.token_store)
        check_deployments(self.client, self.settings, self.archive_client)
        try:
            self._serve(policy)
            self._mark_stopped()
        finally:
            if self.lease is not None:
                self.lease.release()
        log.info(
            "stopped: %s, %s archived, %d already archived, %d revised, %d rejected",
            plural(self.stats.events, "event"),
            plural(self.stats.archived, "order"),
            self.stats.already_archived,
            self.stats.revised,
            self.stats.rejected,
        )
        return EXIT_OK

    def _mark_stopped(self) -> None:
        """After a clean stop (a signal), say so where ``status`` looks; a crash says nothing,
        and ``status`` then reports a watcher that stopped saving its token."""
        if self.stats.last_saved_at == 0.0:
            return  # never saved a token (a standby, or stopped during the catch-up)
        if self.lease is not None and not self.lease.held():
            return
        try:
            self.store.mark_stopped(term=self.lease.term if self.lease is not None else None)
        except ArchiverError as exc:
            log.warning("could not record the clean stop (%s)", exc)

    def _lead(self) -> bool:
        """With a lease: True once leader; False (after a pause) while another watcher leads."""
        if self.lease is None or self.lease.held():
            return True
        if self.lease.try_acquire():
            self._standby_announced = False
            return True
        if not self._standby_announced:
            log.info(
                "standby: another watcher named %s leads; taking over if its lease (%ss) runs out",
                self.options.name,
                self.settings.watch_lease_ttl_s,
            )
            self._standby_announced = True
        self.stop_event.wait(self.lease.renew_s)
        return False

    def _serve(self, policy: RetryPolicy) -> None:
        while not self.stop_event.is_set():
            try:
                if not self._lead():
                    continue
                self._stream_once(policy)
            except LeaseLost as exc:
                log.warning("%s: back to standby", exc)
            except (ArchiverError, pymongo_errors.PyMongoError) as exc:
                if self.stop_event.is_set() and isinstance(exc, ArchiverError):
                    break  # a catch-up stopped by a signal: it resumes on the next start
                self._after_failure(exc, policy)

    def _after_failure(self, exc: BaseException, policy: RetryPolicy) -> None:
        """One decision per failure, by ``classify``: catch up, reconnect, or stop."""
        kind = classify(exc)
        if kind == "token_unusable":
            # The stream's own resume point is gone (e.g. a long cut, then pymongo's automatic
            # resume): the saved token is older still, so catch up.
            log.warning("the change stream cannot resume (%s): catching up", getattr(exc, "code", "?"))
            self._distrust_saved_token = True
            return
        if kind == "no_change_streams":
            raise NotSupportedError(
                "this MongoDB deployment has no change streams: watch needs a replica set, a sharded "
                "cluster or Atlas (a standalone server can only run batch)"
            ) from exc
        if kind == "fatal":
            raise exc if isinstance(exc, ArchiverError) else as_archiver_error(exc) from exc
        cause = exc.__cause__ if isinstance(exc, ArchiverError) and exc.__cause__ else exc
        delay = policy.increment(exc)
        self.stats.reconnects += 1
        self.metrics.errors.labels(kind=type(cause).__name__).inc()
        log.warning("change stream interrupted (%s); reconnecting in %.1fs", type(cause).__name__, delay)
        self.stop_event.wait(delay)  # a stop ends the wait, and the loop: exit 0

    def _stream_once(self, policy: RetryPolicy) -> None:
        saved = UNUSABLE if self._distrust_saved_token else self.store.load()
        stream = None
        if saved.usable:
            try:
                stream = self._open(saved)
            except _TokenUnusable as reason:
                log.warning("the saved resume token cannot be used (%s): catching up instead", reason)
            if stream is not None and saved.invalidated:
                # The collection was dropped or replaced (a rename, $out, a restore with --drop):
                # what came with the new one made no insert event. The stream is open, so
                # nothing delivered during the catch-up is missed.
                self._catch_up()
        if stream is None:
            stream = self._open(NO_TOKEN)
            start_token = stream.resume_token
            # --from-now only ever skips the catch-up of a watcher that never had a token.
            if self.options.from_now and saved.first_start and self.stats.catch_ups == 0:
                log.info("starting from now (--from-now): deliveries before this moment are not archived")
            else:
                self._catch_up()
            if start_token is not None:
                self._save_token(start_token)
            self._distrust_saved_token = False
        with stream:
            policy.reset()
            self._consume(stream, policy)

    def _open(self, state: ResumeState) -> CollectionChangeStream[Document] | _Prepended:
        """Open the stream from ``state``; a refused token raises ``_TokenUnusable``."""
        kwargs = state.stream_options()
        token = state.token
        try:
            stream = self.orders.watch(
                self.pipeline,
                full_document="updateLookup",
                max_await_time_ms=self.settings.watch_max_await_ms,
                batch_size=self.settings.watch_max_batch,
                **kwargs,
            )
            if token is not None:
                # A refused token may only be reported by the first getMore.
                first = stream.try_next()
                if first is not None:
                    return _Prepended(stream, first)
            return stream
        except pymongo_errors.OperationFailure as exc:
            if token is not None and self._token_refused(exc):
                raise _TokenUnusable(
                    f"{exc.details.get('codeName', '') if exc.details else ''} {exc.code}"
                ) from exc
            raise

    @staticmethod
    def _token_refused(exc: pymongo_errors.OperationFailure) -> bool:
        """A refusal of the token itself, or any other refusal that is not transient, access
        or support: the token is the suspect."""
        kind = classify(exc)
        return kind == "token_unusable" or (kind == "fatal" and not is_authorisation_error(exc))

    def _catch_up(self) -> None:
        self.stats.catch_ups += 1
        log.info("catching up: archiving delivered orders not yet archived")
        # resume=False: a checkpoint left by an interrupted catch-up predates this stream's
        # starting point, and orders delivered since with smaller _ids would be skipped for
        # good. The scan restarts; the orders already archived are skipped on the server.
        options = BatchOptions(
            run=True,
            batch_size=self.settings.batch_size,
            archived_by="watch",
            samples=0,
            resume=False,
            require_source=False,  # a collection that does not exist yet may be created later
            # Every delivered order, not the new ones only: a catch-up happens at a first start
            # or after a lost token, when nothing says since when orders went unarchived.
            full=True,
            read_primary=True,
        )
        report = BatchArchiver(
            self.client,
            self.settings,
            options,
            stop_event=self.stop_event,
            archive_client=self.archive_client,
            clock=self.clock,
        ).run()
        self.stats.archived += report.archived
        self.stats.already_archived += report.already_archived
        self.stats.revised += report.revised
        self.stats.rejected += report.rejected
        self.metrics.archived.labels(mode="catch-up").inc(report.archived)
        self.metrics.already_archived.labels(mode="catch-up").inc(report.already_archived)
        self.metrics.rejected.labels(mode="catch-up").inc(report.rejected)
        log.info("caught up: %s", report.summary_line())

    # -- consuming

    def _next_event(self, stream: Any) -> Any:
        """One event, or None after a quiet getMore.

        A MongoDB server holds an empty getMore for ``max_await_time_ms``; a server that
        answers at once would make this loop spin, so an answer faster than
        ``MIN_EMPTY_POLL_S`` is followed by a pause of that length (it costs nothing on
        MongoDB and bounds the poll rate elsewhere).
        """
        started = time.monotonic()
        event = stream.try_next()
        if event is None:
            elapsed = time.monotonic() - started
            if elapsed < MIN_EMPTY_POLL_S:
                self.stop_event.wait(MIN_EMPTY_POLL_S - elapsed)
        return event

    def _consume(self, stream: Any, policy: RetryPolicy) -> None:
        while not self.stop_event.is_set():
            if self.lease is not None:
                self.lease.check()
            event = self._next_event(stream)
            if event is None:
                self._on_quiet(stream)
                if not stream.alive:
                    return
                continue
            events = [event]
            # Drain what the stream already holds: a burst becomes a few large writes, while
            # a lone delivery is written at once instead of waiting for another getMore.
            while len(events) < self.settings.watch_max_batch and _buffered(stream) > 0:
                following = stream.try_next()
                if following is None:
                    break
                events.append(following)
            invalidate = next((e for e in events if e.get("operationType") == "invalidate"), None)
            if invalidate is not None:
                events = events[: events.index(invalidate)]
            if events:
                self._archive(events)
                self._save_token(events[-1]["_id"])
            if invalidate is not None:
                self._on_invalidate(invalidate)
                return
            policy.reset()
            self._maybe_log()

    def _archive(self, events: list[Mapping[str, Any]]) -> None:
        self.stats.events += len(events)
        self.stats.batches += 1
        self.metrics.event_seen(len(events))
        times = [t for t in (event_time(e) for e in events) if t is not None]
        if times:
            self.stats.last_event_at = max(times)
        ids = orders_to_archive(events, self.settings.delivered_status)
        self.stats.skipped += len(events) - len(ids)
        if not ids:
            return
        found = retrying(
            lambda: enrich_each(self.orders_primary, ids, self.settings.delivered_status, self.names),
            attempts=Attempts.READ,
            stop_event=self.stop_event,
        )
        now = self.clock()
        # (enrich_each matched the delivered status again: an order changed since its event
        # is not among them, and its next event decides.)
        finished = finish_all(found, archived_by="watch", archived_at=now, pii=self.settings.pii_policy)
        documents, rejections = finished.documents, finished.rejections
        if documents:
            if self.lease is not None:
                self.lease.check()  # fencing: a watcher that lost its lease writes nothing more
            outcome = self.writer.write(documents)
            self.stats.archived += outcome.archived
            self.stats.already_archived += outcome.already_archived
            self.stats.revised += outcome.revised
            rejections += outcome.rejections
            self.metrics.archived.labels(mode="watch").inc(outcome.archived)
            self.metrics.already_archived.labels(mode="watch").inc(outcome.already_archived)
            acknowledged = self.clock()
            for moment in times:
                self.metrics.latency.observe(max((acknowledged - moment).total_seconds(), 0.0))
            self._log_archived(documents, times, acknowledged)
        if rejections:
            self.rejects.record(rejections, source="watch", now=now)
            self.stats.rejected += len(rejections)
            self.metrics.rejected.labels(mode="watch").inc(len(rejections))

    def _save_token(self, token: Mapping[str, Any], invalidated: bool = False) -> None:
        term = self.lease.term if self.lease is not None else None
        self.store.save(token, invalidated=invalidated, last_event_at=self.stats.last_event_at, term=term)
        self.stats.last_saved_at = time.monotonic()
        self.metrics.token_saved()

    def _on_quiet(self, stream: Any) -> None:
        """Heartbeat: a quiet stream's post-batch token moves on; keep the saved one fresh."""
        if time.monotonic() - self.stats.last_saved_at >= self.settings.watch_heartbeat_s:
            token = stream.resume_token
            if token is not None:
                self._save_token(token)
        self._maybe_log()

    def _on_invalidate(self, event: Mapping[str, Any]) -> None:
        log.warning("the orders collection was dropped or renamed (invalidate): waiting for it to come back")
        self._save_token(event["_id"], invalidated=True)

    def _log_archived(
        self, documents: list[dict[str, Any]], times: list[datetime], acknowledged: datetime
    ) -> None:
        """``-v``: one line per archived order (its latency is the batch's, from its oldest event)."""
        oldest = min(times) if times else None
        latency = (acknowledged - oldest).total_seconds() if oldest is not None else None
        self.stats.last_latency_s = latency
        if not log.isEnabledFor(logging.DEBUG):
            return
        took = f", {latency * 1000:.0f} ms after the change" if latency is not None else ""
        for document in documents:
            log.debug("archived order %s (%s)%s", document["numero_commande"], document["_id"], took)

    def _maybe_log(self) -> None:
        """Every ``WATCH_LOG_INTERVAL_S``: what happened since the last line. A quiet stream is
        "idle", not "behind": lag is measured on the events archived, never on the clock."""
        if time.monotonic() - self._logged_at < self.settings.watch_log_interval_s:
            return
        self._logged_at = time.monotonic()
        stats = self.stats
        recent = stats.events - self._events_at_last_log
        self._events_at_last_log = stats.events
        if recent:
            latency = stats.last_latency_s
            after = f", last archived {latency:.2f}s after its change" if latency is not None else ""
            state = f"{recent} new events{after}"
        else:
            last = stats.last_event_at.isoformat() if stats.last_event_at else "none yet"
            state = f"idle (last event {last})"
        log.info(
            "watch: %s; in all %d events, %d archived, %d already archived, %d rejected",
            state,
            stats.events,
            stats.archived,
            stats.already_archived,
            stats.rejected,
            extra={
                STATS: {
                    "events": stats.events,
                    "new_events": recent,
                    "archived": stats.archived,
                    "already_archived": stats.already_archived,
                    "rejected": stats.rejected,
                    "last_latency_s": stats.last_latency_s,
                    "idle": not recent,
                }
            },
        )


def _buffered(stream: Any) -> int:
    """Events the stream has received and not yet returned. pymongo keeps them in its
    command cursor's ``_data`` deque; if that ever changes, 0 only means smaller batches."""
    if isinstance(stream, _Prepended):
        return (1 if stream.pending is not None else 0) + _buffered(stream.stream)
    data = getattr(getattr(stream, "_cursor", None), "_data", None)
    try:
        return len(data) if data is not None else 0
    except TypeError:
        return 0


class _Prepended:
    """A change stream with one already-read event put back in front."""

    def __init__(self, stream: Any, event: Any) -> None:
        self.stream = stream
        self.pending = event

    def try_next(self) -> Any:
        if self.pending is not None:
            event, self.pending = self.pending, None
            return event
        return self.stream.try_next()

    @property
    def resume_token(self) -> Any:
        return self.stream.resume_token

    @property
    def alive(self) -> bool:
        return self.pending is not None or self.stream.alive

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> _Prepended:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
