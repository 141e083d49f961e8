"""`status`: is the archive keeping up? One report, for a person or a probe.

Exit 0 when healthy; 3 when the oldest delivered-but-not-archived order of the lookback
window is older than ``--max-backlog-age``, or when a watcher's saved token (its heartbeat)
is older than ``--max-heartbeat-age``. Every query is bounded: the backlog is looked for
among the orders of the lookback window only (index on ``status, date_commande``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Protocol, TypedDict, TypeVar

from bson import json_util
from pymongo import MongoClient
from pymongo import errors as pymongo_errors

from order_archiver.cold.check import lost_files
from order_archiver.cold.holding import ColdRestoreMarks
from order_archiver.cold.manifest import ColdManifest, Listed
from order_archiver.cold.store import ColdFile, ColdStore, newest_keeps_versions, versions_kept_words
from order_archiver.cold.tier import (
    PII_COUNTED_ROWS_AT_MOST,
    ColdSummary,
    cold_store,
    listing,
    pii_pending,
    summarise,
    unsettled_moves,
)
from order_archiver.context import RunContext
from order_archiver.documents import Document, OrderId, int_or_none, moment_or_none, text_or_none
from order_archiver.errors import ArchiverError, ConfigError, cold_fault_line
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.checkpoint import BatchState, checkpoint_key, state_from_document
from order_archiver.mongodb.deployment import check_deployments
from order_archiver.mongodb.forgotten import (
    LATEST_CHECKED,
    UNFINISHED_READ_AT_MOST,
    ForgottenPersons,
    still_holding,
)
from order_archiver.mongodb.indexes import (
    IndexStatus,
    index_states,
    require_unique,
    unique_status,
    wanted_indexes,
)
from order_archiver.mongodb.lease import lease_key
from order_archiver.mongodb.purge import held_since
from order_archiver.mongodb.rejects import RejectStore, describe_reject
from order_archiver.mongodb.retention import PiiRetention, RetentionState, earlier_erasures, retention_state
from order_archiver.mongodb.source import chunked, missing_source
from order_archiver.mongodb.statuses import (
    DeliveredAbsent,
    NearMisses,
    NewestArchived,
    delivered_absent,
    near_misses,
)
from order_archiver.mongodb.storage import Collections, MongoCollection
from order_archiver.mongodb.tokens import watcher_name
from order_archiver.orders.enrichment import as_utc, status_match
from order_archiver.orders.erasing import COURIER
from order_archiver.orders.rejection import SHOWN_ID_CHARS, bounded
from order_archiver.orders.selection import build_selection
from order_archiver.retry import Retry
from order_archiver.settings import MAX_PARTITIONS, Duration, Settings, about

log = get_logger("status")
CHUNK = 1000
EXAMPLES = 5
FORGOTTEN_CHECKED = LATEST_CHECKED  # the most recent forgotten persons whose orders status looks at
# The next purge's orders are counted up to this many, no further: a deployment that never
# purges keeps its whole delivered history in the source, and a probe every few seconds must
# not count tens of millions of index keys (a count with a limit stops there).
PURGE_COUNTED_AT_MOST = 100_000
# The rejects list read up to this many entries, the newest: invalid orders are never archived
# nor purged, so the list grows with the history, and each entry read is looked up in the archive.
REJECTS_READ_AT_MOST = 10_000
# Archive documents restored within RESTORE_HOLD read for the next purge's figure: restores are
# a support agent's task, a few a day; past this many the figure stays an upper bound.
HELD_READ_AT_MOST = 10_000


T = TypeVar("T")


class Reader(Protocol):
    """One read, retried by the run's policy (``RunContext.retrying``)."""

    def __call__(self, func: Callable[[], T]) -> T: ...


class Leader(TypedDict):
    """The watcher that holds a mongo store's lease: it alone writes (``lease.Lease``)."""

    owner: str | None
    term: int | None
    expires_at: datetime | None


class WatcherStatus(TypedDict, total=False):
    """One watcher, from its saved token (a file, or the mongo store's record and lease)."""

    name: str
    store: str  # "file" or "mongo"
    saved_at: datetime | None
    last_event_at: datetime | None
    stopped_at: datetime | None  # a clean stop (SIGTERM): no heartbeat expected after it
    # Its --stop-file, there at its clean stop and still there (status looks): it does not start.
    stop_file: str | None
    namespace: str | None
    leader: Leader | None  # the mongo store only; None too once the watcher released it (below)
    # A clean stop released the lease of this term (``Watcher.run``): the lease's document
    # still names its last owner and term, but nobody leads until a standby takes it.
    released_term: int | None
    heartbeat_age_s: float | None
    # In its catch-up (its token is where its stream starts: saved before the catch-up, and
    # again while it lasts): the orders delivered before it started are still being archived.
    catching_up: bool
    # How far that catch-up got (its saved mark: ``tokens.CatchUpMark``): the last _id archived
    # through, in _id order; None before its first chunk, or once caught up.
    catch_up_through: str | None


class BatchStatus(TypedDict):
    """What the next scheduled ``batch --run`` (no date window) starts from."""

    high_water: datetime | None
    high_water_age_s: float | None
    next_since: datetime | None
    last_full_at: datetime | None
    next_full_sweep_by: datetime | None
    pass_in_progress: bool
    shares: int  # --partition K/N: the shares' checkpoints found (a backfill in N parts)
    shares_complete: int  # of which a pass is complete
    # The last complete pass saved a change-stream position: the next run reads the orders
    # delivered since whatever their stamps (without one, a standalone's, by stamp alone).
    reads_changes: bool


