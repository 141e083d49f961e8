"""Is this watcher alive: its loop came back when it said it would (``/healthz``).

A liveness probe restarts a process that cannot recover by itself; it says nothing of the
deployment (``status`` does: readiness, alerting). So it looks at this process only, through
the run's stop, which every loop of the product looks at each turn (``stop.is_set()``) and every
wait goes through (``stop.wait(t)``: a reconnect's backoff, a wait for the server, for the
archive's unique index, for a lagging secondary, for the lease): each says by when the loop
will be back. A loop waiting for a server that is
away is alive; one stuck beyond its wait plus ``grace_s`` (WATCH_LIVENESS_S) is not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment


class Liveness:
    """When the loop is next due back (monotonic), set by the loop's own thread only: the lease's
    renewal thread also waits on the stop, and would keep a hung loop looking alive."""

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s, self.clock = grace_s, clock
        self.owner = threading.get_ident()
        self._due = clock() + grace_s

    def beat(self, waiting_s: float | None = 0.0) -> None:
        """The loop is here, and back within ``waiting_s`` (None: a wait with no end) + grace."""
        if threading.get_ident() != self.owner:
            return
        self._due = self.clock() + (float("inf") if waiting_s is None else waiting_s) + self.grace_s

    def overdue_s(self) -> float:
        """How long the loop is late (0: alive)."""
        return max(0.0, self.clock() - self._due)


class BeatingStop(threading.Event):
    """The run's stop (set by the signal handlers), whose every look and wait is a beat of
    ``liveness``: the loop turning, or waiting for at most that long."""

    def __init__(self, stop: threading.Event, liveness: Liveness) -> None:
        super().__init__()
        self.stop, self.liveness = stop, liveness

    def is_set(self) -> bool:
        self.liveness.beat()
        return self.stop.is_set()

    def set(self) -> None:
        self.stop.set()

    def clear(self) -> None:
        self.stop.clear()

    def wait(self, timeout: float | None = None) -> bool:
        self.liveness.beat(timeout)
        return self.stop.wait(timeout)


HEALTH_PATH = "/healthz"


def with_health(app: WSGIApplication, liveness: Liveness) -> WSGIApplication:
    """The metrics server's application, answering ``/healthz`` too: 200 ``alive``, or 503 and
    how late the loop is."""

    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != HEALTH_PATH:
            return app(environ, start_response)
        late = liveness.overdue_s()
        status, body = (
            ("200 OK", "alive\n")
            if late == 0
            else (
                "503 Service Unavailable",
                f"the watcher's loop is {late:.0f}s late (stuck)\n",
            )
        )
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body.encode()]

    return serve
