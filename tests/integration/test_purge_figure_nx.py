"""``status``'s "next --purge-source" figure against what the purge moves, at the wire: the purge
leaves in the source an order restored within RESTORE_HOLD (its archive document's
``restored_at``) and a rejected order (never archived); status said "up to 2 ... (not those
restored within RESTORE_HOLD 30d)" and ``purge_movable: 2`` while ``batch --purge-source`` (dry
run) said ``would purge 0`` (a new user's try). The left-out orders are read boundedly: the
archive's sparse ``restored_at`` index, the rejects list status already reads, then counts by
``_id`` among the source's old-enough deliveries."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bson import ObjectId

from order_archiver.cli.main import main
from order_archiver.context import RunContext
from order_archiver.watch.watcher import Watcher, WatchOptions
from tests.helpers import archived_ids, deliver, pending_ids, seed_database, wait_for

pytestmark = pytest.mark.integration


def test_status_leaves_out_of_the_next_purge_what_the_purge_leaves(
    nx_env, nx_client, nx_settings, db_name, capsys
):
    database = nx_client[db_name]
    seed_database(database, nx_settings, 30, p_anomalies=0.0)
    orders = database[nx_settings.orders_collection]
    assert main(["batch", "--run", "--purge-source", "-q"]) == 0
    archive = database[nx_settings.archive_collection]
    restored = archive.find_one({}, {"numero_commande": 1})
    assert restored is not None
    assert main(["restore", "--numero", str(restored["numero_commande"]), "--run"]) == 0
    now = datetime.now(UTC)
    orders.insert_one(  # delivered, without numero_commande: rejected, never archived
        {
            "_id": ObjectId(),
            "status": "livrée",
            "date_commande": now - timedelta(days=2),
            "date_livraison": now - timedelta(days=1),
        }
    )
    assert main(["batch", "--run", "-q"]) == 3  # the rejection listed
    capsys.readouterr()

    assert main(["batch", "--purge-source", "--json", "-q"]) == 0  # a dry run
    would_purge = json.loads(capsys.readouterr().out)["would_purge"]
    assert would_purge == 0

    main(["status", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["purge_movable"] == would_purge  # before: 2
    assert (report["purge_held"], report["purge_rejected"]) == (1, 1)
    main(["status"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("next --purge"))
    assert line == (
        "next --purge-source: up to 0 delivered orders old enough to leave the source (PURGE_AFTER 0d), "
        "once archived (not those restored within RESTORE_HOLD 30d); left out: 1 restored within it "
        "and 1 rejected order"
    )


def test_status_reads_no_restored_order_without_the_restored_at_index(
    nx_env, nx_client, nx_settings, db_name, capsys
):
    """The restored orders are read on the archive's ``{restored_at}`` index only: an archive an
    earlier version built (or a watch-only deployment, whose watcher builds no index) lacks it,
    and every status (the health timer's, every minute) read the whole archive for them (on
    MongoDB a COLLSCAN: a review). Without it the figure says they are not left out yet."""
    from pymongo import monitoring

    from order_archiver.batch.job import BatchArchiver, BatchOptions

    database = nx_client[db_name]
    seed_database(database, nx_settings, 30)
    BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()
    database[nx_settings.archive_collection].drop_index("restored_at_1")  # as an earlier version built it
    finds: list[dict] = []

    class Seen(monitoring.CommandListener):
        def started(self, event):
            if event.command_name == "find" and "restored_at" in str(event.command.get("filter", {})):
                finds.append(dict(event.command["filter"]))

        def succeeded(self, event): ...

        def failed(self, event): ...

    monitoring.register(Seen())
    capsys.readouterr()
    main(["status"])
    line = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("next --purge-source")
    )
    assert finds == []
    assert "not left out yet (restored_at_1 not built: batch --run builds it)" in line


def test_status_counts_in_the_next_purge_what_a_watcher_archived_without_a_delivery_date(
    nx_env, nx_client, nx_settings, db_name, capsys
):
    """``demo.py --auto`` (QUICKSTART): batch archived 967 orders, then the watcher 5 delivered
    live by a status change alone (no ``date_livraison``: an application that stamps nothing);
    status said "up to 967" of an archive of 972, and nothing said why: its count asked for a
    ``date_livraison`` before now, which PURGE_AFTER 0d's purge never asks (it moves every
    archived delivered order: ``purge_cutoffs``), and the next ``batch --run --purge-source``
    deleted all 972. The figure is now counted on the purge's own selection. The same
    watcher's deliveries stamped as the application does are counted either way."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 60, seed=12, p_anomalies=0.0)
    orders = database[nx_settings.orders_collection]
    assert main(["batch", "--run", "-q"]) == 0  # the indexes (the watcher's unique one), the pass
    by_batch = archived_ids(database)
    stop = threading.Event()
    watcher = Watcher(
        nx_client,
        replace(nx_settings, resume_token_file="token.json"),
        WatchOptions(),
        context=RunContext(stop=stop),
    )
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: Path("token.json").exists(), what="the watcher's stream open")
        unstamped, stamped = pending_ids(dataset)[:5], pending_ids(dataset)[5:7]
        for order_id in unstamped:  # as demo.py delivers: the status alone
            orders.update_one({"_id": order_id}, {"$set": {"status": nx_settings.delivered_status}})
        deliver(orders, stamped)  # the sentinel: archived after the five before it
        wait_for(
            lambda: archived_ids(database) == by_batch | set(unstamped) | set(stamped),
            what="the watcher's archive of the seven",
        )
    finally:
        stop.set()
        thread.join(timeout=15)
    capsys.readouterr()

    main(["status", "--json"])
    movable = json.loads(capsys.readouterr().out)["purge_movable"]
    assert main(["batch", "--purge-source", "--json", "-q"]) == 0  # a dry run
    would_purge = json.loads(capsys.readouterr().out)["would_purge"]
    assert main(["batch", "--run", "--purge-source", "--json", "-q"]) == 0
    purged = json.loads(capsys.readouterr().out)["purged"]
    assert orders.count_documents({"_id": {"$in": unstamped + stamped}}) == 0  # the purge moved them
    assert (movable, would_purge, purged) == (len(by_batch) + 7,) * 3  # before: movable 5 short


