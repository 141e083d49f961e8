"""``--max-lag D``: before each chunk of writes (the archive's) or deletes (the purge's), the run
waits while a data-bearing secondary of the source's deployment (and of the archive's, when it
is another one) is more than ``D`` behind its primary (``mongodb/replication_lag.py`` measures).
It looks again every ``POLL_S``; every wait is ``stop_event.wait`` (a stop ends it, and the run,
at once: no chunk is written while a secondary lags), and one hold lasts ``HOLD_LIMIT_S`` at
most: a secondary that never catches up ends the run (exit 1, named), it does not hang it. The
run's own limits end a hold too (``limits.py``): at ``--max-runtime``'s deadline, or once the
``--stop-file`` exists, the hold raises ``LimitReached`` and the run ends as at the chunk boundary
before the chunk held (checkpoint saved, exit 0), not an hour later. The report says how long the
run waited, in all and for which member (the one furthest behind)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from pymongo import MongoClient

from order_archiver.batch.limits import NO_LIMITS, RunLimits
from order_archiver.documents import Document
from order_archiver.errors import ArchiverError
from order_archiver.logs import get_logger
from order_archiver.mongodb.replication_lag import LagProbe, MemberLag, worst_over

log = get_logger("batch")

POLL_S = 1.0  # how often a held run looks again (replSetGetStatus itself is a heartbeat behind)
HOLD_LIMIT_S = 3600.0  # one hold's longest: past it the run ends, naming the member


class LagReport(Protocol):
    max_lag_s: float | None
    lag_checks: int
    lag_waited_s: float
    lag_waited_for: dict[str, float]
    warnings: list[str]


@dataclass
class LagHold:
    max_lag_s: float
    probes: list[LagProbe]
    stop_event: threading.Event
    report: LagReport
    poll_s: float = POLL_S
    limit_s: float = HOLD_LIMIT_S
    clock: Callable[[], float] = time.monotonic
    limits: RunLimits = NO_LIMITS  # --max-runtime, --stop-file: they end a hold too
    _announced: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def of(
        cls,
        max_lag: timedelta | None,
        deployments: tuple[MongoClient[Document], MongoClient[Document] | None],
        stop_event: threading.Event,
        report: LagReport,
        limits: RunLimits = NO_LIMITS,
    ) -> LagHold | None:
        """The hold of ``--max-lag`` over the source's deployment and the archive's (if another
        one), ended by the run's ``limits`` too; None without ``--max-lag``."""
        if max_lag is None:
            return None
        report.max_lag_s = max_lag.total_seconds()

        def warn(message: str) -> None:
            log.warning("%s", message)
            report.warnings.append(message)

        source, archive = deployments
        probes = [LagProbe(source, "source deployment", stop_event, warn)]
        if archive is not None and archive is not source:
            probes.append(LagProbe(archive, "archive deployment", stop_event, warn))
        return cls(max_lag.total_seconds(), probes, stop_event, report, limits=limits)

    def lagging(self) -> MemberLag | None:
        """The member furthest behind, of those more than ``max_lag_s`` behind (one measurement
        per deployment, or its cached one)."""
        return worst_over([lag for probe in self.probes for lag in probe.lags()], self.max_lag_s)

    def hold(self) -> None:
        """Wait while a secondary lags more than ``max_lag_s``: bounded; a stop ends it (an
        error: interrupted), and so does a limit of the run (``LimitReached``: a clean end)."""
        started = self.clock()
        self.report.lag_checks += 1
        while (behind := self.lagging()) is not None:
            self._announce(behind)
            waited = self.clock() - started
            if waited >= self.limit_s:
                raise ArchiverError(
                    f"{behind.member} has been more than {self.max_lag_s:g}s behind its primary for "
                    f"{waited:.0f}s ({behind.seconds:.0f}s now): the run stopped before its next chunk; "
                    "run it again once the secondaries have caught up"
                )
            before = self.clock()
            self.limits.wait(self.stop_event, min(self.poll_s, self.limit_s - waited), clock=self.clock)
            self._count(behind.member, self.clock() - before)
            if self.stop_event.is_set():
                raise ArchiverError(
                    "interrupted while waiting for the secondaries to catch up: the run stopped after "
                    "its last complete chunk; run it again to finish"
                )
            self.limits.check()

    def _announce(self, behind: MemberLag) -> None:
        if behind.member not in self._announced:  # once per member, not once per poll
            self._announced.add(behind.member)
            log.info(
                "waiting: %s is %.1fs behind its primary (--max-lag %gs)",
                behind.member,
                behind.seconds,
                self.max_lag_s,
            )

    def _count(self, member: str, seconds: float) -> None:
        self.report.lag_waited_s += seconds
        self.report.lag_waited_for[member] = self.report.lag_waited_for.get(member, 0.0) + seconds


def held(
    max_lag: timedelta | None,
    deployments: tuple[MongoClient[Document], MongoClient[Document] | None],
    stop_event: threading.Event,
    report: LagReport,
    limits: RunLimits = NO_LIMITS,
) -> Callable[[], None] | None:
    """The wait of ``--max-lag`` before each chunk (None: no limit), ended by ``limits`` too."""
    hold = LagHold.of(max_lag, deployments, stop_event, report, limits)
    return hold.hold if hold is not None else None
