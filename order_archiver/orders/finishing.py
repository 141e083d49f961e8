"""Finishing: the pure decisions that turn an enriched order into an archive document, shared
by every path that archives (a batch chunk, a watch micro-batch, the catch-up, ``verify``):
validate and build it (``enrichment.finish_archive_document``), apply ARCHIVE_PII, stamp it,
erase it if it is past ARCHIVE_PII_RETENTION, and the one sort of an order: rejected, past
ARCHIVE_RETENTION, outside the window, or to archive (``Finisher.place``). No server."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from order_archiver.documents import ArchiveDocument
from order_archiver.errors import InvalidOrderError
from order_archiver.orders.enrichment import as_utc, finish_archive_document, retention_date
from order_archiver.orders.erasing import BY_AGE, Erasure
from order_archiver.orders.pii import CONTRACT_FIELDS, PiiPolicy
from order_archiver.orders.rejection import Rejection


def finish_one(
    item: dict[str, object] | Rejection,
    *,
    archived_by: str,
    archived_at: datetime,
    pii: PiiPolicy | None = None,
) -> ArchiveDocument | Rejection:
    """The archive document of one enriched order, or why it cannot be archived."""
    if isinstance(item, Rejection):
        return item
    try:
        return finish_archive_document(item, archived_by=archived_by, archived_at=archived_at, pii=pii)
    except InvalidOrderError as exc:
        return Rejection.of(item, exc.reason)


@dataclass
class Finished:
    documents: list[ArchiveDocument] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    past_retention: int = 0  # delivered longer ago than ARCHIVE_RETENTION: not archived
    past_cold_after: int = (
        0  # delivered longer ago than ARCHIVE_COLD_AFTER (not ARCHIVE_RETENTION): not archived
    )
    outside_window: int = 0  # a string date_commande outside the window, read only now
    # Those past ARCHIVE_RETENTION or ARCHIVE_COLD_AFTER, each with the setting that held it
    # back: a watcher says each (a chunk's at most: the batch counts them only).
    held_back: list[tuple[ArchiveDocument, str]] = field(default_factory=list)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Finisher:
    """The one way batch, watch and verify turn enriched orders into archive documents: who
    archives them, under which PII policy (ARCHIVE_PII), stamped by which clock, and which are
    past ARCHIVE_RETENTION (``expire_after``): an order delivered longer ago is not archived
    (again), since MongoDB would expire its document within a minute; it stays in the source,
    where no purge moves it. An order past ARCHIVE_PII_RETENTION (``erase_after``: a
    correction of an old order) is archived erased, as the retention would leave it. Built
    from the settings (``Settings.finisher``), so that no command finishes orders its own way."""

    archived_by: str
    pii: PiiPolicy | None
    clock: Callable[[], datetime] = utc_now
    expire_after: timedelta | None = None
    erase_after: timedelta | None = None
    # ARCHIVE_COLD_AFTER: an order delivered longer ago belongs to the cold tier, not archived
    # (again): a correction, a full sweep or verify --repair never brings a moved order back.
    cold_after: timedelta | None = None
    # The cold tier's recorded boundary (``cold.record``: the archive says which deliveries a
    # move may have taken), whatever ARCHIVE_COLD_AFTER says now, or if it is unset: an order
    # delivered before it is not archived again. A callable: a watcher's is read again while it runs.
    cold_boundary: Callable[[], datetime | None] = lambda: None

    def one(self, item: dict[str, object] | Rejection, archived_at: datetime) -> ArchiveDocument | Rejection:
        done = finish_one(item, archived_by=self.archived_by, archived_at=archived_at, pii=self.pii)
        if isinstance(done, Rejection) or not self._older_than(done, self.erase_after, archived_at):
            return done
        fields = self.pii.fields if self.pii is not None else CONTRACT_FIELDS
        return Erasure(client=True, courier=True, by=BY_AGE, at=archived_at, fields=fields)(done)

    def expired(self, document: Mapping[str, object], now: datetime) -> bool:
        """Delivered (ordered, without a ``date_livraison``) longer ago than ARCHIVE_RETENTION."""
        return self._older_than(document, self.expire_after, now)

    @staticmethod
    def _older_than(document: Mapping[str, object], length: timedelta | None, now: datetime) -> bool:
        counted_from = retention_date(document)
        if length is None or counted_from is None:
            return False
        return counted_from < as_utc(now) - length

    def in_cold_tier(self, document: Mapping[str, object], now: datetime) -> bool:
        """Delivered before the later of ``now - ARCHIVE_COLD_AFTER`` and the recorded boundary."""
        if self._older_than(document, self.cold_after, now):
            return True
        # On date_livraison alone, as the move takes them (an order without one never moves).
        boundary, delivered = self.cold_boundary(), document.get("date_livraison")
        return (
            boundary is not None and isinstance(delivered, datetime) and as_utc(delivered) < as_utc(boundary)
        )

    def place(
        self,
        item: dict[str, object] | Rejection,
        archived_at: datetime,
        finished: Finished,
        in_window: Callable[[Any], bool] | None = None,
    ) -> None:
        """The one sort of an order, into ``finished``: rejected (invalid), past
        ARCHIVE_RETENTION or else ARCHIVE_COLD_AFTER (not archived, each counted apart), outside the window (a string ``date_commande`` read
        only now: not selected after all), or an archive document to write."""
        result = self.one(item, archived_at)
        if isinstance(result, Rejection):
            finished.rejections.append(result)
        elif self.expired(result, archived_at):
            finished.past_retention += 1
            finished.held_back.append((result, "ARCHIVE_RETENTION"))
        elif self.in_cold_tier(result, archived_at):
            finished.past_cold_after += 1
            finished.held_back.append((result, "ARCHIVE_COLD_AFTER"))
        elif in_window is not None and not in_window(result["date_commande"]):
            finished.outside_window += 1
        else:
            finished.documents.append(result)

    def all(self, items: Iterable[dict[str, object] | Rejection], archived_at: datetime) -> Finished:
        """Each order finished and sorted (``place``): the documents, the rejections, the counts."""
        finished = Finished()
        for item in items:
            self.place(item, archived_at, finished)
        return finished
