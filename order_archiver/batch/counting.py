"""How many delivered orders a batch pass had: the orders it went through, those the read
skipped as archived included (``ChunkReader``: scanned and already archived), so that a
completed run's report adds up: ``archived + already_archived + revised + rejected +
past_retention + past_cold_after + outside_window == delivered``; and the progress bar's total
(one index count)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from order_archiver.batch.report import BatchOptions, BatchReport
from order_archiver.errors import ArchiverError
from order_archiver.logs import get_logger
from order_archiver.mongodb.source import OrderSource
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.orders.selection import date_range
from order_archiver.retry import Retry, retrying

log = get_logger("batch")


@dataclass
class DeliveredCount:
    orders: MongoCollection
    archive: MongoCollection
    options: BatchOptions
    report: BatchReport
    stop_event: threading.Event

    def count(self, source: OrderSource) -> int | None:
        """The window's delivered orders (an index count on ``status, date_commande``); None if
        the count itself fails (never a reason to fail the run: the counts are then partial)."""
        if source.partition is not None:
            return None  # a share is the client's hash: no server count (docs/deployment.md)
        selection = source.selection()
        try:
            return int(
                retrying(
                    lambda: self.orders.count_documents(selection),
                    purpose=Retry.INFORM,
                    stop_event=self.stop_event,
                )
            )
        except ArchiverError as exc:
            log.warning("could not count the delivered orders (%s); counts will be partial", exc)
            return None

    def settle(self) -> None:
        """``delivered`` once the pass is complete: every order it went through (the run's
        own, after where a resumed pass was). With ``--limit`` the orders beyond the last one
        reached are unknown: ``delivered`` stays unset; so with a pass ended by its limits
        (``--max-runtime``, ``--stop-file``): the orders not reached are neither seen nor known
        to be archived."""
        report = self.report
        if self.options.limit is not None or report.ended is not None:
            return
        report.delivered = (
            report.scanned + report.outside_window + report.past_retention + report.past_cold_after
        )

    def progress_total(self, source: OrderSource) -> int | None:
        """The progress bar's total, an estimate (delivered in the window, less already
        archived): one index count, made only when progress is shown."""
        total = self.count(source)
        if total and source.exclude_archived_in is not None:  # ($limit: 0 is refused: none to count)
            total = max(total - self._archived_in_window(total), 0)
        if total is not None and self.options.limit is not None:
            total = min(total, self.options.limit)
        return total

    def _archived_in_window(self, at_most: int) -> int:
        """Archive documents of the window, counted up to ``at_most`` (the pass's delivered
        orders: more would be subtracted from nothing): an estimate of what the server will
        skip, for the progress bar only. After years of purges the archive holds tens of
        millions of orders the source no longer has: counted whole, a full pass with a small
        source counted every one of them (a count with a limit stops there)."""
        bounds = date_range(self.options.date_from, self.options.date_to)
        archive_filter = {"date_commande": bounds} if bounds else {}
        try:
            return int(
                retrying(
                    lambda: self.archive.count_documents(archive_filter, limit=at_most),
                    purpose=Retry.INFORM,
                    stop_event=self.stop_event,
                )
            )
        except ArchiverError:
            return 0
