"""A run's limits of "do no harm" (#34) as one object the job holds: ``--max-rate`` on the pass's
reads and on every chunk written or deleted after them (``pacing.py``), ``--max-lag``'s hold before
each chunk written or deleted (``lag_hold.py``), and ``--max-runtime``/``--stop-file``
(``limits.py``), which end the run at a chunk boundary and end each of those waits too.

Outside the pass, every bulk write or delete of a run (the purge, the retentions, the rejects
list's prune, the cold tier's move; restore's, forget's and verify --repair's) meets the limits
through the run's ``context.gate`` (a ``ChunkGate``: this object), a chunk at a time: no second
implementation of them, and no path that writes in bulk outside them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol, TypeVar

from pymongo import MongoClient

from order_archiver.batch.lag_hold import LagReport, held
from order_archiver.batch.limits import Ended, LimitReached, RunLimits
from order_archiver.batch.pacing import PacedReport, Pacer, Scanned, paced_chunk_size, read_paced
from order_archiver.batch.report import PAUSES, BatchOptions, BatchReport
from order_archiver.documents import Document

T = TypeVar("T", bound=Scanned)
DEFAULT_CHUNK = 100  # a pass's chunk outside a batch run (BATCH_SIZE's default)


class ThrottledReport(LagReport, PacedReport, Protocol):
    """Where a run's limits say what they held: the rate (``pacing``) and the lag (``lag_hold``)."""


class EndedReport(Protocol):
    ended: Ended | None  # why the run ended (None: not yet)


@dataclass(frozen=True)
class CommandLimits:
    """The four limits as a command other than batch is given them (restore, forget, verify
    --repair: its flags, over BATCH_MAX_RATE and BATCH_MAX_LAG)."""

    max_runtime: timedelta | None = None
    stop_file: str | None = None
    max_rate: float | None = None
    max_lag: timedelta | None = None

    def throttle(
        self,
        deployments: tuple[MongoClient[Document], MongoClient[Document] | None],
        stop: threading.Event,
        report: ThrottledReport,
    ) -> Throttle:
        ends, pace = (self.max_runtime, self.stop_file), (self.max_rate, self.max_lag)
        return Throttle.of_limits(ends, pace, deployments, stop, report)


NO_COMMAND_LIMITS = CommandLimits()


@dataclass
class HeldLimits:
    """What the limits of a command other than batch (restore, forget, verify --repair) held,
    and why it ended: the ``ThrottledReport`` of its ``Throttle``, one part of its report."""

    ended: Ended | None = None
    max_rate: float | None = None
    paced_s: float = 0.0
    max_lag_s: float | None = None
    lag_checks: int = 0
    lag_waited_s: float = 0.0
    lag_waited_for: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def paused(self) -> bool:
        """Ended by ``--max-runtime`` or ``--stop-file``: cleanly, before the end (exit 0)."""
        return self.ended in PAUSES

    def settle(self, stopped: bool) -> None:
        """At the command's end: ended by a limit, by a signal (``stopped``), or completed."""
        self.ended = self.ended or ("signal" if stopped else "completed")

    def line(self, command: str) -> str | None:
        """What the limits did, for a person (None: no limit set, and it completed)."""
        said = []
        if self.ended in PAUSES:
            said.append(f"{command} ended {PAUSES[self.ended]}: run it again to do the rest")
        elif self.ended == "signal":
            said.append(f"{command} stopped by a signal: run it again to do the rest")
        if self.max_rate:
            said.append(f"held to --max-rate {self.max_rate:g} (waited {self.paced_s:.1f}s)")
        if self.max_lag_s is not None:
            members = ", ".join(f"{m} {s:.1f}s" for m, s in sorted(self.lag_waited_for.items()))
            said.append(
                f"--max-lag {self.max_lag_s:g}s: waited {self.lag_waited_s:.1f}s for lagging "
                f"secondaries ({members or 'none lagged'})"
            )
        return "; ".join(said) or None


@dataclass
class Throttle:
    """The limits of one run (see the module)."""

    limits: RunLimits
    chunk_size: int  # what each read may bring, paid for before it (pacing.paced_chunk_size)
    read_pacer: Pacer | None  # the pass's reads (the writes follow them)
    purge_pacer: Pacer | None  # every chunk written or deleted after the pass (or outside one)
    hold: Callable[[], None] | None  # before each chunk written or deleted

    @classmethod
    def of(
        cls,
        options: BatchOptions,
        deployments: tuple[MongoClient[Document], MongoClient[Document] | None],
        stop: threading.Event,
        report: BatchReport,
    ) -> Throttle:
        ends = (options.max_runtime, options.stop_file)
        throttle = cls.of_limits(ends, (options.max_rate, options.max_lag), deployments, stop, report)
        throttle.chunk_size = paced_chunk_size(options.batch_size, options.max_rate)
        return throttle

    @classmethod
    def of_limits(
        cls,
        ends: tuple[timedelta | None, str | None],
        pace: tuple[float | None, timedelta | None],
        deployments: tuple[MongoClient[Document], MongoClient[Document] | None],
        stop: threading.Event,
        report: ThrottledReport,
    ) -> Throttle:
        """The limits of any command's run: ``ends`` (``--max-runtime``, ``--stop-file``) and
        ``pace`` (``--max-rate``, ``--max-lag``, over the source's deployment and the archive's)."""
        limits = RunLimits(*ends)
        rate, lag = pace
        return cls(
            limits,
            paced_chunk_size(DEFAULT_CHUNK, rate),
            Pacer.of(rate, stop, report, limits),
            Pacer.of(rate, stop, report, limits),
            held(lag, deployments, stop, report, limits),
        )

    def reads(self, chunks: Iterator[T]) -> Iterator[T]:
        """The pass's chunks, read at ``--max-rate`` (``pacing.read_paced``)."""
        return read_paced(chunks, self.read_pacer, self.chunk_size)

    @property
    def purge_pace(self) -> Callable[[int], None] | None:
        return self.purge_pacer.pace if self.purge_pacer is not None else None

    def before(self) -> None:
        """Before each chunk written or deleted outside the pass (``context.ChunkGate``), a chunk
        boundary: the run's limits (``LimitReached``), then ``--max-lag``'s hold (which they end too)."""
        self.limits.check()
        if self.hold is not None:
            self.hold()

    def after(self, orders: int) -> None:
        """After such a chunk of ``orders``: ``--max-rate``'s pacing (``context.ChunkGate``)."""
        if self.purge_pacer is not None:
            self.purge_pacer.pace(orders)

    def ended(self) -> bool:
        return self.limits.reached() is not None

    def check(self) -> None:
        self.limits.check()

    def wait(self, stop: threading.Event, seconds: float) -> None:
        """A wait that is no chunk's (``context.ChunkGate.wait``): ``limits.RunLimits.wait``."""
        self.limits.wait(stop, seconds)

    @contextmanager
    def until_a_limit(self, report: EndedReport) -> Iterator[None]:
        """A pass or a purge, ended cleanly by a limit (at a chunk boundary, or during a wait:
        ``report.ended`` says which); a reader waiting for the rate is released when it ends."""
        try:
            yield
        except LimitReached as reached:
            report.ended = reached.limit
        finally:
            if self.read_pacer is not None:
                self.read_pacer.release()
