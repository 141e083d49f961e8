"""The one retry module: every loop that retries reads its purpose from one table (``Retry``:
attempts and waits), waits through one policy (``RetryPolicy``, urllib3's ``Retry`` is the
model) whose stop behaviour is chosen where it is built, and names the deployment a failure
came from in one place (``named_side``)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from pymongo import errors as pymongo_errors

from order_archiver.errors import ArchiverError, as_archiver_error, is_transient, without_documents

T = TypeVar("T")


@dataclass(frozen=True)
class Purpose:
    """How long one kind of operation keeps trying: ``attempts`` failures in a row, with no
    progress between them (0: never gives up), waiting between ``first_wait_s`` and
    ``longest_wait_s`` (capped exponential backoff with full jitter)."""

    attempts: int
    first_wait_s: float = 0.5
    longest_wait_s: float = 30.0

    def backoff(self) -> Backoff:
        return Backoff(self.first_wait_s, self.longest_wait_s)


class Retry:
    """The purposes, the one table every retry of the product reads."""

    READ = Purpose(6)  # a read that walks or decides (a failover takes seconds; each try backs off)
    WRITE = Purpose(6)  # archive, checkpoint, token, lease and rejects writes
    COMMAND = Purpose(5)  # retrying()'s default: one command's read or write
    CONNECT = Purpose(3, longest_wait_s=5.0)  # a one-shot command's first contact: said in seconds
    LAST_WORD = Purpose(3)  # a best-effort write on the way out (a watcher's stopped_at)
    INFORM = Purpose(2)  # a count or an estimate that only informs a report or a progress bar
    SERVICE = Purpose(0)  # watch's reconnects: forever, a stop ends the wait
    WAIT_FOR_SERVER = Purpose(0, longest_wait_s=5.0)  # watch's first connection: forever, every 5 s at most
    # A cold-tier request (list, look, read a whole file, remove) that the AWS SDK already retried
    # for a few seconds (3 tries of a HEAD, about 30 of a listing or a read, with pyarrow 26): S3's 503 SlowDown asks for a slower pace ("reduce your request rate",
    # AWS S3 API Reference, Error responses), so the waits here are longer (about a minute in all).
    STORAGE = Purpose(4, first_wait_s=2.0, longest_wait_s=30.0)
    # A cold-tier request that nothing answered at its endpoint (the connection refused, its host
    # not found: ``errors.storage_fault`` "unreachable"): a wrong address, which no wait cures, or
    # a storage restarting; tried again twice within about a second and a half.
    STORAGE_UNREACHABLE = Purpose(3, first_wait_s=0.5, longest_wait_s=1.0)


class Backoff:
    """Capped exponential backoff with full jitter: the n-th delay is uniform in
    [0, min(maximum, initial * 2**n)] (the AWS "full jitter" scheme). ``reset`` after progress."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.failures))
        self.failures += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.failures = 0


# What a stop during a wait does: "raise" (the caller must never look complete: a walk, one
# command) or "end" (the wait returns True and the loop ends by itself: a service, a reader
# whose caller reports the interruption).
OnStop = Literal["raise", "end"]


