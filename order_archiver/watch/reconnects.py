"""A running watcher's connection to MongoDB, as it tells it. Each failure that makes it reconnect
is one line in the words its start uses (the host and the reason: ``connection.why_unreachable``)
with the true wait before the next try: the backoff, then at most MONGODB_TIMEOUT_MS for a
server to answer (``probe``: one ``ping`` per deployment, which the driver's server selection
bounds; no retries of its own, the backoff is the retry). Each is counted
(``order_archiver_errors_total`` by kind) and shows the watcher not connected
(``order_archiver_mongodb_connected`` 0) until its change stream is back, which is said once,
with how long it was away (``back``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pymongo import MongoClient

from order_archiver.documents import Document
from order_archiver.errors import ArchiverError
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.connection import why_unreachable
from order_archiver.reporting.metrics import WatchMetrics
from order_archiver.retry import ARCHIVE_SIDE, SOURCE_SIDE, RetryPolicy
from order_archiver.settings import Settings
from order_archiver.watch.stats import WatchStats

log = get_logger("watch")


def sides(
    source: MongoClient[Document], archive: MongoClient[Document] | None
) -> list[tuple[str, MongoClient[Document]]]:
    """The deployments a watcher reaches, each named as its errors name it (none: one)."""
    if archive is None:
        return [("", source)]
    return [(SOURCE_SIDE, source), (ARCHIVE_SIDE, archive)]


class Reconnects:
    """Away since the first failure in a row (``away_since``, monotonic), back at the next stream."""

    def __init__(
        self,
        clients: Sequence[tuple[str, MongoClient[Document]]],
        settings: Settings,
        metrics: WatchMetrics,
        stats: WatchStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients, self.settings, self.metrics, self.clock = list(clients), settings, metrics, clock
        self.stats = stats or WatchStats()
        self.away_since: float | None = None
        self.failures = 0

    def failed(self, failure: BaseException, delay: float) -> None:
        """``failure`` made the stream end: said by the driver's error (under the hierarchy's
        wrapping, and a side's), counted, with the next try's wait."""
        cause = failure
        while isinstance(cause, ArchiverError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if self.away_since is None:
            self.away_since = self.clock()
        self.failures += 1
        self.stats.reconnects += 1
        self.metrics.lost(cause)
        log.warning(
            "change stream interrupted (%s): %s; reconnecting in %.1fs, then up to %gs for a server "
            "to answer (MONGODB_TIMEOUT_MS)",
            type(cause).__name__,
            why_unreachable(cause, self.clients, self.settings),
            delay,
            self.settings.mongodb_timeout_ms / 1000,
        )

    def probe(self) -> None:
        """While away, before anything else (whose reads retry for longer, silently): one ``ping``
        of each deployment, raising the driver's error at once (``ServerSelectionTimeoutError``
        after MONGODB_TIMEOUT_MS)."""
        if self.away_since is None:
            return
        for _, client in self.clients:
            client.admin.command("ping")

    def back(self, policy: RetryPolicy | None = None) -> None:
        """The change stream is open (or a standby's lease looked at): MongoDB reached, and the
        reconnects' ``policy`` (its backoff) starts over."""
        if policy is not None:
            policy.reset()
        self.metrics.reached()
        if self.away_since is None:
            return
        log.info(
            "reconnected: the change stream is back after %.1fs away (%s)",
            self.clock() - self.away_since,
            plural(self.failures, "failed try", "failed tries"),
        )
        self.away_since, self.failures = None, 0
