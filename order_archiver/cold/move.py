"""The move to the cold tier, crash-safe: each order in exactly one readable place.

For each delivery month with archived orders delivered before ``now - ARCHIVE_COLD_AFTER``:

1. a journal entry (the checkpoints collection, majority) names the file about to be written;
2. the month's archived orders are read in ``_id`` order, in pages (``scan_by_id``: cuts
   resumed), and written a row group at a time to a partial file no reader takes;
3. the file is read back and checked (count, ids, documents: SHA-256), else removed, and the
   run fails with the archive untouched;
4. it is published under its final name in one step, and the journal says so (majority);
5. the archive documents it holds are deleted (majority), each only in the version the file
   holds (``revised_at``, ``source_hash``): a correction written meanwhile stays in the archive,
   moved next time, its copy dropped from the file; the record of forgotten persons is read
   again first (a person recorded since step 3: their orders stay in the file, erased);
   the journal says so ("deleted"), then the file loses what it must (``ColdRewrite``);
6. the journal entry is removed.

Each file and each journal entry settled is a boundary (``rewrite.file_boundary``, #34): a
signal or a limit of the run (``context.gate``) ends the move there. A file once published is
finished before a limit ends the run (steps 5-6 under ``rewrite.FileInHand``: never its orders in
the archive and the file at once as a clean end); a signal does not wait for its deletes (a file
of up to a gigabyte) and ends the move between two chunks of them, as a crash would, its journal
entry left for the next run (``status`` names it meanwhile: ``tier.unsettled_moves``).
``--max-lag`` holds each chunk of deletes (until a limit has come), ``--max-rate`` paces each
(and each rewrite, its file's orders).

A crash anywhere leaves a journal entry, which the next run settles first: before step 4 the
partial file is removed (the orders are still in the archive); after it, a complete file's
orders are deleted from the archive (steps 5-6 again). A partial file is never read, a file is
never published unchecked, and nothing is deleted that a checked file does not hold.

Whoever else takes the move's lease to write the cold tier (``forget``: ``tier.cold_tier_writer``)
settles the same way first (``settle``), and no rewrite replaces a move's file before step 5 is
done (``ColdRewrite`` refuses it): a move's file is never renamed from under its entry while the
archive still holds its orders, which the next move would otherwise write again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from threading import Event
from typing import TypeVar

from bson import ObjectId
from pymongo import DeleteOne
from pymongo.cursor import Cursor

from order_archiver.cold.files import ColdFileWriter, FileSummary, batches, check_file, is_complete
from order_archiver.cold.manifest import ColdManifest
from order_archiver.cold.retention import remove_expired
from order_archiver.cold.rewrite import (
    JOURNAL_KIND,
    MOVE_DELETED,
    ColdRewrite,
    file_boundary,
    finishing,
    until_stopped,
)
from order_archiver.cold.schema import document_of, round_trips
from order_archiver.cold.store import ColdFile, ColdStore, Month, versions_kept_words
from order_archiver.context import RunContext
from order_archiver.documents import Document, MongoCollection, moment_or_none
from order_archiver.errors import FatalError, Interrupted
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.source import chunked, scan_by_id
from order_archiver.orders.enrichment import as_utc
from order_archiver.retry import Retry

log = get_logger("cold")
T = TypeVar("T")

DELETE_CHUNK = 1_000  # deletes per bulk write (a bounded command)
PAGE = 1_000  # archive documents per getMore of the month's walk


@dataclass
class ColdMoveReport:
    files: int = 0  # files published by this run
    moved: int = 0  # orders that left the archive for a cold file
    bytes: int = 0
    months: list[str] = field(default_factory=list)
    kept_revised: int = 0  # corrected while being moved: kept in the archive, moved next time
    kept_not_representable: int = 0  # not given back BSON-exact by a file (schema.round_trips): kept
    kept_erased: int = 0  # erased in the archive while being moved (a forget): kept there, erased
    kept_restored: int = 0  # restored while being moved (RESTORE_HOLD's mark): kept in the archive
    recovered: int = 0  # journal entries an interrupted run left, settled
    settled: int = 0  # of ``moved``: orders of a file an interrupted run published, out of the archive now
    expired_files: int = 0  # ARCHIVE_RETENTION: files of months wholly past it, removed
    expired_orders: int = 0
    pii_erased: int = 0  # ARCHIVE_PII_RETENTION: cold orders whose personal data was erased
    pii_rewritten: int = 0  # the files rewritten for it
    # On S3, once this run rewrote a file for an erasure (ARCHIVE_PII_RETENTION, a forget's
    # finished): whether the bucket keeps versions (``ColdStore.keeps_versions``): the files
    # replaced, with their personal data, then stay readable. None: not known (no rewrite, not S3)
    versions_kept: bool | None = None
    # Forgotten persons whose erasure in the cold tier a forget left unfinished, finished by this
    # run (tier.finish_forgotten), and the files it rewrote for them
    forgotten_finished: int = 0
    forgotten_rewritten: int = 0
    would_move: int | None = None  # a dry run: the archived orders past ARCHIVE_COLD_AFTER
    # A dry run with ARCHIVE_PII_RETENTION: the cold orders past it still holding personal data
    # (what the run's pii_erased would be: retention.count_by_age)
    would_erase_pii: int | None = None
    # A dry run with ARCHIVE_RETENTION: the cold files of months wholly past it, and their orders
    # (what the run's expired_files, expired_orders would be: retention.count_expired)
    would_expire_files: int | None = None
    would_expire_orders: int | None = None
    skipped: bool = False  # another batch run held the move's lease: nothing moved by this one
    # Published files found gone (spot_check: a few a run, in turn), and their orders
    gone_files: list[str] = field(default_factory=list)
    gone_orders: int = 0
    # The cold tier held no file after the run (its list of files and its place: ``tier.holds_none``):
    # the orders past ARCHIVE_COLD_AFTER that the pass did not archive are in the source alone.
    holds_none: bool = False

    def kept_by(self, dropped: Mapping[str, int]) -> None:
        """``kept_revised`` counted every copy kept (``ColdMove._delete_moved``): those a forget
        or a restore changed (``ColdRewrite.without``'s ``dropped``), not a correction, apart."""
        self.kept_erased += dropped.get("erased", 0)
        self.kept_restored += dropped.get("restored", 0)
        self.kept_revised -= dropped.get("erased", 0) + dropped.get("restored", 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "moved": self.moved,
            "bytes": self.bytes,
            "months": self.months,
            "kept_revised": self.kept_revised,
            "kept_not_representable": self.kept_not_representable,
            "kept_erased": self.kept_erased,
            "kept_restored": self.kept_restored,
            "recovered": self.recovered,
            "settled": self.settled,
            "expired_files": self.expired_files,
            "expired_orders": self.expired_orders,
            "pii_erased": self.pii_erased,
            "pii_rewritten": self.pii_rewritten,
            "forgotten_finished": self.forgotten_finished,
            "forgotten_rewritten": self.forgotten_rewritten,
            "versions_kept": self.versions_kept,
            "would_move": self.would_move,
            "would_erase_pii": self.would_erase_pii,
            "would_expire_files": self.would_expire_files,
            "would_expire_orders": self.would_expire_orders,
            "skipped": self.skipped,
            "gone_files": self.gone_files,
            "gone_orders": self.gone_orders,
            "holds_none": self.holds_none,
        }

    @property
    def anything(self) -> bool:
        """Whether the run did (or a dry run would do) anything in the cold tier worth a line:
        a run with nothing due says nothing (its --json keeps every field)."""
        if self.would_move is not None:
            return self.would_move > 0 or bool(self.would_erase_pii) or bool(self.would_expire_files)
        kept = (self.kept_revised, self.kept_erased, self.kept_restored, self.kept_not_representable)
        done = (self.moved, self.files, self.recovered, *kept)
        said = (self.pii_erased, self.expired_files, self.gone_files, self.forgotten_finished)
        return self.skipped or any(done) or any(said)

    def line(self) -> str | None:
        """For a person: what moved, or None when nothing did (see ``anything``)."""
        if not self.anything:
            return None
        if self.skipped:
            return "cold tier: another batch run is moving orders to it: nothing moved by this one"
        if self.would_move is not None:
            text = f"cold tier: would move {plural(self.would_move, 'archived order')} (dry run)"
            if self.would_erase_pii:
                erased = plural(self.would_erase_pii, "cold order")
                text += f"; would erase the personal data of {erased} (ARCHIVE_PII_RETENTION)"
            if self.would_expire_files:
                text += (
                    f"; would remove {plural(self.would_expire_orders or 0, 'cold order')} past "
                    f"ARCHIVE_RETENTION ({plural(self.would_expire_files, 'file')}, deleted for good)"
                )
            return text
        months = f" ({', '.join(self.months)})" if self.months else ""
        fresh = self.moved - self.settled  # out of the archive into this run's files
        clauses = "".join(self._clauses())
        if self.recovered and not self.files and not fresh:  # only what an interrupted run left
            return "cold tier: " + clauses.removeprefix("; ")
        return f"cold tier: {plural(fresh, 'order')} moved into {plural(self.files, 'file')}{months}{clauses}"

    def _clauses(self) -> Iterator[str]:
        """The line's parts after what moved: each said only when there is something to say."""
        if self.recovered:
            yield f"; {plural(self.recovered, 'interrupted move')} settled"
            if self.settled:
                yield f": {plural(self.settled, 'order')} left the archive, their file published by an earlier run"
        yield from self._kept_clauses()
        if self.pii_erased:
            yield f"; personal data of {plural(self.pii_erased, 'order')} erased (ARCHIVE_PII_RETENTION)"
        if self.forgotten_finished:
            yield (
                f"; the erasure of {plural(self.forgotten_finished, 'forgotten person')} a forget left "
                f"unfinished finished ({plural(self.forgotten_rewritten, 'file')} rewritten)"
            )
        if self.versions_kept and (self.pii_erased or self.forgotten_finished):
            yield f"; {versions_kept_words(self.pii_rewritten + self.forgotten_rewritten)}"
        if self.expired_files:
            yield f"; {plural(self.expired_orders, 'order')} past ARCHIVE_RETENTION removed ({plural(self.expired_files, 'file')})"
        if self.gone_files:
            yield (
                f"; {plural(len(self.gone_files), 'published file')} gone, {plural(self.gone_orders, 'order')} "
                f"in no place (verify names them): {', '.join(self.gone_files)}"
            )

    def _kept_clauses(self) -> Iterator[str]:
        """The orders kept in the archive, each reason apart (the corrected, the erased...)."""
        if self.kept_revised:
            yield f"; {self.kept_revised} corrected meanwhile, kept in the archive"
        if self.kept_erased:
            yield f"; {self.kept_erased} erased by a forget meanwhile, kept in the archive (erased)"
        if self.kept_restored:
            yield f"; {self.kept_restored} restored meanwhile, kept in the archive"
        if self.kept_not_representable:
            yield f"; {self.kept_not_representable} kept in the archive (not representable in a cold file)"


MONTH_ATTEMPTS = 3  # a month written again when a person was forgotten meanwhile


@dataclass
class _Leftovers:
    """What a published file must lose once its orders are deleted from the archive
    (``ColdMove._leftovers_removed``)."""

    stale: set[str] = field(default_factory=set)  # ids still archived, newer: the file's copy goes
    # Ids of persons forgotten since the move's last look: their erased copies (a few orders).
    erased: dict[str, Document] = field(default_factory=dict)

    def add_forgotten(self, held: list[Document], respected: list[Document]) -> None:
        """The record read again once the file is out (``respected``: ``held`` as the record
        says now), as the archive's writer reads it after each write
        (``forgotten.RespectedErasures.since``): a forget recorded after the move's last look
        (``_check_erasures``) may have looked at the cold files before this one was out, and
        erased the archive's copy without changing its version (``source_hash`` stays when the
        source copy held nothing more to erase), so that the delete takes it. Each order it
        now owes an erasure is kept, erased."""
        self.erased.update({str(d["_id"]): e for d, e in zip(held, respected, strict=True) if e != d})


class _ForgottenMeanwhile(Exception):
    """A person was forgotten while their orders were being written to a cold file."""


def _no_fault() -> None:
    """The default of ``ColdMove.before_publish``, ``after_publish``: nothing (a test kills the
    process there, or runs a forget there)."""


def journal_entry(key: str, month: Month, partial: str, final: str, started_at: datetime) -> Document:
    """A move's journal entry, before its file is written."""
    return {
        "_id": key,
        "kind": JOURNAL_KIND,
        "state": "writing",
        "month": str(month),
        "partial": partial,
        "final": final,
        "started_at": started_at,
    }


def published_fields(summary: FileSummary) -> Document:
    """What a move's journal entry says once its file is published."""
    return {
        "state": "published",
        "rows": summary.rows,
        "ids_sha256": summary.ids_sha256,
        "documents_sha256": summary.documents_sha256,
    }


def month_documents(
    archive: MongoCollection, month: Month, cutoff: datetime, stop: Event
) -> Iterator[Document]:
    """The month's archived orders delivered before ``cutoff``, on the ``{date_livraison, _id}``
    index, in its order: a cut resumes after the last (date, id) read (``scan_by_id`` gives the
    id, this the date)."""
    window = {"$gte": month.start, "$lt": min(month.next().start, cutoff)}
    last: dict[str, object] = {}

    def open_cursor(after_id: object) -> Cursor[Document]:
        query: Document = {"date_livraison": window}
        if after_id is not None:
            after = {
                "$or": [
                    {"date_livraison": {"$gt": last["date"]}},
                    {"date_livraison": last["date"], "_id": {"$gt": after_id}},
                ]
            }
            query = {"$and": [query, after]}
        # Until the index is ready (a large archive's build is left pending) the server sorts the
        # month in memory: allowed to spill (before 6.0 a sort past 100 MB that did not ask fails).
        return archive.find(
            query, sort=[("date_livraison", 1), ("_id", 1)], batch_size=PAGE, allow_disk_use=True
        )

    for document in scan_by_id(open_cursor, stop_event=stop):
        last["date"] = document.get("date_livraison")
        yield document


class JournalSettlement:
    """What interrupted runs left in the journal, settled (``ColdMove.settle``): before an
    entry's file was published, the partial file removed (the orders are still in the archive);
    after, a move's orders deleted from the archive (``moved_out``: the move's own steps 5-6),
    a rewrite's old file removed. Counted as ``recovered``."""

    def __init__(
        self,
        store: ColdStore,
        journal: MongoCollection,
        manifest: ColdManifest,
        context: RunContext,
        report: ColdMoveReport,
    ) -> None:
        self.store, self.journal, self.manifest, self.context = store, journal, manifest, context
        self.report = report

    def run(self, moved_out: Callable[[str, str], object], leave_unpublished: bool) -> None:
        """Each entry (``moved_out(key, path)``: a published move's orders out of the archive);
        with ``leave_unpublished``, not those whose file is not out."""
        entries = self.context.retrying(
            lambda: list(self.journal.find({"kind": JOURNAL_KIND}).limit(100)), purpose=Retry.READ
        )
        # A rewrite's entry first: one that published its file has removed (or now removes) the
        # file it replaced, which a move's entry left beside it must then not rewrite again.
        entries.sort(key=lambda entry: not entry.get("replaces"))
        for entry in entries:
            if leave_unpublished and not self._out(entry):
                continue
            file_boundary(self.context)  # #34: the entries left stay for the next run
            self._settle_one(entry, moved_out)

    def _out(self, entry: Document) -> bool:
        """Whether an entry's file was published (killed between the rename and the journal's
        "published", the file says it)."""
        return entry.get("state") != "writing" or self.store.exists(str(entry["final"]))

    def _settle_one(self, entry: Document, moved_out: Callable[[str, str], object]) -> None:
        """One entry. A move's file that is gone was replaced by a rewrite after the move's
        deletes (``MOVE_DELETED``: ``ColdRewrite`` refuses it before), or never published:
        either way the entry goes, the archive holding every order no file holds."""
        final, partial = str(entry["final"]), str(entry["partial"])
        self.store.remove(partial)
        if self.store.exists(final) and is_complete(self.store, final):
            self._finish(entry, final, moved_out)
        elif self.store.exists(final):
            # Published, then found damaged: never read, never deleted from; kept for a person.
            log.error("cold tier: %s does not read back whole; the archive keeps its orders", final)
            self.manifest.remove(final)
            self.store.set_aside(final, "damaged")
        elif entry.get("replaces") and entry.get("state") == "published":
            self.manifest.remove(str(entry["replaces"]))
            self.store.remove(str(entry["replaces"]))  # a rewrite that left nothing: no new file
        delete = functools.partial(self.journal.delete_one, {"_id": entry["_id"]})
        self.context.retrying(delete, purpose=Retry.WRITE)
        self.report.recovered += 1

    def _finish(self, entry: Document, final: str, moved_out: Callable[[str, str], object]) -> None:
        """What an interrupted entry's complete file still needs: a rewrite's old file removed
        (``erasure.ColdRewrite``), or a move's orders deleted from the archive."""
        self.manifest.add(final)  # killed between its publication and its listing, perhaps
        if entry.get("replaces"):
            log.warning("cold tier: an interrupted rewrite left %s: the file it replaces goes now", final)
            self.manifest.remove(str(entry["replaces"]))
            self.store.remove(str(entry["replaces"]))
        else:
            log.warning("cold tier: an interrupted move left %s: its orders leave the archive now", final)
            # The copies of orders corrected meanwhile (still archived, newer): dropped from
            # the file again, whether the killed run had begun that rewrite or not; those of
            # persons forgotten since its last look, erased.
            before = self.report.moved
            try:
                moved_out(str(entry["_id"]), final)
            finally:
                self.report.settled += self.report.moved - before


class ColdMove:
    """One run's move of the archive's old months to the cold tier."""

    def __init__(
        self,
        store: ColdStore,
        archive: MongoCollection,
        journal: MongoCollection,
        cutoff: datetime,
        context: RunContext | None = None,
        clock: Callable[[], datetime] | None = None,
        respect: Callable[[list[Document]], list[Document]] | None = None,
        expire_before: datetime | None = None,
    ) -> None:
        self.store, self.archive, self.journal, self.cutoff = store, archive, journal, cutoff
        self.context = context or RunContext()
        self.clock = clock or (lambda: cutoff)
        # The record of forgotten persons (``storage.ArchiveWriter.respecting_erasures``): an order
        # of a person forgotten since it was archived is written erased, never as it was.
        self.respect = respect or (lambda documents: documents)
        self.after_publish: Callable[[], None] = _no_fault  # the crash test's point: file out, archive whole
        # The race test's point: past the fence and the last look at the record, not yet published.
        self.before_publish: Callable[[], None] = _no_fault
        # The move's lease (``tier.move_to_cold``): checked before a file is published, so that a
        # run that lost it (stalled past its life) never publishes beside the run that took it.
        self.fence: Callable[[], None] = _no_fault
        self.expire_before = expire_before  # ARCHIVE_RETENTION's cutoff: whole months before it go
        self.manifest = ColdManifest(store, journal, self.context)  # the files published: verify's list
        self.report = ColdMoveReport()

    def run(self) -> ColdMoveReport:
        self.settle()
        for month in self.months():
            self.move_month(month)
        self.expire()
        return self.report

    def expire(self) -> None:
        """ARCHIVE_RETENTION in the cold tier (``retention.remove_expired``), counted file by file."""
        if self.expire_before is not None:
            remove_expired(self.store, self.manifest, self.expire_before, self.context, self._expired)

    def _expired(self, orders: int) -> None:
        self.report.expired_files += 1
        self.report.expired_orders += orders

    # -- what is due

    def months(self) -> Iterator[Month]:
        """From the oldest archived delivery before the cutoff to the cutoff's month."""
        oldest = self._read(
            lambda: self.archive.find_one(
                {"date_livraison": {"$lt": self.cutoff}}, {"date_livraison": 1}, sort=[("date_livraison", 1)]
            )
        )
        first = moment_or_none((oldest or {}).get("date_livraison"))
        if first is None:
            return
        month, last = Month.of(first), Month.of(self.cutoff)
        while (month.year, month.month) <= (last.year, last.month):
            yield month
            month = month.next()

    # -- one month

    def move_month(self, month: Month) -> None:
        """The month, a file at a time (``files.FILE_MAX_BYTES`` each at most, about): another
        while the last was full and moved orders out of the archive."""
        moved = self.report.moved
        while self._move_part(month) and self.report.moved > moved:
            moved = self.report.moved

    def _move_part(self, month: Month) -> bool:
        """One file of the month moved; whether it was full (the month may hold more)."""
        for _ in range(MONTH_ATTEMPTS):
            # A file boundary (#34): nothing in flight; a signal or the run's limits end the move
            # here (the next run goes on with this month), and --max-lag holds the next file.
            file_boundary(self.context)
            partial, final = self.store.new_file(month)
            self.store.prepare(month)
            key = f"{JOURNAL_KIND}:{final}"
            self._write(
                functools.partial(
                    self.journal.insert_one, journal_entry(key, month, partial, final, self.clock())
                )
            )
            forget_entry = functools.partial(self.journal.delete_one, {"_id": key})
            try:
                summary, full = self._written(month, partial)
            except _ForgottenMeanwhile:
                self._write(forget_entry)
                continue  # the month again: its orders read now are written erased
            except BaseException:
                self._write(forget_entry)
                raise
            self._published_and_moved(month, key, partial, final, summary)
            return full
        raise FatalError(
            f"cold tier: a person was forgotten while {month} was being written, {MONTH_ATTEMPTS} times "
            "in a row; the archive is untouched: run batch again"
        )

    def _written(self, month: Month, partial: str) -> tuple[FileSummary, bool]:
        """The month's archived orders in the partial file, read back and checked; a person
        forgotten meanwhile among them (``respect`` erases a document now) raises
        ``_ForgottenMeanwhile``: a file is never published with data an erasure removed."""
        writer = ColdFileWriter(self.store, partial, capped=True)
        try:
            archived = month_documents(self.archive, month, self.cutoff, self.context.stop)
            respected = (d for page in chunked(archived, PAGE) for d in self.respect(page))
            # A signal abandons the file in hand (rewrite.until_stopped): the archive keeps its orders.
            writer.add(until_stopped(_representable(respected, self.report), self.context))
            summary = writer.close()
            if summary.rows:
                check_file(self.store, partial, summary)
                self._check_erasures(partial)
        except BaseException:
            writer.abandon()
            raise
        return summary, writer.full

    def _check_erasures(self, partial: str) -> None:
        for batch in batches(self.store, partial, ["document"]):
            documents = [document_of(text) for text in batch["document"] if text is not None]
            if self.respect(documents) != documents:
                raise _ForgottenMeanwhile

    def _published_and_moved(
        self, month: Month, key: str, partial: str, final: str, summary: FileSummary
    ) -> None:
        if not summary.rows:
            self.store.remove(partial)
            self._write(lambda: self.journal.delete_one({"_id": key}))
            return
        try:
            self.fence()
        except BaseException:
            self.store.remove(partial)
            self._write(lambda: self.journal.delete_one({"_id": key}))
            raise
        self.before_publish()
        self.store.publish(partial, final)
        self.manifest.add(final, summary.rows)
        self._write(lambda: self.journal.update_one({"_id": key}, {"$set": published_fields(summary)}))
        self.after_publish()
        # The move's entry stays until the file has lost what it must: a crash in that rewrite
        # leaves it, and the next run (``JournalSettlement``) finds the same copies again and drops them.
        final_now = self._moved_out(key, final)
        self._write(lambda: self.journal.delete_one({"_id": key}))
        self.report.files += 1
        self.report.bytes += self.store.size(final_now) if final_now else 0
        if str(month) not in self.report.months:  # a month of several files: once
            self.report.months.append(str(month))
        log.info(
            "cold tier: %s of %s moved to %s", plural(summary.rows, "order"), month, self.store.url_of(final)
        )

    def _moved_out(self, key: str, path: str) -> str | None:
        """The published file's orders deleted from the archive (``_delete_moved``), its entry
        marked so (``MOVE_DELETED``: from here on a rewrite may replace the file, which
        ``ColdRewrite`` refuses before), then the file without what it must lose
        (``_leftovers_removed``); the file that holds the month's orders now (None: none left)."""
        context, deleted = self.context, False
        self.context = finishing(context)  # a limit ends the run after the file in hand, not before
        try:
            left = self._delete_moved(path)
            self._write(lambda: self.journal.update_one({"_id": key}, {"$set": {"state": MOVE_DELETED}}))
            deleted = True
            return self._leftovers_removed(path, left)
        except Interrupted:  # a signal does not wait for the deletes of a file of up to a gigabyte
            raise _interrupted_once_published(self.store.url_of(path), deleted) from None
        finally:
            self.context = context

    def _delete_moved(self, path: str) -> _Leftovers:
        """Delete from the archive each order the published file holds, in that version (its
        ``revised_at`` and ``source_hash``: a correction changes the one, an erasure the other);
        what the file must lose after (``_Leftovers``): the copies of orders changed meanwhile
        (still archived, newer: a correction, or a ``forget`` that erased the archive's copy
        while the file was written, whose copy in the file would otherwise be the only one left,
        unerased), and those of persons recorded as forgotten since the move's last look."""
        left = _Leftovers()
        for batch in batches(self.store, path, ["document"]):
            for texts in chunked(batch["document"], DELETE_CHUNK):
                held = [document_of(text) for text in texts if text is not None]
                # A signal or the run's limits (#34) before each chunk of deletes: one that ends
                # the run here leaves the journal entry (published), which the next run settles first.
                file_boundary(self.context)
                left.add_forgotten(held, self.respect(held))
                deletes = [DeleteOne(_as_moved(d)) for d in held]
                ids = [d["_id"] for d in held]
                # An election may kill the bulk after some of its deletes (those stay done), and
                # a retry answers for its own only: after one, ``ids`` less those still archived
                # (read back: ``RunContext.deleted``, as the purge counts its own).
                deleted = self.context.deleted(
                    functools.partial(self.archive.bulk_write, deletes, ordered=False),
                    len(deletes),
                    functools.partial(self.archive.count_documents, {"_id": {"$in": ids}}),
                )
                self.context.gate.after(len(deletes))  # --max-rate
                self.report.moved += deleted
                if deleted < len(deletes):
                    left.stale |= self._still_archived(ids)
        self.report.kept_revised += len(left.stale)
        return left

    def _still_archived(self, ids: list[object]) -> set[str]:
        found = self._read(lambda: list(self.archive.find({"_id": {"$in": ids}}, {"_id": 1})))
        return {str(d["_id"]) for d in found}

    def _leftovers_removed(self, path: str, left: _Leftovers) -> str | None:
        """The file without ``left.stale`` (corrected meanwhile, in the archive in their new
        version, moved next time: one place) and with ``left.erased`` erased: rewritten
        (``ColdRewrite``: journaled, checked, then the old one removed), or removed when nothing
        is left. The file that holds the month's orders now (None: none left)."""
        if not left.stale and not left.erased:
            return path
        rewrite = ColdRewrite(self.store, self.journal, self.context)
        return _without(rewrite, ColdFile(path, self.store.size(path)), left, self.archive, self.report)

    # -- what an interrupted run left

    def settle(self, leave_unpublished: bool = False) -> None:
        """Each journal entry a crash left, settled (``JournalSettlement``): the move's first
        step, and that of any other writer of the cold tier once it holds the move's lease
        (``forget``: ``tier.cold_tier_writer``), which passes ``leave_unpublished``: an entry
        whose file is not out names nothing it reads (a partial file), and a move that lost its
        lease between its fence and its rename may still publish it (its own next run settles
        it)."""
        settlement = JournalSettlement(self.store, self.journal, self.manifest, self.context, self.report)
        settlement.run(self._moved_out, leave_unpublished)

    # -- the server, with retries

    def _read(self, func: Callable[[], T]) -> T:
        return self.context.retrying(func, purpose=Retry.READ)

    def _write(self, func: Callable[[], T]) -> T:
        return self.context.retrying(func, purpose=Retry.WRITE)


def _representable(documents: Iterable[Document], report: ColdMoveReport) -> Iterator[Document]:
    """``documents`` but those a file would not give back as they are (``round_trips``): they stay
    in the archive (the move deletes only what its file holds), each said once a run."""
    for document in documents:
        if round_trips(document):
            yield document
            continue
        report.kept_not_representable += 1
        log.warning(
            "cold tier: order %s kept in the archive: a cold file would not give it back as it is "
            '(a subdocument whose keys are Extended JSON\'s own, such as {"$date": ...})',
            document.get("_id"),
        )


def _as_moved(document: Mapping[str, object]) -> dict[str, object]:
    """The archive document in the very version the file holds, and as restore left it: one a
    restore marked since (``restored_at``, RESTORE_HOLD's) stays, as a correction does, or the
    purge would find the restored order in the file with no mark and delete it again at once."""
    return {
        "_id": document["_id"],
        "revised_at": document.get("revised_at"),
        "source_hash": document.get("source_hash"),
        "restored_at": document.get("restored_at"),
    }


def _without(
    rewrite: ColdRewrite, old: ColdFile, left: _Leftovers, archive: MongoCollection, report: ColdMoveReport
) -> str | None:
    """``ColdMove._leftovers_removed``'s rewrite, each copy dropped counted by what changed the
    archive's (``_why_changed``: a correction, a restore, a forget's erasure)."""
    why = _why_changed(archive, left.stale, rewrite.context)
    new = rewrite.without(old, left.stale, left.erased, why)
    report.kept_by(rewrite.dropped)
    return new


def _interrupted_once_published(url: str, deleted: bool) -> Interrupted:
    """A signal once a move's file is published: its journal entry stays (what is left said)."""
    left_over = (
        "the file still holds older copies of orders changed in the archive meanwhile"
        if deleted
        else "some of its orders still in the archive too"
    )
    return Interrupted(
        f"interrupted once {url} was published: {left_over}, until the next batch --run (or "
        "forget) settles it first (status says so meanwhile)"
    )


def _why_changed(
    archive: MongoCollection, stale: set[str], context: RunContext
) -> Callable[[Mapping[str, object]], str]:
    """What changed the archive's copy of each order of ``stale`` since the file's copy was
    read (``rewrite.DROPPED``'s keys): a correction (``revised_at``), a restore
    (``restored_at``), else an erasure (``source_hash`` alone: forget's, which erased the
    archive's copy while an interrupted move's file held the order too). One read of their
    versions a thousand ids at a time."""
    versions: Document = {"revised_at": 1, "restored_at": 1}
    archived: dict[str, Document] = {}
    for keys in chunked(sorted(stale), DELETE_CHUNK):
        find = functools.partial(_found, archive, {"_id": {"$in": _ids(keys)}}, versions)
        archived.update((str(d["_id"]), d) for d in context.retrying(find, purpose=Retry.READ))

    def why(document: Mapping[str, object]) -> str:
        now = archived.get(str(document["_id"]))
        if now is None or _moment(now.get("revised_at")) != _moment(document.get("revised_at")):
            return "corrected"
        if _moment(now.get("restored_at")) != _moment(document.get("restored_at")):
            return "restored"
        return "erased"

    return why


def _found(archive: MongoCollection, query: Document, fields: Document) -> list[Document]:
    return list(archive.find(query, fields))


def _moment(value: object) -> datetime | None:
    """A version's date as a file and the archive each give it back (naive or aware: UTC)."""
    moment = moment_or_none(value)
    return as_utc(moment) if moment is not None else None


def _ids(keys: Iterable[str]) -> list[object]:
    """The archive's ``_id`` values that ``keys`` (their text) may be: an ObjectId's, and the text."""
    return [i for k in keys for i in ((ObjectId(k), k) if ObjectId.is_valid(k) and len(k) == 24 else (k,))]
