"""What a watcher counts, and the line it logs every ``WATCH_LOG_INTERVAL_S``."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from order_archiver.documents import OrderId
from order_archiver.logs import STATS, get_logger, plural
from order_archiver.mongodb.readings import Archived
from order_archiver.mongodb.step import ArchiveCounts

log = get_logger("watch")


def caught_up_said(counts: ArchiveCounts) -> str:
    """What the watcher's catch-ups did, in orders (the batch path's), said apart from the
    stream's events: "in all N events" adds up to its events alone."""
    return (
        f"catch-up: {plural(counts.orders, 'order')}: {counts.archived} archived, "
        f"{counts.already_archived} already archived, {counts.revised} revised, {counts.rejected} rejected"
    )


@dataclass
class WatchStats:
    """The stream's events, each counted once as what it ended as: archived, already archived,
    revised, rejected, or skipped (its order deleted or no longer delivered, at its event or
    when read again; past ARCHIVE_RETENTION or ARCHIVE_COLD_AFTER; or the same order's event
    again in one micro-batch, its order archived once). The catch-ups' orders: ``caught_up``."""

    events: int = 0
    archived: int = 0
    already_archived: int = 0
    revised: int = 0
    rejected: int = 0
    skipped: int = 0
    past_cold_after: int = 0  # deliveries not archived: before the cold tier's cutoff
    past_retention: int = 0  # deliveries not archived: past ARCHIVE_RETENTION
    batches: int = 0
    last_event_at: datetime | None = None
    last_saved_at: float = 0.0
    reconnects: int = 0
    catch_ups: int = 0
    caught_up: ArchiveCounts = field(default_factory=ArchiveCounts)  # the catch-ups' orders, apart
    # Change to archive write acknowledged: the greatest of the last micro-batch that wrote an
    # order (archived or revised; one found archived already is not counted).
    last_latency_s: float | None = None

    def add(self, events: int, counts: ArchiveCounts) -> None:
        """What a micro-batch of ``events`` did: each event not among ``counts``' orders skipped."""
        self.events += events
        self.archived += counts.archived
        self.already_archived += counts.already_archived
        self.revised += counts.revised
        self.rejected += counts.rejected
        self.skipped += events - counts.orders

    def totals(self) -> str:
        """``N events: … archived, … skipped``, then the catch-ups' orders, if any: each adds up."""
        stream = (
            f"{plural(self.events, 'event')}: {self.archived} archived, {self.already_archived} already "
            f"archived, {self.revised} revised, {self.rejected} rejected, {self.skipped} skipped"
        )
        return f"{stream}; {caught_up_said(self.caught_up)}" if self.catch_ups else stream

    def held_back(self, document: Mapping[str, object], setting: str) -> None:
        """A delivery not archived: past ARCHIVE_COLD_AFTER (the cold tier's cutoff, or the
        boundary a move recorded) or ARCHIVE_RETENTION; said (one line each, a warning: the
        order's change reaches no archive) and counted for the stopped line."""
        if setting == "ARCHIVE_COLD_AFTER":
            self.past_cold_after += 1
            why = (
                "before the cold tier's cutoff (ARCHIVE_COLD_AFTER, or the boundary a move recorded): "
                "the archive takes no order that old, and a cold file is never changed by a later "
                "delivery or correction"
            )
        else:
            self.past_retention += 1
            why = "longer ago than ARCHIVE_RETENTION: the archive would expire it at once"
        log.warning(
            "order %s (%s) delivered %s, %s: not archived, it stays in the source",
            document.get("numero_commande"),
            document.get("_id"),
            document.get("date_livraison"),
            why,
        )

    def stopped_line(self) -> str:
        held = [
            f"{self.past_cold_after} past ARCHIVE_COLD_AFTER" if self.past_cold_after else "",
            f"{self.past_retention} past ARCHIVE_RETENTION" if self.past_retention else "",
        ]
        not_archived = " and ".join(h for h in held if h)
        # Those held back are among the skipped events (``held_back``): said apart, with why.
        return f"stopped: {self.totals()}" + (
            f"; skipped: {not_archived} (not archived, left in the source)" if not_archived else ""
        )


@dataclass
class StatsLog:
    """The periodic line: what happened since the last one. A quiet stream is "idle", not
    "behind": lag is measured on the events archived, never on the clock."""

    stats: WatchStats
    interval_s: float
    logged_at: float = field(default_factory=time.monotonic)
    events_at_last_line: int = 0

    def archived(
        self, done: Archived, changed_at: Mapping[OrderId, datetime], acknowledged: datetime
    ) -> list[float]:
        """What a micro-batch's write did to each order, its latencies returned: one a written
        order (archived or revised), from its oldest change in the micro-batch to the write
        acknowledged; none for an order found archived already. ``last_latency_s``: the
        greatest of them, kept from an earlier micro-batch when this one wrote nothing."""
        latencies = {
            d["_id"]: max((acknowledged - changed_at[d["_id"]]).total_seconds(), 0.0)
            for d in done.written
            if d["_id"] in changed_at
        }
        if latencies:
            self.stats.last_latency_s = max(latencies.values())
        if log.isEnabledFor(logging.DEBUG):
            for document in done.written:
                latency = latencies.get(document["_id"])
                took = f", {latency * 1000:.0f} ms after its change" if latency is not None else ""
                what = "revised" if document["_id"] in done.revised else "archived"
                log.debug("%s order %s (%s)%s", what, document["numero_commande"], document["_id"], took)
            for document in done.found:
                log.debug(
                    "order %s (%s) already archived: nothing written",
                    document["numero_commande"],
                    document["_id"],
                )
        return list(latencies.values())

    def maybe(self) -> None:
        if time.monotonic() - self.logged_at < self.interval_s:
            return
        self.logged_at = time.monotonic()
        stats = self.stats
        recent = stats.events - self.events_at_last_line
        self.events_at_last_line = stats.events
        if recent:
            latency = stats.last_latency_s
            after = f", last archived {latency:.2f}s after its change" if latency is not None else ""
            state = f"{plural(recent, 'new event')}{after}"
        else:
            last = stats.last_event_at.isoformat() if stats.last_event_at else "none yet"
            state = f"idle (last event {last})"
        caught_up = stats.caught_up
        log.info(
            "watch: %s; in all %s",
            state,
            stats.totals(),
            extra={
                STATS: {
                    "events": stats.events,
                    "new_events": recent,
                    "archived": stats.archived,
                    "already_archived": stats.already_archived,
                    "revised": stats.revised,
                    "rejected": stats.rejected,
                    "skipped": stats.skipped,
                    "catch_up_orders": caught_up.orders,
                    "catch_up_archived": caught_up.archived,
                    "catch_up_already_archived": caught_up.already_archived,
                    "catch_up_revised": caught_up.revised,
                    "catch_up_rejected": caught_up.rejected,
                    "last_latency_s": stats.last_latency_s,
                    "idle": not recent,
                }
            },
        )
