"""Where a scheduled run's read of the change stream ends, given positions as MongoDB writes them
(resume tokens' ``_data``: hex, 0x82 then the cluster time's 8 bytes, seconds then increment;
the manual's "Resume Tokens", and tokens seen in the field such as
``8267C867A2000000192B04…`` for ``Timestamp(1741186978, 25)``). The test server's tokens are not
MongoDB's, so what only a real deployment does is shown here with its tokens:

- a quiet replica set: the stream stops at the last write's entry, at the pass's high-water
  mark's cluster time: the read ends at once (#30 item 4);
- through ``mongos``, a shard not yet past its periodic no-op (``periodicNoopIntervalSecs``,
  10 s) holds the merged position *behind* the mark's time: the read waits for it, and ends
  there, saying so, only after ``CHANGES_QUIET_WAIT_S`` (review of #30).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from bson.timestamp import Timestamp

from order_archiver.mongodb import changes
from order_archiver.mongodb.changes import ChangeReader, ChangesSince, quiet_end, token_time


def token(seconds: int, increment: int, rest: str = "2B0429296E1404") -> dict[str, str]:
    return {"_data": f"82{seconds:08X}{increment:08X}{rest}"}


class Stream:
    """Empty batches at the positions given, then the last one for ever."""

    def __init__(self, positions: list[dict[str, str]]) -> None:
        self.positions = positions
        self.resume_token: dict[str, str] | None = None
        self.batches = 0

    def try_next(self) -> Any:
        self.resume_token = self.positions[min(self.batches, len(self.positions) - 1)]
        self.batches += 1
        return None


def read(stream: Stream, until: dict[str, str]) -> tuple[Any, ChangesSince]:
    reader = ChangeReader(orders=None, delivered_status="livrée", stop_event=threading.Event())  # type: ignore[arg-type]
    found = ChangesSince()
    position = reader._read(stream, {}, found, until, datetime.now(UTC))
    return position, found


def test_a_resume_token_begins_with_its_cluster_time():
    assert token_time({"_data": "8267C867A2000000192B042C0100296E5A1004"}) == Timestamp(1741186978, 25)
    assert token_time({"_data": "nx:12+0"}) is None  # the test server's: no cluster time
    assert token_time(None) is None


def test_a_quiet_replica_set_ends_the_read_at_once():
    mark = token(1_700_000_100, 1, "FF")  # the pass's high-water mark: just past the last write
    last_write = token(1_700_000_100, 1, "2B0A")  # its entry, at the same cluster time, before it
    assert not changes.reached(last_write, mark)
    assert quiet_end(last_write, mark)
    stream = Stream([last_write])
    position, found = read(stream, mark)
    assert position == last_write
    assert not found.stalled
    assert stream.batches <= changes.CHANGES_IDLE_BATCHES + 1


def test_a_position_behind_the_marks_time_waits_for_the_periodic_no_op(monkeypatch):
    """Through mongos: a shard's position holds the merge at 90, the mark is at 100; the
    shard's no-op moves it past the mark after a while: the read reaches the mark, no warning.
    Before, two empty batches at 90 ended the read there."""
    mark = token(1_700_000_100, 1, "FF")
    behind = token(1_700_000_090, 3)
    stream = Stream([behind] * 6 + [token(1_700_000_110, 1)])
    position, found = read(stream, mark)
    assert position == mark
    assert not found.stalled


def test_a_position_that_stays_behind_ends_the_read_there_and_says_so(monkeypatch):
    monkeypatch.setattr(changes, "CHANGES_QUIET_WAIT_S", 0.05)
    mark = token(1_700_000_100, 1, "FF")
    behind = token(1_700_000_090, 3)
    position, found = read(Stream([behind]), mark)
    assert position == behind  # a safe lower bound: the next run reads on from it
    assert found.stalled


class _Stream:
    def __init__(self):
        self.resume_token = {"_data": "8266AA00000000000001"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def try_next(self):
        return None


class _Orders:
    """A collection whose first ``watch`` meets ``failures`` (the driver's exceptions), in turn."""

    def __init__(self, *failures):
        self.failures, self.opened = list(failures), 0

    def watch(self, *args, **kwargs):
        self.opened += 1
        if self.failures:
            raise self.failures.pop(0)
        return _Stream()


def test_a_failover_while_the_pass_takes_its_position_is_tried_again_not_taken_for_no_change_streams(
    monkeypatch,
):
    """A network cut or an election while a pass opens the change stream for its position
    (AutoReconnect; NotWritablePrimary 10107 with the RetryableError label) was taken for "no
    change streams here": the pass saved no position, and the next runs read delivery stamps only
    (a correction in between stayed stale until a --full). It is tried again, as every read."""
    from pymongo.errors import AutoReconnect, OperationFailure

    from order_archiver import retry
    from order_archiver.mongodb.changes import stream_position

    monkeypatch.setattr(retry.Backoff, "next_delay", lambda self: 0.0)
    election = OperationFailure("not primary", 10107, {"errorLabels": ["RetryableError"]})
    orders = _Orders(AutoReconnect("connection reset"), election)
    assert stream_position(orders, "livrée") == ({"_data": "8266AA00000000000001"}, None)
    assert orders.opened == 3
    standalone = OperationFailure("The $changeStream stage is only supported on replica sets", 40573)
    assert stream_position(_Orders(standalone), "livrée") == (
        None,
        "a standalone server has no change streams",
    )
