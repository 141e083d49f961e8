"""Orders read from the primary and archived, each archived copy replaced only as it was read
*before* the order: the watcher's way (its stream and its catch-up), where a writer paused past
its lease may wake after a successor archived a newer version.

A copy written between the read of the archive and the read of the order may hold a newer
version than the one read (a watcher that took over from this paused one archived a correction,
which a purge may already have taken from the source): it is never replaced by it
(``ArchiveWriter.write(expected=...)``), its order is read again after it (``conflicts``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from order_archiver.documents import ArchiveDocument, OrderId
from order_archiver.errors import TransientError
from order_archiver.logs import plural
from order_archiver.mongodb.source import enrich_each
from order_archiver.mongodb.step import ArchiveCounts, ArchivingStep
from order_archiver.mongodb.storage import Held, MongoCollection
from order_archiver.orders.enrichment import CollectionNames
from order_archiver.orders.finishing import Finisher
from order_archiver.retry import Retry, retrying

# How many times orders are read when the archive holds another version of them each time
# (written meanwhile by another writer): then the caller's unit of work is replayed.
READINGS = 5


@dataclass
class Archived:
    """What reading and archiving some orders did."""

    counts: ArchiveCounts = field(default_factory=ArchiveCounts)
    # The documents this write put in the archive (archived, or revised: ``revised`` names
    # those), and those it found there as they are (already archived: nothing written).
    written: list[ArchiveDocument] = field(default_factory=list)
    found: list[ArchiveDocument] = field(default_factory=list)
    revised: set[OrderId] = field(default_factory=set)
    finished: bool = False  # some order was finished (read delivered, not past a retention)
    skipped: int = 0  # delivered before ARCHIVE_RETENTION or ARCHIVE_COLD_AFTER: not archived
    held_back: list[tuple[ArchiveDocument, str]] = field(default_factory=list)  # those, and which setting

    def take(self, finished: list[ArchiveDocument], counts: ArchiveCounts) -> None:
        """What one reading's write did to each of ``finished``: written (archived or revised),
        found archived as it is, or neither (refused, or to be read again)."""
        unwritten = counts.refused | counts.conflicts
        for document in finished:
            order = document["_id"]
            if order in counts.found:
                self.found.append(document)
            elif order not in unwritten:
                self.written.append(document)
                if order in counts.replaced:
                    self.revised.add(order)


@dataclass(frozen=True)
class Readings:
    orders_primary: MongoCollection  # the order as it is now
    names: CollectionNames
    delivered_status: str
    finisher: Finisher
    step: ArchivingStep  # the fence (the lease), the write, the rejections recorded
    stop_event: threading.Event

    def archive(self, ids: list[OrderId], expected: Mapping[OrderId, Held] | None) -> Archived:
        """The delivered orders among ``ids``, read, finished and written. ``expected``: the
        archive's copies as read before the orders (``{}``: a first reading that asks nothing
        of the archive first, inserts and replaces nothing); None: read them first (orders read
        already, before their copies: a catch-up's chunk whose write met them)."""
        done = Archived()
        for _ in range(READINGS):
            if expected is None:
                expected = self.step.writer.archived_hashes(ids)  # before the orders: see above
            finished, counts = self._once(ids, expected, done)
            done.counts = done.counts.plus(counts)
            done.take(finished, counts)
            if not counts.conflicts:
                return done
            ids, expected = list(counts.conflicts), None
        raise TransientError(
            f"{plural(len(ids), 'order')} changed in the archive at each of {READINGS} readings: "
            "their orders are read again from where the work was last saved"
        )

    def _once(
        self, ids: list[OrderId], expected: Mapping[OrderId, Held], done: Archived
    ) -> tuple[list[ArchiveDocument], ArchiveCounts]:
        """One reading: the orders ``ids`` read from the primary, finished and written."""
        # (enrich_each matches the delivered status again: an order changed since it was named
        # is not among them, and its next event decides.)
        found = retrying(
            lambda: enrich_each(self.orders_primary, ids, self.delivered_status, self.names),
            purpose=Retry.READ,
            stop_event=self.stop_event,
        )
        finished = self.finisher.all(found, self.finisher.clock())
        done.finished = done.finished or bool(finished.documents)
        done.skipped += finished.past_retention + finished.past_cold_after
        done.held_back += finished.held_back
        counts = self.step.archive(finished.documents, finished.rejections, expected=expected)
        return finished.documents, counts
