"""A client's archived orders (``forget --client``, ``restore --client``) read through the
archive's indexes, at the wire (#30 item 6).

What the server decides (which plan it runs) no test server shows: nx-27017 answers no
``explain`` MongoDB would, and serves neither an ``$or`` nor an ObjectId field from an index.
What MongoDB documents decides it: an ``$or`` is read from indexes only when every one of its
branches is ("$or Clauses and Indexes", the manual's ``$or`` page), else the whole collection is
scanned. So these tests check what can fail here: the indexes a batch run builds (as the
server lists them), the filter each read of forget and restore sends (every branch an
equality on the first field of one of those indexes), and how many times forget reads the
client's orders (three before: two counts and the erasure's walk)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pymongo
import pytest
from pymongo import monitoring

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.operations.forget import Person, forget_person
from order_archiver.operations.restore import RestoreSelection, restore
from tests.helpers import seed_database

pytestmark = pytest.mark.integration

READS = ("find", "aggregate", "count", "distinct")


class Reads(monitoring.CommandListener):
    """The read commands sent to one collection, as they went on the wire."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = dict(event.command)
        if any(command.get(name) == self.collection for name in READS):
            self.commands.append(command)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def first_fields(collection: Any) -> set[str]:
    """The first field of each index the server lists on ``collection``."""
    return {next(iter(index["key"])) for index in collection.list_indexes()}


PERSON_FIELDS = {"client.id", "source.client_id", "livreur.id", "source.livreur_id"}


def client_branches(filter_: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``$or`` that selects a person's orders, wherever the filter nests it."""
    if "$or" in filter_ and all(len(branch) == 1 for branch in filter_["$or"]):
        fields = {next(iter(branch)) for branch in filter_["$or"]}
        if fields & PERSON_FIELDS:
            return list(filter_["$or"])
    for clause in filter_.get("$and", []):
        found = client_branches(clause)
        if found:
            return found
    return []


@pytest.fixture
def archived(nx_server, nx_settings) -> Any:
    """800 orders seeded and archived by a batch run; the client with the most orders."""
    with pymongo.MongoClient(nx_server.uri, tz_aware=True) as client:
        database = client[nx_settings.mongodb_database]
        seed_database(database, nx_settings, 800, seed=31, p_anomalies=0.0)
        BatchArchiver(client, nx_settings, BatchOptions(run=True)).run()
        archive = database[nx_settings.archive_collection]
        counts = Counter(
            d["client"]["id"] for d in archive.find({"client": {"$type": "object"}}, {"client.id": 1})
        )
        return counts.most_common(1)[0]


def recording(nx_server, nx_settings) -> tuple[pymongo.MongoClient, Reads]:
    reads = Reads(nx_settings.archive_collection)
    client: pymongo.MongoClient = pymongo.MongoClient(nx_server.uri, tz_aware=True, event_listeners=[reads])
    return client, reads


def assert_on_indexes(reads: Reads, indexed: set[str]) -> None:
    for command in reads.commands:
        filter_ = command.get("filter", command.get("query", {}))
        branches = client_branches(filter_)
        assert branches, command
        for branch in branches:
            (field, value), *_ = branch.items()
            assert field in indexed, (field, sorted(indexed))
            assert point_bounds(value), branch


def point_bounds(value: Any) -> bool:
    """An equality, or an ``$in`` of a few values (an ObjectId and its text, dirty data's other
    form of the same id): the index's bounds are one point per value (the manual's explain
    results, ``indexBounds``: ``$in`` gives one ``[v, v]`` interval per value)."""
    if not isinstance(value, dict):
        return True
    listed = value.get("$in")
    return set(value) == {"$in"} and isinstance(listed, list) and 0 < len(listed) <= 3


def test_a_batch_run_builds_the_indexes_of_a_clients_orders(nx_client, nx_settings, archived):
    archive = nx_client[nx_settings.mongodb_database][nx_settings.archive_collection]
    assert {"client.id", "source.client_id"} <= first_fields(archive)


def test_forget_reads_a_clients_orders_on_indexes_once_then_erases(nx_server, nx_settings, archived):
    client_id, orders = archived
    client, reads = recording(nx_server, nx_settings)
    with client:
        archive = client[nx_settings.mongodb_database][nx_settings.archive_collection]
        indexed = first_fields(archive)
        dry = forget_person(client, nx_settings, Person("client", client_id))
        assert (dry.orders, dry.erased) == (orders, orders)
        assert len(reads.commands) == 1  # one read counts both (two count_documents before)
        assert_on_indexes(reads, indexed)
        reads.commands.clear()
        done = forget_person(client, nx_settings, Person("client", client_id), run=True)
        assert (done.orders, done.erased) == (orders, orders)
        assert len(reads.commands) == 2  # the count, then the erasure's walk (three before)
        assert_on_indexes(reads, indexed)
        assert archive.count_documents({"client.id": client_id, "forgotten_at": {"$exists": True}}) == orders


def test_restore_selects_a_clients_orders_on_indexes(nx_server, nx_settings, archived):
    client_id, orders = archived
    client, reads = recording(nx_server, nx_settings)
    with client:
        archive = client[nx_settings.mongodb_database][nx_settings.archive_collection]
        indexed = first_fields(archive)
        report = restore(client, nx_settings, RestoreSelection(client_id=client_id))
        assert report.selected == orders
        assert reads.commands
        assert_on_indexes(reads, indexed)


def test_forget_reads_a_couriers_orders_on_indexes_a_dangling_reference_too(nx_server, nx_settings):
    """A courier's order naming them by the text of their id joins no ``Livreur`` document
    (``livreur: null``): forget --courier read ``livreur.id`` only and left it, its source
    copy's undeclared note included. Both branches on the indexes a batch run builds."""
    with pymongo.MongoClient(nx_server.uri, tz_aware=True) as setup:
        database = setup[nx_settings.mongodb_database]
        seed_database(database, nx_settings, 300, seed=32, p_anomalies=0.0)
        orders = database[nx_settings.orders_collection]
        order = orders.find_one({"status": nx_settings.delivered_status, "livreur_id": {"$ne": None}})
        courier = order["livreur_id"]
        note = "remis à Paul, 06 12 34 56 78"
        orders.update_one(
            {"_id": order["_id"]},
            {"$set": {"livreur_id": str(courier).upper(), "instructions_livraison": note}},
        )
        BatchArchiver(setup, nx_settings, BatchOptions(run=True)).run()
        archive = database[nx_settings.archive_collection]
        by_reference = archive.count_documents({"livreur.id": courier})
        assert archive.find_one({"_id": order["_id"]})["livreur"] is None
    client, reads = recording(nx_server, nx_settings)
    with client:
        archive = client[nx_settings.mongodb_database][nx_settings.archive_collection]
        indexed = first_fields(archive)
        assert {"livreur.id", "source.livreur_id"} <= indexed
        done = forget_person(client, nx_settings, Person("livreur", courier), run=True)
        assert (done.orders, done.erased) == (by_reference + 1, by_reference + 1)
        assert_on_indexes(reads, indexed)
        assert archive.find_one({"_id": order["_id"]})["source"]["instructions_livraison"] is None
