"""``NX_FAULT_ELECTION`` (teststand/election.py): a primary stepping down in the middle of a
write, no primary for some seconds, then primary again, answered as MongoDB answers."""

from __future__ import annotations

import time
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import NotPrimaryError

from teststand.election import Election
from teststand.nx_server import running_server

pytestmark = [pytest.mark.integration, pytest.mark.test_server_only("the test server's fault knobs")]


class Failures(monitoring.CommandListener):
    """The commands the server answered with an error, as pymongo saw them."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failures.append((event.command_name, dict(event.failure)))


def test_a_retryable_write_in_flight_is_interrupted_then_retried_on_the_new_primary(db_name):
    """The 3rd insert (4 documents) is in flight at the stepdown: its first 2 applied, then 11602
    with the RetryableWriteError label; pymongo retries it once, after the election (its server
    selection waits for a primary), with the same txnNumber: the 2 applied are answered from the
    transactions table, not inserted again (no 11000). Each document once."""
    listener = Failures()
    with (
        running_server({"NX_FAULT_ELECTION": "orders:2:2"}) as server,
        pymongo.MongoClient(server.uri, event_listeners=[listener], serverSelectionTimeoutMS=10000) as client,
    ):
        orders = client[db_name]["orders"]
        orders.insert_one({"_id": 1})
        orders.insert_one({"_id": 2})
        started = time.monotonic()
        result = orders.insert_many([{"_id": i} for i in range(3, 7)])  # interrupted, then retried
        assert time.monotonic() - started >= 1.5  # it waited for the election
        assert result.inserted_ids == [3, 4, 5, 6]
        assert sorted(d["_id"] for d in orders.find()) == [1, 2, 3, 4, 5, 6]
        [(name, failure)] = listener.failures
        assert name == "insert"
        assert (failure["code"], failure["codeName"]) == (11602, "InterruptedDueToReplStateChange")
        assert failure["errorLabels"] == ["RetryableWriteError"]
        updated = orders.bulk_write([pymongo.UpdateOne({"_id": i}, {"$set": {"x": 1}}) for i in (1, 2)])
        assert updated.modified_count == 2  # one election per server
        assert len(listener.failures) == 1


def test_a_retryable_write_whose_retry_fails_applies_again_when_the_application_retries(db_name):
    """An election longer than the client's server selection: pymongo's one retry finds no
    primary and raises the original error; the application's own retry is a new write (a new
    txnNumber) and applies every statement again, as MongoDB does: upserts match what the killed
    write upserted (reported as matched, not upserted)."""
    with (
        running_server({"NX_FAULT_ELECTION": "orders:0:3"}) as server,
        pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=1000) as client,
    ):
        orders = client[db_name]["orders"]
        upserts = [pymongo.UpdateOne({"_id": i}, {"$set": {"x": i}}, upsert=True) for i in range(4)]
        with pytest.raises(NotPrimaryError) as caught:
            orders.bulk_write(upserts, ordered=False)
        assert caught.value.has_error_label("RetryableWriteError")
        time.sleep(3)
        again = orders.bulk_write(upserts, ordered=False)
        assert (again.upserted_count, again.matched_count) == (2, 2)  # the first half was applied
        assert sorted(d["_id"] for d in orders.find()) == [0, 1, 2, 3]


def test_a_multi_write_in_flight_is_applied_in_part_and_not_retried(db_name):
    """update_many sends no txnNumber: pymongo never retries it. Killed after one document,
    it raises NotPrimaryError (11602, no label); meanwhile the server is a secondary: hello names
    no primary, writes are refused 10107; then it is primary again."""
    with (
        running_server({"NX_FAULT_ELECTION": "orders:1:3"}) as server,
        pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10000) as client,
        pymongo.MongoClient(server.uri, directConnection=True) as direct,
    ):
        orders = client[db_name]["orders"]
        orders.insert_many([{"_id": i, "done": "no"} for i in range(4)])  # write 1
        with pytest.raises(NotPrimaryError) as caught:
            orders.update_many({"done": "no"}, {"$set": {"done": "yes"}})
        assert caught.value.details["code"] == 11602
        assert not caught.value.has_error_label("RetryableWriteError")

        hello = direct.admin.command("hello")
        assert (hello["isWritablePrimary"], hello["secondary"], "primary" in hello) == (False, True, False)
        refused = direct[db_name].command(
            {"delete": "orders", "deletes": [{"q": {}, "limit": 0}]}, check=False
        )
        # 10107's name: NotMaster until 4.4, NotWritablePrimary since 4.9 (error_codes.yml)
        major_minor = tuple(int(part) for part in direct.server_info()["version"].split(".")[:2])
        name = "NotMaster" if major_minor < (4, 9) else "NotWritablePrimary"
        assert (refused["ok"], refused["code"], refused["codeName"]) == (0.0, 10107, name)
        assert direct[db_name]["orders"].count_documents({}) == 4  # reads go on (primaryPreferred)

        time.sleep(3)
        assert orders.count_documents({"done": "yes"}) == 1  # killed after its first document
        assert direct.admin.command("hello")["isWritablePrimary"] is True
        assert orders.update_many({"done": "no"}, {"$set": {"done": "yes"}}).modified_count == 3


def test_a_secondary_refuses_what_mongodb_refuses_during_the_election():
    """In-process (a replica-set client never sends a primary read to a secondary): primary
    reads 13435, writes 10107 labelled when retryable, 4.4's names; getMore goes on."""
    election = Election("orders:0:60", (4, 4, 29))
    assert election.refusal({"insert": "orders"}) is None  # no election yet
    assert election.steps_down_on({"insert": "other"}) is False
    assert election.steps_down_on({"update": "orders", "updates": []}) is True
    assert election.steps_down_on({"update": "orders", "updates": []}) is False  # once
    write = election.refusal({"insert": "x", "txnNumber": 1, "lsid": {}})
    assert write == {
        "ok": 0.0,
        "code": 10107,
        "codeName": "NotMaster",
        "errmsg": "not master",
        "errorLabels": ["RetryableWriteError"],
    }
    read = election.refusal({"find": "x"})
    assert read is not None
    assert (read["code"], read["codeName"]) == (13435, "NotMasterNoSlaveOk")
    assert election.refusal({"find": "x", "$readPreference": {"mode": "secondaryPreferred"}}) is None
    assert election.refusal({"getMore": 1, "collection": "x"}) is None
    assert election.refusal({"createIndexes": "x", "indexes": []})["code"] == 10107  # type: ignore[index]
