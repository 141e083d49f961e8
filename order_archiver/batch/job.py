"""Batch archiving: every delivered order not yet archived, enriched, written exactly once.

The run walks the delivered orders of the window in ``_id`` order through one enrichment
aggregation (``source.OrderSource``). When the archive lives in the source database the
aggregation itself skips orders already archived, before any join is paid for. A reader
thread finishes documents into bounded chunks (``source.ChunkReader``) a few ahead of the
writer (``source.read_ahead``), so reading and writing overlap. Each chunk is one unordered
insert (``storage.ArchiveWriter``: an order archived already is refused on its ``_id`` and
compared): a re-run, a crash mid-run or a watcher writing at the same time never creates a
second document and never rewrites one. After a chunk is
acknowledged its last ``_id`` is saved as the run's checkpoint; an interrupted run resumes
there. ``--purge-source`` deletes, after the archive pass, only orders whose archive
document is confirmed present.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pymongo import MongoClient

from order_archiver.batch.counting import DeliveredCount
from order_archiver.batch.dry_run import DryRun
from order_archiver.batch.limits import LimitReached
from order_archiver.batch.pacing import paced_chunk_size
from order_archiver.batch.partition import ShareLease, batch_checkpoint_key
from order_archiver.batch.plan import PassPlanner
from order_archiver.batch.preflight import check_source, say_what_no_run_archives
from order_archiver.batch.rejections import RejectionLog
from order_archiver.batch.report import BatchOptions, BatchReport, PassTimer, peak_rss_mib
from order_archiver.batch.samples import export_samples, keep_samples
from order_archiver.batch.throttle import Throttle
from order_archiver.batch.writing import ChunkWriting
from order_archiver.cold.tier import cold_holding
from order_archiver.context import RunContext
from order_archiver.documents import Document
from order_archiver.errors import (
    ArchiverError,
    TransientError,
    as_archiver_error,
    without_documents,
)
from order_archiver.logs import get_logger
from order_archiver.mongodb.checkpoint import (
    EPOCH,
    BatchCheckpoint,
    BatchState,
    Pass,
    with_progress,
)
from order_archiver.mongodb.deployment import check_deployments
from order_archiver.mongodb.indexes import IndexStep
from order_archiver.mongodb.lease import server_time
from order_archiver.mongodb.purge import PurgeProgress, SourcePurge
from order_archiver.mongodb.readings import Readings
from order_archiver.mongodb.rejects import RejectStore
from order_archiver.mongodb.retention import ArchiveLifecycle
from order_archiver.mongodb.source import (
    PAGE_SIZE,
    Chunk,
    ChunkReader,
    OrderSource,
    ReadAhead,
    read_ahead,
)
from order_archiver.mongodb.step import ArchiveCounts, ArchivingStep
from order_archiver.mongodb.storage import ArchiveWriter, Collections
from order_archiver.orders.enrichment import status_match
from order_archiver.reporting.progress import Progress
from order_archiver.retry import named_side
from order_archiver.settings import Settings

__all__ = ["BatchArchiver", "BatchOptions", "BatchReport"]  # the batch job's public names

log = get_logger("batch")
T = TypeVar("T")

QUEUE_CHUNKS = 4  # chunks in flight between reader and writer: bounds memory


# --- the run -----------------------------------------------------------------------------


def holds(options: BatchOptions, throttle: Throttle) -> Callable[[], None] | None:
    """What runs before each chunk written: the watcher's look at the unique index (a catch-up),
    then ``--max-lag``'s hold."""
    each = [hold for hold in (options.before_write, throttle.hold) if hold is not None]
    if len(each) < 2:
        return each[0] if each else None

    def hold() -> None:
        for one in each:
            one()

    return hold


def chunk_writing(archiver: BatchArchiver, collections: Collections) -> ChunkWriting:
    """The chunks' writing; with ``as_read`` (the watcher's catch-up) an archived copy is replaced
    only as read before its order (``ChunkWriting.readings``), the stream's way."""
    readings = None
    if archiver.options.as_read:
        names, delivered = collections.names, archiver.settings.delivered_status
        finisher, stop = archiver.reader.finisher, archiver.context.stop
        readings = Readings(archiver.orders_primary, names, delivered, finisher, archiver.step, stop)

    def skipped_on_read() -> bool:  # the pass's read left out what the archive holds
        return archiver.source.exclude_archived_in is not None

    return ChunkWriting(archiver.writer, archiver.step, skipped_on_read, readings=readings)


