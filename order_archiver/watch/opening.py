"""Where a watcher's change stream starts: from a saved resume token, which the server may
refuse (the history is gone, the token is invalid), or from now. Opening the stream is all
this module does; what to do about a refused token (catch up) is the watcher's choice."""

from __future__ import annotations

from datetime import datetime

from pymongo import errors as pymongo_errors

from order_archiver.errors import classify, is_authorisation_error
from order_archiver.logs import get_logger
from order_archiver.mongodb.source import build_change_stream_pipeline
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.mongodb.stream import ChangeStream, Prepended
from order_archiver.mongodb.tokens import ResumeState
from order_archiver.settings import Settings

log = get_logger("watch")


def token_refused(exc: pymongo_errors.OperationFailure) -> bool:
    """A refusal of the token itself, or any other refusal that is not transient, access or
    support: the token is the suspect."""
    kind = classify(exc)
    return kind == "token_unusable" or (kind == "fatal" and not is_authorisation_error(exc))


class TokenUnusable(Exception):
    """The saved resume token was refused by the server: catch up, then stream."""


def open_stream(orders: MongoCollection, settings: Settings, state: ResumeState) -> ChangeStream:
    """The stream of deliveries on ``orders`` from ``state``; a refused token raises
    ``TokenUnusable``."""
    token = state.token
    try:
        stream = orders.watch(
            build_change_stream_pipeline(settings.delivered_status),
            full_document="updateLookup",
            max_await_time_ms=settings.watch_max_await_ms,
            batch_size=settings.watch_max_batch,
            **state.stream_options(),
        )
        if token is not None:
            # A refused token may only be reported by the first getMore.
            first = stream.try_next()
            if first is not None:
                return Prepended(stream, first)
        return stream
    except pymongo_errors.OperationFailure as exc:
        if token is not None and token_refused(exc):
            raise TokenUnusable(
                f"{exc.details.get('codeName', '') if exc.details else ''} {exc.code}"
            ) from exc
        raise


def say_resuming(state: ResumeState, now: datetime, first: bool) -> None:
    """``resuming_said``, at INFO, when the watcher resumes from a token it did not save itself
    (``first``: a restart, a standby taking over), never at a reconnect's (its own token)."""
    if state.usable and first:
        log.info(resuming_said(state, now))


def resuming_said(state: ResumeState, now: datetime) -> str:
    """The line a watcher says when it resumes from a saved token (a restart, a takeover): how old
    the token is, and whether its watcher stopped cleanly (a crash or a kill -9 replays what it
    had in hand after that save: each order archived once) or was catching up (done again)."""
    age = (
        f"saved {max((now - state.saved_at).total_seconds(), 0.0):.0f}s ago"
        if state.saved_at
        else "of unknown age"
    )
    if state.stopped_at is not None:
        how = "its watcher stopped cleanly"
    else:
        how = (
            "its watcher did not stop cleanly (killed, crashed, or its host lost): the changes after "
            "it are read again, each order archived once"
        )
    line = f"resuming from the resume token {age}; {how}"
    if state.catching_up:
        line += "; it was catching up (the catch-up goes on from its saved progress, if any)"
    if state.invalidated:
        line += "; the orders collection had been dropped or renamed (invalidate)"
    return line
