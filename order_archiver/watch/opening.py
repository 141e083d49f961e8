"""Where a watcher's change stream starts: from a saved resume token, which the server may
refuse (the history is gone, the token is invalid), or from now. Opening the stream is all
this module does; what to do about a refused token (catch up) is the watcher's choice."""

from __future__ import annotations

from pymongo import errors as pymongo_errors

from order_archiver.errors import classify, is_authorisation_error
from order_archiver.mongodb.source import build_change_stream_pipeline
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.mongodb.stream import ChangeStream, Prepended
from order_archiver.mongodb.tokens import ResumeState
from order_archiver.settings import Settings


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