def after_the_pass(archiver: BatchArchiver) -> None:
    """What follows a pass: the rejects list pruned, the purge, the archive's retentions. Each
    writes and deletes in chunks, each chunk meeting the run's limits (``context.gate``); one
    that ends the run ends what follows as well: the next run does the rest."""
    delivered = status_match(archiver.settings.delivered_status)
    archiver.rejections.prune(archiver.orders_primary, archiver.archive, delivered, archiver.context.stop)
    if archiver.options.purge_source:
        archiver.purge()
    archiver.lifecycle.apply(archiver.report)  # ARCHIVE_RETENTION's undated orders, ARCHIVE_PII_RETENTION


def chunks_ahead(archiver: BatchArchiver, after_id: Any) -> ReadAhead[Chunk]:
    """The pass's chunks read ahead on a thread, written by the caller in the order read: each
    checkpoint covers every chunk before it. With watch's stop, the catch-up waiting for a chunk
    is as alive as its reader, each batch from the server a beat of /healthz (``liveness.waiting_on``)."""
    # Counted as written (``BatchArchiver.write_chunk``), not as read: a chunk read ahead and not
    # written (the run ended at the boundary before it) is the next run's scanned, not this one's.
    reads = archiver.throttle.reads(archiver.reader.chunks(after_id, counted=False))
    return read_ahead(reads, QUEUE_CHUNKS, archiver.context.stop)


def reached(archiver: BatchArchiver, last_id: object) -> None:
    """A chunk's writes acknowledged, every chunk before it too: the pass has got to ``last_id``.
    The checkpoint is saved now and then (``BatchCheckpoint.save_now_and_then``), always after
    the chunks it covers and their rejections. The watcher's catch-up is told as well
    (``BatchOptions.written``: its own mark, tied to its stream's start, saved on its own beat)."""
    archiver._last_written_id = last_id
    progress = with_progress(archiver.state, archiver.current, last_id)
    archiver.checkpoint.save_now_and_then(progress, first=archiver.rejections.flush)  # listed first
    if archiver.options.written is not None:
        # Its rejections listed first: a catch-up gone on after its mark does not meet them again.
        archiver.rejections.flush()
        archiver.options.written(last_id)


def shown(progress: Progress | None, chunk: Chunk, counts: ArchiveCounts) -> None:
    """A chunk written, in the progress: the orders it went through (the summary's scanned, those
    the read skipped as archived included) and what they were, in the summary's words."""
    if progress is not None:
        progress.update(
            chunk.scanned,
            archived=counts.archived,
            already_archived=counts.already_archived + chunk.skipped,
            revised=counts.revised,
            rejected=counts.rejected,
        )


def pass_progress(archiver: BatchArchiver) -> Progress | None:
    """The pass's bar or lines, only when progress is shown (its total costs a count); a resumed
    pass's total is what is left after the checkpoint's last _id, not the whole window."""
    options = archiver.options
    if options.progress == "off":
        return None
    total, estimated = archiver.delivered.progress_total(archiver.source, archiver.current.last_id)
    description = "archiving" if options.run else "examining"
    return Progress(description, total=total, mode=options.progress, estimated=estimated)


def purge_timed(archiver: BatchArchiver, purge: SourcePurge) -> None:
    """The purge, with its own progress line as the pass has (``purge.PurgeProgress``: the orders
    walked, what ``--max-rate`` paces, over the purge's delivered orders, one index count, a
    share's an estimate) and its own time (``BatchReport.purge_seconds``): the pass's rate leaves it out."""
    report, progress = archiver.report, None
    if archiver.options.progress != "off":
        total, estimated = archiver.delivered.estimate(purge.window)
        progress = Progress("purging", total=total, mode=archiver.options.progress, estimated=estimated)
        purge = dataclasses.replace(purge, shown=PurgeProgress(progress))
    started = time.monotonic()
    try:
        purge.run(report.add_purge)
    finally:
        report.purge_seconds = time.monotonic() - started
        if progress is not None:
            progress.close()