@dataclass
class StatusReport:
    checked_at: datetime
    orders_by_status: dict[str, int] = field(default_factory=dict)
    lookback_hours: float = 24.0
    backlog: int = 0
    backlog_oldest_age_s: float | None = None
    rejected: int = 0  # listed rejected orders (invalid; never archived until fixed): not backlog
    rejected_examples: list[dict[str, object]] = field(default_factory=list)
    rejected_more: bool = False  # the list holds more than the newest REJECTS_READ_AT_MOST, not read
    # Status values that read as DELIVERED_STATUS but are not it: their orders are never archived.
    near_misses: NearMisses | None = None
    # No order holds DELIVERED_STATUS while orders are there (a problem once one is delivered).
    delivered_absent: DeliveredAbsent | None = None
    archive_size: int = 0
    newest_archived_at: datetime | None = None
    # The ARCHIVE_PII policies the archive's documents were written under ("keep", "drop",
    # "hash:<key id>"; None: before the policy was recorded), and the current one.
    pii_policies: list[str | None] = field(default_factory=list)
    pii_policy: str = "keep"
    watchers: list[WatcherStatus] = field(default_factory=list)
    batch: BatchStatus | None = None  # what the next `batch --run` (no window) looks at
    purge_after: str = "0d"  # PURGE_AFTER
    purge_movable: int | None = None  # delivered orders old enough for the next --purge-source
    purge_movable_more: bool = False  # more than purge_movable (PURGE_COUNTED_AT_MOST): not counted
    restore_hold: str = ""  # RESTORE_HOLD: a restored order stays in the source that long
    # Of the delivered orders old enough, left out of purge_movable: restored within RESTORE_HOLD,
    # and listed rejected (never archived). Not counted (0) when purge_movable_more.
    purge_held: int = 0
    # Those restored within RESTORE_HOLD counted (False: the archive's restored_at index not
    # ready, so not read: the figure then counts them)
    purge_held_counted: bool = True
    purge_rejected: int = 0
    # Under a PURGE_AFTER over 0d: delivered orders without a date_livraison (missing or null),
    # which no purge ages: they stay in the source (counted up to one past PURGE_COUNTED_AT_MOST)
    purge_undated: int = 0
    retention: RetentionState | None = None  # ARCHIVE_RETENTION and its TTL index
    pii_retention: str | None = None  # ARCHIVE_PII_RETENTION
    pii_retention_pending: int | None = None  # archived orders past it that still hold personal data
    pii_earlier_erasures: int = 0  # among them, erased by an earlier version (retention.earlier_erasures)
    # With a cold tier: its orders past ARCHIVE_PII_RETENTION that still hold personal data (None:
    # no cold tier), and the rows left unread past the probe's bound (each may hold some)
    cold_pii_retention_pending: int | None = None
    cold_pii_retention_unread: int = 0
    # On S3: whether the bucket keeps object versions (the replaced files stay readable); None: not known
    cold_versions_kept: bool | None = None
    cold_unread: str | None = None  # why the cold tier could not be read (its storage did not answer)
    forgotten_persons: int = 0  # recorded forgotten persons looked at (the most recent, FORGOTTEN_CHECKED)
    forgotten_holding: int = 0  # their archived orders that still hold what their erasure removed
    # The forgotten persons (of any age) whose erasure is unfinished: archived orders or, with a
    # cold tier, cold files still to erase (a forget ended midway), "client:<id>" / "livreur:<id>",
    # at most UNFINISHED_READ_AT_MOST; forgotten_unfinished_more: there are more (at least that many)
    forgotten_unfinished: list[str] = field(default_factory=list)
    forgotten_unfinished_more: bool = False
    indexes: list[IndexStatus] = field(default_factory=list)  # not ready: pending or missing (indexes.py)
    unique_missing: bool = False  # the archive's unique index on numero_commande (a watcher waits)
    cold: ColdSummary | None = None  # ARCHIVE_COLD_URL: files, orders, bytes, months
    # Files a move published whose orders the archive may still hold (its journal entry left)
    cold_unsettled: list[str] = field(default_factory=list)
    # With a cold tier holding no file: delivered orders past its cutoff, never archived (source alone)
    cold_source_alone: int = 0
    cold_source_alone_more: bool = False  # more than cold_source_alone (PURGE_COUNTED_AT_MOST)
    cold_move_running: bool = False  # the move's lease held: a move in progress (WATCH_LEASE_TTL_S)
    cold_moving: str | None = None  # what the running move has published and not finished
    cold_corrected: int = 0  # restored from the cold tier, changed in the source since (_cold_corrected)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def other_pii_policies(self) -> list[str | None]:
        return [p for p in self.pii_policies if p != self.pii_policy]

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data

    def lines(self) -> list[str]:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.orders_by_status.items())) or "none"
        out = [f"orders by status (date_commande in the last {self.lookback_hours:g}h): {counts}"]
        age = self.backlog_oldest_age_s
        oldest = f", the oldest delivered {about(age)} ago" if age is not None else ""
        out.append(
            f"backlog (delivered, not archived, last {self.lookback_hours:g}h): {self.backlog}{oldest}"
        )
        near_miss_line = self.near_misses.line() if self.near_misses is not None else None
        out += [near_miss_line] if near_miss_line else []
        out.append(
            "rejected orders (invalid, not archived until fixed at the source): "
            + (
                f"{self.rejected} among the newest {REJECTS_READ_AT_MOST} listed (more are listed)"
                if self.rejected_more
                else str(self.rejected)
            )
            + (" (list: main.py rejects)" if self.rejected else "")
        )
        for entry in self.rejected_examples:
            numero = f" {entry['numero_commande']}" if entry.get("numero_commande") else ""
            out.append(f"  {entry['id']}{numero}: {entry['reason']}")
        newest = iso(self.newest_archived_at) if self.newest_archived_at else "never"
        out.append(f"archive: {plural(self.archive_size, 'document')}, newest archived_at {newest}")
        if self.cold is None and self.cold_unread is not None:
            out.append(f"cold tier: could not be read, its files and orders not counted: {self.cold_unread}")
        out += [self.cold.line()] if self.cold is not None else []
        out += [self.cold_moving] if self.cold_moving else []
        if self.cold_source_alone:
            more = "more than " if self.cold_source_alone_more else ""
            out.append(
                f"cold tier: {more}{plural(self.cold_source_alone, 'delivered order')} past ARCHIVE_COLD_AFTER "
                "in the source alone (never archived: older than the archive takes, and the cold tier "
                "holds no file): docs/operating.md, orders older than ARCHIVE_COLD_AFTER never archived"
            )
        others = self.other_pii_policies
        if others:
            shown = ", ".join("an earlier version (no policy recorded)" if p is None else p for p in others)
            out.append(
                f"personal data: documents written under {shown}, not ARCHIVE_PII's {self.pii_policy} "
                "(a change of mode or key leaves existing documents as they were)"
            )
        out += self._watcher_lines()
        out.append(_batch_line(self.batch))
        if self.purge_movable is not None:
            out.append(self._purge_line())
        if self.retention is not None:
            out.append(self.retention.line())
        if self.pii_retention is not None:
            pending = self.pii_retention_pending or 0
            left = (
                f"{plural(pending, 'archived order')} past it still hold it (the next batch --run erases it)"
                + self._earlier_text()
                if pending
                else "none past it holds any"
            )
            out.append(
                f"personal data: erased {self.pii_retention} after delivery (ARCHIVE_PII_RETENTION); {left}"
                + self._cold_pii_text()
            )
        if self.forgotten_persons:
            at_least = "at least " if self.forgotten_unfinished_more else ""
            out.append(
                f"forgotten persons: {self.forgotten_persons} checked (the most recent), "
                f"{plural(self.forgotten_holding, 'archived order')} of theirs still holding their personal data"
                + (
                    f"; {at_least}{len(self.forgotten_unfinished)} forgotten at any time whose erasure "
                    "is not finished"
                    if self.forgotten_unfinished
                    else ""
                )
            )
        out += [index.line() for index in self.indexes]
        out.append("healthy" if self.healthy else "UNHEALTHY: " + "; ".join(self.problems))
        return out

    def _watcher_lines(self) -> list[str]:
        """Each watcher's line, or that none was found."""
        lines: list[str] = []
        for watcher in self.watchers:
            age = watcher.get("heartbeat_age_s")
            saved_text = f"{about(age)} ago" if age is not None else "never"
            last = watcher.get("last_event_at")
            last_text = iso(last) if isinstance(last, datetime) else "none yet"
            leader = watcher.get("leader")
            lead_text = f", leader {leader['owner']} (term {leader['term']})" if leader else ""
            stopped = watcher.get("stopped_at")
            stop_text = f", stopped cleanly at {iso(stopped)}" if isinstance(stopped, datetime) else ""
            stop_text += stop_file_text(watcher.get("stop_file"))
            released = watcher.get("released_term")
            if released is not None:
                stop_text += f": it released its lease (term {released}), no watcher leads"
            through = watcher.get("catch_up_through")
            reach = f", through _id {through} so far" if through is not None else ""
            busy = f", catching up (archiving the orders delivered before it started{reach})"
            busy_text = busy if watcher.get("catching_up") else ""
            lines.append(
                f"watcher {watcher['name']} ({watcher['store']}): token saved {saved_text}, "
                f"last event {last_text}{busy_text}{lead_text}{stop_text}"
            )
        if not self.watchers:
            # A watcher waiting for the archive's unique index has saved nothing yet.
            waiting = "; one waiting for the archive's unique index saves none" if self.unique_missing else ""
            lines.append(f"watchers: none found (no token file, no checkpoint{waiting})")
        return lines

    def _earlier_text(self) -> str:
        earlier = self.pii_earlier_erasures
        if not earlier:
            return ""
        return f"; {plural(earlier, 'archived order')} erased by an earlier version among them (couriers' names kept)"

    def _cold_pii_text(self) -> str:
        return _cold_pii_clause(
            self.cold_pii_retention_pending, self.cold_pii_retention_unread, self.cold_versions_kept
        )

    def _purge_line(self) -> str:
        head = (
            f"next --purge-source: {'more than' if self.purge_movable_more else 'up to'} "
            f"{plural(self.purge_movable or 0, 'delivered order')} old enough to leave the source "
            f"(PURGE_AFTER {self.purge_after}), once archived"
        )
        return self._purge_counted(head) + self._purge_never()

    def _purge_never(self) -> str:
        """The delivered orders no purge under this PURGE_AFTER moves (none under 0d)."""
        undated = self.purge_undated
        if not undated:
            return ""
        more = "more than " if undated > PURGE_COUNTED_AT_MOST else ""
        shown = plural(min(undated, PURGE_COUNTED_AT_MOST), "delivered order")
        return (
            f"; never: {more}{shown} without a date_livraison, which PURGE_AFTER {self.purge_after} "
            "cannot age (they stay in the source)"
        )

    def _purge_counted(self, head: str) -> str:
        if self.purge_movable_more:
            return (
                f"{head}, counted before those restored within RESTORE_HOLD {self.restore_hold} "
                "and the rejected ones are left out"
            )
        left = [
            f"{self.purge_held} restored within it" if self.purge_held else "",
            f"{plural(self.purge_rejected, 'rejected order')}" if self.purge_rejected else "",
        ]
        shown = " and ".join(part for part in left if part)
        left_out = f"; left out: {shown}" if shown else ""
        if not self.purge_held_counted:
            hold = f"RESTORE_HOLD {self.restore_hold}"
            why = f"{RESTORED_AT_INDEX} not built: batch --run builds it"
            return f"{head}; those restored within {hold} not left out yet ({why}){left_out}"
        return f"{head} (not those restored within RESTORE_HOLD {self.restore_hold}){left_out}"


