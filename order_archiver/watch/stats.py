"""What a watcher counts, and the line it logs every ``WATCH_LOG_INTERVAL_S``."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from order_archiver.logs import STATS, get_logger, plural
from order_archiver.mongodb.step import ArchiveCounts

log = get_logger("watch")


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

    def add(self, counts: ArchiveCounts) -> None:
        """What the archiving step did (a micro-batch, or the catch-up)."""
        self.archived += counts.archived
        self.already_archived += counts.already_archived
        self.revised += counts.revised
        self.rejected += counts.rejected

    def stopped_line(self) -> str:
        return (
            f"stopped: {plural(self.events, 'event')}, {plural(self.archived, 'order')} archived, "
            f"{self.already_archived} already archived, {self.revised} revised, {self.rejected} rejected"
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
        self, documents: Sequence[Mapping[str, object]], times: list[datetime], acknowledged: datetime
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
