"""Writing a batch chunk: what the archive already holds set aside, then the archiving step.

A read that did not skip the archived orders on the server (the archive in another database
or on another deployment, an incremental pass, a first run) hands the writer orders the
archive may hold already. Asking the archive first which of them it holds in this very
version (``ArchiveWriter.not_archived_as_they_are``: one read by ``_id``) spares a re-run the
sending of documents it holds; on orders it does not hold (a first run: every one) the
question is one more round trip per chunk for nothing. Either way the result is the same:
the write is an insert that never rewrites a document, and one refused on an archived
order's ``_id`` compares it by ``source_hash`` (``ArchiveWriter.revise``). So the run asks while asking
finds something, and asks again as soon as a write meets orders the archive held.

Whether it asked or not, the record of forgotten persons is read before the write and after
it (``storage.Unwritten.known``), never twice before. When the next chunk is read already (the
reader is ahead: ``source.ReadAhead.ready``), the read after this write reads the record for
its orders too, and serves as the read before its write: one read a chunk, not two. The
guarantee is the same: a person recorded before that read is written erased; one recorded
after it, before or while the next chunk is written, is found by the read after that write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from order_archiver.documents import ArchiveDocument
from order_archiver.mongodb.readings import Readings
from order_archiver.mongodb.step import ArchiveCounts, ArchivingStep
from order_archiver.mongodb.storage import ArchiveWriter, Expected, Unwritten
from order_archiver.orders.erasing import Forgotten
from order_archiver.orders.rejection import Rejection


@dataclass
class ChunkWriting:
    """Archive one chunk after another through ``step``, asking the archive first (see above)
    while that pays. ``skipped_on_read``: the pass's read already left out what the archive
    holds (``OrderSource.exclude_archived_in``), nothing to ask."""

    writer: ArchiveWriter
    step: ArchivingStep
    skipped_on_read: Callable[[], bool]
    asks_first: bool = True  # a first chunk asks: on a re-run, the archive holds them all
    # The record as read after the last write for the chunk that was ready then (its documents
    # as handed over: the same objects), for that chunk's write.
    known_next: tuple[list[ArchiveDocument], Forgotten] | None = None
    # With readings (the watcher's catch-up, ``BatchOptions.as_read``): a chunk replaces no
    # archived copy (its write read none before its orders); an order held in another version,
    # maybe newer, is read again after its copy (``Readings.archive``).
    readings: Readings | None = None

    def unwritten(self, documents: list[ArchiveDocument], known: Forgotten | None = None) -> Unwritten:
        """What the archive does not hold of ``documents`` as they are (a dry run counts them)."""
        if self.skipped_on_read() or not documents:
            return Unwritten(documents, 0, known)
        return self.writer.not_archived_as_they_are(documents, known)

    def write(
        self,
        documents: list[ArchiveDocument],
        rejections: list[Rejection],
        upcoming: list[ArchiveDocument] | None = None,
    ) -> ArchiveCounts:
        """Archive ``documents`` (and record ``rejections``): what it did, the orders found
        archived as they are among ``already_archived``. ``upcoming``: the next chunk's
        documents when it is read already (the record is read for them after this write)."""
        held, known = 0, self._known_for(documents)
        if self.asks_first:
            documents, held, known, _ = self.unwritten(documents, known)
        as_read: Expected = None if self.readings is None else {}
        counts = self.step.archive(documents, rejections, known, upcoming, expected=as_read)
        counts.already_archived += held
        self.asks_first = counts.already_archived + counts.revised + len(counts.conflicts) > 0
        read = counts.known_upcoming
        self.known_next = (upcoming, read) if upcoming is not None and read is not None else None
        if counts.conflicts and self.readings is not None:
            counts = counts.plus(self.readings.archive(list(counts.conflicts), None).counts)
        return counts

    def _known_for(self, documents: list[ArchiveDocument]) -> Forgotten | None:
        """The record as read after the last write, if it was read for these very documents."""
        ahead, self.known_next = self.known_next, None
        return ahead[1] if ahead is not None and ahead[0] is documents else None
