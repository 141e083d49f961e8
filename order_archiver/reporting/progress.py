"""Progress of a long job: a tqdm bar on a terminal, a log line every few seconds otherwise
(systemd, Kubernetes, cron mail), nothing with ``-q``."""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

from order_archiver.logs import get_logger

log = get_logger("progress")

LOG_EVERY_S = 10.0


ProgressMode = Literal["bar", "log", "off"]  # a bar on a terminal, log lines otherwise, or nothing


def progress_mode(quiet: bool) -> ProgressMode:
    """``bar`` when stderr is a terminal, ``log`` when it is not, ``off`` with ``-q``."""
    if quiet:
        return "off"
    return "bar" if sys.stderr.isatty() else "log"


class Progress:
    def __init__(
        self,
        description: str,
        total: int | None = None,
        mode: ProgressMode = "off",
        unit: str = "orders",
        log_every_s: float = LOG_EVERY_S,
    ) -> None:
        self.description = description
        self.log_every_s = log_every_s
        self.total = total
        self.mode = mode
        self.unit = unit
        self.done = 0
        self.started = time.monotonic()
        self._logged_at = self.started
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=description, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True
            )

    def update(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif self.mode == "log" and time.monotonic() - self._logged_at >= self.log_every_s:
            self._logged_at = time.monotonic()
            self._log_line()

    def _log_line(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            remaining = max(self.total - self.done, 0)
            eta = f", ETA {remaining / rate:.0f}s" if rate > 0 else ""
            log.info(
                "%s: %d/%d %s (%.0f/s%s)",
                self.description,
                self.done,
                self.total,
                self.unit,
                rate,
                eta,
                extra={"done": self.done, "total": self.total, "rate": round(rate, 1)},
            )
        else:
            log.info("%s: %d %s (%.0f/s)", self.description, self.done, self.unit, rate)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
