"""The cold tier as the commands use it: checked before a run writes anything, moved after a
complete batch pass."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from bson import ObjectId
from pymongo import MongoClient

from order_archiver.cold.erasure import erase_in_cold
from order_archiver.cold.files import footer
from order_archiver.cold.holding import ColdHolding
from order_archiver.cold.manifest import ColdManifest, Listed
from order_archiver.cold.move import ColdMove, ColdMoveReport
from order_archiver.cold.record import raise_boundary
from order_archiver.cold.retention import (
    ColdAgeErasure,
    ColdExpired,
    ColdPiiCount,
    count_by_age,
    count_expired,
    erase_by_age,
    past_retention,
)
from order_archiver.cold.rewrite import JOURNAL_KIND, MOVE_DELETED, read_boundary
from order_archiver.cold.search import ColdQuery
from order_archiver.cold.spot_check import spot_check
from order_archiver.cold.store import ColdFile, ColdStore
from order_archiver.context import RunContext
from order_archiver.documents import Document, MongoCollection, int_or_none, moment_or_none
from order_archiver.errors import FatalError, Interrupted, storage_words
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.erasure import finish_in_archive
from order_archiver.mongodb.forgotten import COLD_PENDING, UNFINISHED_READ_AT_MOST, ForgottenPersons
from order_archiver.mongodb.lease import Lease, lease_key, server_time
from order_archiver.mongodb.storage import ArchiveWriter, Collections
from order_archiver.orders.enrichment import as_utc
from order_archiver.orders.erasing import BY_AGE, BY_REQUEST, CLIENT, COURIER, Erasure
from order_archiver.retry import Retry
from order_archiver.settings import Duration, Settings, hand_aws_settings_to_the_sdk

log = get_logger("cold")
MOVE_LEASE = "cold-tier/move"  # one writer of the cold tier at a time (no watcher name holds a "/")
FORGET_WAITS_S = 600.0  # how long a forget waits for a move in progress before it says "again"
NOTHING_DUE = datetime.min.replace(tzinfo=UTC)  # the cutoff of a move that only settles (forget's)


def cold_store(settings: Settings, context: RunContext) -> ColdStore | None:
    """The cold tier's store, or None when ARCHIVE_COLD_URL is unset; ``context``: the run whose
    stop (SIGINT, SIGTERM, the stop file) ends a storage retry's wait. Required: a store made
    without it retried for a minute after a Ctrl-C."""
    if not settings.archive_cold_url:
        return None
    hand_aws_settings_to_the_sdk(settings)  # a settings file's AWS_*: the SDK reads the environment
    return ColdStore(settings.archive_cold_url, stop=context.stop)


def cold_holding(
    settings: Settings,
    orders: MongoCollection,
    checkpoints: MongoCollection,
    context: RunContext,
    server_clock: Callable[[], datetime],
) -> ColdHolding | None:
    """``--purge-source``'s witness in the cold tier (``holding.ColdHolding``); None without one."""
    store = cold_store(settings, context)
    if store is None or settings.archive_cold_after is None:
        return None
    cutoff = context.retrying(server_clock) - settings.archive_cold_after
    # The recorded boundary: a longer ARCHIVE_COLD_AFTER since then moves nothing back.
    if settings.cold_moved_before is not None:
        cutoff = max(cutoff, settings.cold_moved_before)
    return ColdHolding(store, orders, checkpoints, cutoff, context)


def check_cold_tier(settings: Settings, context: RunContext) -> None:
    """Before ``batch --run`` writes anything: the folder or bucket exists and takes a file
    (``ConfigError``, exit 2, naming it)."""
    store = cold_store(settings, context)
    if store is not None:
        store.check()


# A run with nothing due in the cold tier: one line in the log, none in the summary.
_NOTHING_DUE = "cold tier: nothing due (no archived order delivered more than ARCHIVE_COLD_AFTER %s ago)"


