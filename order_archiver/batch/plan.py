"""Which pass a batch run makes (``checkpoint.plan_pass``) and what it reads: a full pass over
the window, or an incremental one over the deliveries since the last pass began plus the
orders the change stream says were delivered or corrected since (late deliveries included)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from order_archiver.batch.report import BatchOptions, BatchReport
from order_archiver.documents import OrderId, ResumeToken
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.changes import (
    CHANGES_QUIET_WAIT_S,
    STANDALONE,
    ChangeReader,
    ChangesSince,
    stream_position,
)
from order_archiver.mongodb.checkpoint import BatchState, Pass, plan_pass
from order_archiver.mongodb.rejects import RejectStore
from order_archiver.mongodb.source import OrderSource, event_time
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.orders.selection import IdList
from order_archiver.retry import retrying
from order_archiver.settings import Settings

log = get_logger("batch")


@dataclass(frozen=True)
class PlannedPass:
    current: Pass  # the pass, with where the change stream stood when it began
    source: OrderSource  # what it reads


@dataclass
class PassPlanner:
    settings: Settings
    options: BatchOptions
    orders: MongoCollection
    orders_primary: MongoCollection
    rejects: RejectStore
    report: BatchReport
    stop_event: threading.Event
    server_clock: Callable[[], datetime]
    archive: MongoCollection | None = None  # a full pass skips what it holds (see _skips_archived)
    no_position: str | None = None  # why this run has no change-stream position (a standalone...)

    def follows_changes(self) -> bool:
        """A scheduled batch reads the change stream between its runs; the watcher's catch-up
        (always a full pass) and a simulation do not."""
        return self.options.archived_by == "batch" and not self.settings.simulation

    def plan(self, state: BatchState, source: OrderSource) -> PlannedPass:
        """This run's pass, from what the last runs left (``state``), and ``source`` pointed
        at its selection; the report says which pass and why."""
        plan = plan_pass(
            state,
            retrying(self.server_clock, stop_event=self.stop_event),
            overlap=self.settings.batch_overlap,
            full_sweep_every=self.settings.batch_full_sweep_every,
            force_full=self.options.full,
            resume=self.options.resume,
            full_reason=self.options.full_reason,
            own=own_checkpoint(self.options),
        )
        current = plan.pass_
        if current.last_id is None and self.options.after_id is not None:  # the watcher's catch-up, resumed
            current = replace(current, last_id=self.options.after_id)
        if current.last_id is None and self.follows_changes():
            # A new pass: where the change stream stands now, taken before anything is read.
            position, self.no_position = stream_position(
                self.orders_primary, self.settings.delivered_status, self.stop_event
            )
            current = replace(current, stream_token=position)
        self.report.mode = "full" if current.full else "incremental"
        self.report.since = current.since
        if not current.full and state.last_full_at is not None:
            self.report.full_sweep_due = state.last_full_at + self.settings.batch_full_sweep_every
        self.report.pass_reason = plan.reason
        self.report.partition = str(self.options.partition) if self.options.partition else None
        # Every order delivered or corrected since the last pass began (the change stream): an
        # incremental pass reads them whatever their stamps, a full pass even when archived.
        changed, current = self.changed_since(state.stream_token, current)
        if not current.full:  # (a full pass reads the rejected orders anyway: not archived)
            changed = [*self.rejects.listed_ids(), *changed]
        # An incremental pass reads few orders: the archive is asked by _id for each chunk
        # (writing.ChunkWriting.unwritten) instead of joined on the server, and they need no
        # count. Reads that decide go to a member that has the data: an incremental pass (a
        # lagging secondary would hide deliveries its mark then moves past) and the watcher's
        # catch-up; and in every pass the orders the change history names (also_from), which
        # the position saved moves past: a full pass's scan alone follows the URI.
        primary = self.options.read_primary or not current.full
        source = replace(
            source,
            orders=self.orders_primary if primary else self.orders,
            delivered_since=current.since,
            # Read whatever their stamp (incremental) or even when archived (full), a bounded
            # chunk of ids per read: a million changes make no command over 16 MB.
            also_ids=IdList.of(changed),
            also_from=self.orders_primary,
            exclude_archived_in=source.exclude_archived_in if self._skips_archived(current) else None,
            partition=self.options.partition,  # --partition: this share only, each pass
        )
        self._log(current, state, plan.reason)
        return PlannedPass(current, source)

    def changed_since(self, token: ResumeToken | None, current: Pass) -> tuple[list[OrderId], Pass]:
        """Every order that became delivered, or was corrected while delivered, since the last
        complete pass began, up to this pass's start (``changes.ChangeReader``), and the pass
        (whose token becomes where that read ended: short of its start on a quiet deployment,
        past an invalidate it met). Without a
        token, or with the history gone (the oplog rolled over) or no change streams, the pass
        reads by delivery stamp alone, and says so."""
        if token is None:
            if self.follows_changes() and not current.full:  # (a full pass reads them all)
                why = f" ({self.no_position})" if self.no_position else ""
                said = (
                    f"no change-stream position saved{why}: this incremental run reads delivery "
                    "stamps only (batch --run --full reads the orders delivered with older stamps)"
                )
                if self.no_position == STANDALONE:
                    log.info(said)  # every run of a standalone's: a property of it, no news for cron
                else:
                    self._say(said)
                # The summary says what such a pass cannot see, and the command that does.
                self.report.stamps_only = self.no_position or "no change-stream position saved"
            return [], current
        reader = ChangeReader(self.orders_primary, self.settings.delivered_status, self.stop_event)
        changes = reader.since(token, current.stream_token, current.started_at)
        if changes.unavailable is not None:
            self._say(unavailable_history(changes.unavailable, current.full))
            if not current.full:  # the summary says it read by stamps, not the change history
                self.report.stamps_only = f"the change history is not available (code {changes.unavailable})"
            return [], current
        self._tell(changes, current)
        current = replace(current, stream_token=changes.position)
        self.report.changes_read = changes.read
        log.info(
            "%s since the last run: %s delivered or corrected",
            plural(changes.read, "change"),
            plural(len(changes.ids), "order"),
        )
        return changes.ids, current

    def _tell(self, changes: ChangesSince, current: Pass) -> None:
        """What the read of the changes met: an invalidate (a warning), a quiet end (the log)."""
        if changes.invalidate is not None:
            when = event_time(changes.invalidate)
            self._say(
                f"the orders' change stream was invalidated{f' at {when.isoformat()}' if when else ''} "
                "(the collection dropped, renamed or restored with --drop since the last run): this run "
                "reads the changes after it by delivery stamp, and the next run reads the stream from "
                "this run's start, past it; a delivery synced with an older stamp waits for the full "
                "sweep (or --full)"
            )
        elif changes.stalled:
            self._say(
                "the change stream stood behind this pass's position for "
                f"{CHANGES_QUIET_WAIT_S:.0f} s (a shard not past its periodic no-op, a long history "
                "still being scanned, a majority commit point behind): this run read up to where it "
                "stood, and the next run reads on from there"
            )
        elif changes.position is not None and changes.position != current.stream_token:
            log.debug(  # the usual case on a quiet source: nothing for the user to do (-v says it)
                "the change stream's history ends short of this pass's position (no write since "
                "its last change; the position is a high-water mark past it): the next run reads "
                "on from where it ends"
            )

    def _skips_archived(self, current: Pass) -> bool:
        """Whether this pass skips the orders the archive holds, asking it by ``_id`` a page at a
        time (``OrderSource.pages``): a full pass, unless the archive is empty (a first run), which
        has nothing to skip and streams the window in one aggregation, the fast path (an order
        the watcher archives meanwhile is written again as it is: the writer is idempotent)."""
        if not current.full:
            return False
        if self.archive is None:
            return True
        archive = self.archive
        return retrying(lambda: archive.find_one({}, {"_id": 1}), stop_event=self.stop_event) is not None

    def _say(self, warning: str) -> None:
        log.warning(warning)
        self.report.warnings.append(warning)

    def _log(self, current: Pass, state: BatchState, reason: str) -> None:
        if current.full:
            log.info("full pass (%s)", reason)
            return
        log.info(
            "incremental pass: orders delivered since %s (high-water mark %s less BATCH_OVERLAP %s)",
            current.since.isoformat() if current.since else "",
            state.high_water.isoformat() if state.high_water else "",
            self.settings.batch_overlap,
        )


def own_checkpoint(options: BatchOptions) -> str:
    """What gives a run a checkpoint of its own, as its first run says it: ``this window
    (--date-from 2026-11-07)``, ``this share (--partition 1/4)``; "" for the runs without."""
    flags = [
        f"{flag} {day(bound)}"
        for flag, bound in (("--date-from", options.date_from), ("--date-to", options.date_to))
        if bound is not None
    ]
    what = ["window"] if flags else []
    if options.partition is not None:
        flags.append(f"--partition {options.partition}")
        what.append("share")
    return f"this {' and '.join(what)} ({' '.join(flags)})" if flags else ""


def day(moment: datetime) -> str:
    """A window's bound as given: a day (``7d``, ``today``: 00:00 UTC) by its date alone."""
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return moment.date().isoformat()
    return moment.isoformat()


def unavailable_history(code: int, full: bool) -> str:
    """What a run without the change history since the last one misses, said of its own pass."""
    head = f"the change history since the last run is not available (code {code}): "
    if full:
        return head + (
            "this full pass archives every delivered order not archived yet, but may miss a "
            "correction of an order archived before (watch, or a later run that reads the change "
            "history, revises it)"
        )
    return head + (
        "this incremental run reads delivery stamps only; a delivery synced with an older stamp "
        "waits for the full sweep (or --full)"
    )
