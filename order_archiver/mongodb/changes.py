"""What changed since the last batch pass, read from the orders' change stream: the orders
that became delivered, or were corrected while delivered, since then (a delivery synced hours
late with an old stamp among them). An incremental pass reads those whatever their stamps."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from bson.timestamp import Timestamp
from pymongo import errors as pymongo_errors

from order_archiver.documents import ChangeEvent, OrderId, ResumeToken
from order_archiver.errors import as_archiver_error, classify, is_authorisation_error, without_documents
from order_archiver.logs import get_logger
from order_archiver.mongodb.source import build_change_stream_pipeline, event_time, orders_to_archive
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.mongodb.stream import ChangeStream, as_event
from order_archiver.retry import Retry, retrying

log = get_logger("batch")

CHANGES_AWAIT_MS = 200  # a quiet getMore while reading the changes since the last run: caught up
CHANGES_BATCH = 1000
# Empty batches in a row at one position: the end of the history on a quiet deployment. A new
# stream's position (the pass's) is a high-water mark just past the last write, which a stream
# passes only at the next oplog entry: on an idle deployment the primary's periodic no-op
# (``periodicNoopIntervalSecs``, 10 s; on a sharded cluster, every shard's). Where the position
# stands at the mark's cluster time (``quiet_end``), the read does not wait for it: it stands
# where every change up to its position has been read.
CHANGES_IDLE_BATCHES = 2
# A position standing still whose cluster time is *behind* the pass's (``quiet_end``) may move
# on: a shard of a sharded cluster not yet past its periodic no-op (``mongos`` merges at the
# slowest shard's position), a getMore still scanning a long history, a majority commit point
# behind. The read waits that long for it (periodicNoopIntervalSecs, 10 s, and a margin), then
# ends there and says so: the position is a safe lower bound, the next run reads on from it.
CHANGES_QUIET_WAIT_S = 15.0


def token_time(token: ResumeToken | None) -> Timestamp | None:
    """The cluster time a MongoDB resume token begins with: ``_data`` is hex, its first byte
    0x82 (a BSON timestamp's canonical type in the server's key string), then the timestamp's
    8 bytes big-endian, seconds then increment. None for a token of another form."""
    data = str((token or {}).get("_data", "")) if isinstance(token, dict) else ""
    if len(data) < 18 or data[:2] != "82":
        return None
    try:
        raw = bytes.fromhex(data[2:18])
    except ValueError:
        return None
    return Timestamp(int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:], "big"))


def quiet_end(position: ResumeToken | None, target: ResumeToken | None) -> bool:
    """Whether a stream standing still at ``position``, short of ``target`` (the pass's
    high-water mark), stands at the end of the history: its cluster time at the target's (a
    quiet replica set: the last write's entry; the mark is just past it, at its time). Behind
    it, the stream may still move on (``CHANGES_QUIET_WAIT_S``). Tokens that are not MongoDB's
    (a test server's) cannot tell: taken as the end."""
    at, of = token_time(position), token_time(target)
    return at is None or of is None or at >= of


@dataclass
class Standstill:
    """How long a stream's position has stood still short of the pass's position, behind its
    cluster time (``quiet_end``): the read waits ``CHANGES_QUIET_WAIT_S`` at most."""

    since: float | None = None

    def reset(self) -> None:
        self.since = None

    def waited_enough(self) -> bool:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        return now - self.since >= CHANGES_QUIET_WAIT_S


def reached(position: ResumeToken | None, target: ResumeToken | None) -> bool:
    """Whether a change stream's position is at or past ``target``: resume tokens' ``_data``
    strings sort in stream order (MongoDB 4.0+, documented). No target: the first empty batch
    ends the read."""
    if not target or not position:
        return True
    return str(position.get("_data", "")) >= str(target.get("_data", ""))


def past(event: ChangeEvent, target: ResumeToken | None) -> bool:
    """Whether a change event comes after the position ``target`` in the stream (its resume
    token, ``_id``, sorts after it): a change the next pass reads. Without either, False."""
    token = event.get("_id") if isinstance(event, dict) else None
    if not target or not isinstance(token, dict):
        return False
    return str(token.get("_data", "")) > str(target.get("_data", ""))


def stream_position(
    orders: MongoCollection, delivered_status: str, stop_event: threading.Event | None = None
) -> tuple[dict[str, object] | None, str | None]:
    """The orders' change stream's position now (a resume token), or None and why: there are no
    change streams (a standalone server), the user may not open one, or another refusal. A
    failure that may pass (a cut, an election) is tried again as every read (``Retry.READ``),
    and fails the run once the tries are spent: taken for "no position", it would leave the
    next runs reading delivery stamps only, a correction in between stale until a --full."""
    return retrying(
        lambda: _position_or_why_not(orders, delivered_status), purpose=Retry.READ, stop_event=stop_event
    )


def _position_or_why_not(
    orders: MongoCollection, delivered_status: str
) -> tuple[dict[str, object] | None, str | None]:
    try:
        with orders.watch(build_change_stream_pipeline(delivered_status), max_await_time_ms=1) as stream:
            stream.try_next()
            token = stream.resume_token
    except pymongo_errors.PyMongoError as exc:
        if classify(exc) == "transient":
            raise  # retrying() tries it again
        return _no_position(exc)
    except (NotImplementedError, AttributeError) as exc:  # the in-process simulation
        return _no_position(exc)
    return (dict(token) if token else None), None


def _no_position(exc: BaseException) -> tuple[None, str]:
    log.debug("no change stream position (%s): incremental runs read delivery stamps only", exc)
    return None, _why_no_position(exc)


STANDALONE = "a standalone server has no change streams"


def _why_no_position(exc: BaseException) -> str:
    if isinstance(exc, pymongo_errors.OperationFailure) and classify(exc) == "no_change_streams":
        return STANDALONE if exc.code == 40573 else "no change streams here"
    if isinstance(exc, pymongo_errors.OperationFailure) and is_authorisation_error(exc):
        return "the user may not open a change stream (changeStream on the orders)"
    return f"a change stream could not be opened ({type(exc).__name__})"


@dataclass
class ChangesSince:
    """What a read of the changes since a token found: the orders' ids (once each, in order),
    the events read, and why the read fell short, if it did."""

    ids: list[OrderId] = field(default_factory=list)
    read: int = 0
    unavailable: int | None = None  # the history is gone or there are no change streams: its code
    # Every change up to it has been read: the pass's position, or short of it where the stream
    # stands on a quiet deployment (None: the pass has no position; it read up to its time).
    position: ResumeToken | None = None
    # The invalidate that ended the read (the collection dropped, renamed, restored with
    # --drop): the changes after it are not read from the stream; the pass's position is past it.
    invalidate: ChangeEvent | None = None
    # The stream stood still behind the pass's position for CHANGES_QUIET_WAIT_S: the read
    # ended where it stood (a safe lower bound), and the run says so.
    stalled: bool = False


@dataclass(frozen=True)
class ChangeReader:
    """Reads the changes from a resume token up to where a pass began (its token and its
    start time: later changes are the next run's)."""

    orders: MongoCollection  # the primary's view: a lagging secondary would hide changes
    delivered_status: str
    stop_event: threading.Event

    def since(self, token: ResumeToken, until_token: ResumeToken | None, until: datetime) -> ChangesSince:
        found = ChangesSince()
        ids: dict[OrderId, None] = {}
        try:
            with self.orders.watch(
                build_change_stream_pipeline(self.delivered_status),
                resume_after=token,
                full_document="updateLookup",
                max_await_time_ms=CHANGES_AWAIT_MS,
                batch_size=CHANGES_BATCH,
            ) as stream:
                found.position = self._read(stream, ids, found, until_token, until)
        except pymongo_errors.OperationFailure as exc:
            if classify(exc) in ("token_unusable", "no_change_streams"):
                return ChangesSince(unavailable=exc.code)
            raise as_archiver_error(exc) from without_documents(exc)
        except pymongo_errors.PyMongoError as exc:
            raise as_archiver_error(exc) from without_documents(exc)
        found.ids = list(ids)
        return found

    def _read(
        self,
        stream: ChangeStream,
        ids: dict[OrderId, None],
        found: ChangesSince,
        until_token: ResumeToken | None,
        until: datetime,
    ) -> ResumeToken | None:
        """Read into ``ids`` up to this pass's position (``until_token``); return the position up
        to which every change has been read: ``until_token`` once the stream reaches it or meets
        an invalidate (the position lies past it: the next run resumes after it), where the
        stream stands once it stops moving short of it (``CHANGES_IDLE_BATCHES``: a quiet
        deployment; behind the mark's cluster time, after ``CHANGES_QUIET_WAIT_S`` at most, and
        ``found.stalled``), where it stands when the run is stopped. Without ``until_token`` the first
        empty batch or a change after ``until`` ends the read, and the position is None."""
        idle, position, standing = 0, None, Standstill()
        while not self.stop_event.is_set():
            event = as_event(stream.try_next())
            if event is None:
                idle = idle + 1 if stream.resume_token == position else 0
                position = stream.resume_token
                if reached(position, until_token):
                    return until_token  # caught up with where this pass began
                if idle < CHANGES_IDLE_BATCHES:
                    standing.reset()
                    continue  # an empty batch that moved: the server is still scanning
                if quiet_end(position, until_token):
                    return position  # the end of the history, short of a high-water mark
                if standing.waited_enough():
                    found.stalled = True
                    return position
                continue
            if self._after_pass_start(event, until_token, until):
                return until_token  # the next run reads it
            if event.get("operationType") == "invalidate":
                found.invalidate = event
                return until_token
            found.read += 1
            ids.update(dict.fromkeys(orders_to_archive([event], self.delivered_status)))
        return dict(stream.resume_token) if until_token and stream.resume_token else None

    @staticmethod
    def _after_pass_start(event: ChangeEvent, until_token: ResumeToken | None, until: datetime) -> bool:
        """Whether ``event`` happened after this pass began. By its position (its resume token
        after ``until_token``): the event's time is not the pass's clock (a shard primary's
        clock ahead of ``mongos``; a change written between the server's time and the stream's
        position were read) and a change before the position but after the time would be read
        by no run. The time decides only where the pass has no position."""
        if until_token:
            after = past(event, until_token)
        else:
            when = event_time(event)
            after = when is not None and when > until
        if after:
            log.debug("change %s after this pass began: left for the next run", event.get("operationType"))
        return after
