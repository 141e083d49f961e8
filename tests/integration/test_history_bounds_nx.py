"""At the wire, what grows with the history (a source of tens of millions of orders, years
old) and what the archiver asks of the server about it: a ``status`` probe's counts, the lists
read in an order no index gives. Each limit scaled down by a knob of the test server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from bson import ObjectId

from order_archiver.operations import status
from order_archiver.operations.status import collect_status
from order_archiver.settings import Duration

pytestmark = pytest.mark.integration


def test_the_next_purge_is_counted_up_to_a_bound(nx_client, nx_settings, monkeypatch):
    """A deployment that never purges keeps every delivered order in the source: "what the
    next --purge-source would move" counted them all at every probe (tens of millions of index
    keys). The count stops one past ``PURGE_COUNTED_AT_MOST`` (MongoDB's count with a limit:
    the ``count_documents`` aggregation's ``$limit`` stops the index scan there), scaled down
    here to 5 of 8 orders; the report says "more than"."""
    monkeypatch.setattr(status, "PURGE_COUNTED_AT_MOST", 5)
    settings = nx_settings.with_overrides(purge_after=Duration(days=1))
    now = datetime.now(UTC)
    orders = nx_client[settings.mongodb_database][settings.orders_collection]
    old = [
        {"_id": ObjectId(), "status": "livrée", "date_livraison": now - timedelta(days=3 + i)}
        for i in range(8)
    ]
    recent = {"_id": ObjectId(), "status": "livrée", "date_livraison": now - timedelta(hours=1)}
    orders.insert_many([*old, recent])
    report = collect_status(nx_client, settings, now=now)
    assert report.purge_movable == 5  # counted no further (before: all 8)
    assert report.purge_movable_more
    assert any(
        line.startswith("next --purge-source: more than 5 delivered orders") for line in report.lines()
    )
    orders.delete_many({"_id": {"$in": [o["_id"] for o in old[:4]]}})
    exact = collect_status(nx_client, settings, now=now)
    assert (exact.purge_movable, exact.purge_movable_more) == (4, False)


def test_status_reads_the_newest_rejects_only(nx_client, nx_settings, monkeypatch):
    """Each listed rejection ``status`` reads is looked up in the archive, at every probe (the
    watcher's liveness probe among them: 30 s): the whole list, which grows with the history,
    was read. The newest ``REJECTS_READ_AT_MOST`` only (scaled down here to 3 of 5), and the
    report says more are listed."""
    from order_archiver.mongodb.rejects import RejectStore
    from order_archiver.orders.rejection import Rejection

    monkeypatch.setattr(status, "REJECTS_READ_AT_MOST", 3)
    store = RejectStore(nx_client[nx_settings.mongodb_database][nx_settings.rejects_collection])
    for _ in range(5):
        store.record([Rejection(ObjectId(), "numero_commande missing")], "batch")
    report = collect_status(nx_client, nx_settings)
    assert report.rejected == 3  # before: all 5
    assert report.rejected_more
    assert any(
        line.endswith(": 3 among the newest 3 listed (more are listed) (list: main.py rejects)")
        for line in report.lines()
    )


# Before 6.0 a find sorted on no index's order is sorted in memory, and past 100 MB without
# allowDiskUse it fails: 292 QueryExceededMemoryLimitNoDiskUseAllowed (the manual's
# cursor.allowDiskUse(), "Blocking sort operations"; 6.0 made spilling the default). Invalid
# orders are never archived, so never purged: their list grows with the history, and some
# 300,000 entries pass 100 MB. Scaled down by the test server's knob to 3 entries.
SMALL_SORTS = {"NX_SORT_MEMORY_OVER": "3", "NX_MONGODB_VERSION": "4.4"}


@pytest.mark.test_server_only("a test server of its own, with its blocking-sort memory knob")
def test_a_long_rejects_list_is_listed_and_counted_on_mongodb_4_4(monkeypatch, capsys):
    """``rejects`` and ``status`` read the whole list newest first (no index on ``first_seen``):
    on 4.4 and 5.0 a list past the sort's memory failed both, at every probe."""
    import pymongo

    from order_archiver.cli.main import main
    from order_archiver.mongodb.rejects import RejectStore
    from order_archiver.orders.rejection import Rejection
    from teststand.nx_server import running_server

    with running_server(SMALL_SORTS, prefix="nx-sorts-") as server:
        for key, value in {"MONGODB_URI": server.uri, "MONGODB_DATABASE": "sorts", "LOG_DIR": ""}.items():
            monkeypatch.setenv(key, value)
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            store = RejectStore(client["sorts"]["archiver_rejects"])
            invalid = [Rejection(ObjectId(), "numero_commande missing") for _ in range(5)]
            assert store.record(invalid, "batch") == 5
        assert main(["rejects", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert (listed["total"], listed["shown"]) == (5, 5)
        assert main(["status", "--json"]) in (0, 3)  # 3: unhealthy (no archive yet), not failed
        assert json.loads(capsys.readouterr().out)["rejected"] == 5


@pytest.mark.test_server_only("a test server of its own, with its blocking-sort memory knob")
def test_a_month_moves_to_the_cold_tier_before_its_index_is_ready_on_mongodb_4_4(tmp_path, monkeypatch):
    """The move reads a month in ``{date_livraison, _id}`` order, an index built with the cold
    tier: until it is ready (a large archive's build outlasts INDEX_BUILD_WAIT_S and is left
    pending), the server sorts the month in memory, a month of a platform's orders being
    gigabytes. On 4.4 and 5.0 that failed the run (292) until the build was done."""
    import pymongo

    from order_archiver.cli.main import main
    from order_archiver.cold.tier import move_to_cold
    from order_archiver.context import RunContext
    from order_archiver.settings import Settings
    from tests.helpers import seed_database
    from teststand.nx_server import running_server

    with running_server(SMALL_SORTS, prefix="nx-sorts-") as server:
        for key, value in {"MONGODB_URI": server.uri, "MONGODB_DATABASE": "sorts", "LOG_DIR": ""}.items():
            monkeypatch.setenv(key, value)
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            settings = Settings(mongodb_uri=server.uri, mongodb_database="sorts", log_dir="")
            seed_database(client["sorts"], settings, 40, seed=36, p_anomalies=0.0, p_delivered=1.0)
            orders = client["sorts"][settings.orders_collection]
            orders.update_many({}, {"$set": {"date_livraison": datetime.now(UTC) - timedelta(days=400)}})
            assert main(["batch", "--run", "-q"]) == 0  # no cold tier yet: its index is not built
            archive = client["sorts"][settings.archive_collection]
            held = archive.count_documents({})
            assert held > 3
            cold = settings.with_overrides(
                archive_cold_url=(tmp_path / "cold").as_uri(), archive_cold_after=Duration(days=365)
            )
            (tmp_path / "cold").mkdir()
            report = move_to_cold(client, cold, RunContext())
            assert report is not None
            assert (report.moved, archive.count_documents({})) == (held, 0)


def _verify_peak(client, settings, unerased: int = 0) -> int:
    """The bytes ``verify`` held at its peak, in this process (tracemalloc)."""
    import tracemalloc

    from order_archiver.operations.verify import verify

    tracemalloc.start()
    try:
        report = verify(client, settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.unerased == unerased
    return peak


def test_verify_holds_a_chunk_of_the_forgotten_persons_not_the_record(nx_client, nx_settings, monkeypatch):
    """The record of forgotten persons grows with every ``forget --run``, over the years (a
    platform erases thousands a month on request): verify read it whole into one list before
    its first chunk. It walks it in key order now, a chunk at a time: its memory is the same
    for N and 4N persons (the chunk scaled down to 50, the record to 400 and 1,600). Each
    order not erased is counted once: one of two persons of different chunks, one marked."""
    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.operations import verify as verify_module
    from tests.helpers import seed_database

    monkeypatch.setattr(verify_module, "CHUNK", 50)
    seed_database(nx_client[nx_settings.mongodb_database], nx_settings, 20)
    BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()
    record = nx_client[nx_settings.mongodb_database][nx_settings.forgotten_collection]
    now = datetime.now(UTC)

    def forget(count: int, kind: str = "client", people: list | None = None) -> None:
        people = people or [ObjectId() for _ in range(count)]
        record.insert_many(
            [{"_id": f"{kind}:{p}", "kind": kind, "id": p, "forgotten_at": now} for p in people]
        )

    forget(400)
    _verify_peak(nx_client, nx_settings)  # once first: what a first call allocates (imports, pools)
    small = _verify_peak(nx_client, nx_settings)
    forget(1200)
    large = _verify_peak(nx_client, nx_settings)
    # 1,200 more persons held whole are some 500 kB more (a list of their records); a chunk is
    # the same at both sizes.
    assert large - small < 100_000, (small, large)
    archive = nx_client[nx_settings.mongodb_database][nx_settings.archive_collection]
    both, marked = archive.find({"client": {"$ne": None}, "livreur": {"$ne": None}}).sort("_id", 1).limit(2)
    assert both["client"]["id"] != marked["client"]["id"]
    # Its client's key among the first chunk's ("client:" < "livreur:"), its courier's the last.
    forget(1, people=[both["client"]["id"], marked["client"]["id"]])
    forget(1, "livreur", [both["livreur"]["id"]])
    archive.update_one({"_id": marked["_id"]}, {"$set": {"forgotten_by": "forget"}})
    named = {both["client"]["id"], marked["client"]["id"], both["livreur"]["id"]}
    ids = {d["_id"]: {(d.get(p) or {}).get("id") for p in ("client", "livreur")} for d in archive.find()}
    theirs = [i for i, persons in ids.items() if named & persons]
    assert len(theirs) < sum(len(named & ids[i]) for i in theirs)  # some named twice
    _verify_peak(nx_client, nx_settings, unerased=len(theirs))  # each once


def test_status_reads_the_newest_archived_order_once(nx_server, nx_client, nx_settings):
    """The archive's newest document (sorted on ``archived_at``: its index's last key, or a
    scan of the whole archive while that index is being built on a large one) was read twice
    by one ``status`` of a purged source: for the newest archived_at, and to tell a purged
    source from a wrong DELIVERED_STATUS. Once now, at the wire."""
    import pymongo
    from pymongo import monitoring

    from tests.helpers import purged_but_one_cancelled_after_delivery

    database = nx_client[nx_settings.mongodb_database]
    purged_but_one_cancelled_after_delivery(nx_client, database, nx_settings)
    newest: list[dict] = []

    class Newest(monitoring.CommandListener):
        def started(self, event):
            command = event.command
            if command.get("find") == nx_settings.archive_collection and "archived_at" in command.get(
                "sort", {}
            ):
                newest.append(dict(command))

        def succeeded(self, event): ...

        def failed(self, event): ...

    with pymongo.MongoClient(nx_server.uri, tz_aware=True, event_listeners=[Newest()]) as client:
        report = collect_status(client, nx_settings)
    assert report.delivered_absent is not None
    assert report.delivered_absent.archived_under_it
    assert report.newest_archived_at is not None
    assert len(newest) == 1, newest  # before: 2


def test_a_full_pass_shown_with_progress_does_not_count_the_archive(nx_server, nx_client, nx_settings):
    """A full pass shown with progress (a terminal's bar, or log lines: any batch without -q)
    estimated what it would skip as the archive's documents of its window, counted whole: after
    years of --purge-source the archive holds tens of millions of orders the source no longer
    has, all counted (an index or collection scan) for a pass of a few. It counted no further
    than the pass's own delivered orders then (a count with a limit); now not at all: the
    progress counts the orders it skips as archived too (the summary's scanned), its total the
    window's delivered orders."""
    import pymongo
    from pymongo import monitoring

    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from tests.helpers import seed_database

    database = nx_client[nx_settings.mongodb_database]
    seed_database(database, nx_settings, 40)
    BatchArchiver(nx_client, nx_settings, BatchOptions(run=True, purge_source=True)).run()
    orders = database[nx_settings.orders_collection]
    assert orders.count_documents({"status": "livrée"}) == 0
    now = datetime.now(UTC)
    valid = {"numero_commande": {"$type": "string"}}  # not rejected: archived
    later = [o["_id"] for o in orders.find(valid, {"_id": 1}).sort("_id", 1).limit(3)]
    orders.update_many({"_id": {"$in": later}}, {"$set": {"status": "livrée", "date_livraison": now}})
    counts: list[list] = []

    class Counts(monitoring.CommandListener):
        def started(self, event):
            command = event.command
            group = [s for s in command.get("pipeline", []) if "$group" in s]
            if command.get("aggregate") == nx_settings.archive_collection and group:
                counts.append(list(command["pipeline"]))

        def succeeded(self, event): ...

        def failed(self, event): ...

    with pymongo.MongoClient(nx_server.uri, tz_aware=True, event_listeners=[Counts()]) as client:
        report = BatchArchiver(client, nx_settings, BatchOptions(run=True, full=True, progress="log")).run()
    assert report.archived == 3
    assert database[nx_settings.archive_collection].estimated_document_count() > 3
    assert counts == []  # first: counted whole; then up to the pass's own orders ($limit)


def test_restores_look_for_a_numbers_holders_reads_two_per_number_however_many_hold_it(
    nx_server, nx_settings
):
    """``restore`` asks the source which other orders hold each restored copy's number: one was
    enough to leave the copy alone, but the read brought back every order under the number,
    and dirty data gives one number to thousands ("N/A", an import's placeholder). Per number,
    the lowest and the highest ``_id`` now: a reply of one document per number asked."""
    from pymongo import monitoring

    from order_archiver.context import RunContext
    from order_archiver.operations.held_numbers import NumberHolders

    class Replies(monitoring.CommandListener):
        documents = 0

        def started(self, event):
            pass

        def succeeded(self, event):
            cursor = event.reply.get("cursor") or {}
            self.documents += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

        def failed(self, event):
            pass

    orders_name = nx_settings.orders_collection
    with pymongo.MongoClient(nx_server.uri, tz_aware=True) as writer:
        writer[nx_settings.mongodb_database][orders_name].insert_many(
            [{"_id": ObjectId(), "numero_commande": "N/A"} for _ in range(1_200)]
        )
    replies = Replies()
    with pymongo.MongoClient(nx_server.uri, tz_aware=True, event_listeners=[replies]) as client:
        orders = client[nx_settings.mongodb_database][orders_name]
        mine, alone = ObjectId(), ObjectId()
        held = NumberHolders(orders, RunContext()).holding(
            [{"_id": mine, "numero_commande": "N/A"}, {"_id": alone, "numero_commande": "CMD-UNIQUE"}]
        )
    assert set(held) == {mine}  # held by another order, the other copy's number by none
    assert held[mine] != mine
    assert replies.documents <= 1  # before: 1,200
