"""``--max-rate N``: at most N orders a second, read and written (and deleted by the purge), over
the whole run and over any few seconds of it, whatever the batch size. The pass is paced where
it reads (``job.py``: before each chunk is read, the reader waits until a chunk's worth fits
the rate; the writes follow the reads), the purge after each chunk it walked. What is paid for
is every order gone through (``Scanned``): examined, or skipped by the read as archived
already (a full sweep or a re-run over an archived history reads mostly those: paying for the
examined ones alone let such a run read the primary at 927 orders/s under --max-rate 200).

The pacer starts empty: the first chunk is paid for like the others (a token bucket that
started full let a second's worth through at once, and a short run reported 134.6 orders/s
under --max-rate 50). A run that falls behind (a slow chunk, a wait for a lagging secondary)
may make up ``CATCH_UP_S`` of that lost time, no more, and never more than it lost: over the
run, orders handled <= N x the time from its first chunk on. Every wait is ``stop_event.wait``
(a stop is not delayed), and the run's limits end it too (``limits.py``)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from order_archiver.batch.limits import NO_LIMITS, RunLimits

CATCH_UP_S = 1.0  # lost time a run that fell behind may make up (never at its start)


class Scanned(Protocol):
    @property
    def scanned(self) -> int: ...  # orders a chunk went through: examined, or skipped as archived


T = TypeVar("T", bound=Scanned)


class PacedReport(Protocol):
    max_rate: float | None
    paced_s: float


def paced_chunk_size(batch_size: int, rate: float | None) -> int:
    """What a paced pass reads at a time: the batch size, at most one second's worth of the rate
    (the same for a page of ``_id``s, ``source.OrderSource.page_size``: a page of orders archived
    already is a chunk's read, paid for after it, never more than a second ahead).
    A chunk's worth is paid for before it is read (``read_paced``), so a pass's short last chunk
    (an incremental run's ten new orders) waited a whole chunk's worth: 10 s under --max-rate 10
    with the default batch size of 100, for a tenth of a second's orders."""
    if rate is None:
        return batch_size
    return max(1, min(batch_size, math.ceil(rate)))


@dataclass
class Pacer:
    rate: float  # orders a second
    stop_event: threading.Event
    report: PacedReport
    clock: Callable[[], float] = time.monotonic
    limits: RunLimits = NO_LIMITS  # --max-runtime, --stop-file: they end a wait too
    _due: float | None = field(default=None, repr=False)  # when the orders so far fit the rate
    _released: threading.Event = field(default_factory=threading.Event, repr=False)

    @classmethod
    def of(
        cls,
        rate: float | None,
        stop_event: threading.Event,
        report: PacedReport,
        limits: RunLimits = NO_LIMITS,
    ) -> Pacer | None:
        if rate is None:
            return None
        report.max_rate = rate
        return cls(rate, stop_event, report, limits=limits)

    def pace(self, orders: int) -> None:
        """``orders`` were just handled: wait until they fit the rate (see the module)."""
        now = self.clock()
        start = now if self._due is None else max(self._due, now - CATCH_UP_S)
        self._due = start + orders / self.rate
        if self._due > now and not self._released.is_set():
            self.limits.wait(self.stop_event, self._due - now, self._released, self.clock)
            self.report.paced_s += self.clock() - now

    def settle(self, orders: int) -> None:
        """Orders read beyond what was paid for (``pace``) before the read: paid now; fewer
        (a short last chunk): the difference given back, so that no later wait pays for it."""
        if orders > 0:
            self.pace(orders)
        elif orders < 0 and self._due is not None:
            self._due += orders / self.rate

    def release(self) -> None:
        """The orders' consumer is gone (the pass ended early): end a wait now, and every later one."""
        self._released.set()


def read_paced(chunks: Iterator[T], pacer: Pacer | None, chunk_size: int) -> Iterator[T]:
    """``--max-rate`` on a pass's reads (on its reader's thread): before each chunk is read, wait
    until a chunk's worth (``chunk_size``: ``paced_chunk_size``) fits the rate, so that the orders read
    never run ahead of it, not even by a first chunk (a run cut at 5 s had read 1,000 orders
    under --max-rate 100); a chunk that went through more or fewer orders than paid for (its
    ``scanned``: the archived ones its read skipped count) is settled after it, and after a
    short chunk (the last) nothing more is paid for. A limit of the
    run that ended the wait ends the reading before the read (``LimitReached``, raised where
    the chunks are written)."""
    if pacer is None:
        yield from chunks
        return
    iterator = iter(chunks)
    while True:
        pacer.pace(chunk_size)
        pacer.limits.check()
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        pacer.settle(chunk.scanned - chunk_size)
        yield chunk
        if chunk.scanned < chunk_size:  # a short chunk is the pass's last (the reader yields full ones)
            yield from iterator
            return
