"""`restore` (#25 item 1) as a support agent runs it, on the test server: purged orders put back
exactly as the source held them (every dirty shape, BSON types included), idempotent, held
from the next purge by RESTORE_HOLD, an order with other content in the source left alone."""

import json

import bson
import pytest

from generator import ANOMALY_KINDS
from tests.conftest import run_cli
from tests.helpers import seed_database

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
