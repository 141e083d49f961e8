"""``--max-rate N``: at most N orders a second, read and written (and deleted by the purge), on
average over a couple of seconds whatever the batch size: after each chunk the run waits, if it
is ahead, until its orders fit the rate (a generic cell rate: a burst of ``BURST_S`` seconds'
worth is let through, no more). Every wait is ``stop_event.wait``: a stop is not delayed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

BURST_S = 1.0  # how far ahead of the rate a run may be before it waits


class PacedReport(Protocol):
    max_rate: float | None
    paced_s: float


@dataclass
class Pacer:
    rate: float  # orders a second
    stop_event: threading.Event
    report: PacedReport
    clock: Callable[[], float] = time.monotonic
    _due: float | None = field(default=None, repr=False)  # when the orders so far fit the rate

    @classmethod
    def of(cls, rate: float | None, stop_event: threading.Event, report: PacedReport) -> Pacer | None:
        if rate is None:
            return None
        report.max_rate = rate
        return cls(rate, stop_event, report)

    def pace(self, orders: int) -> None:
        """``orders`` were just handled: wait while the run is more than ``BURST_S`` ahead."""
        now = self.clock()
        self._due = max(self._due if self._due is not None else now, now) + orders / self.rate
        ahead = self._due - now - BURST_S
        if ahead > 0:
            self.report.paced_s += ahead
            self.stop_event.wait(ahead)


def paced(
    rate: float | None, stop_event: threading.Event, report: PacedReport
) -> Callable[[int], None] | None:
    """The pacing of ``--max-rate`` (None: as fast as the server allows)."""
    pacer = Pacer.of(rate, stop_event, report)
    return pacer.pace if pacer is not None else None
