"""The one archiving step, shared by a batch chunk, a watch micro-batch, the watcher's catch-up
and ``verify --repair`` (through the batch): the fence (a watcher that lost its lease writes
nothing more), the write (``storage.ArchiveWriter``: idempotent, respecting erasures), the
rejections recorded after the writes that met them, and one type of counts that the batch's
report and the watcher's statistics both add up."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from order_archiver.documents import ArchiveDocument, OrderId
from order_archiver.mongodb.storage import ArchiveWriter, Held
from order_archiver.orders.erasing import Forgotten
from order_archiver.orders.rejection import Rejection


@dataclass
class ArchiveCounts:
    """What archiving some orders did."""

    archived: int = 0  # written for the first time
    already_archived: int = 0  # found in the archive in this very version
    revised: int = 0  # replaced by a corrected version of their order
    rejected: int = 0  # invalid, or refused by the archive one by one
    # Not a count: the record of forgotten persons as read after the write for the next
    # write's documents (``ArchiveWriter.write(upcoming=...)``), handed to that write.
    known_upcoming: Forgotten | None = None
    # Not a count either: the orders the archive refused in this write (the watcher's ``-v``
    # lines name the others archived).
    refused: frozenset[object] = frozenset()
    # Nor this: with ``expected``, the orders not written because the archive holds another
    # version than expected (``ArchiveWriter.write``): to be read again.
    conflicts: frozenset[object] = frozenset()
    # Nor these: the orders found archived as they are (not written), and those revised; the
    # others written were archived (the watcher's ``-v`` line for each, its latency).
    found: frozenset[object] = frozenset()
    replaced: frozenset[object] = frozenset()

    @property
    def orders(self) -> int:
        """The orders these counts are of: each counted once, as what it ended as."""
        return self.archived + self.already_archived + self.revised + self.rejected

    def plus(self, other: ArchiveCounts) -> ArchiveCounts:
        return ArchiveCounts(
            self.archived + other.archived,
            self.already_archived + other.already_archived,
            self.revised + other.revised,
            self.rejected + other.rejected,
        )


@dataclass(frozen=True)
class ArchivingStep:
    """Archive finished orders: ``fence`` first (``Lease.check``: raises when this writer is no
    longer the leader), then the write, then ``record`` the rejections (the finishing step's and
    the archive's refusals), after the writes that met them."""

    writer: ArchiveWriter
    record: Callable[[list[Rejection]], Any]
    fence: Callable[[], None] | None = None
    hold: Callable[[], None] | None = None  # --max-lag: before the write, wait while a secondary lags

    def archive(
        self,
        documents: list[ArchiveDocument],
        rejections: list[Rejection],
        known: Forgotten | None = None,
        upcoming: list[ArchiveDocument] | None = None,
        expected: Mapping[OrderId, Held] | None = None,
    ) -> ArchiveCounts:
        """``known``: the record of forgotten persons as just read for ``documents`` (asking
        the archive, or after the write before), not read again before the write, unless
        ``hold`` may have waited since (minutes: a person forgotten meanwhile is written erased,
        not erased only by the read after the write). ``upcoming``: the next write's documents,
        for which the read after this write reads the record too (``known_upcoming``).
        ``expected``: what the archive held of them before they were read (``ArchiveWriter.write``)."""
        counts = ArchiveCounts()
        met = list(rejections)
        if documents:
            if self.hold is not None:
                self.hold()
            if self.fence is not None:
                self.fence()  # fencing: a writer that lost its lease writes nothing more
            held = self.hold is not None  # the next write waits again first: its own read then
            outcome = self.writer.write(
                documents,
                known=None if held else known,
                upcoming=None if held else upcoming,
                expected=expected,
            )
            counts = ArchiveCounts(outcome.archived, outcome.already_archived, outcome.revised)
            counts.known_upcoming = outcome.known_upcoming
            counts.refused = frozenset(r.order_id for r in outcome.rejections)
            counts.conflicts = frozenset(outcome.conflicts)
            counts.found, counts.replaced = frozenset(outcome.found), frozenset(outcome.replaced)
            met += outcome.rejections
        if met:
            self.record(met)
        counts.rejected = len(met)
        return counts
