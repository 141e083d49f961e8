"""How many delivered orders a batch pass had: the orders it went through, those the read
skipped as archived included (``ChunkReader``: scanned and already archived), so that a
completed run's report adds up: ``archived + already_archived + revised + rejected +
past_retention + past_cold_after + outside_window == delivered``; and the progress bar's total
(one index count)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from order_archiver.batch.report import BatchOptions, BatchReport
from order_archiver.documents import OrderId
from order_archiver.errors import ArchiverError
from order_archiver.logs import get_logger
from order_archiver.mongodb.source import OrderSource
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.retry import Retry, retrying

log = get_logger("batch")


@dataclass
class DeliveredCount:
    orders: MongoCollection
    options: BatchOptions
    report: BatchReport
    stop_event: threading.Event

    def count(self, source: OrderSource, after_id: OrderId = None) -> int | None:
        """The window's delivered orders (an index count on ``status, date_commande``), those after
        ``after_id`` only when given (a resumed pass: a range of the ``status, _id`` index the pass
        reads, bounded by what is left); None if the count itself fails (never a reason to fail
        the run: the counts are then partial), and for a ``--partition`` share: its orders are
        those whose ``_id`` hashes to it on the client (orders/partition.py), a predicate no index
        holds, so the server could count a share only by reading the window whole."""
        if source.partition is not None:
            return None
        return self._counted(source, after_id)

    def estimate(self, source: OrderSource, after_id: OrderId = None) -> tuple[int | None, bool]:
        """A progress's total, and whether it is an estimate: ``count``'s; a share's, the window's
        count (after ``after_id``, the share's own checkpoint) divided by N, which the hash
        splits evenly (within 10 % at 100,000 ids: tests/unit/test_partition.py), so that a
        backfill's shares, the longest runs there are, say when they will be done ("~")."""
        if source.partition is None:
            return self.count(source, after_id), False
        window = self._counted(source, after_id)
        return (None if window is None else round(window / source.partition.count)), True

    def _counted(self, source: OrderSource, after_id: OrderId) -> int | None:
        selection = source.selection(after_id)
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

    def progress_total(self, source: OrderSource, after_id: OrderId = None) -> tuple[int | None, bool]:
        """The progress's total: the orders the pass goes through (its count is the summary's
        scanned, those the read skips as archived included), the window's delivered orders
        (one index count, made only when progress is shown; those past ARCHIVE_RETENTION or
        ARCHIVE_COLD_AFTER are not scanned: an estimate); a resumed pass's, those after where it
        resumes (``after_id``, the checkpoint's): what this run has left, which its rate and ETA
        are measured against (the whole window's count made a run with 1,200 left say "ETA
        398s" and end 5 s later). ``--limit`` caps the orders examined: the total, only where
        the read skips none. With it, whether the total is an estimate (a share's: ``estimate``)."""
        total, estimated = self.estimate(source, after_id)
        if total is not None and self.options.limit is not None and source.exclude_archived_in is None:
            total = min(total, self.options.limit)
        return total, estimated
