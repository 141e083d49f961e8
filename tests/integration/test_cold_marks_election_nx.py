"""The cold tier's restore marks pruned across an election, at the wire (``NX_FAULT_ELECTION``,
teststand/election.py).

What it stands for (MongoDB's manual, "Replica Set Elections" and "Retryable Writes";
replSetStepDown, "Behavior"): a primary stepping down kills the write in flight (11602
``InterruptedDueToReplStateChange``); a ``delete_many`` is no retryable write, so pymongo
raises ``NotPrimaryError`` and never retries it, and what it deleted before the kill stays
deleted. The archiver's own retry deletes the rest, and its answer counts only those: the count
is read back (``RunContext.deleted``). Scaled down in time as tests/e2e/test_election_e2e.py
is: an election of 3 s against a server selection of 1 s (12 s against 5 s)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pymongo
import pytest

from order_archiver.cold.holding import MARK, ColdRestoreMarks
from order_archiver.context import RunContext
from teststand.election import STEPPED_DOWN
from teststand.nx_server import running_server

pytestmark = [pytest.mark.integration, pytest.mark.test_server_only("the test server's election knob")]

CHECKPOINTS = "archiver_checkpoints"
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def test_the_marks_pruned_across_an_election_are_counted_once_each(db_name, caplog):
    """Three marks older than a year, one of last month. The prune's ``delete_many`` (the second
    write on the collection, after the marks' insert) is killed by the stepdown after deleting
    one of the three; the retry after the election deletes the other two. Its count said 2
    (the last try's ``deleted_count``): 3, as the log line says."""
    with running_server({"NX_FAULT_ELECTION": f"{CHECKPOINTS}:1:3"}, prefix="nx-election-marks-") as server:
        with pymongo.MongoClient(server.uri, tz_aware=True, serverSelectionTimeoutMS=1000) as client:
            checkpoints = client[db_name][CHECKPOINTS]
            key = ColdRestoreMarks.key
            old = [key(f"order-{n}") for n in range(3)]
            checkpoints.insert_many(
                [{"_id": k, "kind": MARK, "restored_at": NOW - timedelta(days=400)} for k in old]
                + [{"_id": key("recent"), "kind": MARK, "restored_at": NOW - timedelta(days=30)}]
            )
            caplog.set_level("INFO", logger="order_archiver.cold")
            removed = ColdRestoreMarks(checkpoints, RunContext()).prune(NOW - timedelta(days=365))
            left = {d["_id"] for d in checkpoints.find({}, {"_id": 1})}
        assert STEPPED_DOWN in (server.data_dir / "server.log").read_text()  # the kill took place
    assert left == {key("recent")}
    assert removed == 3
    assert "cold tier: 3 restore marks older than a year (and RESTORE_HOLD) removed" in caplog.text
