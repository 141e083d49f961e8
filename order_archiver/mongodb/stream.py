"""The change stream as watch reads it: a typed boundary (``ChangeStream``) and the helpers
that read it in micro-batches. pymongo's ``CollectionChangeStream`` is one; ``Prepended`` (a
stream with an event put back in front) is another; the tests' fakes are others."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

Event = Mapping[str, Any]

MIN_EMPTY_POLL_S = 0.005  # see next_event


class ChangeStream(Protocol):
    """What watch uses of a change stream."""

    @property
    def resume_token(self) -> Mapping[str, Any] | None: ...

    @property
    def alive(self) -> bool: ...

    def try_next(self) -> Any: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> Any: ...


class Prepended:
    """A change stream with one already-read event put back in front (opening from a token
    reads one event to learn whether the token is accepted)."""

    def __init__(self, stream: ChangeStream, event: Event) -> None:
        self.stream = stream
        self.pending: Event | None = event

    def try_next(self) -> Any:
        if self.pending is not None:
            event, self.pending = self.pending, None
            return event
        return self.stream.try_next()

    @property
    def resume_token(self) -> Mapping[str, Any] | None:
        return self.stream.resume_token

    @property
    def alive(self) -> bool:
        return self.pending is not None or self.stream.alive

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> Prepended:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def buffered(stream: ChangeStream) -> int:
    """Events the stream has received and not yet returned: what a micro-batch can take without
    another getMore. pymongo keeps them in its command cursor's ``_data`` deque, which no public
    attribute shows: this is the one place the product reads it, and if it ever changes, 0 only
    means smaller micro-batches (tests/integration/test_watch_nx.py checks it on the driver)."""
    if isinstance(stream, Prepended):
        return (1 if stream.pending is not None else 0) + buffered(stream.stream)
    data = getattr(getattr(stream, "_cursor", None), "_data", None)
    try:
        return len(data) if data is not None else 0
    except TypeError:
        return 0


def next_event(stream: ChangeStream, stop_event: threading.Event) -> Event | None:
    """One event, or None after a quiet getMore.

    A MongoDB server holds an empty getMore for ``max_await_time_ms``; a server that answers at
    once would make the loop spin, so an answer faster than ``MIN_EMPTY_POLL_S`` is followed by
    a pause of that length (it costs nothing on MongoDB and bounds the poll rate elsewhere)."""
    started = time.monotonic()
    event: Event | None = stream.try_next()
    if event is None:
        elapsed = time.monotonic() - started
        if elapsed < MIN_EMPTY_POLL_S:
            stop_event.wait(MIN_EMPTY_POLL_S - elapsed)
    return event


def micro_batch(stream: ChangeStream, first: Event, limit: int) -> tuple[list[Event], Event | None]:
    """``first`` and what the stream already holds, up to ``limit`` events: a burst becomes a
    few large writes, while a lone delivery is written at once instead of waiting for another
    getMore. Cut before an ``invalidate``, which is returned apart."""
    events = [first]
    while len(events) < limit and buffered(stream) > 0:
        following = stream.try_next()
        if following is None:
            break
        events.append(following)
    invalidate = next((e for e in events if e.get("operationType") == "invalidate"), None)
    if invalidate is not None:
        events = events[: events.index(invalidate)]
    return events, invalidate