def test_status_says_the_archived_orders_without_a_delivery_date_that_a_purge_after_never_moves(
    nx_env, nx_client, nx_settings, db_name, capsys, monkeypatch
):
    """Under a PURGE_AFTER longer than 0d the purge moves only orders delivered before it: one
    without a ``date_livraison`` is never old enough and stays in the source for good
    (``selection.build_selection``), archived all the same. Status counted the others and said
    nothing of them: an archive of 33 beside "up to 30" that never reaches 33. It now says how
    many stay and why (one count of ``date_livraison: null`` on the ``{status, date_livraison}``
    index: MongoDB's equality to null matches a missing field too)."""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 60, seed=12, p_anomalies=0.0)
    orders = database[nx_settings.orders_collection]
    undated = [order["_id"] for order in orders.find({"status": {"$ne": "livrée"}}, {"_id": 1}).limit(3)]
    orders.update_many({"_id": {"$in": undated}}, {"$set": {"status": "livrée"}})  # the status alone
    monkeypatch.setenv("PURGE_AFTER", "1h")
    assert main(["batch", "--run", "-q"]) == 0
    capsys.readouterr()

    main(["status", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert main(["batch", "--run", "--purge-source", "--json", "-q"]) == 0
    purged = json.loads(capsys.readouterr().out)["purged"]
    assert orders.count_documents({"_id": {"$in": undated}}) == 3  # stayed
    assert (report["purge_movable"], report["purge_undated"]) == (purged, 3)
    main(["status"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("next --purge"))
    assert line.endswith(
        "; never: 3 delivered orders without a date_livraison, which PURGE_AFTER 1h cannot age "
        "(they stay in the source)"
    )
