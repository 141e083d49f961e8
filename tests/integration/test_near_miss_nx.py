"""Orders whose status only nearly is DELIVERED_STATUS ('Livrée', 'livree', ' livrée ' for
'livrée'), at the wire: never archived (DELIVERED_STATUS is matched exactly), and said by
batch, status and doctor, each value with its orders. The values come from one ``distinct`` on
``status`` (MongoDB: a DISTINCT_SCAN of the ``{status, date_commande}`` index the run builds),
each near miss counted with a limit; the suite's command-shape check sees both commands."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime

import pytest
from bson import ObjectId

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.cli.main import main
from tests.helpers import purged_but_one_cancelled_after_delivery, seed_database

pytestmark = pytest.mark.integration

NEAR_MISSES = {"Livrée": 2, "livree": 1, " livrée ": 1, unicodedata.normalize("NFD", "LIVRÉE"): 1}


def test_near_misses_are_never_archived_and_batch_status_and_doctor_say_each(
    nx_env, nx_client, nx_settings, db_name, capsys
):
    database = nx_client[db_name]
    seed_database(database, nx_settings, 30)  # the orders and references exist
    orders = database[nx_settings.orders_collection]
    missed = [
        {
            "_id": ObjectId(),
            "numero_commande": f"NEAR-{n}-{i}",
            "status": status,
            "date_commande": datetime.now(UTC),
        }
        for n, (status, count) in enumerate(NEAR_MISSES.items())
        for i in range(count)
    ]
    odd = [{"_id": ObjectId(), "numero_commande": f"ODD-{i}", "status": s} for i, s in enumerate((4, None))]
    orders.insert_many(missed + odd)  # a status that is not a string crashes nothing

    report = BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()
    archive = database[nx_settings.archive_collection]
    assert report.archived > 0
    assert archive.count_documents({"_id": {"$in": [o["_id"] for o in missed]}}) == 0
    warning = next(w for w in report.warnings if w.startswith("never archived: "))
    assert "'Livrée' (2 orders)" in warning
    assert "set DELIVERED_STATUS" in warning

    assert main(["status", "--json"]) in (0, 3)
    found = json.loads(capsys.readouterr().out)["near_misses"]
    assert {m["status"]: m["orders"] for m in found["found"]} == NEAR_MISSES

    assert main(["doctor"]) == 0  # a warning: the operator decides what is delivered
    lines = capsys.readouterr().out.splitlines()
    line = next(line for line in lines if line.startswith("warn delivered status: "))
    assert "DELIVERED_STATUS 'livrée' only by case, accents or spaces" in line
    assert "' livrée ' (1 order)" in line
    assert "decomposed (NFD)" in line
    assert lines[-1] == "ready"

    orders.update_many({"_id": {"$in": [o["_id"] for o in missed]}}, {"$set": {"status": "livrée"}})
    assert main(["doctor"]) == 0  # fixed at the source: passes, and the next run archives them
    assert any(line.startswith("ok   delivered status: ") for line in capsys.readouterr().out.splitlines())
    again = BatchArchiver(nx_client, nx_settings, BatchOptions(run=True, full=True)).run()
    assert again.archived == len(missed)
    assert not [w for w in again.warnings if w.startswith("never archived: ")]


def test_a_delivered_status_no_order_holds_fails_doctor_and_status(
    nx_env, nx_client, nx_settings, db_name, capsys, monkeypatch
):
    """A new user's try: DELIVERED_STATUS=delivered on a source whose delivered orders are
    'livrée'. doctor said "ok" and status "healthy" (exit 0) while nothing could ever be
    archived. The rule: no order holds the value while an order with a date_livraison (the
    contract's "present once delivered") holds another: doctor FAIL (exit 3), status a problem
    (exit 3), each naming the setting and the statuses present (the same distinct scan)."""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 30)
    BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()  # indexes built: healthy
    assert main(["status"]) == 0
    capsys.readouterr()

    monkeypatch.setenv("DELIVERED_STATUS", "delivered")
    assert main(["doctor"]) == 3
    lines = capsys.readouterr().out.splitlines()
    line = next(line for line in lines if line.startswith("FAIL delivered status: "))
    assert "no order has DELIVERED_STATUS 'delivered', so nothing is ever archived" in line
    assert "hold 'livrée'" in line
    assert "'en_attente'" in line  # the statuses present
    assert lines[-1].startswith("NOT READY: ")
    assert "delivered status" in lines[-1]

    assert main(["status", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert [p for p in report["problems"] if "DELIVERED_STATUS 'delivered'" in p]
    assert report["delivered_absent"]["delivered_under"] == ["livrée"]


def test_a_first_day_with_nothing_delivered_yet_is_no_alarm(nx_env, nx_client, nx_settings, db_name, capsys):
    """The rule must not ring on a source's first day: orders placed, in preparation, on their
    way, none delivered (no DELIVERED_STATUS, no date_livraison anywhere): doctor passes and says
    so; status has no such problem. An empty orders collection: nothing said either."""
    orders = nx_client[db_name][nx_settings.orders_collection]
    orders.create_index([("status", 1), ("date_commande", 1)])  # as batch --run builds it: read
    seed_database(nx_client[db_name], nx_settings, 0)  # the references exist
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("ok   delivered status: no status value") for line in lines)

    now = datetime.now(UTC)
    orders.insert_many(
        [
            {"_id": ObjectId(), "numero_commande": f"DAY1-{i}", "status": status, "date_commande": now}
            for i, status in enumerate(("en_attente", "en_preparation", "en_livraison"))
        ]
    )
    assert main(["doctor"]) == 0
    line = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("ok   delivered status: ")
    )
    assert "no order has DELIVERED_STATUS 'livrée' yet, nor any a date_livraison" in line
    main(["status", "--json"])
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert not [p for p in problems if "DELIVERED_STATUS" in p]


def test_a_purged_source_whose_archive_holds_the_delivered_status_is_no_alarm(
    nx_env, nx_client, nx_settings, db_name, monkeypatch, capsys
):
    """With PURGE_AFTER 0d (the default), ``batch --run --purge-source`` takes every delivered
    order out of the source; one cancelled after its delivery keeps its date_livraison. No
    source order holds DELIVERED_STATUS while a "delivered" one holds another value, yet the
    setting is right: the newest archived order holds it. doctor failed and status was
    unhealthy (exit 3: the health timer pages at night) after each nightly purge (a review).
    A setting changed to a wrong value since is still caught: the newest archived holds the old."""
    orders = purged_but_one_cancelled_after_delivery(nx_client, nx_client[db_name], nx_settings)
    assert orders.count_documents({"status": "livrée"}) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    assert not json.loads(capsys.readouterr().out)["problems"]
    assert main(["doctor"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "delivered status" in line]
    assert "the delivered orders have left the source" in line
    monkeypatch.setenv("DELIVERED_STATUS", "delivered")  # wrong, since the purge
    assert main(["doctor"]) == 3
    assert main(["status", "--json"]) == 3


def test_a_purged_source_with_the_archive_on_its_own_deployment_is_no_alarm(
    nx_env, nx_client, nx_settings, db_name, monkeypatch, capsys
):
    """The same purged source, the archive named by ARCHIVE_MONGODB_URI: doctor on the source
    looked at no archive and failed (exit 3) after every purge (a review); it asks the
    archive's deployment."""
    purged_but_one_cancelled_after_delivery(nx_client, nx_client[db_name], nx_settings)
    monkeypatch.setenv("ARCHIVE_MONGODB_URI", nx_env["MONGODB_URI"])  # the archive's deployment
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    code = main(["doctor"])
    out = capsys.readouterr().out
    assert code == 0, [line for line in out.splitlines() if "delivered status" in line]