def _batch_line(batch: BatchStatus | None) -> str:
    shares = _shares_text(batch)
    if batch is None or batch["high_water"] is None:
        return f"batch: no complete run yet (the next run is a full one){shares}"
    since, sweep = batch["next_since"], batch["next_full_sweep_by"]
    text = (
        f"batch: high-water mark {iso(batch['high_water'])} ({about(batch['high_water_age_s'] or 0)} ago); "
        f"the next run reads deliveries since {iso(since) if since else '-'}"
    )
    if sweep is not None:
        text += f"; full sweep due by {iso(sweep)}"
    if batch["pass_in_progress"]:
        text += "; a pass is in progress (interrupted or --limit): the next run goes on with it"
    return text + shares


def _catching_up(batch: BatchStatus, oldest: datetime, now: datetime, program: str) -> str:
    """The command that archives a backlog whose oldest order was delivered at ``oldest``. An
    incremental run reads by delivery stamp from its ``next_since`` on, and the orders the change
    stream names since its last pass: without a position saved (a standalone server has no change
    streams) an order delivered before then but added later (a backfill, a later simulate.py) is
    read by a full pass only (a new user took the incremental run's '0 delivered' for a bug)."""
    since, sweep = batch["next_since"], batch["next_full_sweep_by"]
    full_next = since is None or (sweep is not None and sweep <= now)
    if since is None or full_next or batch["reads_changes"] or oldest >= since:
        return f"the next {program} batch --run archives them (or a running watch)"
    due = (
        f"; the full sweep is due by {iso(sweep)}, in {about((sweep - now).total_seconds())}" if sweep else ""
    )
    return (
        f"delivered before {iso(since)}, where the next incremental batch --run starts reading by "
        "delivery stamp, and no change-stream position saved to name them (a standalone server has "
        f"no change streams): {program} batch --run --full archives them now{due}"
    )


