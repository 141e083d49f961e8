"""Progress of a long job: a tqdm bar on a terminal, a log line every few seconds otherwise
(systemd, Kubernetes, cron mail), nothing with ``-q``. A job may say what its count is made of
(``update``'s figures: ``archived 0, already archived 135``), in the words of its summary."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

from order_archiver.logs import get_logger

log = get_logger("progress")

LOG_EVERY_S = 10.0
# The rate (and the ETA from it) is measured from the end of the first update on: the first one
# carries the start-up (the indexes looked at, the count, the first read, the pacer's first
# wait), and a first line's "8/s, ETA 2834s" came from a 40 s dry run. Nothing is said of
# either until this long and this many updates after the first are measured.
MEASURE_S = 5.0
MEASURE_UPDATES = 2


ProgressMode = Literal["bar", "log", "off"]  # a bar on a terminal, log lines otherwise, or nothing


def progress_mode(quiet: bool) -> ProgressMode:
    """``bar`` when stderr is a terminal that says its width, ``log`` otherwise, ``off`` with ``-q``."""
    if quiet:
        return "off"
    return "bar" if sys.stderr.isatty() and terminal_columns() > 0 else "log"


def terminal_columns() -> int:
    """stderr's terminal's width; 0 where it says none: a pseudo-terminal made without a size
    (``script``, ``docker exec -t`` or ``kubectl exec -t`` before a resize), where tqdm draws
    nothing at all, and a long run would be silent until its summary."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return 0


class Progress:
    def __init__(
        self,
        description: str,
        total: int | None = None,
        mode: ProgressMode = "off",
        unit: str = "orders",
        log_every_s: float = LOG_EVERY_S,
        clock: Callable[[], float] | None = None,
        estimated: bool = False,
    ) -> None:
        self.description = description
        self.log_every_s = log_every_s
        self.total = total
        # The total is an estimate (a --partition share's): said "~", as the ETA from it.
        self.estimated = estimated
        self.mode = mode
        self.unit = unit
        self.done = 0
        self.figures: dict[str, int] = {}  # what ``done`` is made of, summed (``update``)
        self.clock = clock or time.monotonic
        self.started = self.clock()
        self._logged_at = self.started
        self._first: tuple[float, int] | None = None  # when the first update ended, and its count
        self._updates = 0
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=description, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True
            )

    def update(self, count: int, **figures: int) -> None:
        """``count`` more done; ``figures`` (``already_archived=135``): what they were, each
        summed and shown after the rate in its summary's words (``already archived 135``)."""
        self.done += count
        self._updates += 1
        if self._first is None:
            self._first = (self.clock(), self.done)
        for name, value in figures.items():
            self.figures[name] = self.figures.get(name, 0) + value
        if self._bar is not None:
            if self.figures:
                self._bar.set_postfix_str(self._figures_text(), refresh=False)
            self._bar.update(count)
        elif self.mode == "log" and self.clock() - self._logged_at >= self.log_every_s:
            self._logged_at = self.clock()
            self._log_line()

    def rate(self) -> float | None:
        """Per second since the first update ended (its count, which carries the start-up, left
        out), once ``MEASURE_S`` and ``MEASURE_UPDATES`` updates after it are measured; None before."""
        if self._first is None or self._updates <= MEASURE_UPDATES:
            return None
        at, done = self._first
        elapsed = self.clock() - at
        return (self.done - done) / elapsed if elapsed >= MEASURE_S else None

    def _log_line(self) -> None:
        rate = self.rate()
        figures = f": {self._figures_text()}" if self.figures else ""
        about = "~" if self.estimated else ""
        count = f"{self.done}/{about}{self.total}" if self.total else str(self.done)
        if rate is None:
            said = "rate and ETA after a few chunks" if self.total else "rate after a few chunks"
        elif self.total:
            remaining = max(self.total - self.done, 0)
            said = f"{rate:.0f}/s" + (f", ETA {about}{remaining / rate:.0f}s" if rate > 0 else "")
        else:
            said = f"{rate:.0f}/s"
        extra = {"done": self.done, "total": self.total, "rate": None if rate is None else round(rate, 1)}
        if self.estimated:
            extra["total_estimated"] = True
        log.info("%s: %s %s (%s)%s", self.description, count, self.unit, said, figures, extra=extra)

    def _figures_text(self) -> str:
        return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in self.figures.items())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
