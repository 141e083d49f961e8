"""A dry run (``batch`` without ``--run``): the pass read as ``--run`` would read it, and what it
would do counted (the orders it would archive, reject and, with ``--purge-source``, delete),
with sample documents. Nothing is written. (The indexes and retentions it would apply: the
job's ``lifecycle`` and ``index_step``, planned after it.)"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from order_archiver.batch.rejections import RejectionLog
from order_archiver.batch.report import BatchOptions, BatchReport, PassTimer
from order_archiver.batch.samples import keep_samples
from order_archiver.batch.writing import ChunkWriting
from order_archiver.mongodb.purge import SourcePurge
from order_archiver.mongodb.source import Chunk
from order_archiver.mongodb.storage import TAKEN_NUMBER
from order_archiver.orders.pii import OrderFields
from order_archiver.orders.rejection import Rejection
from order_archiver.reporting.progress import Progress


@dataclass(frozen=True)
class DryRun:
    report: BatchReport
    options: BatchOptions
    writing: ChunkWriting  # asks the archive what it holds already, as --run would
    rejections: RejectionLog
    shown: OrderFields  # the samples' fields shown unmasked (known not to be personal)
    # After each chunk: the run's limits, as --run meets them (``Throttle.check``: a clean end)
    boundary: Callable[[], None] = lambda: None

    def examine(self, chunks: Iterable[Chunk], purge: SourcePurge | None, progress: Progress | None) -> None:
        """The pass's ``chunks``, counted into the report; ``purge``: --purge-source's."""
        report = self.report
        new_purgeable = 0  # what --run would archive, then delete
        for chunk in PassTimer(report).timed(chunks):
            # What --run would write (``writing.ChunkWriting``): an order archived as it is is done.
            unwritten = self.writing.unwritten(chunk.documents)
            documents = unwritten.documents
            report.already_archived += unwritten.already_archived
            # Another order's numero_commande: the archive's unique index would refuse them.
            taken = self.writing.writer.numbers_taken(unwritten) if documents else []
            refused = [Rejection.of(d, TAKEN_NUMBER) for d in taken]
            taken_ids = {d["_id"] for d in taken}
            documents = [d for d in documents if d["_id"] not in taken_ids]
            report.would_archive += len(documents)
            new_purgeable += purge.old_enough(documents) if purge is not None else 0
            self.rejections.count_dry(chunk.rejections + refused)
            if progress is not None:  # the orders gone through, as the summary counts them
                progress.update(
                    chunk.scanned,
                    would_archive=len(documents),
                    already_archived=unwritten.already_archived + chunk.skipped,
                    would_reject=len(chunk.rejections) + len(refused),
                )
            keep_samples(report, self.options, documents, self.shown)
            self.boundary()
        if purge is not None:
            # What --run would delete: the archived orders now, and what this run would archive.
            report.would_purge = purge.count() + new_purgeable