def _shares_text(batch: BatchStatus | None) -> str:
    if batch is None or not batch["shares"]:
        return ""
    return f"; --partition: {batch['shares_complete']} of {plural(batch['shares'], 'share')} complete"


def batch_state(collections: Collections, settings: Settings, now: datetime, read: Reader) -> BatchStatus:
    """The state the next scheduled ``batch --run`` (no date window) starts from."""
    key = checkpoint_key(settings, "batch", None, None)
    document = read(lambda: collections.checkpoints.find_one({"_id": key}))
    state = _state_of(document)
    # --partition K/N's checkpoints: the key, ":K-of-N" after it (an anchored prefix: the _id index)
    of_shares = {"_id": {"$regex": f"^{re.escape(key)}:"}}
    shares = read(lambda: list(collections.checkpoints.find(of_shares).limit(MAX_PARTITIONS)))
    high_water = state.high_water
    return {
        "shares": len(shares),
        "shares_complete": sum(_state_of(share).high_water is not None for share in shares),
        "high_water": high_water,
        "high_water_age_s": max((now - high_water).total_seconds(), 0.0) if high_water else None,
        "next_since": high_water - settings.batch_overlap if high_water else None,
        "last_full_at": state.last_full_at,
        "next_full_sweep_by": state.last_full_at + settings.batch_full_sweep_every
        if state.last_full_at
        else None,
        "pass_in_progress": state.current is not None,
        "reads_changes": state.stream_token is not None,
    }


def _state_of(document: Document | None) -> BatchState:
    try:
        return state_from_document(document) if document is not None else BatchState()
    except ValueError:
        return BatchState()


def iso(moment: datetime) -> str:
    """ISO-8601 with the offset; naive datetimes are UTC (every date here is)."""
    return as_utc(moment).isoformat()


def _when(order: dict[str, object]) -> datetime | None:
    for field_name in ("date_livraison", "date_commande"):
        value = order.get(field_name)
        if isinstance(value, datetime):
            return as_utc(value)
    return None


# A healthy archive: no delivered order of the last DEFAULT_LOOKBACK waits longer than
# DEFAULT_MAX_BACKLOG_AGE, and each watcher saved its token within DEFAULT_MAX_HEARTBEAT_AGE.
DEFAULT_LOOKBACK = Duration(hours=24)
DEFAULT_MAX_BACKLOG_AGE = Duration(minutes=15)
DEFAULT_MAX_HEARTBEAT_AGE = Duration(minutes=2)


@dataclass(frozen=True)
class StatusThresholds:
    """When ``status`` calls the deployment unhealthy, parsed once from its flags."""

    lookback: timedelta = DEFAULT_LOOKBACK  # --lookback: the delivery window the backlog is read in
    max_backlog_age: timedelta = DEFAULT_MAX_BACKLOG_AGE  # --max-backlog-age
    max_heartbeat_age: timedelta = DEFAULT_MAX_HEARTBEAT_AGE  # --max-heartbeat-age


def collect_status(
    client: MongoClient[Document],
    settings: Settings,
    thresholds: StatusThresholds = StatusThresholds(),
    *,
    now: datetime | None = None,
    context: RunContext | None = None,
    archive_client: MongoClient[Document] | None = None,
    program: str = "python main.py",  # the command a problem names, as the user typed it
) -> StatusReport:
    context = context or RunContext()
    now = now or datetime.now(UTC)
    collections = Collections.of(client, settings, archive_client)
    lookback, max_backlog_age = thresholds.lookback, thresholds.max_backlog_age
    report = StatusReport(checked_at=now, lookback_hours=lookback.total_seconds() / 3600)

    def read(func: Callable[[], T]) -> T:
        return context.retrying(func)

    _cluster_layout(report, client, settings, archive_client)
    source_problem = read(lambda: missing_source(collections.orders))
    if source_problem:
        report.problems.append(source_problem)
    since = now - lookback
    # One distinct scan of the {status, date_commande} index serves both: the counts by status
    # and the values that read as DELIVERED_STATUS but are not it (mongodb/statuses.py).
    statuses = read(lambda: collections.orders.distinct("status"))
    report.orders_by_status = _orders_by_status(collections.orders, statuses, since, read)
    source_context = context.on(collections.source_side)
    report.near_misses = near_misses(collections.orders, settings.delivered_status, statuses, source_context)
    # No order with DELIVERED_STATUS while delivered orders hold another value: nothing is ever
    # archived (a first day, nothing delivered yet, is not a problem: mongodb/statuses.py). The
    # archive's newest document read once for it and for the newest archived_at below.
    newest = NewestArchived(collections.archive, context.on(collections.archive_side), Retry.COMMAND)
    report.delivered_absent = delivered_absent(
        collections.orders, settings.delivered_status, statuses, source_context, newest
    )
    if report.delivered_absent is not None and report.delivered_absent.alarm:
        report.problems.append(report.delivered_absent.line())
    rejects = RejectStore(collections.rejects, context)
    report.backlog, oldest = _backlog(collections, settings, since, rejects, read)
    if oldest is not None:
        report.backlog_oldest_age_s = max((now - oldest).total_seconds(), 0.0)

    # The newest only (a top-k sort on the server), and whether there are more: one estimate.
    report.rejected_more = read(lambda: collections.rejects.estimated_document_count()) > REJECTS_READ_AT_MOST
    rejected_ids: list[OrderId] = []
    for entry in rejects.current(collections.archive, limit=REJECTS_READ_AT_MOST):
        report.rejected += 1
        rejected_ids.append(entry["_id"])
        if len(report.rejected_examples) < EXAMPLES:
            report.rejected_examples.append(describe_reject(entry))

    report.archive_size = read(lambda: collections.archive.estimated_document_count())
    # One distinct scan of the {pii_policy} index: a few values, whatever the archive's size.
    report.pii_policy = settings.pii_policy.tag
    if report.archive_size:
        found = read(lambda: collections.archive.distinct("pii_policy"))
        missing = read(lambda: collections.archive.find_one({"pii_policy": None}, {"_id": 1})) is not None
        report.pii_policies = sorted({str(p) for p in found if p is not None}) + ([None] if missing else [])
    newest_archived = newest()
    report.newest_archived_at = (
        moment_or_none(newest_archived.get("archived_at")) if newest_archived else None
    )

    _cold_tier(report, settings, collections.checkpoints, context, now)
    _source_alone(report, collections, settings, read)
    report.watchers = _watchers(collections, settings, read)
    report.problems += stop_file_problems(report.watchers, report.backlog)
    report.batch = batch_state(collections, settings, now, read)
    if oldest is not None and now - oldest > max_backlog_age:
        report.problems.append(
            f"{plural(report.backlog, 'delivered order')} not archived, the oldest delivered "
            f"{about(report.backlog_oldest_age_s or 0)} ago (limit {about(max_backlog_age.total_seconds())}): "
            + _catching_up(report.batch, oldest, now, program)
        )
    report.purge_after = str(settings.purge_after)
    report.restore_hold = str(settings.restore_hold)
    delivered_match = {"status": status_match(settings.delivered_status)}
    _indexes(
        report,
        collections,
        source_exists=not source_problem,
        cold_tier=settings.archive_cold_url is not None,
        context=context,
        # One delivered order, on the {status, ...} indexes: something for the archive to take.
        delivered=lambda: read(lambda: collections.orders.find_one(delivered_match, {"_id": 1})) is not None,
    )
    marks = (
        ColdRestoreMarks(collections.checkpoints, context.on(collections.archive_side))
        if settings.archive_cold_url is not None
        else None
    )
    _next_purge(report, collections, settings, now, rejected_ids, read, marks)
    if marks is not None:
        _cold_corrected(report, collections, settings, marks)
    _retention(report, collections.archive, settings, now, context)
    _forgotten(report, collections, read, context, cold_tier=settings.archive_cold_url is not None)
    report.problems += _heartbeat_problems(report.watchers, now, thresholds.max_heartbeat_age)
    return report


