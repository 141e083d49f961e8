"""Batch archiving: every delivered order not yet archived, enriched, written exactly once.

The run walks the delivered orders of the window in ``_id`` order through one enrichment
aggregation (``source.OrderSource``). When the archive lives in the source database the
aggregation itself skips orders already archived, before any join is paid for. A reader
thread finishes documents into bounded chunks (``source.ChunkReader``) a few ahead of the
writer (``source.read_ahead``), so reading and writing overlap. Each chunk is one unordered bulk of
``$setOnInsert`` upserts keyed on ``_id``: a re-run, a crash mid-run or a watcher writing at
the same time never creates a second document and never rewrites one. After a chunk is
acknowledged its last ``_id`` is saved as the run's checkpoint; an interrupted run resumes
there. ``--purge-source`` deletes, after the archive pass, only orders whose archive
document is confirmed present.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from bson import json_util
from pymongo import ASCENDING, DeleteOne, IndexModel, MongoClient
from pymongo import errors as pymongo_errors

from config import Settings, write_private
from logger import get_logger, plural
from order_archiver.errors import (
    ArchiverError,
    Attempts,
    ConfigError,
    TransientError,
    as_archiver_error,
    classify,
    named_side,
    retrying,
    without_documents,
)
from order_archiver.mongodb.checkpoint import (
    EPOCH,
    BatchCheckpoint,
    BatchState,
    Pass,
    checkpoint_key,
    plan_pass,
    with_progress,
)
from order_archiver.mongodb.deployment import check_deployments, hello, index_build_options
from order_archiver.mongodb.lease import server_time
from order_archiver.mongodb.rejects import Rejection, RejectStore
from order_archiver.mongodb.source import (
    Chunk,
    ChunkReader,
    OrderSource,
    build_change_stream_pipeline,
    event_time,
    missing_source,
    orders_to_archive,
    read_ahead,
    unknown_status_hint,
)
from order_archiver.mongodb.storage import (
    WRITE_ATTEMPTS,
    ArchiveWriter,
    Collections,
    Document,
    MongoCollection,
)
from order_archiver.orders.enrichment import source_hash, status_match
from order_archiver.orders.pii import mask_pii
from order_archiver.orders.selection import date_range
from order_archiver.reporting.progress import Progress, ProgressMode

log = get_logger("batch")
T = TypeVar("T")

QUEUE_CHUNKS = 4  # chunks in flight between reader and writer: bounds memory
DEFAULT_SAMPLES = 3
REJECTS_FLUSH = 1000  # rejections recorded together (see write_chunk)
CHANGES_AWAIT_MS = 200  # a quiet getMore while reading the changes since the last run: caught up
CHANGES_BATCH = 1000
CHANGES_STALL_BATCHES = 50  # empty batches (of CHANGES_AWAIT_MS) without progress: a stalled read


@dataclass(frozen=True)
class BatchOptions:
    run: bool = False
    date_from: datetime | None = None
    date_to: datetime | None = None
    limit: int | None = None
    batch_size: int = 100
    export_samples: str | None = None
    samples: int = DEFAULT_SAMPLES
    purge_source: bool = False
    resume: bool = True
    archived_by: str = "batch"  # the watcher's catch-up archives as "watch"
    require_source: bool = True  # a missing orders collection is an error (watch: a warning)
    progress: ProgressMode = "off"
    full: bool = False  # walk every delivered order of the window (--full), not only the new ones
    # Read the orders from the primary whatever the URI's readPreference: the watcher's
    # catch-up (a secondary behind the stream's start would hide deliveries no later event
    # shows). An incremental pass always does (see _begin_pass).
    read_primary: bool = False
    show_pii: bool = False  # samples unmasked (--show-pii)


@dataclass
class BatchReport:
    """What a run did. Without ``--limit``, a completed run's counts add up:
    ``archived + already_archived + rejected == delivered`` (the window's delivered orders
    at the start, give or take orders delivered while it ran)."""

    dry_run: bool = True
    mode: Literal["incremental", "full"] = "full"  # the pass: new deliveries only, or all
    since: datetime | None = None  # incremental: deliveries stamped from here on
    pass_reason: str = ""  # why this kind of pass (first run, full sweep due, --full...)
    completed: bool = False
    delivered: int | None = None  # delivered orders the pass selected when the run started
    scanned: int = 0  # orders the run read and examined (the server skips archived ones)
    archived: int = 0
    already_archived: int = 0
    rejected: int = 0
    rejected_new: int = 0  # rejected orders never listed before: these make exit 3
    outside_window: int = 0  # string dates that turned out to be outside the window
    revised: int = 0  # archive documents replaced by a corrected version of their order
    changes_read: int | None = None  # an incremental pass: change events read since the last run
    purged: int = 0
    purge_kept: int = 0  # archived, but left in the source: changed since (see purge)
    seconds: float = 0.0
    would_archive: int = 0
    would_purge: int | None = None  # a dry run with --purge-source: what --run would delete
    resumed_from: str | None = None
    read_retries: int = 0  # transient read failures the run went on through
    peak_rss_mib: float | None = None
    rejections: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def orders_per_second(self) -> float:
        return self.scanned / self.seconds if self.seconds > 0 else 0.0

    def _rejected_text(self) -> str:
        if not self.rejected:
            return "0"
        return f"{self.rejected} ({self.rejected_new} new; list: main.py rejects)"

    def summary_line(self) -> str:
        window = ""
        if self.delivered is not None:
            scope = "in the window"
            if self.since is not None:
                scope = f"since {self.since.isoformat()} (incremental; --full reads them all)"
            window = f" of {self.delivered} delivered {scope}"
            if self.outside_window:  # why the counts fall short of the delivered ones
                window += (
                    f" ({self.outside_window} outside the window once their string date_commande was read)"
                )
        if self.dry_run:
            return (
                f"dry run: {self.scanned} to examine, would archive {self.would_archive}, "
                f"already archived {self.already_archived}, would reject {self._rejected_text()}{window}"
                + (
                    f", would purge {self.would_purge} from the source"
                    if self.would_purge is not None
                    else ""
                )
                + f" ({self.seconds:.2f}s); nothing was written, add --run to archive"
            )
        head = "batch done" if self.completed else "batch stopped before the end, counts so far"
        return (
            f"{head}: scanned {self.scanned}, archived {self.archived}, already archived "
            f"{self.already_archived}"
            + (f", revised {self.revised} (corrected since archived)" if self.revised else "")
            + f", rejected {self._rejected_text()}, purged {self.purged}{window} in "
            f"{self.seconds:.2f}s ({plural(self.orders_per_second, 'order')}/s)"
            + (f"; went on through {self.read_retries} read failures" if self.read_retries else "")
        )

    def lines(self, *, show_samples: bool = True, show_pii: bool = False) -> list[str]:
        """For a person: a dry run's sample documents (client e-mail and phone masked unless
        ``show_pii``), the rejections by reason, the summary."""
        lines = []
        if self.dry_run and show_samples:
            for sample in self.samples:
                shown = sample if show_pii else mask_pii(sample)  # kept masked already, unless asked
                lines.append(
                    json_util.dumps(shown, ensure_ascii=False, json_options=json_util.RELAXED_JSON_OPTIONS)
                )
        if self.rejections:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.rejections.items()))
            lines.append(f"rejected orders by reason: {reasons}")
        lines.append(self.summary_line())
        return lines

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["orders_per_second"] = round(self.orders_per_second, 1)
        data["seconds"] = round(self.seconds, 3)
        data["samples"] = json.loads(json_util.dumps(self.samples))
        return data


# --- pure helpers ------------------------------------------------------------------------


def reached(position: Any, target: Any) -> bool:
    """Whether a change stream's position is at or past ``target``: resume tokens' ``_data``
    strings sort in stream order (MongoDB 4.0+, documented). No target: the first empty batch
    ends the read."""
    if not target or not position:
        return True
    return str(position.get("_data", "")) >= str(target.get("_data", ""))


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (Linux ``VmHWM``: unlike ``ru_maxrss`` it does not
    count what the parent held before ``exec``); None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- the run -----------------------------------------------------------------------------


class BatchArchiver:
    """One batch run over one client. ``run()`` returns the report; errors are raised as
    ``ArchiverError`` (``main`` maps them to exit codes)."""

    def __init__(
        self,
        client: MongoClient[Document],
        settings: Settings,
        options: BatchOptions,
        *,
        stop_event: threading.Event | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        server_clock: Callable[[], datetime] | None = None,
        archive_client: MongoClient[Document] | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.stop_event = stop_event or threading.Event()
        self.clock = clock
        collections = Collections.of(client, settings, archive_client)
        self.deployments = (client, archive_client)  # checked at start (deployment.check_deployments)
        self.orders = collections.orders
        self.orders_primary = collections.orders_primary
        self.archive = collections.archive
        self.checkpoint = BatchCheckpoint(
            collections.checkpoints,
            checkpoint_key(settings, options.archived_by, options.date_from, options.date_to),
            (options.date_from, options.date_to),
            self.stop_event,
            clock,
            side=collections.archive_side,
        )
        # The pass's bounds come from the server's clock: one clock for every run, whatever
        # the host's (see checkpoint.py).
        self.server_clock = server_clock or (lambda: server_time(client))
        self.state = BatchState()
        self.current = Pass(None, EPOCH)
        self.names = collections.names
        self.writer = ArchiveWriter(self.archive, self.stop_event, side=collections.archive_side)
        self.rejects = RejectStore(collections.rejects, self.stop_event, side=collections.archive_side)
        self.archive_side = collections.archive_side
        self.source_side = collections.source_side
        self.report = BatchReport(dry_run=not options.run)
        self.source = OrderSource(
            self.orders,
            self.names,
            settings.delivered_status,
            options.date_from,
            options.date_to,
            archived_ids=self.writer.existing_ids,
            exclude_archived_in=self.archive.name if collections.same_database else None,
        )
        self.reader = ChunkReader(
            self.source,
            self.report,
            archived_by=options.archived_by,
            batch_size=options.batch_size,
            limit=options.limit,
            stop_event=self.stop_event,
            clock=clock,
            pii=settings.pii_policy,
        )
        self.progress: Progress | None = None
        self._last_written_id: Any = None
        self._needs_count = False  # see _must_count_delivered
        self._pending_rejections: list[Rejection] = []
        self._delivered_at_start: int | None = None
        self._source_exists = True  # see _run

    # -- setup

    def ensure_indexes(self) -> None:
        """Indexes the run relies on; creating an existing index is a no-op on the server.
        Each is one ``createIndexes``: the specification's fields in the ``IndexModel``, the
        command's (``commitQuorum`` where there is a quorum, ``maxTimeMS``) on the command, as
        ``deployment.index_build_options`` decides from each deployment's own ``hello``."""
        specs: list[tuple[MongoCollection, list[tuple[str, int]], dict[str, Any]]] = [
            (self.orders, [("status", ASCENDING), ("date_commande", ASCENDING)], {}),
            (self.orders, [("status", ASCENDING), ("_id", ASCENDING)], {}),
            (self.orders, [("status", ASCENDING), ("date_livraison", ASCENDING)], {}),  # incremental
            (self.orders, [("numero_commande", ASCENDING)], {}),
            (self.archive, [("numero_commande", ASCENDING)], {"unique": True}),
            (self.archive, [("date_commande", ASCENDING)], {}),
            (self.archive, [("archived_at", ASCENDING)], {}),
            (self.archive, [("pii_policy", ASCENDING)], {}),  # status: one distinct scan
        ]
        options = {"source": self._index_build_options(self.orders)}
        same_deployment = self.archive.database.client is self.orders.database.client
        options["archive"] = options["source"] if same_deployment else self._index_build_options(self.archive)
        if not self._source_exists:  # an index build would create the collection a typo names
            specs = [spec for spec in specs if spec[0] is self.archive]
        for collection, keys, extra in specs:
            command = options["archive" if collection is self.archive else "source"]
            build = functools.partial(collection.create_indexes, [IndexModel(keys, **extra)], **command)
            try:
                retrying(build, stop_event=self.stop_event)
            except ArchiverError as exc:
                if collection is self.archive and extra.get("unique"):
                    # Without it a concurrent writer could archive one numero twice.
                    raise type(exc)(f"cannot create the archive's unique index: {exc}") from exc
                # The others only speed the run up (an index build on a large source can
                # outlast a flaky connection): the next run tries again.
                log.warning("index %s on %s not created (%s); continuing", keys, collection.name, exc)

    def _index_build_options(self, collection: MongoCollection) -> dict[str, Any]:
        """What this collection's deployment lets an index build name (its ``hello``; an
        in-process simulation answers none: a standalone)."""
        try:
            reply = retrying(lambda: hello(collection.database.client), stop_event=self.stop_event)
        except NotImplementedError:
            reply = {}
        return index_build_options(reply)

    def _count_rejections(self, rejections: list[Rejection], new: int) -> None:
        self.report.rejected += len(rejections)
        self.report.rejected_new += new
        for rejection in rejections:
            reason = rejection.reason
            self.report.rejections[reason] = self.report.rejections.get(reason, 0) + 1

    # -- writing

    def write_chunk(self, chunk: Chunk) -> None:
        documents = self._not_yet_archived(chunk.documents)
        if documents:
            outcome = self.writer.write(documents)
            self.report.archived += outcome.archived
            self.report.already_archived += outcome.already_archived
            self.report.revised += outcome.revised
            chunk.rejections.extend(outcome.rejections)
        # Recorded after the archive writes that met them, a thousand at a time (the list is
        # for people: a run that dies before recording meets them again, as new, next time).
        self._pending_rejections += chunk.rejections
        if len(self._pending_rejections) >= REJECTS_FLUSH:
            self._record_rejections()
        # The checkpoint only spares an interrupted run a re-scan (writes are idempotent), so
        # one write every few seconds is enough; it always follows the chunks it covers.
        if chunk.last_id is not None:
            self._last_written_id = chunk.last_id
            self.checkpoint.save_now_and_then(with_progress(self.state, self.current, chunk.last_id))

    def _record_rejections(self) -> None:
        pending, self._pending_rejections = self._pending_rejections, []
        if pending:
            new = self.rejects.record(pending, source=self.options.archived_by, now=self.clock())
            self._count_rejections(pending, new)

    # -- purge

    def purge(self) -> None:
        """Delete the window's delivered orders whose archive document a majority holds, each
        only in the version that document keeps: the order is read, its fingerprint (under
        ARCHIVE_PII, as the archive keeps it) compared with the archived one, and the delete's
        own filter requires the whole order to be what was read (``$expr``: ``$$ROOT`` equal
        to it), so an order corrected after it was archived, even a moment before the delete,
        stays in the source until it is archived again. Every such order of the window,
        whatever pass ran (an incremental pass reads only its own deliveries). The walk is an
        index range on the source's delivered orders (``status, _id``): bounded by what is
        still in the source, not by the history the purge already moved."""
        delivered = status_match(self.settings.delivered_status)
        for archived, same in self._purgeable_chunks():
            requests = [
                DeleteOne(
                    {
                        "_id": order["_id"],
                        "status": delivered,
                        "$expr": {"$eq": ["$$ROOT", {"$literal": order}]},
                    }
                )
                for order in same
            ]
            self.report.purge_kept += len(archived) - len(requests)
            if not requests:
                continue
            result = retrying(
                functools.partial(self.orders_primary.bulk_write, requests, ordered=False),
                attempts=WRITE_ATTEMPTS,
                stop_event=self.stop_event,
            )
            self.report.purged += result.deleted_count
            self.report.purge_kept += len(requests) - result.deleted_count
        if self.report.purge_kept:
            log.warning(
                "%d archived orders were left in the source: changed since they were archived (the "
                "archive keeps the version before; a full pass or watch archives the new one), or "
                "archived by an earlier version without a fingerprint of the source order",
                self.report.purge_kept,
            )

    def _purgeable_chunks(self) -> Iterator[tuple[dict[Any, str | None], list[Document]]]:
        """The window's delivered orders whose archive document a majority holds, a chunk at a
        time: their archived fingerprints, and the orders (read now) still in that version."""
        window = replace(self.source, orders=self.orders_primary, delivered_since=None, also_ids=())
        policy = self.settings.pii_policy
        after_id = None
        while not self.stop_event.is_set():
            ids = retrying(
                functools.partial(window.delivered_ids_after, after_id, self.options.batch_size),
                attempts=WRITE_ATTEMPTS,
                stop_event=self.stop_event,
            )
            if not ids:
                return
            after_id = ids[-1]
            archived = self.writer.confirmed_hashes(ids)
            if not archived:
                continue
            current = retrying(
                functools.partial(self._orders_by_id, list(archived)), stop_event=self.stop_event
            )
            same = [o for o in current if archived.get(o["_id"]) == source_hash(policy.apply_order(o))]
            yield archived, same

    def _count_purgeable(self) -> int:
        """What ``--run --purge-source`` would delete now: the archived orders still in the
        version their archive document keeps."""
        return sum(len(same) for _, same in self._purgeable_chunks())

    def _orders_by_id(self, ids: list[Any]) -> list[Document]:
        return list(self.orders_primary.find({"_id": {"$in": ids}}))

    # -- orchestration

    def _not_yet_archived(self, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """When the server did not skip archived orders (another database, an incremental
        pass): ask the archive by ``_id``; an order archived in this very version is done, one
        corrected since is written again (the writer revises it)."""
        if self.source.exclude_archived_in is not None or not documents:
            return documents
        archived = self.writer.archived_hashes([d["_id"] for d in documents])
        unchanged = {
            d["_id"] for d in documents if d["_id"] in archived and archived[d["_id"]] == d["source_hash"]
        }
        self.report.already_archived += len(unchanged)
        return [d for d in documents if d["_id"] not in unchanged]

    def _count_delivered(self) -> int | None:
        """The window's delivered orders (an index count on ``status, date_commande``); None if
        the count itself fails (never a reason to fail the run: the counts are then partial)."""
        selection = self.source.selection()
        try:
            return int(
                retrying(
                    lambda: self.orders.count_documents(selection),
                    attempts=Attempts.INFORM,
                    stop_event=self.stop_event,
                )
            )
        except ArchiverError as exc:
            log.warning("could not count the delivered orders (%s); counts will be partial", exc)
            return None

    def _must_count_delivered(self) -> bool:
        """Whether the window's delivered orders must be counted for the report: only when
        the server will skip archived orders unseen (the archive in the source database, and
        not empty) or an interrupted run's first part is behind the checkpoint. Otherwise the
        run sees every delivered order itself, and a count would repeat its work."""
        if self.source.exclude_archived_in is None or self.options.limit is not None:
            return False
        if self.current.last_id is not None:
            return True
        with named_side(self.archive_side):
            found = retrying(lambda: self.archive.find_one({}, {"_id": 1}), stop_event=self.stop_event)
        return found is not None

    def _settle_counts(self) -> None:
        """``delivered`` and ``already_archived`` once the pass is complete. Orders the server
        skipped unseen (in the archive already) are the delivered orders the run did not
        examine; without such skipping the run saw them all. With ``--limit`` the orders
        beyond the last one reached are unknown: ``delivered`` stays unset."""
        report = self.report
        if self.options.limit is not None:
            return
        seen = report.scanned + report.outside_window
        if not self._needs_count:
            report.delivered = seen
            return
        if self._delivered_at_start is None:
            return  # the count failed: the report says so by leaving it unset
        report.delivered = max(self._delivered_at_start, seen)
        report.already_archived += report.delivered - seen

    def run(self) -> BatchReport:
        """The run; on an error or a stop the report so far stays readable as ``self.report``.
        With the archive on its own deployment, a lost connection names its side: the archive's
        operations say so themselves, what is left is the source's."""
        with named_side(self.source_side, (TransientError,)):
            return self._run()

    def _run(self) -> BatchReport:
        started = time.monotonic()
        try:
            check_deployments(self.deployments[0], self.settings, self.deployments[1])
            problem = retrying(lambda: missing_source(self.orders), stop_event=self.stop_event)
            self._source_exists = problem is None  # nothing is created where nothing was
            if problem and self.options.require_source:
                raise ConfigError(problem)
            if problem:
                log.warning("%s; nothing to catch up until it exists", problem)
                self.report.warnings.append(problem)
            self._begin_pass()
            self._needs_count = self._must_count_delivered()
            if self._needs_count:
                self._delivered_at_start = self._count_delivered()
            if self.options.run:
                self._run_archive()
            else:
                self._run_dry()
            self._settle_counts()
            self.report.completed = True
            if self.report.delivered == 0 and self.report.scanned == 0:
                hint = retrying(
                    lambda: unknown_status_hint(self.orders, self.settings.delivered_status),
                    stop_event=self.stop_event,
                )
                if hint:
                    log.warning(hint)
                    self.report.warnings.append(hint)
        finally:
            self.report.seconds = time.monotonic() - started
            self.report.peak_rss_mib = peak_rss_mib()
            if self.progress is not None:
                self.progress.close()
        return self.report

    # -- changes since the last pass (late deliveries, corrections)

    def _follows_changes(self) -> bool:
        """A scheduled batch reads the change stream between its runs; the watcher's catch-up
        (always a full pass) and a simulation do not."""
        return self.options.archived_by == "batch" and not self.settings.simulation

    def _stream_position(self) -> dict[str, Any] | None:
        """The orders' change stream's position now (a resume token), or None where there are
        no change streams (a standalone server) or the user may not open one."""
        try:
            with self.orders_primary.watch(self._change_filter(), max_await_time_ms=1) as stream:
                stream.try_next()
                token = stream.resume_token
        except (pymongo_errors.PyMongoError, NotImplementedError, AttributeError) as exc:
            log.debug("no change stream position (%s): incremental runs read delivery stamps only", exc)
            return None
        return dict(token) if token else None

    def _change_filter(self) -> list[dict[str, Any]]:
        return build_change_stream_pipeline(self.settings.delivered_status)

    def _changed_since(self, token: dict[str, Any] | None) -> list[Any]:
        """Every order that became delivered, or was corrected while delivered, since the last
        complete pass began: read from the change stream resumed at its token, up to this
        pass's start (later changes are the next run's). A delivery synced hours late with an
        old stamp is among them. Without a token, or with the history gone (the oplog rolled
        over) or no change streams, the pass reads by delivery stamp alone, and says so."""
        if token is None:
            if self._follows_changes() and not self.current.full:  # (a full pass reads them all)
                self._say("no change-stream position saved: this incremental run reads delivery stamps only")
            return []
        ids: dict[Any, None] = {}
        read = stalled = 0
        position = None
        try:
            with self.orders_primary.watch(
                self._change_filter(),
                resume_after=token,
                full_document="updateLookup",
                max_await_time_ms=CHANGES_AWAIT_MS,
                batch_size=CHANGES_BATCH,
            ) as stream:
                while not self.stop_event.is_set():
                    event = stream.try_next()
                    if event is None:
                        if reached(stream.resume_token, self.current.stream_token):
                            break  # caught up with where this pass began
                        # An empty batch short of it: the server is still scanning. One that
                        # stops advancing is not trusted: the next run reads from here again.
                        stalled = stalled + 1 if stream.resume_token == position else 0
                        position = stream.resume_token
                        if stalled >= CHANGES_STALL_BATCHES:
                            self._say(
                                "the change stream stopped advancing before this pass's start: the next run reads the changes since the last run again"
                            )
                            self.current = replace(self.current, stream_token=token)
                            break
                        continue
                    read += 1
                    when = event_time(event)
                    if when is not None and when > self.current.started_at:
                        log.debug(
                            "change at %s (%s), after this pass began (%s): left for the next run",
                            when,
                            event.get("operationType"),
                            self.current.started_at,
                        )
                        break  # past this pass's start: the next run reads it
                    ids.update(dict.fromkeys(orders_to_archive([event], self.settings.delivered_status)))
        except pymongo_errors.OperationFailure as exc:
            if classify(exc) in ("token_unusable", "no_change_streams"):
                self._say(
                    f"the change history since the last run is not available (code {exc.code}): this "
                    "incremental run reads delivery stamps only; a delivery synced with an older stamp "
                    "waits for the full sweep (or --full)"
                )
                return []
            raise as_archiver_error(exc) from without_documents(exc)
        except pymongo_errors.PyMongoError as exc:
            raise as_archiver_error(exc) from without_documents(exc)
        self.report.changes_read = read
        log.info("%d changes since the last run: %d orders delivered or corrected", read, len(ids))
        return list(ids)

    def _say(self, warning: str) -> None:
        log.warning(warning)
        self.report.warnings.append(warning)

    def _begin_pass(self) -> None:
        """Load what the last runs left, choose this run's pass (checkpoint.plan_pass) and
        point the reader at its selection."""
        self.state = self.checkpoint.load()
        plan = plan_pass(
            self.state,
            retrying(self.server_clock, stop_event=self.stop_event),
            overlap=self.settings.batch_overlap,
            full_sweep_every=self.settings.batch_full_sweep_every,
            force_full=self.options.full,
            resume=self.options.resume,
        )
        self.current = plan.pass_
        if self.current.last_id is None and self._follows_changes():
            # A new pass: where the change stream stands now, taken before anything is read.
            self.current = replace(self.current, stream_token=self._stream_position())
        self.report.mode = "full" if self.current.full else "incremental"
        self.report.since = self.current.since
        self.report.pass_reason = plan.reason
        # Every order delivered or corrected since the last pass began (the change stream): an
        # incremental pass reads them whatever their stamps, a full pass even when archived.
        changed = tuple(self._changed_since(self.state.stream_token))
        also_ids: tuple[Any, ...] = ()
        if not self.current.full:
            also_ids = tuple(dict.fromkeys([*self.rejects.listed_ids(), *changed]))
        # An incremental pass reads few orders: the archive is asked by _id for each chunk
        # (_not_yet_archived) instead of joined on the server, and they need no count.
        # Reads that decide go to a member that has the data: an incremental pass (a lagging
        # secondary would hide deliveries its mark then moves past) and the watcher's catch-up.
        primary = self.options.read_primary or not self.current.full
        self.source = replace(
            self.source,
            orders=self.orders_primary if primary else self.orders,
            delivered_since=self.current.since,
            also_ids=also_ids,
            revisit_ids=changed if self.current.full else (),
            exclude_archived_in=self.source.exclude_archived_in if self.current.full else None,
        )
        self.reader.source = self.source
        if self.current.full:
            log.info("full pass (%s)", plan.reason)
        else:
            log.info(
                "incremental pass: orders delivered since %s (high-water mark %s less BATCH_OVERLAP %s)",
                self.current.since.isoformat() if self.current.since else "",
                self.state.high_water.isoformat() if self.state.high_water else "",
                self.settings.batch_overlap,
            )

    def _start_progress(self) -> None:
        """The bar's total is an estimate (delivered in the window, less already archived):
        one index count, made only when progress is shown."""
        if self.options.progress == "off":
            return
        total = self._delivered_at_start if self._needs_count else self._count_delivered()
        if total is not None and self.source.exclude_archived_in is not None:
            total = max(total - self._archived_in_window(), 0)
        if total is not None and self.options.limit is not None:
            total = min(total, self.options.limit)
        label = "archiving" if self.options.run else "examining"
        self.progress = Progress(label, total=total, mode=self.options.progress)

    def _keep_samples(self, documents: list[dict[str, Any]]) -> None:
        """A few archive documents for the report and ``--export-samples``, masked (names,
        e-mail, phone, address) unless ``--show-pii``: the report goes to terminals, cron
        mails and log collectors."""
        room = self.options.samples - len(self.report.samples)
        if room > 0:
            kept = documents[:room]
            self.report.samples.extend(kept if self.options.show_pii else [mask_pii(d) for d in kept])

    def _archived_in_window(self) -> int:
        """Archive documents of the window: an estimate of what the server will skip, for the
        progress bar only (after a purge the archive holds orders the source no longer has)."""
        bounds = date_range(self.options.date_from, self.options.date_to)
        archive_filter = {"date_commande": bounds} if bounds else {}
        try:
            return int(
                retrying(
                    lambda: self.archive.count_documents(archive_filter),
                    attempts=Attempts.INFORM,
                    stop_event=self.stop_event,
                )
            )
        except ArchiverError:
            return 0

    def _run_dry(self) -> None:
        self._start_progress()
        for chunk in self.reader.chunks(after_id=self.current.last_id):
            if self.progress is not None:
                self.progress.update(chunk.size)
            documents = self._not_yet_archived(chunk.documents)
            self.report.would_archive += len(documents)
            known = self.rejects.known([r.order_id for r in chunk.rejections])
            new = [r for r in chunk.rejections if r.order_id not in known]
            for rejection in new:
                log.warning(
                    "order would be rejected",
                    extra={"order_id": str(rejection.order_id), "reason": rejection.reason},
                )
            self._count_rejections(chunk.rejections, len(new))
            self._keep_samples(documents)
        if self.options.purge_source:
            # What --run would delete: the archived orders now, and what this run would archive.
            self.report.would_purge = self._count_purgeable() + self.report.would_archive
        self._export_samples()

    def _run_archive(self) -> None:
        self.ensure_indexes()
        after_id = self.current.last_id
        if after_id is not None:
            self.report.resumed_from = str(after_id)
            log.info("resuming an interrupted run after _id %s", after_id)
        self._start_progress()
        try:
            # Read ahead on a thread, write here, in the order read: each checkpoint covers
            # every chunk before it.
            for chunk in read_ahead(self.reader.chunks(after_id), QUEUE_CHUNKS):
                self._keep_samples(chunk.documents)
                self.write_chunk(chunk)
                if self.progress is not None:
                    self.progress.update(chunk.size)
        except BaseException as exc:
            self._record_rejections_quietly()
            if isinstance(exc, (ArchiverError, KeyboardInterrupt)) or not isinstance(exc, Exception):
                raise
            raise as_archiver_error(exc) from without_documents(exc)
        self._record_rejections()
        if self.stop_event.is_set():
            raise ArchiverError(
                "interrupted: the run stopped after its last complete chunk; run it again to finish"
            )
        self._end_of_pass()

    def _end_of_pass(self) -> None:
        """After a complete pass: the checkpoint, the rejects list, the purge, the samples."""
        if self.options.limit is None or self.reader.exhausted:
            # The pass is complete: its start is the new high-water mark (saved after every
            # write it covers). A --limit run that got to the end of the window completes it too.
            self.checkpoint.save(self.state.after(self.current))
        elif self._last_written_id is not None:
            # Cut short by --limit: the next run goes on with this pass after its last _id.
            self.checkpoint.save(with_progress(self.state, self.current, self._last_written_id))
        self._prune_rejects()
        if self.options.purge_source:
            self.purge()
        self._export_samples()

    def _record_rejections_quietly(self) -> None:
        """The rejections met before a failure: a failure to record them does not hide it."""
        try:
            self._record_rejections()
        except ArchiverError as exc:
            log.warning("the rejected orders met so far were not listed (%s)", exc)

    def _prune_rejects(self) -> None:
        """Rejected orders that were fixed (and archived), deleted or corrected leave the list;
        a failure here only leaves the list longer: the archive is done. An orders collection
        that holds no order at all (a typo in ORDERS_COLLECTION, a collection created by
        mistake) would make every listed order look deleted: the list is left as it is."""
        try:
            if (
                retrying(lambda: self.orders_primary.find_one({}, {"_id": 1}), stop_event=self.stop_event)
                is None
            ):
                log.warning(
                    "%s holds no order: the list of rejected orders is left as it is", self.orders.full_name
                )
                return
            self.rejects.prune(
                self.orders_primary, self.archive, status_match(self.settings.delivered_status)
            )
        except ArchiverError as exc:
            log.warning("the list of rejected orders was not tidied (%s); the next run tries again", exc)

    def _export_samples(self) -> None:
        if not self.options.export_samples:
            return
        path = Path(self.options.export_samples)
        try:
            write_private(
                path,
                json_util.dumps(
                    self.report.samples,
                    indent=2,
                    ensure_ascii=False,
                    json_options=json_util.RELAXED_JSON_OPTIONS,
                ),
            )
        except OSError as exc:
            raise ArchiverError(f"--export-samples: cannot write {path}: {exc.strerror}") from None
        log.info("%d sample documents written to %s", len(self.report.samples), path)