class RetryPolicy:
    """The one retry policy of every loop: ``purpose.attempts`` failures in a row, with no
    progress between them, and the loop gives up (0: never, for a service); the waits are the
    purpose's backoff, on ``stop_event``, and a stop during one does what ``on_stop`` says;
    only what ``retryable`` accepts (``is_transient`` by default) is retried, the rest is
    raised at once. ``reset`` after progress."""

    def __init__(
        self,
        purpose: Purpose,
        *,
        on_stop: OnStop,
        stop_event: threading.Event | None = None,
        retryable: Callable[[BaseException], bool] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.attempts = purpose.attempts
        self.backoff = backoff or purpose.backoff()
        self.on_stop = on_stop
        self.stop_event = stop_event or threading.Event()
        self.retryable = retryable or is_transient
        self.failures = 0  # in a row, since the last progress

    def increment(self, exc: BaseException) -> float:
        """Count ``exc``; the delay before the next try, or ``exc`` raised in the hierarchy
        when it is not retryable, the attempts are spent, or the loop was asked to stop."""
        self.failures += 1
        if not self.retryable(exc) or self.stop_event.is_set():
            raise as_archiver_error(exc) from without_documents(exc)
        if self.attempts and self.failures >= self.attempts:
            raise as_archiver_error(exc) from without_documents(exc)
        return self.backoff.next_delay()

    def wait(self, delay: float, exc: BaseException) -> bool:
        """Wait ``delay`` on the stop event. Stopped: ``exc`` raised ("raise"), or True ("end")."""
        if not self.stop_event.wait(delay):
            return False
        if self.on_stop == "raise":
            raise as_archiver_error(exc) from without_documents(exc)
        return True

    def reset(self) -> None:
        self.failures = 0
        self.backoff.reset()


def retrying(
    func: Callable[[], T],
    *,
    purpose: Purpose = Retry.COMMAND,
    stop_event: threading.Event | None = None,
    on_retry: Callable[[BaseException, float], Any] | None = None,
    purpose_of: Callable[[BaseException], Purpose | None] | None = None,
) -> T:
    """Call ``func`` until it succeeds, by the ``RetryPolicy`` of ``purpose``: transient
    errors only, ``purpose.attempts`` failures at most (0: forever), a stop during a wait
    raises (one command either did its work or failed). A cold-tier storage error (an
    ``OSError``) is sorted by the same classification (``errors.storage_fault``).
    ``purpose_of``: another purpose for some failures (None: ``purpose``), each counted and
    waited for by its own policy."""
    policies: dict[Purpose, RetryPolicy] = {}
    while True:
        try:
            return func()
        except ArchiverError:
            raise
        except (pymongo_errors.PyMongoError, OSError) as exc:
            chosen = (purpose_of(exc) if purpose_of is not None else None) or purpose
            policy = policies.setdefault(chosen, RetryPolicy(chosen, on_stop="raise", stop_event=stop_event))
            delay = policy.increment(exc)
            if on_retry is not None:
                on_retry(exc, delay)
            policy.wait(delay, exc)


class Deleted(Protocol):
    """What a delete answers (``DeleteResult``, ``BulkWriteResult``): how many it deleted."""

    @property
    def deleted_count(self) -> int: ...


def deleted_across_retries(
    delete: Callable[[], Deleted],
    asked: int,
    remaining: Callable[[], int],
    *,
    purpose: Purpose = Retry.WRITE,
    stop_event: threading.Event | None = None,
) -> int:
    """How many of ``asked`` documents ``delete`` removed, retried like ``retrying``, and true
    across retries: a retried delete answers only for what its last try deleted, and an earlier
    try may have deleted some before it failed (an election kills a ``delete_many`` mid-way and
    the driver does not retry it; a retryable bulk whose one retry by the driver found no primary
    in time fails after its first statements committed: MongoDB's manual, "Retryable Writes").
    After a retry, the count is ``asked`` less ``remaining()``: those still there, read back."""
    retried = False

    def note(_: BaseException, __: float) -> None:
        nonlocal retried
        retried = True

    result = retrying(delete, purpose=purpose, stop_event=stop_event, on_retry=note)
    if not retried:
        return int(result.deleted_count)
    return asked - int(retrying(remaining, purpose=Retry.READ, stop_event=stop_event))


# With ARCHIVE_MONGODB_URI, an error says which deployment it came from (named_side).
SOURCE_SIDE = "source deployment: "
ARCHIVE_SIDE = "archive deployment: "
SIDES = (SOURCE_SIDE, ARCHIVE_SIDE)


@contextmanager
def named_side(side: str, kinds: tuple[type[ArchiverError], ...] = (ArchiverError,)) -> Iterator[None]:
    """Errors of ``kinds`` raised inside name the deployment they came from (with
    ARCHIVE_MONGODB_URI: ``"archive deployment: "`` or ``"source deployment: "``), once; no
    prefix, no change."""
    try:
        yield
    except kinds as error:
        if not side or str(error).startswith(SIDES):
            raise
        raise type(error)(f"{side}{error}") from error
