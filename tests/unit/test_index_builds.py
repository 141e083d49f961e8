"""Index builds as a step of their own (#30 item 1) and the retention points of item 8, on
mongomock: what is pending or missing and what it costs, what a run does without the archive's
unique index, what creating or shortening the TTL index deletes at once, and the archived
orders without a ``date_livraison``. The server's side (a build aborted by maxTimeMS, a build
left running) is at the wire: tests/integration/test_index_builds_nx.py."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.context import RunContext
from order_archiver.errors import ArchiverError
from order_archiver.mongodb.indexes import build_indexes, index_states, wanted_indexes
from order_archiver.operations.status import collect_status
from order_archiver.orders.finishing import Finisher
from order_archiver.settings import Duration, Settings
from tests.helpers import expected_archive_ids, seed_database

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
BASE = Settings(simulation=True, log_dir="", index_build_wait_s=1)


def batch(mongo: Any, settings: Settings, **options: Any) -> BatchArchiver:
    options.setdefault("run", True)
    return BatchArchiver(
        mongo,
        settings,
        BatchOptions(**options),
        context=RunContext(clock=lambda: NOW),
        server_clock=lambda: NOW,
    )


def archive_of(mongo: Any) -> Any:
    return mongo[BASE.archive_db_name][BASE.archive_collection]


def orders_of(mongo: Any) -> Any:
    return mongo[BASE.mongodb_database][BASE.orders_collection]


class Listing:
    """A collection whose ``listIndexes`` answers as MongoDB 4.4+ does with ``includeBuildUUIDs``:
    a ready index as its specification, one being built as ``{spec, buildUUID}``
    (list_indexes.cpp; SERVER-47842 shows both shapes)."""

    def __init__(self, name: str, ready: list[dict[str, Any]], building: list[dict[str, Any]]) -> None:
        self.name, self.full_name = name, f"livraison.{name}"
        self.sent: list[dict[str, Any]] = []
        batch = ready + [{"spec": spec, "buildUUID": object()} for spec in building]
        outer = self

        class Database:
            client = object()
            name = "livraison"

            def command(self, body: dict[str, Any]) -> dict[str, Any]:
                outer.sent.append(body)
                return {"ok": 1.0, "cursor": {"id": 0, "firstBatch": batch}}

        self.database = Database()


def test_an_index_being_built_is_pending_not_ready_and_the_cost_of_each_is_said():
    orders = Listing("Commande", [{"v": 2, "key": {"_id": 1}, "name": "_id_"}], [])
    archive = Listing(
        "Commande_archive",
        [{"v": 2, "key": {"date_commande": 1}, "name": "date_commande_1"}],
        [{"v": 2, "key": {"numero_commande": 1}, "name": "numero_commande_1", "unique": True}],
    )
    statuses = {
        (s.collection, s.index): s
        for s in index_states(wanted_indexes(orders, archive, source_exists=True), None)
    }
    assert archive.sent == [{"listIndexes": "Commande_archive", "includeBuildUUIDs": True, "cursor": {}}]
    assert statuses[("Commande_archive", "date_commande_1")].state == "ready"
    unique = statuses[("Commande_archive", "numero_commande_1")]
    assert unique.state == "pending"
    assert "being built on the server" in unique.line()
    assert "nothing is archived" in unique.line()
    incremental = statuses[("Commande", "status_1_date_livraison_1")]
    assert incremental.state == "missing"
    assert "incremental passes and status's backlog scan the source" in incremental.line()


def test_indexes_a_user_may_not_list_are_unknown_not_missing_and_the_unique_one_blocks_nothing():
    """No ``listIndexes`` on the source (a role from before): MongoDB answers 13. Status must
    not call its indexes missing, nor a run refuse to archive for an index it cannot see."""
    from pymongo.errors import OperationFailure

    from order_archiver.mongodb.indexes import require_unique

    class Refusing(Listing):
        def __init__(self, name: str) -> None:
            super().__init__(name, [], [])

            class Database:
                name = "livraison"
                client = object()

                def command(self, body: dict[str, Any]) -> dict[str, Any]:
                    raise OperationFailure("not authorized", code=13, details={"codeName": "Unauthorized"})

            self.database = Database()

    orders, archive = Refusing("Commande"), Refusing("Commande_archive")
    statuses = index_states(wanted_indexes(orders, archive, source_exists=True), None)
    assert {s.state for s in statuses} == {"unknown"}
    assert "not known" in statuses[0].line()
    require_unique(statuses, archive)  # nothing raised: the run's own build decides


def block_builds(monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[threading.Event, list[dict[str, Any]]]:
    """The build of the archive's index ``name`` takes until the returned event is set (a large collection);
    the others complete at once. Every build's command fields are recorded."""
    import mongomock

    release, commands = threading.Event(), []
    original = mongomock.collection.Collection.create_indexes

    def create_indexes(self: Any, indexes: Any, *args: Any, **kwargs: Any) -> Any:
        commands.append(kwargs)
        if self.name == BASE.archive_collection and any(ix.document["name"] == name for ix in indexes):
            release.wait(10)
        return original(self, indexes, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "create_indexes", create_indexes)
    return release, commands