def would_move(
    client: MongoClient[Document],
    settings: Settings,
    context: RunContext,
    archive_client: MongoClient[Document] | None = None,
) -> ColdMoveReport | None:
    """A dry run: how many archived orders ``batch --run`` would move now (one count on the
    ``{date_livraison, _id}`` index); None without a cold tier."""
    store = cold_store(settings, context)
    if store is None or settings.archive_cold_after is None:
        return None
    collections = Collections.of(client, settings, archive_client)
    on_archive = context.on(collections.archive_side)
    now = on_archive.retrying(lambda: server_time(archive_client or client))
    cutoff = now - settings.archive_cold_after
    count = on_archive.retrying(
        lambda: collections.archive.count_documents({"date_livraison": {"$lt": cutoff}})
    )
    if not count:
        log.info(_NOTHING_DUE, settings.archive_cold_after)
    report = ColdMoveReport(would_move=count)
    expire = now - settings.archive_retention if settings.archive_retention is not None else None
    listed = store.files() if expire is not None or settings.archive_pii_retention is not None else []
    if expire is not None:
        # The files the run removes (``remove_expired``), their orders as it counts them.
        expired = count_expired(store, listed, expire)
        report.would_expire_files, report.would_expire_orders = expired.files, expired.orders
    report.holds_none = holds_none(store, collections.checkpoints, on_archive)
    if settings.archive_pii_retention is not None:
        # What the run's erasure reads, read now (its cost, not more): the run's figure. The
        # months the run removes first (ARCHIVE_RETENTION: ``remove_expired``) are not erased.
        found = [f for f in listed if expire is None or not past_retention(f, expire)]
        stamps = _stamps(ColdManifest(store, collections.checkpoints, on_archive).entries())
        erasure = _age_erasure(settings, settings.archive_pii_retention, now)
        # Its reads meet the run's limits and a signal, a file at a time, as the run's steps do.
        counted = count_by_age(store, found, stamps, *erasure, boundary=lambda: read_boundary(context))
        report.would_erase_pii = counted.orders
    return report


def _stamps(listed: Iterable[Listed]) -> dict[str, datetime | str | None]:
    return {entry.path: entry.erased_before for entry in listed}


def _age_erasure(settings: Settings, length: Duration, now: datetime) -> tuple[datetime, Erasure]:
    """ARCHIVE_PII_RETENTION (``length``) at ``now``: its cutoff and its erasure (the client and
    the courier), the run's and its counts' alike."""
    fields = settings.pii_policy.fields
    erasure = Erasure(client=True, courier=True, by=BY_AGE, at=now, fields=fields)
    return now - length, erasure


# A probe's bound on the cold documents it reads to count those past ARCHIVE_PII_RETENTION
# (status, doctor: every minute perhaps): ten row groups. A run reads what it erases.
PII_COUNTED_ROWS_AT_MOST = 20_000


def pii_pending(
    store: ColdStore, found: list[ColdFile], listed: Iterable[Listed], settings: Settings, now: datetime
) -> ColdPiiCount | None:
    """For ``status`` and ``doctor``: the cold orders past ARCHIVE_PII_RETENTION still holding
    personal data (``found``: the place's listing; ``listed``: the list of files, their
    cutoffs), the documents read bounded (``PII_COUNTED_ROWS_AT_MOST``); None without it."""
    length = settings.archive_pii_retention
    if length is None:
        return None
    cutoff, erasure = _age_erasure(settings, length, now)
    try:
        return count_by_age(store, found, _stamps(listed), cutoff, erasure, PII_COUNTED_ROWS_AT_MOST)
    except (OSError, ValueError) as exc:
        raise _unreadable(store, exc) from None


