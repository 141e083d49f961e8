"""Progress of a long job: a tqdm bar on a terminal, a log line every few seconds otherwise
(systemd, Kubernetes, cron mail), nothing with ``-q``. A job may say what its count is made of
(``update``'s figures: ``archived 0, already archived 135``), in the words of its summary."""

from __future__ import annotations

import io
import os
import sys
import time
from typing import Any, Literal

from order_archiver.logs import get_logger

log = get_logger("progress")

LOG_EVERY_S = 10.0


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
    ) -> None:
        self.description = description
        self.log_every_s = log_every_s
        self.total = total
        self.mode = mode
        self.unit = unit
        self.done = 0
        self.figures: dict[str, int] = {}  # what ``done`` is made of, summed (``update``)
        self.started = time.monotonic()
        self._logged_at = self.started
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
        for name, value in figures.items():
            self.figures[name] = self.figures.get(name, 0) + value
        if self._bar is not None:
            if self.figures:
                self._bar.set_postfix_str(self._figures_text(), refresh=False)
            self._bar.update(count)
        elif self.mode == "log" and time.monotonic() - self._logged_at >= self.log_every_s:
            self._logged_at = time.monotonic()
            self._log_line()

    def _log_line(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        figures = f": {self._figures_text()}" if self.figures else ""
        if self.total:
            remaining = max(self.total - self.done, 0)
            eta = f", ETA {remaining / rate:.0f}s" if rate > 0 else ""
            log.info(
                "%s: %d/%d %s (%.0f/s%s)%s",
                self.description,
                self.done,
                self.total,
                self.unit,
                rate,
                eta,
                figures,
                extra={"done": self.done, "total": self.total, "rate": round(rate, 1)},
            )
        else:
            log.info("%s: %d %s (%.0f/s)%s", self.description, self.done, self.unit, rate, figures)

    def _figures_text(self) -> str:
        return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in self.figures.items())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
