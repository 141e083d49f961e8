"""``--max-runtime D`` and ``--stop-file PATH``: when a run ends before its pass does. They are
looked at between chunks (``job.py``: the run ends cleanly at a chunk boundary, its checkpoint
saved, exit 0), and during every wait a chunk may make (``--max-lag``'s hold before its write,
``--max-rate``'s pacing after it): a wait of minutes for a lagging secondary must not carry a
run past its time, nor past a stop file put there to end it.

A wait ends at the deadline itself, and looks for the stop file every ``LOOK_S`` (pt-archiver's
sentinel is looked for between chunks; a held run has no chunk boundary for as long as it
waits). A hold that meets a limit raises ``LimitReached`` before its chunk is written: the run
ends as at the boundary before that chunk."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from order_archiver.errors import ConfigError, FatalError

LOOK_S = 1.0  # how often a wait looks for the stop file

Limit = Literal["max_runtime", "stop_file"]
Ended = Literal["completed", "max_runtime", "stop_file", "signal", "error"]  # why a run ended (#34)


class LimitReached(Exception):  # not an error: a clean end, exit 0
    """A limit came while a chunk waited to be written (``--max-lag``'s hold): nothing of that
    chunk was written; the run ends at the boundary before it."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(limit)
        self.limit: Limit = limit


@dataclass(frozen=True)
class RunLimits:
    """When a run ends before its pass does: ``--max-runtime`` (this process's clock) and
    ``--stop-file`` (a sentinel file, as pt-archiver's)."""

    max_runtime: timedelta | None
    stop_file: str | None
    started: float = field(default_factory=time.monotonic)
    clock: Callable[[], float] = time.monotonic

    def reached(self) -> Limit | None:
        """The limit that has come, if any. A stop file that cannot be looked for (its folder on a
        stale NFS mount: ESTALE; gone unreadable) stops the run too, as an error (``FatalError``,
        exit 1, one line naming it): whoever set it may have put it there, and a run that goes
        on past it cannot be stopped by it."""
        if self.stop_file and stop_file_there(self.stop_file, FatalError, STOPPED_HERE):
            return "stop_file"
        if self._left_s() <= 0:
            return "max_runtime"
        return None

    def check(self) -> None:
        """At a chunk boundary inside a step (the purge's, before its deletes): raise
        ``LimitReached`` when a limit has come."""
        if (limit := self.reached()) is not None:
            raise LimitReached(limit)

    def wait(
        self,
        stop: threading.Event,
        seconds: float,
        released: threading.Event | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Wait up to ``seconds`` by ``clock`` (the waiter's; by default the limits'); a stop,
        the deadline, the stop file or ``released`` (the waiter's consumer gone:
        ``pacing.Pacer.release``) ends the wait sooner; the caller asks ``reached()`` what ended it."""
        now = clock or self.clock
        end = now() + seconds
        look = LOOK_S if released is not None or self.stop_file else float("inf")
        while (left := end - now()) > 0 and self.reached() is None:
            if released is not None and released.is_set():
                return
            if stop.wait(min(left, self._left_s(), look)):
                return

    def left(self) -> timedelta | None:
        """The time left to the deadline (None without ``--max-runtime``): a later step of the same
        command given it as its own ``--max-runtime`` ends at the same moment."""
        return None if self.max_runtime is None else timedelta(seconds=max(self._left_s(), 0.0))

    def _left_s(self) -> float:
        """Seconds to the deadline (infinite without ``--max-runtime``)."""
        if self.max_runtime is None:
            return float("inf")
        return self.max_runtime.total_seconds() - (self.clock() - self.started)


STOPPED_HERE = "the run stops here, as if it were there"
WATCHER_STOPS_HERE = "the watcher stops, as if it were there (its token saved after its last write)"
REFUSED_HERE = "refused before anything is written"


def stop_file_there(path: str, error: type[FatalError] | type[ConfigError], said: str) -> bool:
    """Whether the stop file ``path`` exists (not found: no); one that cannot be looked for
    (``OSError``: a stale NFS handle, an I/O error, a folder no longer readable, a folder
    replaced by a file or by a symbolic link loop: no file can appear there any more) raises
    ``error``: one line naming it, what happened (``said``) and what to fix. Not ``Path.exists``,
    which answers False for a folder replaced by a file (ENOTDIR) or by a loop (ELOOP)."""
    try:
        Path(path).expanduser().stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise error(
            f"--stop-file {path}: cannot be looked for ({reason}): {said}; fix its folder (a stale NFS "
            "mount: remount it) or give a --stop-file on a local disk, then run again"
        ) from None
    return True


NO_LIMITS = RunLimits(None, None)  # a run without --max-runtime nor --stop-file (the watcher's catch-up)
