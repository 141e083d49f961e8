"""The cold tier as the commands use it: checked before a run writes anything, moved after a
complete batch pass."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pymongo import MongoClient

from order_archiver.cold.files import footer
from order_archiver.cold.move import ColdMove, ColdMoveReport
from order_archiver.cold.retention import erase_by_age
from order_archiver.cold.store import ColdStore
from order_archiver.documents import Document
from order_archiver.errors import FatalError
from order_archiver.logs import plural
from order_archiver.mongodb.lease import server_time
from order_archiver.mongodb.storage import ArchiveWriter, Collections
from order_archiver.orders.erasing import BY_AGE, Erasure
from order_archiver.retry import named_side, retrying
from order_archiver.settings import Settings


def cold_store(settings: Settings) -> ColdStore | None:
    """The cold tier's store, or None when ARCHIVE_COLD_URL is unset."""
    return ColdStore(settings.archive_cold_url) if settings.archive_cold_url else None


def check_cold_tier(settings: Settings) -> None:
    """Before ``batch --run`` writes anything: the folder or bucket exists and takes a file
    (``ConfigError``, exit 2, naming it)."""
    store = cold_store(settings)
    if store is not None:
        store.check()


def would_move(
    client: MongoClient[Document],
    settings: Settings,
    stop_event: threading.Event,
    archive_client: MongoClient[Document] | None = None,
) -> ColdMoveReport | None:
    """A dry run: how many archived orders ``batch --run`` would move now (one count on the
    ``{date_livraison, _id}`` index); None without a cold tier."""
    if cold_store(settings) is None or settings.archive_cold_after is None:
        return None
    collections = Collections.of(client, settings, archive_client)
    with named_side(collections.archive_side):
        now = retrying(lambda: server_time(archive_client or client), stop_event=stop_event)
        cutoff = now - settings.archive_cold_after
        count = retrying(
            lambda: collections.archive.count_documents({"date_livraison": {"$lt": cutoff}}),
            stop_event=stop_event,
        )
    return ColdMoveReport(would_move=count)


def move_to_cold(
    client: MongoClient[Document],
    settings: Settings,
    stop_event: threading.Event,
    archive_client: MongoClient[Document] | None = None,
) -> ColdMoveReport | None:
    """The archived orders delivered before ``now - ARCHIVE_COLD_AFTER`` (the archive's
    server clock) moved to the cold tier; None without one."""
    store = cold_store(settings)
    if store is None or settings.archive_cold_after is None:
        return None
    collections = Collections.of(client, settings, archive_client)
    with named_side(collections.archive_side):
        now = retrying(lambda: server_time(archive_client or client), stop_event=stop_event)
        respect = ArchiveWriter.of(collections, settings, stop_event).respecting_erasures
        cutoff = now - settings.archive_cold_after
        retention = settings.archive_retention
        expire_before = now - retention if retention is not None else None
        move = ColdMove(
            store,
            collections.archive,
            collections.checkpoints,
            cutoff,
            stop_event,
            respect=respect,
            expire_before=expire_before,
        )
        report = move.run()
        if settings.archive_pii_retention is not None:
            fields = settings.pii_policy.fields
            erasure = Erasure(client=True, courier=True, by=BY_AGE, at=now, fields=fields)
            cutoff = now - settings.archive_pii_retention
            aged = erase_by_age(store, collections.checkpoints, cutoff, erasure, stop_event)
            report.pii_erased, report.pii_rewritten = aged.orders, aged.files
        return report


@dataclass
class ColdSummary:
    """What the cold tier holds, from its files' footers (one small read a file)."""

    url: str
    files: int = 0
    orders: int = 0
    bytes: int = 0
    oldest_month: str | None = None
    newest_month: str | None = None

    def line(self) -> str:
        months = f", delivery months {self.oldest_month} to {self.newest_month}" if self.files else ""
        return f"cold tier {self.url}: {plural(self.orders, 'order')} in {plural(self.files, 'file')} ({self.bytes} bytes){months}"


def summarise(settings: Settings) -> ColdSummary | None:
    """The cold tier's files, orders, bytes and months; None without one. A store that cannot
    be read raises ``FatalError`` naming it."""
    store = cold_store(settings)
    if store is None:
        return None
    summary = ColdSummary(store.url)
    try:
        found = store.files()
        months = sorted(str(f.month) for f in found if f.month is not None)
        for cold_file in found:
            summary.orders += footer(store, cold_file.path).rows
    except (OSError, ValueError) as exc:
        raise FatalError(
            f"ARCHIVE_COLD_URL {store.url}: cannot be read: {str(exc).splitlines()[0][:200]}"
        ) from None
    summary.files, summary.bytes = len(found), sum(f.size for f in found)
    summary.oldest_month, summary.newest_month = (months[0], months[-1]) if months else (None, None)
    return summary
