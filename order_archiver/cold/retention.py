"""ARCHIVE_RETENTION in the cold tier: the files of months wholly past it removed.

ARCHIVE_PII_RETENTION in the cold tier: the personal data of cold orders delivered longer ago
is erased, as ``batch --run`` erases it in the archive (``Erasure`` by age: the client and the
courier), each file holding some rewritten (``erasure.ColdRewrite``: new file checked, then the
old one removed).

A rewritten file's footer records the cutoff it was erased to (``order_archiver.pii_erased_before``):
a file of a month wholly before that date is never read again for this, so a run reads the
files of the month or two the cutoff crosses, and a footer for each older file (one small read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from order_archiver.cold.files import batches, footer, footer_metadata
from order_archiver.cold.manifest import ColdManifest
from order_archiver.cold.rewrite import ColdRewrite, file_boundary
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdFile, ColdStore
from order_archiver.context import RunContext
from order_archiver.documents import MongoCollection, moment_or_none
from order_archiver.logs import get_logger
from order_archiver.orders.enrichment import as_utc
from order_archiver.orders.erasing import Erasure

META_ERASED_BEFORE = b"order_archiver.pii_erased_before"
log = get_logger("cold")


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
    or a limit of the run ends the removals between two files (``file_boundary``, #34)."""
    for cold_file in store.files():
        month = cold_file.month
        if month is not None and month.next().start <= before:
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


def _erased_before(store: ColdStore, cold_file: ColdFile) -> datetime | None:
    value = footer_metadata(store, cold_file.path).get(META_ERASED_BEFORE)
    return datetime.fromisoformat(value.decode()) if value else None


def _past_and_holding(store: ColdStore, cold_file: ColdFile, cutoff: datetime, erasure: Erasure) -> set[str]:
    """The ids of the file's orders delivered before ``cutoff`` that still hold personal data."""
    found = set()
    for batch in batches(store, cold_file.path, ["document"]):
        for text in batch["document"]:
            document = document_of(text) if text is not None else {}
            delivered = moment_or_none(document.get("date_livraison"))
            if delivered is not None and as_utc(delivered) < cutoff and erasure.holds(document):
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
    for cold_file in store.files():
        month = cold_file.month
        if month is None or month.start >= cutoff:
            continue  # nothing in it is past the cutoff yet
        done = _erased_before(store, cold_file)
        if done is not None and done >= min(cutoff, month.next().start):
            continue  # erased up to there already
        ids = _past_and_holding(store, cold_file, cutoff, erasure)
        if ids or month.next().start <= cutoff:  # a month wholly past: stamped, never read again
            stamp = {META_ERASED_BEFORE: cutoff.isoformat().encode()}
            ColdRewrite(store, journal, context).rewrite(cold_file, ids, erasure, stamp)
            report.files += 1
            report.orders += len(ids)
    return report
