"""`restore` (#25 item 1) as a support agent runs it, on the test server: purged orders put back
exactly as the source held them (every dirty shape, BSON types included), idempotent, held
from the next purge by RESTORE_HOLD, an order with other content in the source left alone."""

import json

import bson
import pymongo
import pytest
from bson import ObjectId

from order_archiver.settings import Settings
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import ANOMALY_KINDS, generate_dataset
from tests.conftest import run_cli
from tests.helpers import ANCHOR, seed_database
from teststand.nx_server import NxServer, running_server

pytestmark = pytest.mark.e2e

DIRTY = set(ANOMALY_KINDS) - {"numero_commande_missing"}  # the shapes an archive document keeps


def test_restore_puts_back_purged_orders_exactly_and_holds_them(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 400, seed=41, p_delivered=0.7, p_anomalies=0.35)
    orders = database["Commande"]
    delivered = {
        o["_id"]: o
        for o in dataset.orders
        if o["status"] == "livrée" and o.get("_dirty") != "numero_commande_missing"
    }
    as_stored = {d["_id"]: bson.encode(d) for d in orders.find({"_id": {"$in": list(delivered)}})}
    purge = run_cli("batch", "--run", "--purge-source", "-q", env=nx_env, cwd=tmp_path)
    assert purge.returncode in (0, 3), purge.stderr
    chosen = {}
    for order in delivered.values():  # one order of each dirty shape, and a clean one
        chosen.setdefault(order.get("_dirty", "clean"), order)
    assert DIRTY | {"clean"} <= set(chosen)
    numeros = [order["numero_commande"] for order in chosen.values()]
    assert orders.count_documents({"_id": {"$in": [o["_id"] for o in chosen.values()]}}) == 0  # purged
    selection = [arg for numero in numeros for arg in ("--numero", numero)]

    dry = run_cli("restore", *selection, "--json", env=nx_env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["restored"] == len(numeros)
    assert orders.count_documents({"_id": {"$in": [o["_id"] for o in chosen.values()]}}) == 0  # a dry run

    done = run_cli("restore", *selection, "--run", "--json", env=nx_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["restored"] == len(numeros)
    for order in chosen.values():
        back = orders.find_one({"_id": order["_id"]})
        assert bson.encode(back) == as_stored[order["_id"]], order.get(
            "_dirty", "clean"
        )  # fields, order, types

    again = run_cli("restore", *selection, "--run", "--json", env=nx_env, cwd=tmp_path)
    assert again.returncode == 0
    assert (json.loads(again.stdout)["restored"], json.loads(again.stdout)["already_there"]) == (
        0,
        len(numeros),
    )

    held = run_cli("batch", "--run", "--purge-source", "--json", "-q", env=nx_env, cwd=tmp_path)
    assert held.returncode in (0, 3), held.stderr
    assert orders.count_documents({"_id": {"$in": [o["_id"] for o in chosen.values()]}}) == len(numeros)
    released = run_cli(
        "batch", "--run", "--purge-source", "-q", env={**nx_env, "RESTORE_HOLD": "0d"}, cwd=tmp_path
    )
    assert released.returncode in (0, 3)
    assert (
        orders.count_documents({"_id": {"$in": [o["_id"] for o in chosen.values()]}}) == 0
    )  # no hold: purged

    run_cli("restore", "--numero", numeros[0], "--run", env=nx_env, cwd=tmp_path)
    orders.update_one(
        {"numero_commande": numeros[0]}, {"$set": {"adresse_livraison": "changed by the application"}}
    )
    conflict = run_cli("restore", "--numero", numeros[0], "--run", env=nx_env, cwd=tmp_path)
    assert conflict.returncode == 3
    assert f"1 in the source with other content, left alone: {numeros[0]}" in conflict.stdout
    assert (
        orders.find_one({"numero_commande": numeros[0]})["adresse_livraison"] == "changed by the application"
    )

    nothing = run_cli("restore", "--run", env=nx_env, cwd=tmp_path)
    assert nothing.returncode == 2
    assert (
        nothing.stderr.strip()
        == "error: restore needs a selection: --numero, --id, --client or --date-from/--date-to"
    )


@pytest.mark.test_server_only("the test server's fault knob NX_FAULT_REFUSE_INSERT")
def test_a_restore_refused_in_part_holds_what_it_inserted_and_reports_the_rest(tmp_path, db_name):
    """MongoDB inserts what an unordered insert does not refuse and names each refused
    document (``writeErrors``): here a validator (121, ``errInfo``), a reused numero under a
    unique index (11000, ``keyPattern: {numero_commande: 1}``), and an order another writer put
    back first (11000 on ``_id``, the same order). The restore reports the first two with
    MongoDB's reason (exit 3), counts the third as there, and the orders in the source are held
    from the next purge (RESTORE_HOLD) while the refused ones carry no mark."""
    data = generate_dataset(300, seed=43, anchor=ANCHOR, p_delivered=0.7, p_anomalies=0.0)
    delivered = [o for o in data.orders if o["status"] == "livrée"]
    validator, reused, first, plain = delivered[3:7]
    numeros = [o["numero_commande"] for o in (validator, reused, first, plain)]
    knob = f"Commande:{numeros[0]}=121,{numeros[1]}=11000,{numeros[2]}=11000/_id"
    server = NxServer(tmp_path / "nx").start()
    try:
        env = {"MONGODB_URI": server.uri, "MONGODB_DATABASE": db_name, "LOG_DIR": ""}
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            fill_database(client[db_name], data, Settings(simulation=True))
        purge = run_cli("batch", "--run", "--purge-source", "-q", env=env, cwd=tmp_path)
        assert purge.returncode == 0, purge.stderr
        server.stop()
        server = NxServer(tmp_path / "nx", port=server.port, env={"NX_FAULT_REFUSE_INSERT": knob}).start()
        selection = [arg for numero in numeros for arg in ("--numero", numero)]
        done = run_cli("restore", *selection, "--run", "--json", env=env, cwd=tmp_path)
        assert done.returncode == 3, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        report = json.loads(done.stdout)
        assert (report["restored"], report["already_there"], report["refused"]) == (1, 1, 2)
        assert report["conflicts"] == 0
        refused = {r["numero"]: r for r in report["refused_orders"]}
        assert {n: r["code"] for n, r in refused.items()} == {numeros[0]: 121, numeros[1]: 11000}
        assert refused[numeros[0]]["reason"] == "Document failed validation"
        assert "index: numero_commande_1 dup key" in refused[numeros[1]]["reason"]
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            database = client[db_name]
            back = {o["_id"] for o in database["Commande"].find({"numero_commande": {"$in": numeros}})}
            assert back == {first["_id"], plain["_id"]}
            archived = database["Commande_archive"].find({"numero_commande": {"$in": numeros}})
            marked = {d["_id"] for d in archived if d.get("restored_at") is not None}
            assert marked == {first["_id"], plain["_id"]}  # exactly what is in the source
        held = run_cli("batch", "--run", "--purge-source", "-q", env=env, cwd=tmp_path)
        assert held.returncode == 0, held.stderr
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            kept = {o["_id"] for o in client[db_name]["Commande"].find({"numero_commande": {"$in": numeros}})}
            assert kept == {first["_id"], plain["_id"]}  # held by RESTORE_HOLD
        text = run_cli("restore", *selection, "--run", env=env, cwd=tmp_path)
        assert text.returncode == 3
        assert "2 refused by the source collection, not restored: " in text.stdout
        assert f"{numeros[0]} (code 121: Document failed validation)" in text.stdout
    finally:
        server.stop()


def test_a_numero_reused_under_a_unique_index_is_left_alone_not_counted_as_restored(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """The orders collection has a unique index on ``numero_commande`` and the application gave
    a purged order's number to a new order: the read before the insert finds it (MongoDB would
    refuse the insert with 11000 on ``numero_commande_1``: a race past that read still is, see
    the test above), so the order is left alone and reported (exit 3) and carries no mark; the
    other order is restored and held."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=47, p_delivered=0.7, p_anomalies=0.0)
    purge = run_cli("batch", "--run", "--purge-source", "-q", env=nx_env, cwd=tmp_path)
    assert purge.returncode == 0, purge.stderr
    reused, plain = [o for o in dataset.orders if o["status"] == "livrée"][:2]
    orders = database["Commande"]
    orders.drop_index("numero_commande_1")  # the application's plain index made unique
    orders.create_index("numero_commande", unique=True)
    newcomer = {"_id": ObjectId(), "numero_commande": reused["numero_commande"], "status": "en_attente"}
    orders.insert_one(newcomer)
    done = run_cli(
        "restore",
        "--numero",
        reused["numero_commande"],
        "--numero",
        plain["numero_commande"],
        "--run",
        "--json",
        env=nx_env,
        cwd=tmp_path,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["restored"], report["already_there"], report["refused"]) == (1, 0, 0)
    (held,) = report["numero_held_orders"]
    assert (held["numero"], held["held_by"]) == (reused["numero_commande"], str(newcomer["_id"]))
    assert orders.find_one({"numero_commande": reused["numero_commande"]}) == newcomer  # left alone
    assert orders.find_one({"_id": reused["_id"]}) is None
    archive = {
        d["_id"]: d
        for d in database["Commande_archive"].find({"_id": {"$in": [reused["_id"], plain["_id"]]}})
    }
    assert archive[reused["_id"]].get("restored_at") is None
    assert archive[plain["_id"]].get("restored_at") is not None


def test_a_restored_order_archived_again_under_hash_keeps_its_archived_pseudonyms(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """Under ``ARCHIVE_PII=hash`` restore puts back the archive's copy, its personal fields as
    their keyed hashes; the next incremental batch reads the restore's inserts from the change
    stream and writes those orders again. It hashed the hashes: every personal field of the
    archived order became a hash of its hash, ``revised_at`` was stamped on an unchanged order,
    and the purge then deleted the restored order as that version. The archive must be as it
    was, but for ``restored_at``. (On mongomock: tests/unit/test_restore_pseudonyms.py.)"""
    env = {**nx_env, "ARCHIVE_PII": "hash", "ARCHIVE_PII_KEY": "k" * 20}
    database = nx_client[db_name]
    seed_database(database, nx_settings, 200, seed=53, p_delivered=0.7, p_anomalies=0.35)
    first = run_cli("batch", "--run", "--purge-source", "-q", "--json", env=env, cwd=tmp_path)
    assert first.returncode in (0, 3), first.stderr
    archive = database["Commande_archive"]
    kept = {d["_id"]: d for d in archive.find()}
    purged = json.loads(first.stdout)["purged"]
    assert purged == len(kept) > 20

    done = run_cli("restore", "--date-from", "2000-01-01", "--run", "--yes", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["restored"] == purged

    again = run_cli("batch", "--run", "-q", "--json", env=env, cwd=tmp_path)
    assert again.returncode in (0, 3), again.stderr
    report = json.loads(again.stdout)
    assert report["mode"] == "incremental"
    assert report["revised"] == 0, report  # nothing changed at the source
    for document in archive.find():
        assert document.pop("restored_at") is not None  # restore's mark, and nothing else:
        assert document == kept.pop(document["_id"])  # no hash of a hash, no revised_at
    assert kept == {}


@pytest.mark.test_server_only("the test server's knob NX_CLOCK_AHEAD_S")
def test_a_restore_from_a_host_whose_clock_is_behind_is_held_for_the_whole_hold(tmp_path, db_name):
    """The purge measures RESTORE_HOLD on the deployment's clock (``hello``'s ``localTime``: one
    clock for every host); a restore run on a host whose clock is two days behind the server's
    stamped its mark with the host's clock, so a hold of one day was already over: the next
    purge took the order again. The mark is now stamped with the server's clock."""
    data = generate_dataset(200, seed=44, anchor=ANCHOR, p_delivered=0.7, p_anomalies=0.0)
    order = next(o for o in data.orders if o["status"] == "livrée")
    with running_server({"NX_CLOCK_AHEAD_S": str(2 * 86400)}) as server:
        env = {"MONGODB_URI": server.uri, "MONGODB_DATABASE": db_name, "LOG_DIR": "", "RESTORE_HOLD": "1d"}
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            fill_database(client[db_name], data, Settings(simulation=True))
            orders = client[db_name]["Commande"]
            purge = run_cli("batch", "--run", "--purge-source", "-q", env=env, cwd=tmp_path)
            assert purge.returncode == 0, purge.stderr
            assert orders.count_documents({"_id": order["_id"]}) == 0
            done = run_cli("restore", "--numero", order["numero_commande"], "--run", env=env, cwd=tmp_path)
            assert done.returncode == 0, done.stdout + done.stderr
            held = run_cli("batch", "--run", "--purge-source", "-q", env=env, cwd=tmp_path)
            assert held.returncode == 0, held.stderr
            assert orders.count_documents({"_id": order["_id"]}) == 1  # held by RESTORE_HOLD


def test_an_order_whose_number_another_source_order_holds_is_left_alone_and_reported(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """A new user's try: batch archived order Y as CMD-N and rejected order X, another order
    under the same number ("numero_commande already archived for another order"); the purge
    took Y. ``restore --numero CMD-N --run`` put Y back beside X ("restored 1", exit 0): the
    source's ``{numero_commande}`` index is not unique (batch builds it so), nothing refused it.
    Once ARCHIVE_RETENTION deleted Y's archived copy, the next batch archived X under CMD-N.
    Now Y is left alone and reported (exit 3), in the dry run as in the run, text and --json."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=59, p_delivered=0.7, p_anomalies=0.0)
    orders = database["Commande"]
    first, plain = [o for o in dataset.orders if o["status"] == "livrée"][:2]
    numero = first["numero_commande"]
    other = {**first, "_id": ObjectId(), "adresse_livraison": "another order, the same number"}
    orders.insert_one(other)
    purge = run_cli("batch", "--run", "--purge-source", "-q", env=nx_env, cwd=tmp_path)
    assert purge.returncode == 3, purge.stdout + purge.stderr  # the other order: rejected
    assert [o["_id"] for o in orders.find({"numero_commande": numero})] == [other["_id"]]
    selection = ["--numero", numero, "--numero", plain["numero_commande"]]

    dry = run_cli("restore", *selection, "--json", env=nx_env, cwd=tmp_path)
    assert dry.returncode == 3, dry.stdout + dry.stderr
    said = json.loads(dry.stdout)
    assert (said["restored"], said["numero_held"], said["numero_shared"]) == (1, 1, 0)

    done = run_cli("restore", *selection, "--run", "--json", env=nx_env, cwd=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["restored"], report["numero_held"], report["complete"]) == (1, 1, False)
    assert report["numero_held_orders"] == [
        {"numero": numero, "id": str(first["_id"]), "held_by": str(other["_id"]), "restored": False}
    ]
    assert [o["_id"] for o in orders.find({"numero_commande": numero})] == [other["_id"]]  # left alone
    assert orders.count_documents({"_id": plain["_id"]}) == 1
    assert database["Commande_archive"].find_one({"_id": first["_id"]}).get("restored_at") is None

    text = run_cli("restore", "--numero", numero, "--run", env=nx_env, cwd=tmp_path)
    assert text.returncode == 3, text.stdout + text.stderr
    assert (
        f"1 left alone, their numero_commande held by another order in the source: {numero} "
        f"(order {first['_id']}; held by order {other['_id']})"
    ) in text.stdout
    assert orders.count_documents({"numero_commande": numero}) == 1
