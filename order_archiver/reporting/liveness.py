"""Is this watcher alive: its loop came back when it said it would (``/healthz``).

A liveness probe restarts a process that cannot recover by itself; it says nothing of the
deployment (``status`` does: readiness, alerting). So it looks at this process only, through
the run's stop, which every loop of the product looks at each turn (``stop.is_set()``) and every
wait goes through (``stop.wait(t)``: a reconnect's backoff, a wait for the server, for the
archive's unique index, for a lagging secondary, for the lease): each says by when the loop
will be back. A loop waiting for a server that is
away is alive; one stuck beyond its wait plus ``grace_s`` (WATCH_LIVENESS_S) is not.

A reply from MongoDB to the loop is a beat too (``ReplyBeats``): a query's results come in
batches, each ``getMore`` answered once the server has filled one, so a long read whose batches
keep coming is alive however long the whole read takes; a read with no batch for longer than the
grace (a hung server, a connection that answers nothing) is not. And a loop that waits for a
thread working for it (the catch-up's reader, ``source.ReadAhead``) is as alive as that thread
(``waiting_on``): its replies and waits count while, and only while, the loop waits for it; a
wait it began before (a retry's backoff while the loop was writing) counts for its length then.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from pymongo import monitoring


class Liveness:
    """When the loop is next due back (monotonic), set by the loop's own thread only (or by the
    thread it waits for, ``waiting_on``): the lease's renewal thread also waits on the stop, and
    would keep a hung loop looking alive."""

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s, self.clock = grace_s, clock
        self.owner = threading.get_ident()
        self._due = clock() + grace_s
        self._stand_in: int | None = None  # the thread the loop waits for, while it does
        # What each other live thread said last of its own return: a wait it began before the loop
        # came to wait for it still holds then (weak: a thread gone takes its entry with it).
        self._promised: weakref.WeakKeyDictionary[threading.Thread, float] = weakref.WeakKeyDictionary()

    def beat(self, waiting_s: float | None = 0.0) -> None:
        """The loop is here, and back within ``waiting_s`` (None: a wait with no end) + grace."""
        due = self.clock() + (float("inf") if waiting_s is None else waiting_s) + self.grace_s
        ident = threading.get_ident()
        if ident != self.owner:
            self._promised[threading.current_thread()] = due
        if ident in (self.owner, self._stand_in):
            self._due = due

    @contextlib.contextmanager
    def waiting_on(self, thread: threading.Thread) -> Iterator[None]:
        """The loop waits for ``thread`` (its reader): until the block ends, that thread's beats are
        the loop's. Only the loop's own thread hands them over; anyone else's call changes nothing."""
        if threading.get_ident() != self.owner or thread.ident is None:
            yield
            return
        self._stand_in = thread.ident
        # The loop is here, at its wait; and back when that thread said it would be, if later (a
        # retry's backoff it began while the loop was writing: its beat did not count then).
        self._due = max(self.clock() + self.grace_s, self._promised.get(thread, float("-inf")))
        try:
            yield
        finally:
            self._stand_in = None

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


def waiting_on(stop: threading.Event, thread: threading.Thread) -> contextlib.AbstractContextManager[None]:
    """``Liveness.waiting_on`` when ``stop`` is watch's (a ``BeatingStop``); otherwise nothing."""
    if isinstance(stop, BeatingStop):
        return stop.liveness.waiting_on(thread)
    return contextlib.nullcontext()


def waiting_at_most(stop: threading.Event, seconds: float) -> None:
    """The loop is about to wait up to ``seconds`` for something its stop does not end (a
    thread's ``join``): a beat saying so when ``stop`` is watch's (a ``BeatingStop``)."""
    if isinstance(stop, BeatingStop):
        stop.liveness.beat(seconds)


class ReplyBeats(monitoring.CommandListener):
    """Each reply from MongoDB (a command's, each ``getMore``'s batch, an error's) is a beat of the
    thread that asked, when that thread is the loop's (``Liveness.beat`` decides): a reply is the
    server answering, the loop not hung. The driver calls it on the thread that ran the command."""

    def __init__(self, liveness: Liveness) -> None:
        self.liveness = liveness

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass  # asked is not answered: a command sent to a server that never replies is a hang

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.liveness.beat()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.liveness.beat()


def reply_beats(stop: threading.Event | None) -> list[monitoring.CommandListener]:
    """The listener to give a client whose replies beat watch's liveness (none outside watch)."""
    return [ReplyBeats(stop.liveness)] if isinstance(stop, BeatingStop) else []


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