def move_to_cold(
    client: MongoClient[Document],
    settings: Settings,
    context: RunContext,
    archive_client: MongoClient[Document] | None = None,
    moving: Callable[[ColdMoveReport], object] = lambda _: None,
) -> ColdMoveReport | None:
    """The archived orders delivered before ``now - ARCHIVE_COLD_AFTER`` (the archive's
    server clock) moved to the cold tier; None without one. With ARCHIVE_RETENTION, the months
    wholly past it removed; with ARCHIVE_PII_RETENTION, the orders past it erased. ``moving``
    is handed the move's report before it starts: a move a limit of the run ends (#34:
    ``context.gate`` raises) has said what it did."""
    store = cold_store(settings, context)
    if store is None or settings.archive_cold_after is None:
        return None
    collections = Collections.of(client, settings, archive_client)
    on_archive = context.on(collections.archive_side)
    # One move at a time (two batch runs on two machines would write the same months twice).
    lease = _writer_lease(collections, settings, context)
    with on_archive.named():
        if not _acquired(lease, context, "move"):
            log.warning(
                "cold tier: another batch run is moving orders to it (lease %s): left to it", lease.key
            )
            return ColdMoveReport(skipped=True)
        try:
            cutoff_age = settings.archive_cold_after
            parts = (store, lease, cutoff_age, archive_client, moving)
            moved = _moved(client, settings, collections, on_archive, *parts)
            if not moved.anything:  # every run: the summary says nothing of it
                log.info(_NOTHING_DUE, cutoff_age)
            return moved
        finally:
            lease.release()


def _writer_lease(collections: Collections, settings: Settings, context: RunContext) -> Lease:
    """The cold tier's one writer: the move's lease, also taken by ``forget``'s rewrites."""
    return Lease(
        collections.checkpoints,
        MOVE_LEASE,
        ttl_s=settings.watch_lease_ttl_s,
        renew_s=settings.watch_lease_renew_s,
        stop_event=context.stop,
        # A fault its renewal thread cannot go on past stops the run, which fails with it.
        on_fault=lambda fault: context.fail(f"the renewal of the cold tier's lease ({MOVE_LEASE})", fault),
    )


@contextmanager
def cold_tier_writer(collections: Collections, settings: Settings, context: RunContext) -> Iterator[None]:
    """The cold tier's one writer (``MOVE_LEASE``) for ``forget``'s rewrites: two rewrites of one
    file at once (a forget and a move's, or retention's) would each publish their own copy of
    its orders, one of them with the person's data. Waited for up to FORGET_WAITS_S (a move in
    progress renews it); not had by then: FatalError (forget adds: the person recorded, the archive
    erased, what finishes it). Had:
    what an interrupted move left is settled first, as the move's next run would (``ColdMove.settle``):
    a file it published whose orders the archive still holds, rewritten under another name, would
    leave its journal entry naming a file gone, and the next move would write those orders again."""
    lease = _writer_lease(collections, settings, context)
    wait_s = FORGET_WAITS_S  # read here: a test shortens it
    if not _acquired(lease, context, "erasure", wait_s):
        raise FatalError(
            f"the cold tier is being written by another process (lease {lease.key}, a batch run's move) "
            f"for more than {wait_s:.0f}s"  # forget's error says what it did and what finishes it
        )
    try:
        store = cold_store(settings, context)
        if store is not None:
            _cold_move(collections, settings, store, context, NOTHING_DUE).settle(leave_unpublished=True)
        yield
    finally:
        lease.release()


def _acquired(lease: Lease, context: RunContext, step: str, wait_s: float | None = None) -> bool:
    """The move's lease, waited for up to its life (or ``wait_s``): one a killed run left behind
    expires by then, so that the next run settles what it left (its journal); a live run's is
    renewed and stays. The wait is the run's (``context.gate.wait``, #34): a limit of the run
    ends it (``LimitReached``: ``--max-runtime``'s deadline at once, the stop file within a
    second), a signal too (``Interrupted``); nothing of the ``step`` is done."""
    for _ in range(int((wait_s or lease.ttl_s) / lease.renew_s) + 2):
        if lease.try_acquire():
            return True
        context.gate.wait(context.stop, lease.renew_s)
        context.gate.check()
        if context.stopped:
            raise Interrupted(
                f"interrupted while waiting for the cold tier's lease ({lease.key}, held by another "
                f"run): the cold tier's {step} not begun; run the command again to do it"
            )
    return False


