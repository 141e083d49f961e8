"""Writing a batch chunk: what the archive already holds set aside, then the archiving step.

A read that did not skip the archived orders on the server (the archive in another database
or on another deployment, an incremental pass, a first run) hands the writer orders the
archive may hold already. Asking the archive first which of them it holds in this very
version (``ArchiveWriter.not_archived_as_they_are``: one read by ``_id``) spares a re-run the
sending of documents it holds; on orders it does not hold (a first run: every one) the
question is one more round trip per chunk for nothing. Either way the result is the same:
the write is an upsert that never rewrites a document, and one that meets an archived order
compares it by ``source_hash`` (``ArchiveWriter.revise``). So the run asks while asking
finds something, and asks again as soon as a write meets orders the archive held.

Whether it asked or not, the record of forgotten persons is read once before the write and
once after it (``storage.Unwritten.known``), never twice before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from order_archiver.documents import ArchiveDocument
from order_archiver.mongodb.step import ArchiveCounts, ArchivingStep
from order_archiver.mongodb.storage import ArchiveWriter, Unwritten
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

    def unwritten(self, documents: list[ArchiveDocument]) -> Unwritten:
        """What the archive does not hold of ``documents`` as they are (a dry run counts them)."""
        if self.skipped_on_read() or not documents:
            return Unwritten(documents, 0, None)
        return self.writer.not_archived_as_they_are(documents)

    def write(self, documents: list[ArchiveDocument], rejections: list[Rejection]) -> ArchiveCounts:
        """Archive ``documents`` (and record ``rejections``): what it did, the orders found
        archived as they are among ``already_archived``."""
        held, known = 0, None
        if self.asks_first:
            documents, held, known = self.unwritten(documents)
        counts = self.step.archive(documents, rejections, known)
        counts.already_archived += held
        self.asks_first = counts.already_archived + counts.revised > 0
        return counts
