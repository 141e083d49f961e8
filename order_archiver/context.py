"""One run's context: what every part of a command's run shares, handed down as one object
instead of one argument at a time: the stop (set by SIGTERM, SIGINT or ``--stop-file``: every
wait is ``context.stop.wait(t)``, every retry ends on it), the clock (UTC; a test hands a fixed
one), the deployment a part works on (with ARCHIVE_MONGODB_URI, its errors name it), and the
run's limits at each chunk boundary of its bulk writes (``gate``), and the faults of the threads
working for it (``faults``: a thread that cannot go on stops the run, which then fails in one line).

The command line makes one (``cli/main.py``); a job hands each part the run ``on`` its side.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from order_archiver.errors import ArchiverError, FatalError
from order_archiver.retry import Deleted, Purpose, Retry, deleted_across_retries, named_side, retrying

T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


class ChunkGate(Protocol):
    """#34's limits at the chunk boundaries of a bulk write or delete that is not the pass's
    (``batch/throttle.py``'s ``Throttle`` is the one): ``before`` each chunk, the run's limits
    (``--max-runtime``, ``--stop-file``: it raises the run's clean end, ``LimitReached``) then
    ``--max-lag``'s hold; ``after`` it, ``--max-rate``'s pacing of its ``orders``."""

    def before(self) -> None: ...

    def after(self, orders: int) -> None: ...

    def ended(self) -> bool:
        """A limit of the run has come (a wait that is no chunk's, an index build's, ends there)."""
        ...

    def check(self) -> None:
        """The run's limits alone, no hold: raise the run's clean end when one has come."""
        ...

    def wait(self, stop: threading.Event, seconds: float) -> None:
        """A wait of the run that is no chunk's (the cold tier's lease, held by another run): up
        to ``seconds``, ended sooner by ``stop`` and by a limit of the run (its deadline at once,
        the stop file looked for every second); the caller asks ``ended``/``check`` which."""
        ...


class NoLimits:
    """A run without limits: every chunk goes at once."""

    def before(self) -> None:
        return None

    def after(self, orders: int) -> None:
        return None

    def ended(self) -> bool:
        return False

    def check(self) -> None:
        return None

    def wait(self, stop: threading.Event, seconds: float) -> None:
        stop.wait(seconds)


UNLIMITED = NoLimits()


class ThreadFaults:
    """What a thread working for the run (watch's stop-file look, its lease's renewal) met that it
    cannot go on past. A thread that died of it would leave the run half alive (a watcher that no
    stop file can stop any more; a lease no longer renewed, taken again and lost, forever) and a
    traceback on the run's output. Instead it hands the fault here: the first one is kept, and
    the run is stopped as by SIGTERM (``stopping``: the command line's, the stop's watchdog
    included; else the stop set): the unit in hand finished, its token saved. The run's own
    thread, back from its loop, raises it (``raise_first``): one line, exit 1 by the one runner
    (``cli.main.dispatch``)."""

    def __init__(self, stopping: Callable[[], None] | None = None) -> None:
        self.stopping = stopping
        self._first: ArchiverError | None = None
        self._lock = threading.Lock()

    def fail(self, what: str, error: BaseException, stop: threading.Event) -> None:
        """``what`` (the thread's work, "the lease's renewal") met ``error``: kept if first, the run
        stopped. An ``ArchiverError`` is its own line; anything else is said as unexpected, its
        traceback kept as the cause (the log file's DEBUG line has it)."""
        if not isinstance(error, ArchiverError):
            first_line = next(iter(str(error).splitlines()), "")[:300]
            said = f"{what} failed: unexpected {type(error).__name__}"
            wrapped = FatalError(f"{said}: {first_line}" if first_line else said)
            wrapped.__cause__ = error
            error = wrapped
        with self._lock:
            if self._first is None:
                self._first = error
        (self.stopping or stop.set)()

    @property
    def first(self) -> ArchiverError | None:
        return self._first

    def raise_first(self) -> None:
        """Raise the first fault, if any (the run's own thread, once back from its loop)."""
        if self._first is not None:
            raise self._first


class StopGrace:
    """What a stop past its grace finds in hand (``cli.main``'s watchdog: the server answers
    nothing, a read or a write never returns). A run that can tell says when it holds work
    (``in_hand``: a watcher's micro-batch, from its events read to its token saved; its
    catch-up) and how it stops with nothing in hand (``idle_when``); the watchdog, past its
    grace, asks ``idle_stop``: with nothing in hand, the run's clean stop (its summary, exit
    0), the work kept from starting until the process exits; else the stop is an error."""

    def __init__(self) -> None:
        self._idle: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def idle_when(self, stop: Callable[[], None]) -> None:
        self._idle = stop

    def in_hand(self) -> threading.Lock:
        """``with grace.in_hand():`` around a unit of work."""
        return self._lock

    def idle_stop(self) -> bool:
        """True after the run's idle stop (then hold until the exit); False: work in hand, or
        a run that cannot tell."""
        if self._idle is None or not self._lock.acquire(blocking=False):
            return False
        self._idle()
        return True


@dataclass(frozen=True)
class RunContext:
    """The stop, the clock and the side of one command's run (see the module)."""

    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], datetime] = utc_now
    side: str = ""  # retry.SOURCE_SIDE or ARCHIVE_SIDE with two deployments; "" with one
    # Every bulk write or delete outside a batch pass (the purge's, the retentions', the cold
    # tier's move, the rejects list's prune, restore's, forget's, verify --repair's) goes
    # through it a chunk at a time: the run's limits (#34), or none.
    gate: ChunkGate = UNLIMITED
    faults: ThreadFaults = field(default_factory=ThreadFaults)  # the run's threads' (see there)
    grace: StopGrace = field(default_factory=StopGrace)  # a stop past its grace (see there)

    def on(self, side: str) -> RunContext:
        """The same run context, working on ``side`` (``""``: errors name no deployment)."""
        return self if side == self.side else replace(self, side=side)

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def fail(self, what: str, error: BaseException) -> None:
        """A thread working for the run met ``error`` doing ``what``: the run stops, then fails
        with it (``ThreadFaults``)."""
        self.faults.fail(what, error, self.stop)

    def named(self) -> AbstractContextManager[None]:
        """Errors raised inside name this run's side (once), as ``retrying`` does its own."""
        return named_side(self.side)

    def retrying(
        self,
        func: Callable[[], T],
        *,
        purpose: Purpose = Retry.COMMAND,
        on_retry: Callable[[BaseException, float], object] | None = None,
    ) -> T:
        """``func`` by ``purpose``'s retry policy, ended by the stop; its errors name the side."""
        with named_side(self.side):
            return retrying(func, purpose=purpose, stop_event=self.stop, on_retry=on_retry)

    def deleted(self, delete: Callable[[], Deleted], asked: int, remaining: Callable[[], int]) -> int:
        """How many of ``asked`` documents ``delete`` removed, true across retries
        (``retry.deleted_across_retries``), ended by the stop; its errors name the side."""
        with named_side(self.side):
            return deleted_across_retries(delete, asked, remaining, stop_event=self.stop)