def _moved(
    client: MongoClient[Document],
    settings: Settings,
    collections: Collections,
    on_archive: RunContext,
    store: ColdStore,
    lease: Lease,
    cutoff_age: Duration,
    archive_client: MongoClient[Document] | None,
    moving: Callable[[ColdMoveReport], object],
) -> ColdMoveReport:
    now = on_archive.retrying(lambda: server_time(archive_client or client))
    # Recorded before any file is published or any order deleted: from here on, no path
    # archives again an order delivered before the cutoff, whatever its settings (cold/record.py).
    raise_boundary(collections.checkpoints, store.url, now - cutoff_age, now, on_archive)
    retention = settings.archive_retention
    move = _cold_move(collections, settings, store, on_archive, now - cutoff_age)
    move.expire_before = now - retention if retention is not None else None
    move.fence = lease.check
    moving(move.report)
    report = move.run()
    if settings.archive_pii_retention is not None:
        cutoff, erasure = _age_erasure(settings, settings.archive_pii_retention, now)
        aged = ColdAgeErasure()
        try:  # a signal or a limit ends it between two files: what it did is said
            erase_by_age(store, collections.checkpoints, cutoff, erasure, on_archive, aged)
        finally:
            report.pii_erased, report.pii_rewritten = aged.orders, aged.files
            report.versions_kept = aged.versions_kept
    finish_forgotten(collections, settings, store, on_archive, report)
    # After the erasure, which a storage fault in this look would otherwise keep from running.
    if not on_archive.stopped:
        gone = spot_check(store, move.manifest, collections.checkpoints, on_archive)
        report.gone_files, report.gone_orders = gone.files, gone.orders
        report.holds_none = holds_none(store, collections.checkpoints, on_archive)
    return report


def finish_forgotten(
    collections: Collections,
    settings: Settings,
    store: ColdStore,
    context: RunContext,
    report: ColdMoveReport,
) -> None:
    """Under the move's lease: the erasure of each forgotten person whose record says it
    unfinished in the cold tier (``COLD_PENDING``: a forget a signal, a limit or the lease ended
    before its last cold file), however many persons were forgotten after them (the ones
    ``status`` names), finished as ``forget`` again would: the archive's orders first (the same
    walk, ``erasure.finish_in_archive``: a forget ended midway through the archive left them, and
    a record an earlier version wrote has no ``ARCHIVE_PENDING`` to say so), then every file
    holding their data rewritten, each mark cleared only after the writes it covers. One read of
    the record, on its partial index, of ``UNFINISHED_READ_AT_MOST`` at most (more: the next
    run's); the cold files read only for such a person. A signal or a limit ends it between two
    chunks or files (``file_boundary``), the marks kept for the next run."""
    record = ForgottenPersons(collections.forgotten, context)
    unfinished = record.unfinished(UNFINISHED_READ_AT_MOST, [COLD_PENDING])
    if len(unfinished) == UNFINISHED_READ_AT_MOST:
        log.info(
            "cold tier: %d unfinished erasures read (the most one run takes): the next batch --run "
            "finishes those left",
            UNFINISHED_READ_AT_MOST,
        )
    fields = settings.pii_policy.fields
    for kind, person in unfinished:
        if not isinstance(person, ObjectId):
            continue  # forget records an ObjectId
        if not finish_in_archive(collections.archive, record, kind, person, fields, context):
            if context.stopped:
                return
            continue  # an order too large to take it: the marks kept (status names the person)
        query = ColdQuery(courier_id=person) if kind == COURIER else ColdQuery(client_id=person)
        erasure = Erasure(
            client=kind == CLIENT, courier=kind == COURIER, by=BY_REQUEST, at=datetime.now(UTC), fields=fields
        )
        done = erase_in_cold(store, collections.checkpoints, query, erasure, run=True, context=context)
        report.forgotten_rewritten += done.rewritten
        if report.versions_kept is None:
            report.versions_kept = done.versions_kept
        if done.complete:
            record.finished(kind, person)
            report.forgotten_finished += 1
            log.info(
                "cold tier: the erasure of %s %s finished (%d files rewritten)", kind, person, done.rewritten
            )