# The commands that check the cluster's layout at start-up and refuse one that cannot work.
REFUSING_COMMANDS = "batch, watch, verify, restore, forget and find refuse to start"


def _cluster_layout(
    report: StatusReport,
    client: MongoClient[Document],
    settings: Settings,
    archive_client: MongoClient[Document] | None,
) -> None:
    """A sharded cluster's layout that cannot work (``deployment.check_deployments``: every
    other command refuses it, exit 2): unhealthy, named first, as the cause of the rest."""
    try:
        check_deployments(client, settings, archive_client)
    except ConfigError as exc:
        report.problems.append(f"{exc} ({REFUSING_COMMANDS})")


RESTORED_AT_INDEX = "restored_at_1"  # the archive's, which status's purge figure reads


def _next_purge(
    report: StatusReport,
    collections: Collections,
    settings: Settings,
    now: datetime,
    rejected_ids: list[OrderId],
    read: Reader,
    marks: ColdRestoreMarks | None = None,
) -> None:
    """What the next --purge-source would move: the delivered orders old enough (PURGE_AFTER, as
    the purge selects them: under 0d, undated ones too; one count on the ``{status,
    date_livraison}`` index, stopped one past PURGE_COUNTED_AT_MOST), less the two kinds the
    purge leaves (``purge.SourcePurge``) that status can count boundedly: those restored within
    RESTORE_HOLD (their archive documents' ``restored_at``, on its sparse index, and with a cold
    tier its restore marks, ``marks``: the first HELD_READ_AT_MOST of each) and the listed rejected ones (never archived), each
    counted among the old enough by ``_id``, a chunk at a time. Still an upper bound: the purge
    also leaves an order not archived yet, or changed since it was."""
    # The purge's own selection (``purge_cutoffs``): under PURGE_AFTER 0d every delivered order,
    # one without a ``date_livraison`` (an application that stamps nothing) included.
    old_enough = build_selection(
        settings.delivered_status,
        delivered_before=now - settings.purge_after if settings.purge_after else None,
    )
    movable = int(
        read(lambda: collections.orders.count_documents(old_enough, limit=PURGE_COUNTED_AT_MOST + 1))
    )
    if settings.purge_after:  # never old enough: no date to age (null matches a missing field too)
        undated = {"status": status_match(settings.delivered_status), "date_livraison": None}
        report.purge_undated = int(
            read(lambda: collections.orders.count_documents(undated, limit=PURGE_COUNTED_AT_MOST + 1))
        )
    report.purge_movable_more = movable > PURGE_COUNTED_AT_MOST
    if report.purge_movable_more:  # the left-out ones are not counted against an unknown total
        report.purge_movable = PURGE_COUNTED_AT_MOST
        return
    # Read on its index only (``_indexes`` listed them first): without it, a read of the whole
    # archive at every probe (an archive of an earlier version, a watch-only deployment).
    report.purge_held_counted = not any(
        (index.index, index.collection, index.database)
        == (RESTORED_AT_INDEX, collections.archive.name, collections.archive.database.name)
        for index in report.indexes
    )
    if report.purge_held_counted:
        held = _restored_within_hold(collections.archive, marks, held_since(settings, now), read)
        report.purge_held = _counted_among(collections.orders, old_enough, held, read)
    report.purge_rejected = _counted_among(collections.orders, old_enough, rejected_ids, read)
    report.purge_movable = movable - report.purge_held - report.purge_rejected


def _restored_within_hold(
    archive: MongoCollection, marks: ColdRestoreMarks | None, since: datetime | None, read: Reader
) -> list[OrderId]:
    """The orders ``restore`` put back within RESTORE_HOLD (``since``: the purge holds them,
    ``purge.restored_lately``), from the archive and, with a cold tier, from its files (their
    marks: ``ColdHolding`` hands the purge the same moment)."""
    if since is None:
        return []
    query = {"restored_at": {"$gte": since}}
    found = read(lambda: list(archive.find(query, {"_id": 1}).limit(HELD_READ_AT_MOST)))
    archived = [document["_id"] for document in found]
    cold = marks.restored_since(since, HELD_READ_AT_MOST) if marks is not None else []
    seen = set(archived)  # an order restored from both: counted once
    return archived + [i for i in cold if i not in seen]


