"""At the wire, ``RejectStore.record``: what it sends for a chunk of rejected orders, and what it
tells as news when a write of it is killed by an election (``NX_FAULT_ELECTION``,
teststand/election.py) and the record is made again (the watcher replays its micro-batch from
the saved token; the next batch run meets the listed order again).

What the election stands for (MongoDB's manual, "Replica Set Elections", "Retryable Writes"):
the primary steps down while a write is in flight, kills it (11602; the statements applied
before the kill stay applied), and refuses writes until a primary is elected, "typically" within
12 s; pymongo retries a retryable write once, with the same ``txnNumber`` (the transactions
table answers the statements already applied as applied), after a server selection of up to
``serverSelectionTimeoutMS`` (5 s by default). Scaled down: an election of 1.5 s against a
selection of 0.3 s outlasts pymongo's retry, and the archiver's own retries (``Retry.WRITE``,
6 tries over seconds) are scaled down to one try, so that the record fails as one whose retries
ran out; an election of 0.2 s against a selection of 3 s ends within pymongo's retry."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pymongo
import pytest
from bson import ObjectId
from pymongo import monitoring

from order_archiver.errors import ArchiverError
from order_archiver.mongodb.rejects import RejectStore
from order_archiver.orders.rejection import Rejection
from order_archiver.retry import Purpose, Retry
from tests.helpers import wait_for
from teststand.election import STEPPED_DOWN
from teststand.nx_server import NxServer, running_server

pytestmark = pytest.mark.integration

REJECTS = "archiver_rejects"
WRITES = ("insert", "update", "delete", "findAndModify")


class Commands(monitoring.CommandListener):
    """The commands a client sent on the rejects collection: their names, and each write's
    statement count."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command.get(event.command_name) == REJECTS:
            statements = event.command.get("updates") or event.command.get("deletes") or []
            self.sent.append((event.command_name, len(statements)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def taken(self) -> list[tuple[str, int]]:
        sent, self.sent = self.sent, []
        return sent


def as_the_last_version_left_it(order_id: ObjectId, reason: str) -> dict[str, Any]:
    """A rejects entry as the version before the news flags wrote it: its run marks, no flag."""
    seen = datetime(2026, 11, 30, tzinfo=UTC)
    return {
        "_id": order_id,
        "reason": reason,
        "numero_commande": None,
        "source": "batch",
        "first_source": "batch",
        "first_seen": seen,
        "last_seen": seen,
        "first_run": "an older run",
        "times_seen": 1,
        "counted_by": "an older record",
    }


# Statements per rejection in the record's one write: the reason-changed mark, an earlier
# version's watcher's listing taken as batch's news (rejects.OLD_WATCHER_NEWS), the upsert,
# the count.
STATEMENTS = 4


def test_a_record_is_one_write_and_one_read_and_one_more_write_when_some_are_news(nx_server, db_name):
    """A chunk's record made five round trips from batch (the reason-changed marks, the upserts,
    the watcher's marks taken, the count, the read of what is new), four from the watcher: now
    one ordered write (every statement in one ``update`` command), one read, and the news flags
    put down (one more write) only when there was news. An entry the last version wrote (no
    flag) is not news to anyone after the upgrade."""
    commands = Commands()
    with pymongo.MongoClient(nx_server.uri, tz_aware=True, event_listeners=[commands]) as client:
        rejects = client[db_name][REJECTS]
        old = ObjectId()
        rejects.insert_one(as_the_last_version_left_it(old, "numero_commande missing"))
        met = [Rejection(ObjectId(), "numero_commande missing") for _ in range(3)]
        met.append(Rejection(old, "numero_commande missing"))
        commands.taken()
        assert RejectStore(rejects).record(met, "watch") == 3  # the old entry: no news
        assert commands.taken() == [("update", STATEMENTS * len(met)), ("find", 0), ("update", 3)]
        assert RejectStore(rejects).record(met, "watch") == 0  # the next micro-batch
        assert commands.taken() == [("update", STATEMENTS * len(met)), ("find", 0)]
        assert RejectStore(rejects).record(met, "batch") == 3  # the watcher's news, to batch
        assert commands.taken() == [("update", STATEMENTS * len(met)), ("find", 0), ("update", 3)]
        assert RejectStore(rejects).record(met, "batch") == 0
        assert commands.taken() == [("update", STATEMENTS * len(met)), ("find", 0)]
        assert rejects.find_one({"_id": old}, {"times_seen": 1}) == {"_id": old, "times_seen": 5}


# Listed by the last version: one known, one about to be met for another reason (its number
# fixed at the source, now taken); two orders met for the first time.
KNOWN, FIXED, NEW = ObjectId(), ObjectId(), [ObjectId(), ObjectId()]
MET = [
    Rejection(KNOWN, "numero_commande missing"),
    Rejection(FIXED, "numero taken"),
    *[Rejection(i, "numero_commande missing") for i in NEW],
]
NEWS = sorted(str(i) for i in (FIXED, *NEW))


@contextmanager
def electing(
    after: int, seconds: float, **client_options: Any
) -> Iterator[tuple[NxServer, pymongo.MongoClient[dict[str, Any]], Any]]:
    """A test server whose ``after + 1``-th write on the rejects list (the first: the entries
    as the last version left them) is in flight at a stepdown; a client, the list."""
    knob = {"NX_FAULT_ELECTION": f"{REJECTS}:{after + 1}:{seconds}"}
    with (
        running_server(knob, prefix="nx-rejects-") as server,
        pymongo.MongoClient(server.uri, tz_aware=True, **client_options) as client,
    ):
        rejects = client["rejects"][REJECTS]
        rejects.insert_many(
            [
                as_the_last_version_left_it(KNOWN, "numero_commande missing"),
                as_the_last_version_left_it(FIXED, "numero_commande missing"),
            ]
        )
        yield server, client, rejects


def stepped_down(server: NxServer) -> bool:
    return STEPPED_DOWN in (server.data_dir / "server.log").read_text()


def writable(client: pymongo.MongoClient[dict[str, Any]]) -> bool:
    """The election is over: the server says it is a writable primary again."""
    try:
        return bool(client.admin.command("hello").get("isWritablePrimary"))
    except pymongo.errors.PyMongoError:
        return False


def told(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The orders said new (WARNING "order rejected") since the last call."""
    said = [str(r.__dict__["order_id"]) for r in caplog.records if r.getMessage() == "order rejected"]
    caplog.clear()
    return said


@pytest.mark.test_server_only("the test server's election knob (NX_FAULT_ELECTION)")
@pytest.mark.parametrize("source", ["watch", "batch"])
def test_news_is_told_whatever_write_of_the_record_an_election_kills(source, monkeypatch, caplog):
    """The watcher records each micro-batch, batch each chunk; a record that failed after its
    upserts (retries exhausted: an election outlasting them) left the entries written, and the
    record made again (the micro-batch replayed, the next batch run) read them as listed by an
    earlier run: a new rejected order, or one fixed at the source into another refusal, was
    never told (no WARNING, no ``orders_rejected_new_total``, no exit 3). Whatever write of the
    record the stepdown kills, each news is told, once when the record failed; only a failure to
    put its flags down (the last write: the news read and told) may tell some again, said so.
    An entry the last version wrote is never news."""
    monkeypatch.setattr(Retry, "WRITE", Purpose(1))  # the archiver's retries run out at once
    caplog.set_level(logging.WARNING, logger="order_archiver.rejects")
    for killed in itertools.count():  # the write in flight at the stepdown: the first, the next...
        assert killed < 8, "the record's writes never ended"
        caplog.clear()
        with electing(killed, seconds=1.5, serverSelectionTimeoutMS=300) as (server, client, rejects):
            try:
                first = RejectStore(rejects).record(MET, source)
            except ArchiverError:
                first = None
            if not stepped_down(server):  # past the record's last write: no election
                assert (first, sorted(told(caplog))) == (3, NEWS)
                return
            where = f"the write killed: the record's write number {killed + 1}"
            warned = "says them again" in caplog.text
            said = told(caplog)
            wait_for(lambda: writable(client), timeout=30, what="the election's end")
            again = RejectStore(rejects).record(MET, source)  # replayed; the next run
            said_again = told(caplog)
            assert RejectStore(rejects).record(MET, source) == 0  # then known
        if first is None:  # failed: told by the replay, once
            assert (said, again, sorted(said_again)) == ([], 3, NEWS), where
        else:  # told, its flags not all put down: those told again
            assert (first, sorted(said)) == (3, NEWS), where
            assert set(said_again) <= set(NEWS), where
            assert warned, where


@pytest.mark.test_server_only("the test server's election knob (NX_FAULT_ELECTION)")
def test_a_record_killed_midway_and_retried_by_the_driver_counts_each_order_once():
    """The record's one write is retryable (updates of one document each): killed by a stepdown
    with the first half of its statements applied (the reason-changed marks and some upserts),
    pymongo retries it once the primary is back, with the same ``txnNumber``, and the server
    answers the statements already applied as applied. The order of the statements holds
    (``ordered``: a mark before the upsert that rewrites the reason), ``times_seen`` grows once,
    each news is told once."""
    commands = Commands()
    with electing(0, seconds=0.2, serverSelectionTimeoutMS=3000, event_listeners=[commands]) as (
        server,
        _,
        rejects,
    ):
        commands.taken()
        assert RejectStore(rejects).record(MET, "watch") == 3
        assert stepped_down(server)
        sent = commands.taken()
        one_write = ("update", STATEMENTS * len(MET))
        assert sent[:2] == [one_write, one_write], sent  # killed, retried
        entries = {e["_id"]: e for e in rejects.find()}
    assert {i: e["times_seen"] for i, e in entries.items()} == {KNOWN: 2, FIXED: 2, NEW[0]: 1, NEW[1]: 1}
    assert entries[FIXED]["reason"] == "numero taken"
