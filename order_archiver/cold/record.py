"""The cold tier's record in the archive: where it is, and which deliveries it holds.

The cold tier's guarantee (each order in exactly one readable place) cannot rest on each
process's settings: a shell without ARCHIVE_COLD_URL, a longer ARCHIVE_COLD_AFTER or a wrong
URL would archive moved orders again, or erase a person everywhere but in the cold files. So
the move records it where every command already reads, the archive's checkpoints collection:

    {_id: "cold-tier", url, moved_before, since}

``moved_before`` is raised (``$max``, majority) before a move publishes a file or deletes from
the archive: every order delivered before it may be in a cold file, and no path archives it
again, whatever ARCHIVE_COLD_AFTER says now (``orders.finishing.Finisher``). Every command that
reads or writes the archive reads the record once at start (one ``find_one`` by ``_id``) and
refuses, before it writes anything, when ARCHIVE_COLD_URL is unset or names another place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from order_archiver.context import RunContext
from order_archiver.documents import MongoCollection, moment_or_none
from order_archiver.errors import ConfigError
from order_archiver.logs import get_logger
from order_archiver.orders.enrichment import as_utc
from order_archiver.retry import Retry

log = get_logger("cold")

RECORD_ID = "cold-tier"
# How often a long-running watcher reads the record again: a move that raises moved_before
# reaches a running watcher within this (docs/operating.md, "The cold tier's record").
REFRESH_S = 60.0


@dataclass(frozen=True)
class ColdRecord:
    url: str  # ARCHIVE_COLD_URL of the move that first recorded it
    moved_before: datetime  # every delivery before it may be in a cold file: never archived again
    since: datetime  # when the first move recorded it

    def line(self) -> str:
        return f"{self.url}, orders delivered before {self.moved_before:%Y-%m-%d %H:%M} UTC, since {self.since:%Y-%m-%d}"


def normalized_url(url: str) -> str:
    """The place a URL names, for comparison: the scheme's case and a trailing slash aside."""
    scheme, separator, rest = url.strip().partition("://")
    if not separator:  # no scheme (settings refuse one; a record written by hand): a path, case kept
        return scheme.rstrip("/")
    return f"{scheme.lower()}{separator}{rest.rstrip('/')}"


def record_of(document: dict[str, object] | None) -> ColdRecord | None:
    """The record from its document; None when there is none (no move ever ran)."""
    if document is None:
        return None
    moved_before, since = moment_or_none(document.get("moved_before")), moment_or_none(document.get("since"))
    if moved_before is None:
        return None
    return ColdRecord(str(document.get("url", "")), as_utc(moved_before), as_utc(since or moved_before))


def read_record(checkpoints: MongoCollection, context: RunContext) -> ColdRecord | None:
    """One ``find_one`` by ``_id`` on the primary (``Collections.of``'s checkpoints)."""
    return record_of(context.retrying(lambda: checkpoints.find_one({"_id": RECORD_ID}), purpose=Retry.READ))


def check_place(record: ColdRecord | None, cold_url: str | None) -> None:
    """Refuse (exit 2, before anything is written) a process whose ARCHIVE_COLD_URL is unset or
    names another place than the recorded cold tier's."""
    if record is None:
        return
    if cold_url is None:
        raise ConfigError(
            f"ARCHIVE_COLD_URL is not set, but this archive has a cold tier at {record.line()}: "
            "set ARCHIVE_COLD_URL (and ARCHIVE_COLD_AFTER) as the batch that moves orders does"
        )
    if normalized_url(cold_url) != normalized_url(record.url):
        raise ConfigError(
            f"ARCHIVE_COLD_URL {cold_url} is not this archive's cold tier, recorded at {record.line()}: "
            "set it to the recorded place (docs/operating.md: moving a cold tier)"
        )


def recorded_cold_tier(
    checkpoints: MongoCollection, cold_url: str | None, context: RunContext
) -> ColdRecord | None:
    """The record, read once at a command's start, and the process's ARCHIVE_COLD_URL checked
    against it (``check_place``)."""
    record = read_record(checkpoints, context)
    check_place(record, cold_url)
    return record


def raise_boundary(
    checkpoints: MongoCollection, url: str, moved_before: datetime, now: datetime, context: RunContext
) -> None:
    """Before a move publishes a file or deletes from the archive: the record says that orders
    delivered before ``moved_before`` may be in the cold tier (``$max``: never lowered; an
    upsert on ``_id``, idempotent; a majority write, ``Collections.of``'s checkpoints)."""
    update = {"$max": {"moved_before": moved_before}, "$setOnInsert": {"url": url, "since": now}}
    context.retrying(
        lambda: checkpoints.update_one({"_id": RECORD_ID}, update, upsert=True), purpose=Retry.WRITE
    )


class RecordedBoundary:
    """The recorded ``moved_before`` for a long-running process (the watcher): read again at most
    every ``REFRESH_S``, so that a move made while it runs reaches it within that (a failed read
    raises, as the write it precedes would: the watcher reconnects)."""

    def __init__(
        self,
        read: Callable[[], ColdRecord | None],
        first: datetime | None,
        refresh_s: float = REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
        cold_url: str | None = None,  # ARCHIVE_COLD_URL as this process has it
    ) -> None:
        self.read, self.moved_before, self.refresh_s, self.monotonic = read, first, refresh_s, monotonic
        self.read_at = monotonic()
        self.cold_url = cold_url

    def __call__(self) -> datetime | None:
        if self.monotonic() - self.read_at >= self.refresh_s:
            self.read_at = self.monotonic()
            found = self.read()
            if found is not None and found.moved_before != self.moved_before:
                if self.moved_before is None:
                    self._say_recorded(found)
                self.moved_before = found.moved_before
        return self.moved_before

    def _say_recorded(self, found: ColdRecord) -> None:
        if self.cold_url is not None:
            log.info("cold tier recorded at %s: those orders are not archived again", found.line())
            return
        # Its next start is refused (check_place: the settings must name the tier): under a
        # service manager, a restart loop. Said now, while it still runs.
        log.warning(
            "cold tier recorded at %s: those orders are not archived again; this process runs without "
            "ARCHIVE_COLD_URL, and its next start will be refused until it is set (as the batch's)",
            found.line(),
        )