def _cold_corrected(
    report: StatusReport, collections: Collections, settings: Settings, marks: ColdRestoreMarks
) -> None:
    """The orders restored from the cold tier and changed in the source since: no pass archives
    them again (older than ARCHIVE_COLD_AFTER), the source holds the only copy of the change, and
    the purge keeps it for good: a problem (``ColdRestoreMarks.corrected``: the marks, then their
    orders by ``_id``)."""
    changed, more = marks.corrected(collections.orders, settings.pii_policy, HELD_READ_AT_MOST)
    report.cold_corrected = len(changed)  # of the first HELD_READ_AT_MOST marks (more: "at least")
    if changed:
        report.problems.append(
            f"cold tier: {'at least ' if more else ''}{plural(len(changed), 'order')} restored from it and changed in the source "
            "since: no pass archives them again (older than ARCHIVE_COLD_AFTER), the source holds the "
            "only copy of the change and the purge keeps it (verify names them; docs/operating.md, "
            "the purge and the cold tier)"
        )


def _counted_among(
    orders: MongoCollection, query: dict[str, object], ids: list[OrderId], read: Reader
) -> int:
    return sum(
        int(read(partial(orders.count_documents, {**query, "_id": {"$in": part}})))
        for part in chunked(ids, CHUNK)
    )


def _retention(
    report: StatusReport, archive: MongoCollection, settings: Settings, now: datetime, context: RunContext
) -> None:
    """ARCHIVE_RETENTION against the archive's TTL index; the orders ARCHIVE_PII_RETENTION has
    yet to erase (one count on the ``{forgotten_by, date_livraison}`` range). An index that
    stands where the TTL index must is a problem here, not an error: status still reports."""
    try:
        state = retention_state(archive, settings, context)
    except ConfigError as exc:
        report.problems.append(str(exc))
    else:
        report.retention = state
    length = settings.archive_pii_retention
    if length is not None:
        report.pii_retention = str(length)
        forgotten = archive.database[settings.forgotten_collection]
        report.pii_earlier_erasures = earlier_erasures(archive, forgotten, context)
        pending = PiiRetention(archive, length, lambda: now, context).pending()
        report.pii_retention_pending = pending + report.pii_earlier_erasures


def _forgotten(
    report: StatusReport, collections: Collections, read: Reader, context: RunContext, cold_tier: bool
) -> None:
    """The recorded erasures that do not hold: orders of the latest forgotten persons
    (``FORGOTTEN_CHECKED``) still holding their data (a write that did not respect the record, an
    erasure a limit ended: one count per person on their index, a spot check), and every erasure
    the record says unfinished, in the archive or the cold tier, however many persons were
    forgotten after it (``unfinished``: one read per mark on the record's partial index, at most
    ``UNFINISHED_READ_AT_MOST``, "at least" past it). Bounded by the requests looked at and the
    unfinished erasures, not by the record, the archive nor the cold tier."""
    record = ForgottenPersons(collections.forgotten, context.on(collections.archive_side))
    latest = record.persons(FORGOTTEN_CHECKED)
    report.forgotten_persons = len(latest)
    report.forgotten_holding = sum(
        read(partial(collections.archive.count_documents, still_holding(kind, person)))
        for kind, person in latest
    )
    if report.forgotten_holding:
        report.problems.append(
            f"{plural(report.forgotten_holding, 'archived order')} of forgotten persons still hold their "
            "personal data: run forget again for them (main.py verify names them)"
        )
    # The record's marks (``ARCHIVE_PENDING``, ``COLD_PENDING``), with or without a cold tier:
    # no archived order nor cold file is read (a forget a limit or a signal ended midway left
    # them, cleared once it, batch --run or forget again wrote the last).
    unfinished = record.unfinished(UNFINISHED_READ_AT_MOST + 1)
    report.forgotten_unfinished_more = len(unfinished) > UNFINISHED_READ_AT_MOST
    unfinished = unfinished[:UNFINISHED_READ_AT_MOST]
    report.forgotten_unfinished = [f"{kind}:{person}" for kind, person in unfinished]
    if unfinished:
        shown = ", ".join(
            f"forget --{'courier' if kind == COURIER else 'client'} {person} --run"
            for kind, person in unfinished[:3]
        )
        at_least = "at least " if report.forgotten_unfinished_more else ""
        more = f" and {at_least}{len(unfinished) - 3} more" if len(unfinished) > 3 else ""
        report.problems.append(
            f"{at_least}{plural(len(unfinished), 'forgotten person')} whose erasure is not finished (forget "
            "ended before it erased every archived order"
            + (" or rewrote every cold file" if cold_tier else "")
            + f" holding their data): run {shown}{more}, or the next batch --run finishes it"
        )


def _indexes(
    report: StatusReport,
    collections: Collections,
    *,
    source_exists: bool,
    cold_tier: bool,
    context: RunContext,
    delivered: Callable[[], bool],
) -> None:
    """The indexes not ready and what they cost (one ``listIndexes`` per collection); the
    archive's unique index not ready is a problem: being built, no run archives until it is
    ready; missing, once there is an order to archive, until batch --run builds it."""
    wanted = wanted_indexes(
        collections.orders,
        collections.archive,
        source_exists=source_exists,
        cold_tier=cold_tier,
        forgotten=collections.forgotten,
    )
    statuses = index_states(wanted, context.stop)
    report.indexes = [s for s in statuses if s.state != "ready"]
    try:  # being built: no run archives until it is ready
        require_unique([s for s in statuses if s.state == "pending"], collections.archive)
    except ArchiverError as exc:
        report.problems.append(str(exc))
    unique = unique_status(statuses, collections.archive)
    report.unique_missing = unique is not None and unique.state == "missing"
    # Missing with nothing to archive yet (no delivered order, an empty archive, no watcher) is
    # the state before the first batch --run, which the index's line says; otherwise nothing is
    # archived until it is built (a watcher waits for it, and sends no heartbeat meanwhile).
    if (
        unique is not None
        and unique.state == "missing"
        and (report.archive_size or report.watchers or delivered())
    ):
        report.problems.append(
            f"the archive's unique index {unique.index} is missing: nothing is archived until "
            "batch --run builds it (a watcher waits for it)"
        )


