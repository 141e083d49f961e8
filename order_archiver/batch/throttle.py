"""A run's limits of "do no harm" (#34) as one object the job holds: ``--max-rate`` on the pass's
reads and on the purge's deletes (``pacing.py``), ``--max-lag``'s hold before each chunk written
or deleted (``lag_hold.py``), and ``--max-runtime``/``--stop-file`` (``limits.py``), which end
the run at a chunk boundary and end each of those waits too."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from pymongo import MongoClient

from order_archiver.batch.lag_hold import held
from order_archiver.batch.limits import LimitReached, RunLimits
from order_archiver.batch.pacing import Pacer, Sized, paced_chunk_size, read_paced
from order_archiver.batch.report import BatchOptions, BatchReport
from order_archiver.documents import Document

T = TypeVar("T", bound=Sized)


@dataclass
class Throttle:
    """The limits of one run (see the module)."""

    limits: RunLimits
    chunk_size: int  # what each read may bring, paid for before it (pacing.paced_chunk_size)
    read_pacer: Pacer | None  # the pass's reads (the writes follow them)
    purge_pacer: Pacer | None  # the purge's deletes
    hold: Callable[[], None] | None  # before each chunk written or deleted

    @classmethod
    def of(
        cls,
        options: BatchOptions,
        deployments: tuple[MongoClient[Document], MongoClient[Document] | None],
        stop: threading.Event,
        report: BatchReport,
    ) -> Throttle:
        limits = RunLimits(options.max_runtime, options.stop_file)
        rate: float | None = options.max_rate
        lag: timedelta | None = options.max_lag
        return cls(
            limits,
            paced_chunk_size(options.batch_size, rate),
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

    def before_deletes(self) -> None:
        """Before each chunk of the purge's deletes, a chunk boundary: the run's limits, then
        ``--max-lag``'s hold (which they end too)."""
        self.limits.check()
        if self.hold is not None:
            self.hold()

    @contextmanager
    def until_a_limit(self, report: BatchReport) -> Iterator[None]:
        """A pass or a purge, ended cleanly by a limit (at a chunk boundary, or during a wait:
        ``report.ended`` says which); a reader waiting for the rate is released when it ends."""
        try:
            yield
        except LimitReached as reached:
            report.ended = reached.limit
        finally:
            if self.read_pacer is not None:
                self.read_pacer.release()
