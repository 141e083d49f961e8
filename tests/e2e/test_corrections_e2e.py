"""Corrections after delivery (#20): an order archived on Monday and corrected on Tuesday (a
refund, a fixed address; still delivered) must not be deleted by Wednesday's purge with the
archive keeping Monday's version: the correction would exist nowhere."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.helpers import archived_ids, expected_archive_ids, seed_database

pytestmark = pytest.mark.e2e


def test_a_correction_after_archiving_is_never_deleted_by_the_purge(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 300, seed=41, p_anomalies=0.0)
    monday = run_cli("batch", "--run", env=nx_env, cwd=tmp_path)  # archived, not purged
    assert monday.returncode == 0, monday.stderr
    delivered = sorted(expected_archive_ids(dataset))
    corrected = delivered[:3]
    for order_id in corrected:  # Tuesday: a refund and a fixed address, still delivered
        database["Commande"].update_one(
            {"_id": order_id}, {"$set": {"adresse_livraison": "12 rue corrigée", "remboursement": 4.5}}
        )
    wednesday = run_cli("batch", "--run", "--full", "--purge-source", "--json", env=nx_env, cwd=tmp_path)
    assert wednesday.returncode == 0, wednesday.stderr
    report = json.loads(wednesday.stdout)
    left = {d["_id"]: d for d in database["Commande"].find({"status": "livrée"})}
    # Every correction still exists, in the source (the archive keeps Monday's version until
    # the order is archived again), and nothing else was kept back.
    assert set(left) == set(corrected)
    assert all(left[i]["remboursement"] == 4.5 for i in corrected)
    assert (report["purged"], report["purge_kept"]) == (len(delivered) - 3, 3)
    assert archived_ids(database) == set(delivered)
    archived = database["Commande_archive"].find_one({"_id": corrected[0]})
    assert "remboursement" not in archived["source"]  # Monday's version
    assert "left in the source: changed since they were archived" in wednesday.stderr