ColdRead = Callable[[StatusReport, Settings, MongoCollection, RunContext, datetime], None]


def _said_when_unread(read: ColdRead) -> ColdRead:
    """``read`` (``_cold_tier``), whose failure to read the cold tier (its storage did not answer
    after retries, or refused; a footer that does not read) is said, not the end of status: its
    line says why, a problem (exit 3), and the report goes on (the rest stands on the archive). A
    signal, and a failure of MongoDB's (the rest of status would fail too), end it as before."""

    def said(
        report: StatusReport,
        settings: Settings,
        checkpoints: MongoCollection,
        context: RunContext,
        now: datetime,
    ) -> None:
        try:
            read(report, settings, checkpoints, context, now)
        except ArchiverError as exc:
            if context.stopped or isinstance(exc.__cause__, pymongo_errors.PyMongoError):
                raise
            report.cold_unread = cold_fault_line(settings.archive_cold_url or "", exc)
            # Its line says why: -q, which prints the problems only, names the place.
            report.problems.append(
                f"cold tier {settings.archive_cold_url} could not be read (its line says why; -q: status without it)"
            )

    return said


@_said_when_unread
def _cold_tier(
    report: StatusReport, settings: Settings, checkpoints: MongoCollection, context: RunContext, now: datetime
) -> None:
    """The cold tier's files, orders, bytes and months; unhealthy when its place is gone (the
    rest still reported) or a file it published is gone (its orders in no place). One list
    read and one listing of the place, which the summary and the lost files both read; with
    ARCHIVE_PII_RETENTION, its orders past it still holding personal data (``tier.pii_pending``:
    the files it has not erased to the cutoff read, a bounded number of rows)."""
    try:
        store = cold_store(settings, context)
        if store is None:
            return
        manifest = ColdManifest(store, checkpoints, context)
        listed = list(manifest.entries())  # read before the files: see cold/check.py _lost
        found = listing(store)
    except ConfigError as exc:
        report.problems.append(str(exc))
        return
    report.cold = summarise(store, found, listed)
    report.cold.past_retention(store, found, listed, settings, now)
    _cold_pii(report, store, found, listed, settings, now)
    lost = lost_files(store, manifest, listed, found)
    if lost.missing_files:  # removed by hand, or lost
        report.problems.append(
            f"cold tier: {plural(len(lost.missing_files), 'published file')} gone, "
            f"{plural(lost.missing, 'order')} in no place (verify names them)"
        )
    unsettled = unsettled_moves(store, checkpoints, context, now)
    report.cold_unsettled, report.cold_move_running = unsettled.files, unsettled.running
    report.cold_moving = unsettled.line()
    if (problem := unsettled.problem()) is not None:  # orders in two places, no move on it
        report.problems.append(problem)


def _source_alone(report: StatusReport, collections: Collections, settings: Settings, read: Reader) -> None:
    """With a cold tier that holds no file though a move ran (its record): the delivered orders
    before the recorded boundary, which no run archives, are in the source alone (the cold
    settings set before the first archive: docs/operating.md); the move that recorded it left
    the archive none of them, and no cold file holds one. One count on the ``{status,
    date_livraison}`` index, stopped one past PURGE_COUNTED_AT_MOST. Not said with files (a
    source order past it may be in one: not cheap to tell), nor before the first move (the
    archive may hold them, to be moved)."""
    boundary = settings.cold_moved_before
    if report.cold is None or report.cold.files or boundary is None:
        return
    old = {"status": status_match(settings.delivered_status), "date_livraison": {"$lt": as_utc(boundary)}}
    found = read(lambda: collections.orders.count_documents(old, limit=PURGE_COUNTED_AT_MOST + 1))
    report.cold_source_alone = min(found, PURGE_COUNTED_AT_MOST)
    report.cold_source_alone_more = found > PURGE_COUNTED_AT_MOST


def _cold_pii(
    report: StatusReport,
    store: ColdStore,
    found: list[ColdFile],
    listed: list[Listed],
    settings: Settings,
    now: datetime,
) -> None:
    """The cold orders past ARCHIVE_PII_RETENTION still holding personal data (``pii_pending``).
    It opens cold files (no other part of a probe does): one that cannot be read (damaged) is a
    problem said, not the end of the probe, whose other figures stand."""
    try:
        pending = pii_pending(store, found, listed, settings, now)
    except ArchiverError as exc:
        report.problems.append(f"cold tier: personal data past ARCHIVE_PII_RETENTION not counted ({exc})")
        return
    if pending is not None:
        report.cold_pii_retention_pending, report.cold_pii_retention_unread = pending.orders, pending.unread
        try:  # one HeadObject: a versioned bucket keeps what the erasure replaced
            report.cold_versions_kept = newest_keeps_versions(store, found)
        except (ArchiverError, OSError) as exc:
            log.info("status: whether the cold tier's bucket keeps versions not read (%s)", exc)


def _cold_pii_clause(pending: int | None, unread: int, versions_kept: bool | None) -> str:
    """The cold tier's figure, beside the archive's (none without a cold tier); a bucket that
    keeps object versions said (``versions_kept_words``): the files its erasures replaced keep
    the data its current files no longer hold."""
    if pending is None:
        return ""
    kept = f", but {versions_kept_words()}" if versions_kept else ""
    if unread:
        return (
            f"; cold tier: at least {pending}, at most {plural(pending + unread, 'order')} past it "
            f"still hold it ({unread} not read: status reads {PII_COUNTED_ROWS_AT_MOST} at most; "
            f"batch without --run counts them all){kept}"
        )
    if pending:
        return f"; cold tier: {plural(pending, 'order')} past it still hold it (the next batch --run erases it){kept}"
    if kept:
        return f"; cold tier: none past it holds any in its current files{kept}"
    return "; cold tier: none past it holds any"


def _orders_by_status(
    orders: MongoCollection, statuses: list[object], since: datetime, read: Reader
) -> dict[str, int]:
    """Bounded: the statuses from the index ({status, date_commande}: a distinct scan), then
    one index count per status over the lookback only. A probe every few seconds must not
    cost a pass over the whole history."""
    return {
        str(status): read(
            partial(orders.count_documents, {"status": status, "date_commande": {"$gte": since}})
        )
        for status in statuses
    }