def test_a_build_that_outlasts_the_wait_is_left_pending_and_completes_on_its_own(mongo, monkeypatch):
    release, commands = block_builds(monkeypatch, "pii_policy_1")
    archive, orders = archive_of(mongo), orders_of(mongo)
    wanted = wanted_indexes(orders, archive, source_exists=False)
    statuses = {s.index: s.state for s in build_indexes(wanted, wait_s=0.2, stop_event=None)}
    # One build of all the archive's indexes (one scan; one of the 3 builds MongoDB runs at once):
    # pending together while the server builds them.
    assert set(statuses) == {w.name for w in wanted}
    assert set(statuses.values()) == {"pending"}
    assert len(commands) == 1
    assert all("maxTimeMS" not in command for command in commands)
    release.set()  # the server finishes it; nobody aborted it
    for _ in range(100):
        if "pii_policy_1" in archive.index_information():
            break
        threading.Event().wait(0.05)
    assert "pii_policy_1" in archive.index_information()


def test_a_run_archives_nothing_while_the_archives_unique_index_is_pending(mongo, monkeypatch):
    seed_database(mongo[BASE.mongodb_database], BASE, 50, p_anomalies=0.0)
    release, _ = block_builds(monkeypatch, "numero_commande_1")
    archiver = batch(mongo, BASE)
    try:
        with pytest.raises(ArchiverError, match="unique index numero_commande_1 is being built"):
            archiver.run()
        assert archive_of(mongo).count_documents({}) == 0
        pending = [(i["collection"], i["index"], i["state"]) for i in archiver.report.indexes]
        assert ("Commande_archive", "numero_commande_1", "pending") in pending
        assert {collection for collection, _, _ in pending} == {"Commande_archive"}  # the source's: built
        assert f"; {len(pending)} indexes not ready: {len(pending)} pending (-v lists them)" in (
            archiver.report.summary_line()
        )
        assert any(
            line.startswith(
                "index not ready: Commande_archive.numero_commande_1 (pending); until it is, nothing"
            )
            for line in archiver.report.lines(list_indexes=True)
        )
    finally:
        release.set()


def test_a_dry_run_says_which_indexes_are_missing_and_what_that_costs(mongo):
    dataset = seed_database(mongo[BASE.mongodb_database], BASE, 50, p_anomalies=0.0)
    dry = batch(mongo, BASE, run=False).run()
    missing = {i["index"]: i for i in dry.indexes}
    assert missing["numero_commande_1"]["state"] == "missing"
    assert missing["status_1_date_livraison_1"]["cost"].startswith("incremental passes")
    assert missing["client.id_1"]["cost"] == "forget --client and restore --client scan the archive"
    assert all(not i["cost"].startswith("queries on it") for i in dry.indexes)  # each index's own cost
    assert any(
        "index forgotten_by_1_date_livraison_1 on Commande_archive: missing" in w for w in dry.warnings
    )
    report = batch(mongo, BASE).run()
    assert report.archived == len(expected_archive_ids(dataset))
    assert report.indexes == []
    assert collect_status(mongo, BASE, now=NOW).indexes == []


@pytest.fixture
def archived(mongo):
    """Every delivered order archived: half delivered a day ago, half 40 days ago."""
    dataset = seed_database(mongo[BASE.mongodb_database], BASE, 200, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset), key=str)
    recent, old = delivered[::2], delivered[1::2]
    orders = orders_of(mongo)
    orders.update_many({"_id": {"$in": recent}}, {"$set": {"date_livraison": NOW - timedelta(days=1)}})
    orders.update_many({"_id": {"$in": old}}, {"$set": {"date_livraison": NOW - timedelta(days=40)}})
    batch(mongo, BASE).run()
    return recent, old


def test_creating_or_shortening_the_ttl_index_says_first_how_many_orders_it_deletes_at_once(
    mongo, archived, caplog
):
    _, old = archived
    month = BASE.with_overrides(archive_retention=Duration(days=30))
    dry = batch(mongo, month, run=False).run()
    assert (dry.retention["action"], dry.retention["at_once"]) == ("create", len(old))
    assert f"would create the archive's TTL index (ARCHIVE_RETENTION), which deletes {len(old)}" in (
        dry.summary_line()
    )
    # Shortening it (collMod, which mongomock lacks: the dry run plans it) deletes as many.
    archive = archive_of(mongo)
    archive.create_index("date_livraison", name="archive_retention", expireAfterSeconds=3650 * 86400)
    shorter = batch(mongo, month, run=False).run()
    assert (shorter.retention["action"], shorter.retention["at_once"]) == ("change", len(old))
    longer = batch(mongo, BASE.with_overrides(archive_retention=Duration(days=7300)), run=False).run()
    assert (longer.retention["action"], longer.retention["at_once"]) == ("change", None)  # none at once
    archive.drop_index("archive_retention")

    caplog.set_level(logging.INFO, logger="order_archiver")
    created = batch(mongo, month).run()
    assert (created.retention["action"], created.retention["at_once"]) == ("create", len(old))
    messages = [r.getMessage() for r in caplog.records]
    said = next(i for i, m in enumerate(messages) if "deletes at once" in m)
    assert f"the {len(old)} archived orders delivered longer ago than 30d" in messages[said]
    done = next(i for i, m in enumerate(messages) if "TTL index archive_retention created" in m)
    assert said < done  # said before it is done
    assert archive.count_documents({"_id": {"$in": old}}) == 0  # mongomock expires as MongoDB does


