"""ARCHIVE_RETENTION in the cold tier: the files of months wholly past it removed.

ARCHIVE_PII_RETENTION in the cold tier: the personal data of cold orders delivered longer ago
is erased, as ``batch --run`` erases it in the archive (``Erasure`` by age: the client and the
courier), each file holding some rewritten (``erasure.ColdRewrite``: new file checked, then the
old one removed).

A rewritten file's footer records the cutoff it was erased to (``order_archiver.pii_erased_before``),
and so does its entry in the list of files (``manifest``): a file of a month wholly before that
date is never read again for this, and of the month or two the cutoff crosses only the rows
delivered since (the row groups whose ``date_livraison`` statistics, in the footer, reach that
range: a move writes a month in delivery order). A footer is read for a file the list has no
cutoff of (listed by an earlier version: the run records it then, once).

``count_by_age`` counts, by the same reads, what ``erase_by_age`` would erase: the dry run's
figure is the run's. ``status`` and ``doctor`` bound the documents they read (a probe every
minute): past the bound, the rows left are counted as an upper bound, said as such.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from order_archiver.cold.files import dated_documents, footer, footer_metadata, row_groups
from order_archiver.cold.manifest import NOT_RECORDED, ColdManifest
from order_archiver.cold.rewrite import ColdRewrite, file_boundary
from order_archiver.cold.schema import META_ERASED_BEFORE, document_of, erased_before_of
from order_archiver.cold.store import ColdFile, ColdStore
from order_archiver.context import RunContext
from order_archiver.documents import MongoCollection
from order_archiver.logs import get_logger
from order_archiver.orders.erasing import Erasure

__all__ = [
    "META_ERASED_BEFORE",
    "ColdAgeErasure",
    "ColdExpired",
    "ColdPiiCount",
    "count_by_age",
    "count_expired",
    "erase_by_age",
    "past_retention",
    "remove_expired",
]
DELIVERED = "date_livraison"  # the typed column: the document's delivery date, null when not a date
Stamps = Mapping[
    str, "datetime | str | None"
]  # a file's path: its cutoff as the list has it (manifest.Listed)
log = get_logger("cold")


def past_retention(cold_file: ColdFile, before: datetime) -> bool:
    """A file of a month wholly delivered before ``before``: ARCHIVE_RETENTION removes it."""
    month = cold_file.month
    return month is not None and month.next().start <= before


@dataclass
class ColdExpired:
    """The cold files ARCHIVE_RETENTION removes now (``remove_expired``'s), and their orders."""

    files: int = 0
    orders: int = 0
    months: list[str] = field(default_factory=list)


def count_expired(
    store: ColdStore, found: Iterable[ColdFile], before: datetime, rows: Mapping[str, int] | None = None
) -> ColdExpired:
    """What ``remove_expired`` removes of ``found`` (the place's listing) now: the same files, their
    orders as the run counts them (each file's footer), or from ``rows`` (the list of files: a
    probe opens no file; a file it does not list, its footer)."""
    counted = ColdExpired()
    for cold_file in found:
        if past_retention(cold_file, before):
            listed = (rows or {}).get(cold_file.path)
            counted.files += 1
            counted.orders += listed if listed is not None else footer(store, cold_file.path).rows
            if str(cold_file.month) not in counted.months:
                counted.months.append(str(cold_file.month))
    counted.months.sort()
    return counted


def remove_expired(
    store: ColdStore,
    manifest: ColdManifest,
    before: datetime,
    context: RunContext,
    removed: Callable[[int], object],
) -> None:
    """ARCHIVE_RETENTION: the files of each month wholly delivered before ``before`` removed (a
    month partly inside it waits until it is wholly past), each unlisted first (a listed file
    that is gone is a lost one), each said to ``removed`` with its orders as it goes: a signal
    or a limit of the run ends the removals between two files (``file_boundary``, #34).
    ``count_expired`` counts the same files beforehand (a dry run, status, doctor)."""
    for cold_file in store.files():
        if past_retention(cold_file, before):
            file_boundary(context)
            orders = footer(store, cold_file.path).rows
            manifest.remove(cold_file.path)
            store.remove(cold_file.path)
            removed(orders)
            context.gate.after(orders)  # --max-rate
            log.info("cold tier: %s past ARCHIVE_RETENTION removed", store.url_of(cold_file.path))


@dataclass
class ColdAgeErasure:
    files: int = 0  # files rewritten
    orders: int = 0  # orders whose personal data was erased
    # On S3, once a file is rewritten: whether the bucket keeps versions (as ``ColdErasure``'s:
    # the replaced files, with their personal data, then stay readable). None: not known
    versions_kept: bool | None = None


@dataclass
class ColdPiiCount:
    """The cold orders past ARCHIVE_PII_RETENTION still holding personal data."""

    orders: int = 0  # counted, their documents read
    unread: int = 0  # rows that may be past it, left unread (the bound reached): at most as many more
    files: int = 0  # files holding some (the run rewrites those)

    @property
    def at_most(self) -> int:
        return self.orders + self.unread


@dataclass(frozen=True)
class _Due:
    """A file the erasure must read: its rows delivered from ``since`` (None: the first) to the cutoff."""

    cold_file: ColdFile
    since: datetime | None


def _erased_before(store: ColdStore, cold_file: ColdFile) -> datetime | None:
    return erased_before_of(footer_metadata(store, cold_file.path))


def _due(
    store: ColdStore,
    found: Iterable[ColdFile],
    stamps: Stamps,
    cutoff: datetime,
    recorded: Callable[[ColdFile, datetime | None], object] = lambda *_: None,
) -> Iterator[_Due]:
    """The files with orders delivered before ``cutoff`` not yet erased to it; ``recorded``
    handed the cutoff of a file whose footer alone had it (``stamps``: the list's)."""
    for cold_file in found:
        month = cold_file.month
        if month is None or month.start >= cutoff:
            continue  # nothing in it is past the cutoff yet
        done = stamps.get(cold_file.path, NOT_RECORDED)
        if isinstance(done, str):  # not listed, or listed by an earlier version: its footer says
            done = _erased_before(store, cold_file)
            if cold_file.path in stamps:
                recorded(cold_file, done)
        if done is not None and done >= min(cutoff, month.next().start):
            continue  # erased up to there already
        yield _Due(cold_file, done)


def _groups(store: ColdStore, due: _Due, cutoff: datetime) -> list[tuple[int, int]]:
    """The row groups (index, rows) that may hold rows delivered from ``due.since`` to ``cutoff``,
    from their ``date_livraison`` statistics (the footer: no row read); a group whose statistics
    say nothing is kept."""
    kept = []
    for index, group in enumerate(row_groups(store, due.cold_file.path)):
        column = next(
            (
                group.column(i)
                for i in range(group.num_columns)
                if group.column(i).path_in_schema == DELIVERED
            ),
            None,
        )
        stats = column.statistics if column is not None else None
        if stats is not None and stats.has_min_max:
            if stats.min >= cutoff or (due.since is not None and stats.max < due.since):
                continue
        elif stats is not None and stats.null_count == group.num_rows:
            continue  # no delivery date in it: never past a retention
        kept.append((index, group.num_rows))
    return kept


def _past_and_holding(
    store: ColdStore, due: _Due, groups: list[int], cutoff: datetime, erasure: Erasure
) -> set[str]:
    """The ids of the orders of ``groups`` delivered from ``due.since`` to ``cutoff`` that still
    hold personal data: a document is decoded only when its typed date is in that range."""
    found = set()
    since = due.since
    for delivered, text in dated_documents(store, due.cold_file.path, groups):
        if delivered is None or text is None or delivered >= cutoff:
            continue
        if since is not None and delivered < since:
            continue  # erased when its file was stamped
        document = document_of(text)
        if erasure.holds(document):
            found.add(str(document["_id"]))
    return found


def erase_by_age(
    store: ColdStore,
    journal: MongoCollection,
    cutoff: datetime,
    erasure: Erasure,
    context: RunContext,
    report: ColdAgeErasure | None = None,
) -> ColdAgeErasure:
    """Each cold file with orders delivered before ``cutoff`` still holding personal data,
    rewritten without it; a file of a month wholly before the cutoff is stamped so, once.
    ``report`` counts each file as it is rewritten: a rewrite is a file boundary
    (``rewrite.file_boundary``), where a signal or a limit of the run ends the erasure; the next
    run reads the files not yet stamped again."""
    report = report if report is not None else ColdAgeErasure()
    manifest = ColdManifest(store, journal, context)
    listed = {entry.path: entry for entry in manifest.entries()}

    def record(cold_file: ColdFile, done: datetime | None) -> None:  # an earlier version's entry
        manifest.add(cold_file.path, listed[cold_file.path].rows, done)

    stamps = {path: entry.erased_before for path, entry in listed.items()}
    for due in list(_due(store, store.files(), stamps, cutoff, record)):
        groups = [index for index, _ in _groups(store, due, cutoff)]
        ids = _past_and_holding(store, due, groups, cutoff, erasure)
        month = due.cold_file.month
        if ids or (month is not None and month.next().start <= cutoff):  # a month wholly past: stamped
            stamp = {META_ERASED_BEFORE: cutoff.isoformat().encode()}
            new = ColdRewrite(store, journal, context).rewrite(due.cold_file, ids, erasure, stamp)
            report.files += 1
            report.orders += len(ids)
            if report.versions_kept is None and new is not None:
                report.versions_kept = store.keeps_versions(new)
    return report


def count_by_age(
    store: ColdStore,
    found: Iterable[ColdFile],
    stamps: Stamps,
    cutoff: datetime,
    erasure: Erasure,
    rows_at_most: int | None = None,
    boundary: Callable[[], object] = lambda: None,
) -> ColdPiiCount:
    """What ``erase_by_age`` would erase now, by its reads (nothing written); with
    ``rows_at_most``, the rows read bounded: those left are counted in ``unread``. Read beside a
    run at work (``status``, ``doctor``, a dry run: no lease), a file of ``found`` may be gone
    since it was listed, replaced by a rewrite (the very files not yet erased are those the run
    rewrites): it is not counted, its replacement is the next look's. ``boundary`` is called
    before each file (a dry run's: the run's limits and a signal end the count there)."""
    count = ColdPiiCount()
    budget = rows_at_most
    for cold_file in found:
        boundary()
        try:
            budget = _count_file(store, cold_file, stamps, cutoff, erasure, budget, count)
        except OSError:
            if store.exists(cold_file.path):
                raise
            log.info("cold tier: %s replaced since it was listed: not counted", cold_file.path)
    return count


def _count_file(
    store: ColdStore,
    cold_file: ColdFile,
    stamps: Stamps,
    cutoff: datetime,
    erasure: Erasure,
    budget: int | None,
    count: ColdPiiCount,
) -> int | None:
    """``count_by_age`` of one file, into ``count``; the rows left to read (``budget``) after it."""
    for due in _due(store, [cold_file], stamps, cutoff):
        read: list[int] = []
        for index, rows in _groups(store, due, cutoff):
            if budget is not None and rows > budget:
                count.unread += rows
                budget = 0
                continue
            read.append(index)
            budget = None if budget is None else budget - rows
        holding = len(_past_and_holding(store, due, read, cutoff, erasure)) if read else 0
        count.orders += holding
        count.files += bool(holding)
    return budget