def holds_none(store: ColdStore, checkpoints: MongoCollection, context: RunContext) -> bool:
    """Whether the cold tier holds no file: none listed (one bounded read of the list), and
    then none in its place (one listing of an empty prefix; a tier moved before the list
    existed lists none). Then an order past ARCHIVE_COLD_AFTER that is not archived is in the
    source alone (batch's summary, ``status``)."""
    if ColdManifest(store, checkpoints, context).page(None, 1):
        return False
    try:
        return not store.files()
    except (OSError, ValueError) as exc:
        raise _unreadable(store, exc) from None


def _cold_move(
    collections: Collections, settings: Settings, store: ColdStore, context: RunContext, cutoff: datetime
) -> ColdMove:
    """The move as each holder of its lease builds it: the batch run's, and forget's that only
    settles (``NOTHING_DUE``); each respects the record of forgotten persons."""
    respect = ArchiveWriter.of(collections, settings, context).respecting_erasures
    return ColdMove(store, collections.archive, collections.checkpoints, cutoff, context, respect=respect)


@dataclass
class ColdSummary:
    """What the cold tier holds, from its files' footers (one small read a file)."""

    url: str
    files: int = 0
    orders: int = 0
    bytes: int = 0
    oldest_month: str | None = None
    newest_month: str | None = None
    retention: str | None = None  # ARCHIVE_RETENTION
    # With it: the files of months wholly past it, which the next batch --run removes (``past_retention``)
    expired: ColdExpired | None = None

    def line(self) -> str:
        months = f", delivery months {self.oldest_month} to {self.newest_month}" if self.files else ""
        expired = self.expired
        going = (
            f"; {plural(expired.orders, 'order')} in {plural(expired.files, 'file')} past ARCHIVE_RETENTION "
            f"{self.retention} ({', '.join(expired.months)}): the next batch --run removes them"
            if expired is not None and expired.files
            else ""
        )
        return (
            f"cold tier {self.url}: {plural(self.orders, 'order')} in {plural(self.files, 'file')} "
            f"({self.bytes} bytes){months}{going}"
        )

    def past_retention(
        self,
        store: ColdStore,
        found: list[ColdFile],
        listed: Iterable[Listed],
        settings: Settings,
        now: datetime,
    ) -> None:
        """ARCHIVE_RETENTION's files (``count_expired``), their orders as the list of files has
        them: no file opened but one it does not list."""
        if settings.archive_retention is None:
            return
        self.retention = str(settings.archive_retention)
        rows = {entry.path: entry.rows for entry in listed}
        try:
            self.expired = count_expired(store, found, now - settings.archive_retention, rows)
        except (OSError, ValueError) as exc:
            raise _unreadable(store, exc) from None


def listing(store: ColdStore) -> list[ColdFile]:
    """The place checked and listed, once (a listing is a request on S3: ``status`` asks for one
    and reads both its summary and its lost files from it). A place that is not there raises
    ``ConfigError``, one that cannot be read ``FatalError``, each naming it."""
    store.check(writable=False)  # a place that is not there: ConfigError, not "0 files"
    try:
        return store.files()
    except (OSError, ValueError) as exc:
        raise _unreadable(store, exc) from None


def summarise(store: ColdStore, found: list[ColdFile], listed: Iterable[Listed] = ()) -> ColdSummary:
    """The cold tier's files (``listing``), orders, bytes and months. Each file's orders as the
    list of files published has them (``listed``: its rows, written at publishing), a footer
    read only for a file it does not list: a probe every minute opens no file, however many
    months the tier holds (one request each on S3)."""
    summary = ColdSummary(store.url)
    months = sorted(str(f.month) for f in found if f.month is not None)
    rows = {entry.path: entry.rows for entry in listed}
    try:
        summary.orders = sum(rows[f.path] if f.path in rows else footer(store, f.path).rows for f in found)
    except (OSError, ValueError) as exc:
        raise _unreadable(store, exc) from None
    summary.files, summary.bytes = len(found), sum(f.size for f in found)
    summary.oldest_month, summary.newest_month = (months[0], months[-1]) if months else (None, None)
    return summary