def _backlog(
    collections: Collections, settings: Settings, since: datetime, rejects: RejectStore, read: Reader
) -> tuple[int, datetime | None]:
    """Delivered orders of the lookback neither archived nor listed as rejected (those wait for
    a person, not for the archiver), and the oldest one's delivery time. The lookback is on the
    order's date *or* its delivery stamp (two index ranges: ``{status, date_commande}``,
    ``{status, date_livraison}``): an order placed days ago and delivered late (a courier's
    phone that synced hours later) is waiting too."""
    count, oldest = 0, None
    delivered = status_match(settings.delivered_status)
    recent = {
        "$or": [
            {"status": delivered, "date_commande": {"$gte": since}},
            {"status": delivered, "date_livraison": {"$gte": since}},
        ]
    }

    def settle(orders: list[dict[str, object]]) -> None:
        nonlocal count, oldest
        ids = [o["_id"] for o in orders]
        archived = {
            d["_id"] for d in read(lambda: list(collections.archive.find({"_id": {"$in": ids}}, {"_id": 1})))
        }
        rejected = rejects.known([i for i in ids if i not in archived])
        for order in orders:
            if order["_id"] in archived or order["_id"] in rejected:
                continue
            count += 1
            when = _when(order)
            if when is not None and (oldest is None or when < oldest):
                oldest = when

    chunk: list[dict[str, object]] = []
    cursor = read(
        lambda: collections.orders.find(recent, {"date_livraison": 1, "date_commande": 1}, batch_size=CHUNK)
    )
    with cursor:
        for order in cursor:
            chunk.append(order)
            if len(chunk) >= CHUNK:
                settle(chunk)
                chunk = []
    if chunk:
        settle(chunk)
    return count, oldest


def _heartbeat_problems(watchers: list[WatcherStatus], now: datetime, max_age: timedelta) -> list[str]:
    """Sets each watcher's ``heartbeat_age_s``; a running watcher whose token is older than
    ``max_age`` is a problem. One that stopped cleanly (a signal, its lease released) is not;
    `main.py retire-watcher` removes one that will not come back."""
    problems = []
    for watcher in watchers:
        saved = watcher.get("saved_at")
        if not isinstance(saved, datetime):
            watcher["heartbeat_age_s"] = None
            continue
        age = now - as_utc(saved)
        watcher["heartbeat_age_s"] = max(age.total_seconds(), 0.0)
        if age > max_age and not isinstance(watcher.get("stopped_at"), datetime):
            problems.append(
                f"watcher {watcher['name']}: token saved {about(age.total_seconds())} ago "
                f"(limit {about(max_age.total_seconds())}): is it running?"
            )
    return problems


def _watchers(collections: Collections, settings: Settings, read: Reader) -> list[WatcherStatus]:
    found: list[WatcherStatus] = []
    records = read(lambda: list(collections.checkpoints.find({"kind": "watch"})))
    names = [watcher_name(str(record["_id"])) for record in records]
    keys = [lease_key(name) for name in names]
    leases = {
        doc["_id"]: doc for doc in read(lambda: list(collections.checkpoints.find({"_id": {"$in": keys}})))
    }
    for record, name in zip(records, names, strict=True):
        lease = leases.get(lease_key(name))
        found.append(_watcher(name, "mongo", record, _leader(lease) if lease else None))
    path = Path(settings.resume_token_file)
    if path.is_file():
        try:
            record = json_util.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            record = {}
        record = record if isinstance(record, dict) else {}
        namespace = f"{settings.mongodb_database}.{settings.orders_collection}"
        if record.get("namespace") in (None, namespace):  # another database's watcher is not this one's
            found.append(_watcher(str(path), "file", record, None))
    return found


def catch_up_through(record: Mapping[str, object]) -> str | None:
    """The _id a catching-up watcher's saved mark says its catch-up archived through."""
    mark = record.get("catch_up")
    if record.get("catching_up") is not True or not isinstance(mark, Mapping) or "through_id" not in mark:
        return None
    return None if mark["through_id"] is None else bounded(str(mark["through_id"]), SHOWN_ID_CHARS)


def _watcher(name: str, store: str, record: Mapping[str, object], leader: Leader | None) -> WatcherStatus:
    status = WatcherStatus(
        name=name,
        store=store,
        saved_at=moment_or_none(record.get("saved_at")),
        last_event_at=moment_or_none(record.get("last_event_at")),
        stopped_at=moment_or_none(record.get("stopped_at")),
        stop_file=stop_file_left(record),
        namespace=text_or_none(record.get("namespace")),
        catching_up=record.get("catching_up") is True,
        catch_up_through=catch_up_through(record),
    )
    if store == "mongo":
        status["leader"] = leader
        # Stopped cleanly under the lease's own term: marked, then released (``Watcher.run``).
        # A standby that took the lease since holds a later term: it leads.
        term = int_or_none(record.get("term"))
        if (
            leader is not None
            and status["stopped_at"] is not None
            and term is not None
            and term == leader["term"]
        ):
            status["leader"], status["released_term"] = None, term
    return status


def stop_file_left(record: Mapping[str, object]) -> str | None:
    """The stop file a watcher stopped by (recorded with its clean stop), if it is still there:
    looked at here (a mongo store's watcher on another host: its file is not seen from here)."""
    path = record.get("stop_file") if record.get("stopped_at") is not None else None
    try:
        return path if isinstance(path, str) and Path(path).exists() else None
    except OSError:
        return None


def stop_file_text(stop_file: str | None) -> str:
    return f"; its stop file {stop_file} is there: it does not start until it is removed" if stop_file else ""


def stop_file_problems(watchers: list[WatcherStatus], backlog: int) -> list[str]:
    """A watcher kept down by a stop file left behind while deliveries wait: not healthy."""
    return [
        f"watcher {watcher['name']}: stopped, its stop file {watcher['stop_file']} is there (it does "
        f"not start while it is) and {plural(backlog, 'delivered order')} wait: remove it and start it"
        for watcher in watchers
        if watcher.get("stop_file") is not None and backlog > 0
    ]


def _leader(lease: Mapping[str, object]) -> Leader:
    return Leader(
        owner=text_or_none(lease.get("owner")),
        term=int_or_none(lease.get("term")),
        expires_at=moment_or_none(lease.get("expires_at")),
    )
