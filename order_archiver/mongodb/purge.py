"""``--purge-source``: deleting from the source the delivered orders the archive holds, each
only in the version the archive keeps."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from pymongo import DeleteOne

from order_archiver.documents import Document, OrderId, moment_or_none
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.source import OrderSource
from order_archiver.mongodb.storage import ArchiveWriter, Held, MongoCollection
from order_archiver.orders.enrichment import as_utc, source_hash, status_match
from order_archiver.orders.erasing import erased_source
from order_archiver.orders.pii import PiiPolicy
from order_archiver.orders.selection import IdList
from order_archiver.retry import Retry, deleted_across_retries, retrying
from order_archiver.settings import Settings

log = get_logger("batch")


def purge_cutoffs(
    settings: Settings, server_clock: Callable[[], datetime], stop_event: threading.Event
) -> dict[str, datetime | None]:
    """The purge's two limits on the server's clock (one clock for every host, read once):
    orders delivered before ``delivered_before`` may leave the source (PURGE_AFTER; None, 0d:
    every archived one), orders restored since ``held_since`` stay (RESTORE_HOLD; None, 0d:
    none held); with a cold tier, its restore marks older than ``marks_before`` are removed."""
    limits = {"delivered_before": settings.purge_after, "held_since": settings.restore_hold}
    cold = settings.archive_cold_url is not None
    if not any(limits.values()) and not cold:
        return {**dict.fromkeys(limits), "marks_before": None}
    now = retrying(server_clock, stop_event=stop_event)
    cutoffs = {name: now - length if length else None for name, length in limits.items()}
    cutoffs["held_since"] = held_since(settings, now)
    kept = max(settings.restore_hold or timedelta(0), MARKS_KEPT)
    return {**cutoffs, "marks_before": now - kept if cold else None}


def held_since(settings: Settings, now: datetime) -> datetime | None:
    """RESTORE_HOLD on ``now`` (the server's clock): an order restored since stays in the source
    (``restored_lately``); None (0d): none held. The purge's and status's one definition."""
    return now - settings.restore_hold if settings.restore_hold else None


def restored_lately(held: Held, since: datetime | None) -> bool:
    """Put back by ``restore`` since ``since`` (``held_since``): the order stays in the source.
    ``held.restored_at`` is the archive document's, or the cold tier's mark (``ColdHolding``)."""
    restored = held.restored_at
    return since is not None and isinstance(restored, datetime) and as_utc(restored) >= since


def held_as_it_is(pii: PiiPolicy, held: Held, order: Mapping[str, object]) -> bool:
    """The archive (or a cold file) holds ``order`` in this very version: its fingerprint under
    ARCHIVE_PII, erased as the held copy was if it was (``erasing.erased_source``)."""
    kept = pii.apply_order(order)
    if held.erased:
        kept = erased_source(kept, pii.fields)
    return held.source_hash == source_hash(kept)


# A cold restore's mark is kept this long at least (or RESTORE_HOLD if longer), whatever one
# purge's RESTORE_HOLD: a run with a shorter one (7d, 0d, once) does not remove the marks the
# usual one still honours. A mark is one small entry per cold restore (a support agent's task).
MARKS_KEPT = timedelta(days=365)


class ColdWitness(Protocol):
    """The cold tier (``cold.holding.ColdHolding``): what it holds of orders the archive does not
    (moved there before the purge reached them), for the same checks as the archive's copy; and
    its marks of the orders restored from it, which the purge that no longer honours them
    removes."""

    def __call__(self, ids: list[OrderId]) -> dict[OrderId, Held]: ...

    def prune_restore_marks(self, before: datetime, keep: Iterable[OrderId] = ()) -> int: ...


@dataclass
class PurgeCounts:
    purged: int = 0
    walked: int = 0  # the window's delivered orders gone through (what --max-rate paces)
    kept: int = 0  # archived, but left in the source: changed since it was archived
    # Of ``kept``, those whose only place is a cold file (older than ARCHIVE_COLD_AFTER): no pass
    # archives them again, the source holds the only copy of the change (a correction after a restore)
    kept_cold: list[OrderId] = field(default_factory=list)
    held: int = 0  # archived, but left in the source: restored within RESTORE_HOLD


class Shown(Protocol):
    """A progress (``reporting.progress.Progress``): a count, and what it was made of."""

    def update(self, count: int, **figures: int) -> None: ...


@dataclass
class PurgeProgress:
    """The purge's progress line (``SourcePurge.shown``): the orders walked, as ``--max-rate``
    pays for them, and what became of them in the summary's words (purged, kept, held)."""

    progress: Shown
    said: PurgeCounts = field(default_factory=PurgeCounts)

    def __call__(self, walked: int, counts: PurgeCounts) -> None:
        said, self.said = self.said, replace(counts)
        self.progress.update(
            walked,
            purged=counts.purged - said.purged,
            kept=counts.kept - said.kept,
            held=counts.held - said.held,
        )


@dataclass
class PurgeChunk:
    """One chunk of the window's delivered orders, as the purge sees it."""

    archived: int  # a majority of the archive holds them, not restored lately
    held: int  # restored within RESTORE_HOLD: they stay
    same: list[Document]  # of the archived, those the source still holds in the archived version
    # of the archived, those held by a cold file alone that the source holds changed since
    changed_cold: list[OrderId] = field(default_factory=list)


@dataclass(frozen=True)
class SourcePurge:
    """Delete the window's delivered orders whose archive document a majority holds, each
    only in the version that document keeps: the order is read, its fingerprint (under
    ARCHIVE_PII, as the archive keeps it) compared with the archived one, and the delete's
    own filter requires the whole order to be what was read (``$expr``: ``$$ROOT`` equal to
    it), so an order corrected after it was archived, even a moment before the delete, stays
    in the source until it is archived again. Every such order of the window, whatever pass
    ran (an incremental pass reads only its own deliveries). The walk is an index range on the
    source's delivered orders (``status, _id``): bounded by what is still in the source, not by
    the history the purge already moved."""

    orders_primary: MongoCollection
    window: OrderSource
    writer: ArchiveWriter
    pii: PiiPolicy
    delivered_status: str
    batch_size: int
    stop_event: threading.Event
    held_since: datetime | None = None  # RESTORE_HOLD: orders restored since stay in the source
    marks_before: datetime | None = None  # the cold restore marks older than this are removed
    restore_hold: str = ""  # RESTORE_HOLD as the settings say it, for the log
    # --max-rate: after each chunk walked, its orders (deleted or not: each was read)
    pace: Callable[[int], None] | None = None
    hold: Callable[[], None] | None = None  # before each chunk of deletes: the run's limits, --max-lag
    cold: ColdWitness | None = None  # the cold tier's copies, and its restore marks
    # After each chunk walked (its deletes done, before its pacing): its orders and the counts so
    # far (``PurgeProgress``: the purge's progress line, as the pass has its own)
    shown: Callable[[int, PurgeCounts], None] | None = None

    @classmethod
    def of_window(
        cls,
        source: OrderSource,
        orders_primary: MongoCollection,
        delivered_before: datetime | None = None,
        **parts: Any,
    ) -> SourcePurge:
        """The purge of ``source``'s window, whatever the pass: every delivered order in it
        (under PURGE_AFTER, every one delivered before ``delivered_before``)."""
        window = replace(
            source,
            orders=orders_primary,
            delivered_since=None,
            also_ids=IdList(),
            delivered_before=delivered_before,
        )
        return cls(orders_primary=orders_primary, window=window, **parts)

    @classmethod
    def of_run(
        cls,
        source: OrderSource,
        orders_primary: MongoCollection,
        writer: ArchiveWriter,
        settings: Settings,
        batch_size: int,
        server_clock: Callable[[], datetime],
        stop_event: threading.Event,
        pace: Callable[[int], None] | None = None,
        hold: Callable[[], None] | None = None,
        cold: ColdWitness | None = None,
    ) -> SourcePurge:
        """The purge a batch run makes after its pass, under the settings' limits."""
        return cls.of_window(
            source,
            orders_primary,
            **purge_cutoffs(settings, server_clock, stop_event),
            writer=writer,
            pii=settings.pii_policy,
            restore_hold=str(settings.restore_hold),
            delivered_status=settings.delivered_status,
            batch_size=batch_size,
            stop_event=stop_event,
            pace=pace,
            hold=hold,
            cold=cold,
        )

    def run(self, report: Callable[[PurgeCounts], None] | None = None) -> PurgeCounts:
        """Delete, a chunk at a time; what it did is handed to ``report`` even when it ends early
        (a limit of the run before a chunk, an error, a stop), and returned."""
        counts = PurgeCounts()
        try:
            return self._run(counts)
        finally:
            if report is not None:
                report(counts)

    def _run(self, counts: PurgeCounts) -> PurgeCounts:
        delivered = status_match(self.delivered_status)

        def walked(orders: int) -> None:
            counts.walked += orders
            if self.shown is not None:
                self.shown(orders, counts)

        for chunk in self.purgeable_chunks(walked):
            counts.held += chunk.held
            counts.kept_cold += chunk.changed_cold
            requests = [
                DeleteOne(
                    {
                        "_id": order["_id"],
                        "status": delivered,
                        "$expr": {"$eq": ["$$ROOT", {"$literal": order}]},
                    }
                )
                for order in chunk.same
            ]
            counts.kept += chunk.archived - len(requests)
            if not requests:
                continue
            if self.hold is not None:
                self.hold()
            still_there = {"_id": {"$in": [order["_id"] for order in chunk.same]}}
            deleted = deleted_across_retries(
                functools.partial(self.orders_primary.bulk_write, requests, ordered=False),
                len(requests),
                functools.partial(self.orders_primary.count_documents, still_there),
                stop_event=self.stop_event,
            )
            counts.purged += deleted
            counts.kept += len(requests) - deleted
        if self.cold is not None and self.marks_before is not None and not self.stop_event.is_set():
            # The walk is over: a mark older than MARKS_KEPT (and RESTORE_HOLD) holds no order,
            # but for a correction held in the source alone (its mark says so to status and verify).
            self.cold.prune_restore_marks(self.marks_before, counts.kept_cold)
        self._say_kept(counts)
        if counts.held:
            log.info(
                "%s left in the source: restored within RESTORE_HOLD (%s); a purge deletes them once "
                "that has passed",
                plural(counts.held, "archived order"),
                self.restore_hold,
            )
        return counts

    @staticmethod
    def _say_kept(counts: PurgeCounts) -> None:
        cold, archived = len(counts.kept_cold), counts.kept - len(counts.kept_cold)
        if archived:
            log.warning(
                "%s left in the source: changed since archived (the archive keeps the version "
                "before; a full pass or watch archives the new one), or archived by an earlier "
                "version without a fingerprint of the source order",
                plural(archived, "archived order"),
            )
        if cold:
            log.warning(
                "%s of the cold tier left in the source: changed since its cold file's copy (a "
                "correction after a restore from the cold tier), which no pass archives again (older "
                "than ARCHIVE_COLD_AFTER): the source holds the only copy of the change, for good; "
                "status and verify count them (docs/operating.md, the purge and the cold tier)",
                plural(cold, "order"),
            )

    def old_enough(self, documents: Sequence[Mapping[str, object]]) -> int:
        """How many of these archive documents a purge would move once archived."""
        cutoff = self.window.delivered_before
        if cutoff is None:
            return len(documents)
        delivered = (moment_or_none(d.get("date_livraison")) for d in documents)
        return sum(1 for moment in delivered if moment is not None and as_utc(moment) < cutoff)

    def count(self) -> int:
        """What a purge would delete now: the archived orders still in the version their
        archive document keeps."""
        return sum(len(chunk.same) for chunk in self.purgeable_chunks())

    def purgeable_chunks(self, walked: Callable[[int], None] | None = None) -> Iterator[PurgeChunk]:
        """The window's delivered orders whose archive document a majority holds, a chunk at a
        time: how many, how many of them restored lately, and the orders (read now) still in
        the version archived. Each chunk walked is paced once its consumer is done with it
        (after its deletes; a dry run's count too), on every order of it read, deleted or not:
        a walk over orders left in the source reads the primary as much as one that deletes.
        ``walked`` is told each chunk's orders then too, before the pacing's wait."""
        after_id = None
        while not self.stop_event.is_set():
            ids = retrying(
                functools.partial(
                    self.window.delivered_ids_after, after_id, self.window.widened(self.batch_size)
                ),
                purpose=Retry.WRITE,
                stop_event=self.stop_event,
            )
            if not ids:
                return
            after_id = ids[-1]
            owned = self.window.owned(ids)  # --partition: its share only
            confirmed = self.writer.confirmed_hashes(owned)
            unheld = [i for i in owned if i not in confirmed] if self.cold is not None else []
            in_cold = self.cold(unheld) if self.cold is not None and unheld else {}
            confirmed.update(in_cold)  # in exactly one checked cold file
            archived = {
                i: held for i, held in confirmed.items() if not restored_lately(held, self.held_since)
            }
            if archived:
                current = retrying(
                    functools.partial(self._orders_by_id, list(archived)), stop_event=self.stop_event
                )
                same = [o for o in current if held_as_it_is(self.pii, archived[o["_id"]], o)]
                unchanged = {o["_id"] for o in same}
                changed_cold = [
                    o["_id"] for o in current if o["_id"] in in_cold and o["_id"] not in unchanged
                ]
                yield PurgeChunk(len(archived), len(confirmed) - len(archived), same, changed_cold)
            elif confirmed:
                yield PurgeChunk(0, len(confirmed), [])
            if walked is not None:
                walked(len(owned))
            if self.pace is not None:
                self.pace(len(owned))

    def _orders_by_id(self, ids: list[OrderId]) -> list[Document]:
        return list(self.orders_primary.find({"_id": {"$in": ids}}))