def pii_pending_in(
    settings: Settings, checkpoints: MongoCollection, now: datetime, context: RunContext
) -> ColdPiiCount | None:
    """``pii_pending`` for a command that has not read the place yet (``doctor``): the list of
    files read, the place listed. None without a cold tier or ARCHIVE_PII_RETENTION."""
    store = cold_store(settings, context)
    if store is None or settings.archive_pii_retention is None:
        return None
    listed = list(ColdManifest(store, checkpoints, context).entries())
    return pii_pending(store, listing(store), listed, settings, now)


def past_retention_in(
    settings: Settings, checkpoints: MongoCollection, now: datetime, context: RunContext
) -> ColdSummary | None:
    """For ``doctor``: the cold files ARCHIVE_RETENTION's next run removes, from the list of
    files and a listing of the place (``ColdSummary.past_retention``). None without a cold tier
    or ARCHIVE_RETENTION."""
    store = cold_store(settings, context)
    if store is None or settings.archive_retention is None:
        return None
    listed = list(ColdManifest(store, checkpoints, context).entries())
    summary = ColdSummary(store.url)
    summary.past_retention(store, listing(store), listed, settings, now)
    return summary


def _unreadable(store: ColdStore, exc: BaseException) -> FatalError:
    return FatalError(f"ARCHIVE_COLD_URL {store.url}: cannot be read: {storage_words(exc)}")


@dataclass(frozen=True)
class Unsettled:
    """The files a move published whose orders the archive may still hold too (a move ended
    there by a signal, a kill -9, a crash: its journal entry left, which the next ``batch
    --run`` or ``forget --run`` settles first), and whether a move holds the lease now (one in
    progress passes there for a moment)."""

    files: list[str]
    orders: int  # their rows, as the journal has them: at most this many in two places
    running: bool

    def line(self) -> str | None:
        """For ``status``, while a move holds the lease: what it has published and not finished."""
        if not self.files or not self.running:
            return None
        return (
            f"cold tier: a move in progress (or killed less than the lease's life ago) published "
            f"{', '.join(self.files)}: up to {plural(self.orders, 'order')} still in the archive too"
        )

    def problem(self) -> str | None:
        """For ``status``: the state no clean end leaves, unless a move is on it now."""
        if not self.files or self.running:
            return None
        return (
            f"cold tier: a move interrupted after publishing {', '.join(self.files)}: up to "
            f"{plural(self.orders, 'order')} in the archive and that file at once, until the next "
            "batch --run (or forget --run) settles it first"
        )


def unsettled_moves(
    store: ColdStore, checkpoints: MongoCollection, context: RunContext, now: datetime
) -> Unsettled:
    """The moves' journal entries past their publication (one bounded read of the journal, one
    existence check a file for an entry still "writing": killed between its rename and its
    record), and the move's lease (one read by ``_id``)."""
    read = functools.partial(context.retrying, purpose=Retry.READ)
    moves = {"kind": JOURNAL_KIND, "replaces": None}
    entries = read(lambda: list(checkpoints.find(moves).limit(100)))
    out = [
        e
        for e in entries
        if e.get("state") in ("published", MOVE_DELETED)
        or (e.get("state") == "writing" and store.exists(str(e.get("final"))))
    ]
    lease = read(lambda: checkpoints.find_one({"_id": lease_key(MOVE_LEASE)}, {"expires_at": 1}))
    expires = moment_or_none((lease or {}).get("expires_at"))
    running = expires is not None and as_utc(expires) > now
    rows = sum(int_or_none(e.get("rows")) or 0 for e in out)
    return Unsettled([store.url_of(str(e["final"])) for e in out], rows, running)