class BatchArchiver:
    """One batch run over one client. ``run()`` returns the report; errors are raised as
    ``ArchiverError`` (``main`` maps them to exit codes)."""

    def __init__(
        self,
        client: MongoClient[Document],
        settings: Settings,
        options: BatchOptions,
        *,
        context: RunContext | None = None,
        server_clock: Callable[[], datetime] | None = None,
        archive_client: MongoClient[Document] | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.report = BatchReport(dry_run=not options.run, name=options.name)
        self.deployments = (client, archive_client)  # checked at start (deployment.check_deployments)
        context = context or RunContext()
        self.throttle = Throttle.of(options, self.deployments, context.stop, self.report)  # #34's limits
        # Every bulk write or delete of the run outside its pass meets them a chunk at a time
        self.context = context = dataclasses.replace(context, gate=self.throttle)
        collections = Collections.of(client, settings, archive_client)
        on_archive = context.on(collections.archive_side)
        self.orders, self.orders_primary = collections.orders, collections.orders_primary
        self.archive = collections.archive
        self.checkpoint = BatchCheckpoint(
            collections.checkpoints,
            batch_checkpoint_key(settings, options),  # of its window, and of its share (--partition)
            (options.date_from, options.date_to),
            on_archive,
        )
        # Whatever the host's clock: the pass's bounds on the source's, the archive's retentions on its own
        self.server_clock = server_clock or (lambda: server_time(client))
        archive_clock = server_clock or (lambda: server_time(archive_client or client))
        self.state = BatchState()
        self.current = Pass(None, EPOCH)
        self.writer = ArchiveWriter.of(collections, settings, context)
        self.rejects, self.source_side = RejectStore(collections.rejects, on_archive), collections.source_side
        self.source = OrderSource(
            self.orders,
            collections.names,
            settings.delivered_status,
            options.date_from,
            options.date_to,
            archived_ids=self.writer.existing_ids,
            exclude_archived_in=self.archive.name if collections.same_database else None,
            page_size=paced_chunk_size(PAGE_SIZE, options.max_rate) if options.max_rate else None,
        )
        self.reader = ChunkReader(
            self.source,
            self.report,
            settings.finisher(options.archived_by, context.clock),
            batch_size=self.throttle.chunk_size,  # the batch size; paced, at most a second's worth
            limit=options.limit,
            stop_event=context.stop,
        )
        source = options.rejects_source or options.archived_by
        self.rejections = RejectionLog(self.rejects, self.report, source, context.clock)
        self.share = ShareLease(self.checkpoint, options, settings)  # --partition: one process a share
        self.step = ArchivingStep(
            self.writer, self.rejections.add, options.fence, holds(options, self.throttle)
        )
        self.delivered = DeliveredCount(self.orders, options, self.report, context.stop)
        self.writing = chunk_writing(self, collections)  # the watcher's catch-up: replacing as read
        # maintain False (the watcher's catch-up): no index built, no retention applied (its role)
        self.lifecycle = ArchiveLifecycle(self.archive, settings, archive_clock, on_archive, options.maintain)
        self.index_step = IndexStep.of(
            self.orders, self.archive, settings, context, options.maintain, collections.forgotten
        )
        self.progress: Progress | None = None
        self._last_written_id: Any = None
        self.source_exists = True  # see _run

    # -- setup

    def ensure_indexes(self) -> None:
        """ARCHIVE_RETENTION's TTL index first (``retention.py``), then the indexes the run relies
        on (``indexes.py``: no time limit, INDEX_BUILD_WAIT_S waited; no write without the unique one)."""
        self.lifecycle.ensure_index(self.report)
        self.index_step.build(self.report, source_exists=self.source_exists)

    # -- writing

    def write_chunk(self, chunk: Chunk, upcoming: Chunk | None = None) -> ArchiveCounts:
        """``upcoming``: the next chunk, when it is read already (``writing.ChunkWriting``)."""
        ahead = upcoming.documents if upcoming is not None else None
        counts = self.writing.write(chunk.documents, chunk.rejections, ahead)
        self.report.add_written(counts)
        self.reader.count(chunk)  # scanned with what became of its orders, never before
        if chunk.last_id is not None:
            reached(self, chunk.last_id)
        return counts

    # -- purge

    def purge(self) -> None:
        """``--purge-source``, after a complete pass (``purge.SourcePurge``): timed, shown."""
        purge_timed(self, self.source_purge())

    def source_purge(self) -> SourcePurge:
        # A chunk of the walk: the batch size, at most a second's worth under --max-rate (paced after it)
        parts = (self.writer, self.settings, self.throttle.chunk_size, self.server_clock, self.context.stop)
        witness = (self.settings, self.orders_primary, self.checkpoint.collection, self.context)
        throttle = (self.throttle.purge_pace, self.throttle.before)  # --max-rate, limits, --max-lag
        return SourcePurge.of_run(
            self.source, self.orders_primary, *parts, *throttle, cold_holding(*witness, self.server_clock)
        )

    # -- orchestration

    def run(self) -> BatchReport:
        """The run; on an error or a stop the report so far stays readable as ``self.report``.
        A lost connection names its side (the archive's operations say so; the rest: the source)."""
        with named_side(self.source_side, (TransientError,)):
            return self._run()

    def _run(self) -> BatchReport:
        started = time.monotonic()
        try:
            check_deployments(self.deployments[0], self.settings, self.deployments[1])
            self.source_exists = check_source(self.orders, self.options, self.report, self.context.stop)
            if self.options.run and (limit := self.throttle.limits.reached()) is not None:
                # A stop file there already (pt-archiver's sentinel: it does not start either):
                # no pass planned, nothing written, not even an index; exit 0, ended said.
                self.report.ended = limit
            else:
                with self.share:  # --partition: its lease (a write), only for a run that goes on
                    self._pass()
            self.delivered.settle()
            self.report.completed = self.report.ended is None
            self.report.ended = self.report.ended or "completed"
            say_what_no_run_archives(self.orders, self.settings.delivered_status, self.report, self.context)
        finally:
            self.report.seconds = time.monotonic() - started
            self.report.peak_rss_mib = peak_rss_mib()
            if self.progress is not None:
                self.progress.close()
        return self.report

    # -- the pass

    def _planner(self) -> PassPlanner:
        return PassPlanner(
            self.settings,
            self.options,
            self.orders,
            self.orders_primary,
            self.rejects,
            self.report,
            self.context.stop,
            self.server_clock,
            archive=self.archive,
        )

    def _begin_pass(self) -> None:
        """Load what the last runs left, choose this run's pass and point the reader at it."""
        self.state = self.checkpoint.load()
        planned = self._planner().plan(self.state, self.source)
        self.current, self.source = planned.current, planned.source
        self.reader.source = self.source

    def _run_dry(self) -> None:
        """A dry run reads the primary as --run does: paced, and ended by the limits, the same."""
        self.progress = pass_progress(self)
        purge = self.source_purge() if self.options.purge_source else None
        shown = self.settings.pii_policy.fields
        dry = DryRun(self.report, self.options, self.writing, self.rejections, shown, self.throttle.check)
        with self.throttle.until_a_limit(self.report):
            dry.examine(self.throttle.reads(self.reader.chunks(self.current.last_id)), purge, self.progress)
        self.lifecycle.plan(self.report)
        self.index_step.plan(self.report, source_exists=self.source_exists)
        export_samples(self.report, self.options)

    def _pass(self) -> None:
        self._begin_pass()
        if self.options.run:
            self._run_archive()
        else:
            self._run_dry()

    def _run_archive(self) -> None:
        try:
            self.ensure_indexes()
        except LimitReached as reached:  # during the wait for the builds (#34): a clean end
            self.report.ended = reached.limit
            return  # the builds left running on the server (said pending); nothing written
        after_id = self.current.last_id
        if after_id is not None:
            self.report.resumed_from = str(after_id)
            log.info("resuming an interrupted run after _id %s", after_id)
        self.progress = pass_progress(self)
        chunks = chunks_ahead(self, after_id)
        try:
            with self.throttle.until_a_limit(self.report):  # at a chunk boundary, or during a wait
                for chunk in PassTimer(self.report).timed(chunks):
                    keep_samples(self.report, self.options, chunk.documents, self.settings.pii_policy.fields)
                    shown(self.progress, chunk, self.write_chunk(chunk, chunks.ready()))
                    self.throttle.limits.check()  # a chunk boundary: end cleanly
        except BaseException as exc:
            self.rejections.flush_quietly()
            if isinstance(exc, (ArchiverError, KeyboardInterrupt)) or not isinstance(exc, Exception):
                raise
            raise as_archiver_error(exc) from without_documents(exc)
        finally:
            chunks.close()
        self.rejections.flush()
        if self.context.stopped:
            raise ArchiverError(
                "interrupted: the run stopped after its last complete chunk; run it again to finish"
            )
        self._end_of_pass()

    def _end_of_pass(self) -> None:
        """After the pass: the checkpoint, the rejects list, the purge, the samples (or, ended by
        its limits, where it is: the next run goes on from there)."""
        if self.report.ended is not None:
            if self._last_written_id is not None:
                self.checkpoint.save(with_progress(self.state, self.current, self._last_written_id))
            return
        if self.options.limit is None or self.reader.exhausted:
            # The pass is complete: its start is the new high-water mark (saved after every
            # write it covers). A --limit run that got to the end of the window completes it too.
            self.checkpoint.save(self.state.after(self.current))
        elif self._last_written_id is not None:
            # Cut short by --limit: the next run goes on with this pass after its last _id.
            self.checkpoint.save(with_progress(self.state, self.current, self._last_written_id))
        with self.throttle.until_a_limit(self.report):  # a limit ends what follows too
            after_the_pass(self)
        export_samples(self.report, self.options)