def test_an_archived_order_without_a_delivery_date_counts_from_its_order_date(mongo, archived):
    """Decision (#30 item 8): an order archived without a ``date_livraison`` (dirty data) is
    not kept for ever; both retentions count from its ``date_commande``. No TTL index can (its
    key is ``date_livraison``): each ``batch --run`` deletes those ordered longer ago."""
    recent, _ = archived
    archive = archive_of(mongo)
    undated_old, undated_new = recent[:5], recent[5:8]
    archive.update_many(
        {"_id": {"$in": undated_old}},
        {"$set": {"date_livraison": None, "date_commande": NOW - timedelta(days=400)}},
    )
    archive.update_many(
        {"_id": {"$in": undated_new}}, {"$set": {"date_livraison": None, "date_commande": NOW}}
    )
    pii = BASE.with_overrides(archive_pii_retention=Duration(days=365))
    assert batch(mongo, pii, run=False).run().would_erase_pii == len(undated_old)
    assert batch(mongo, pii).run().pii_erased == len(undated_old)
    assert {d["_id"] for d in archive.find({"forgotten_at": {"$exists": True}}, {"_id": 1})} == set(
        undated_old
    )

    kept = BASE.with_overrides(archive_retention=Duration(days=365))
    dry = batch(mongo, kept, run=False).run()
    assert dry.would_expire_undated == len(undated_old)
    assert f"would delete {len(undated_old)} archived without date_livraison" in dry.summary_line()
    report = batch(mongo, kept).run()
    assert report.undated_expired == len(undated_old)
    assert archive.count_documents({"_id": {"$in": undated_old}}) == 0
    assert archive.count_documents({"_id": {"$in": undated_new}}) == len(undated_new)

    finisher = Finisher("batch", None, expire_after=timedelta(days=30))  # not archived at all
    assert finisher.expired({"date_livraison": None, "date_commande": NOW - timedelta(days=40)}, NOW)
    assert not finisher.expired({"date_livraison": None, "date_commande": NOW - timedelta(days=3)}, NOW)


def test_status_before_the_first_run_says_the_next_run_builds_the_indexes(mongo):
    """Before any batch --run the archive's indexes are missing, not broken: the next run builds
    them. status said "UNHEALTHY: cannot create the archive's unique index: None". With nothing
    delivered yet that is all; with delivered orders waiting, nothing archives them until that
    run (a watcher waits for the unique index, sending no heartbeat: a new user's try saw status
    healthy and "watchers: none found" while it waited)."""
    database = mongo[BASE.mongodb_database]
    seed_database(database, BASE, 50, p_anomalies=0.0)
    status = collect_status(mongo, BASE, now=NOW)
    assert status.problems == [
        "the archive's unique index numero_commande_1 is missing: nothing is archived until batch --run "
        "builds it (a watcher waits for it)"
    ]
    assert any(
        "numero_commande_1 on Commande_archive: missing (the next batch --run" in line
        for line in status.lines()
    )
    watchers = "watchers: none found (no token file, no checkpoint; one waiting for the archive's unique index saves none)"
    assert watchers in status.lines()
    database[BASE.orders_collection].delete_many({"status": {"$in": ["livrée", "livr\u00e9e"]}})
    assert collect_status(mongo, BASE, now=NOW).problems == []  # nothing to archive yet


def test_status_is_unhealthy_when_the_archive_holds_orders_without_its_unique_index(mongo):
    """After the first run, a missing unique index stops every write (a watcher waits for it,
    batch --run rebuilds it or names the orders sharing a number): unhealthy, not a note."""
    seed_database(mongo[BASE.mongodb_database], BASE, 50, p_anomalies=0.0)
    assert batch(mongo, BASE).run().archived
    mongo[BASE.mongodb_database][BASE.archive_collection].drop_index("numero_commande_1")
    status = collect_status(mongo, BASE, now=NOW)
    assert (
        "the archive's unique index numero_commande_1 is missing: nothing is archived until batch --run builds it (a watcher waits for it)"
        in status.problems
    )
