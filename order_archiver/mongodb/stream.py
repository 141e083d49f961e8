"""The change stream as watch reads it: a typed boundary (``ChangeStream``) and the helpers
that read it in micro-batches. pymongo's ``CollectionChangeStream`` is one; ``Prepended`` (a
stream with an event put back in front) is another; the tests' fakes are others."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol, cast

from order_archiver.documents import ChangeEvent

Event = ChangeEvent

MIN_EMPTY_POLL_S = 0.005  # see next_event


class ChangeStream(Protocol):
    """What watch uses of a change stream."""

    @property
    def resume_token(self) -> Mapping[str, object] | None: ...

    @property
    def alive(self) -> bool: ...

    def try_next(self) -> Mapping[str, object] | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> ChangeStream: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None: ...


class Prepended:
    """A change stream with one already-read event put back in front (opening from a token
    reads one event to learn whether the token is accepted)."""

    def __init__(self, stream: ChangeStream, event: Mapping[str, object]) -> None:
        self.stream = stream
        self.pending: Mapping[str, object] | None = event

    def try_next(self) -> Mapping[str, object] | None:
        if self.pending is not None:
            event, self.pending = self.pending, None
            return event
        return self.stream.try_next()

    @property
    def resume_token(self) -> Mapping[str, object] | None:
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


def as_event(document: Mapping[str, object] | None) -> Event | None:
    """A change stream's document as the change event MongoDB documents (its fields typed)."""
    return cast(Event | None, document)


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
    event = as_event(stream.try_next())
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
        following = as_event(stream.try_next())
        if following is None:
            break
        events.append(following)
    invalidate = next((e for e in events if e.get("operationType") == "invalidate"), None)
    if invalidate is not None:
        events = events[: events.index(invalidate)]
    return events, invalidate
