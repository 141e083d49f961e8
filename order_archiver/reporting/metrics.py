"""Prometheus metrics: served over HTTP by `watch --metrics-port`, written in the textfile
collector's format by `batch --metrics-file` (cron jobs have no port to scrape)."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

from order_archiver.logs import FILE_ONLY, get_logger
from order_archiver.reporting.liveness import Liveness, with_health

log = get_logger("metrics")

PREFIX = "order_archiver"

# The kinds a lost connection to MongoDB is counted under (``order_archiver_errors_total``):
# their series exist at 0 from the start (Prometheus' "Instrumentation" practice: a series that
# appears only with its first failure is missed by ``rate``/``increase``), the rest once met.
CONNECTION_KINDS = ("ServerSelectionTimeoutError", "AutoReconnect")


class Counts(Protocol):
    """What the metrics read of an archiving step's counts (``mongodb.step.ArchiveCounts``)."""

    archived: int
    already_archived: int
    revised: int
    rejected: int


class WatchMetrics:
    """The watcher's live figures. One instance per process, in its own registry.

    ``leading``: whether this watcher leads now (``Lease.held``; a file store's always does),
    read at each scrape. The ages of the token and of the last event are the leader's figures:
    a standby's are NaN, an old leader's included (fenced out after a pause, its own last save
    would only grow older while its successor saves: the stale-token alert paged on a healthy
    pair). ``order_archiver_watch_leader`` says which process leads: none before it has reached
    MongoDB (served from the process's start: ``leading`` is the watcher's once it exists, ``led_by``).
    ``order_archiver_mongodb_connected`` says whether it reaches MongoDB now (``reached``, ``lost``)."""

    def __init__(self, leading: Callable[[], bool] = lambda: False) -> None:
        self.registry = CollectorRegistry()
        self._leading = leading
        self.events = Counter(f"{PREFIX}_events", "Change events received", registry=self.registry)
        self.archived = Counter(
            f"{PREFIX}_orders_archived", "Orders written to the archive", ["mode"], registry=self.registry
        )
        self.already_archived = Counter(
            f"{PREFIX}_orders_already_archived",
            "Orders found already archived",
            ["mode"],
            registry=self.registry,
        )
        self.revised = Counter(
            f"{PREFIX}_orders_revised",
            "Archived orders replaced by a corrected version of their order",
            ["mode"],
            registry=self.registry,
        )
        # Every rejection met (an order met again, a restart's catch-up meeting the listed ones
        # again, counts again), and those newly listed: the news, what to alert on.
        self.rejected = Counter(
            f"{PREFIX}_orders_rejected",
            "Rejections met (an order met again counts again), not archived",
            ["mode"],
            registry=self.registry,
        )
        self.rejected_new = Counter(
            f"{PREFIX}_orders_rejected_new",
            "Rejected orders this watcher listed first, or for a new reason (the news)",
            ["mode"],
            registry=self.registry,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Failures that made the watcher reconnect or retry, by kind",
            ["kind"],
            registry=self.registry,
        )
        for kind in CONNECTION_KINDS:
            self.errors.labels(kind=kind)
        self.retries = Counter(
            f"{PREFIX}_retries",
            "Archive writes retried after a transient error, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_archive_latency_seconds",
            "From the change (event time) to the archive write acknowledged",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.last_event = Gauge(
            f"{PREFIX}_seconds_since_last_event",
            "Seconds since the last change event",
            registry=self.registry,
        )
        self.token_age = Gauge(
            f"{PREFIX}_token_age_seconds",
            "Seconds since the resume token was last saved",
            registry=self.registry,
        )
        self.leader = Gauge(
            f"{PREFIX}_watch_leader",
            "1 while this watcher leads (writes, saves the token), 0 while it stands by",
            registry=self.registry,
        )
        self.connected = Gauge(
            f"{PREFIX}_mongodb_connected",
            "1 while this watcher reaches MongoDB; 0 before it first has, and from a failure that made "
            "it reconnect until it is back",
            registry=self.registry,
        )
        self._connected = False
        self.connected.set_function(lambda: 1.0 if self._connected else 0.0)
        self._last_event_at: float | None = None
        self._token_saved_at: float | None = None
        self.last_event.set_function(lambda: self._age(self._last_event_at))
        self.token_age.set_function(lambda: self._age(self._token_saved_at))
        self.leader.set_function(lambda: 1.0 if self._leading() else 0.0)

    def _age(self, moment: float | None) -> float:
        """Since ``moment``, while leading; NaN before it, or while standing by."""
        if moment is None or not self._leading():
            return float("nan")
        return time.time() - moment

    def reached(self) -> None:
        """MongoDB answered: the first connection made, or the change stream back after a failure."""
        self._connected = True

    def lost(self, failure: BaseException) -> None:
        """A failure that makes the watcher wait and try again (at its start: the first connection's,
        each counted by kind, the same kinds as a running watcher's)."""
        self._connected = False
        self.errors.labels(kind=type(failure).__name__).inc()

    def stood_down(self) -> None:
        """Leadership lost: the old term's moments are not the next term's (NaN until its first)."""
        self._last_event_at = self._token_saved_at = None

    def add(self, counts: Counts, mode: str) -> None:
        """What an archiving step did (``mode``: ``watch``, or ``catch-up``)."""
        self.archived.labels(mode=mode).inc(counts.archived)
        self.already_archived.labels(mode=mode).inc(counts.already_archived)
        self.revised.labels(mode=mode).inc(counts.revised)
        self.rejected.labels(mode=mode).inc(counts.rejected)

    def rejections_listed(self, new: int, mode: str) -> None:
        """``new``: the rejected orders that were news to the list (``RejectStore.record``)."""
        self.rejected_new.labels(mode=mode).inc(new)

    def event_seen(self, count: int) -> None:
        self.events.inc(count)
        self._last_event_at = time.time()

    def token_saved(self) -> None:
        self._token_saved_at = time.time()

    def led_by(self, leading: Callable[[], bool]) -> WatchMetrics:
        """Whether this watcher leads, once it exists (the metrics are served before: cli)."""
        self._leading = leading
        return self

    def serve(self, port: int, address: str = "127.0.0.1", liveness: Liveness | None = None) -> Any:
        """``/metrics``, and ``/healthz`` (``liveness``: this process's loop alive or not)."""
        app = make_wsgi_app(self.registry)
        family, host = _best_family(address, port)

        class Server(MetricsServer):
            address_family = family

        server = make_server(
            host, port, with_health(app, liveness) if liveness is not None else app, Server, _QuietHandler
        )
        thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        thread.start()
        return server, thread


class MetricsServer(ThreadingWSGIServer):
    """prometheus_client's server (a thread per request, as ``start_http_server``'s), whose
    request that fails is one line in the log, not socketserver's traceback on the watcher's
    output: a client that resets its connection (a TCP probe, a load balancer's check, a scraper
    cut off: ECONNRESET before its request is read) printed "Exception occurred during processing
    of request" and a traceback on each. A client's hang-up is the client's (DEBUG); anything
    else a warning, its traceback in the log file. The server goes on either way."""

    def handle_error(self, request: object, client_address: object) -> None:
        error = sys.exc_info()[1]
        who = client_address[0] if isinstance(client_address, tuple) and client_address else client_address
        if isinstance(error, ConnectionError):
            log.debug(
                "a request from %s to the metrics server ended early (%s)", who, error.strerror or error
            )
            return
        log.warning(
            "a request from %s to the metrics server failed (%s: %s)", who, type(error).__name__, error
        )
        log.debug("the metrics server's failed request", exc_info=True, extra=FILE_ONLY)


class _QuietHandler(WSGIRequestHandler):
    """No access log on the watcher's output (prometheus_client's handler logs nothing either)."""

    def log_message(self, format: str, *args: object) -> None:
        return None


def _best_family(address: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family of ``address`` (an IPv6 one: AF_INET6), as prometheus_client's."""
    infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = next(iter(infos))
    return family, str(sockaddr[0])


def write_batch_metrics(
    path: str | Path, report: Any, succeeded: bool, now: Callable[[], float] = time.time
) -> None:
    """The run's figures for node_exporter's textfile collector (written atomically)."""
    registry = CollectorRegistry()
    figures = {
        "scanned": "Orders the last batch run went through (archived, already archived, revised or rejected)",
        "archived": "Orders archived by the last batch run",
        "already_archived": "Orders found already archived by the last batch run",
        "rejected": "Orders rejected as invalid by the last batch run",
        "rejected_new": "Rejected orders the last batch run found for the first time or for a new reason (exit 3)",
        "purged": "Source orders purged by the last batch run",
        "seconds": "Duration of the last batch run",
    }
    for name, help_text in figures.items():
        Gauge(f"{PREFIX}_batch_last_{name}", help_text, registry=registry).set(getattr(report, name, 0) or 0)
    Gauge(f"{PREFIX}_batch_last_success", "1 when the last batch run succeeded", registry=registry).set(
        1 if succeeded else 0
    )
    Gauge(
        f"{PREFIX}_batch_last_run_timestamp_seconds", "When the last batch run ended", registry=registry
    ).set(now())
    write_textfile(Path(path), generate_latest(registry))


def write_textfile(path: Path, content: bytes) -> None:
    """``content`` at ``path``, atomically, through a temporary file of our own in its folder:
    a new name (``mkstemp``: ``O_EXCL``, no link followed), renamed over ``path``.
    prometheus_client's ``write_to_textfile`` opens ``<path>.<pid>.<thread>``, a name anyone
    who may write in the folder can plant a symbolic link at: the run's figures then overwrite
    whatever it points to (#31 item 7)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            # node_exporter, another user, reads it (the units' UMask=0077 would make it 0600).
            if hasattr(os, "fchmod"):  # not on Windows before Python 3.13 (settings.open_private)
                os.fchmod(out.fileno(), 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
