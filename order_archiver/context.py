"""One run's context: what every part of a command's run shares, handed down as one object
instead of one argument at a time: the stop (set by SIGTERM, SIGINT or ``--stop-file``: every
wait is ``context.stop.wait(t)``, every retry ends on it), the clock (UTC; a test hands a fixed
one), and the deployment a part works on (with ARCHIVE_MONGODB_URI, its errors name it).

The command line makes one (``cli/main.py``); a job hands each part the run ``on`` its side.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

from order_archiver.retry import Purpose, Retry, named_side, retrying

T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunContext:
    """The stop, the clock and the side of one command's run (see the module)."""

    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], datetime] = utc_now
    side: str = ""  # retry.SOURCE_SIDE or ARCHIVE_SIDE with two deployments; "" with one

    def on(self, side: str) -> RunContext:
        """The same run context, working on ``side`` (``""``: errors name no deployment)."""
        return self if side == self.side else replace(self, side=side)

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

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
