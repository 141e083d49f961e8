"""Corrections after delivery (#20): an order archived on Monday and corrected on Tuesday (a
refund, a fixed address; still delivered) must not be deleted by Wednesday's purge with the
archive keeping Monday's version: the correction would exist nowhere."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.helpers import (
    WatchProcess,
    archived_ids,
    expected_archive_ids,
    seed_database,
    token_saved,
    wait_for,
)

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


def test_watch_follows_a_correction_of_a_delivered_order(nx_client, nx_settings, nx_env, db_name, tmp_path):
    """The update event of a correction (status unchanged, still delivered) replaces the archive
    document: same _id, one document, archived_at kept, revised_at set."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=42, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    env = {**nx_env, "RESUME_TOKEN_FILE": str(tmp_path / "token.json"), "WATCH_HEARTBEAT_S": "1"}
    watcher = WatchProcess(env, tmp_path)
    try:
        wait_for(lambda: archived_ids(database) == expected, timeout=60, what="catch-up")
        wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")
        order_id = sorted(expected)[0]
        before = database["Commande_archive"].find_one({"_id": order_id})
        database["Commande"].update_one({"_id": order_id}, {"$set": {"adresse_livraison": "12 rue corrigée"}})

        def revised() -> bool:
            document = database["Commande_archive"].find_one({"_id": order_id})
            return document is not None and document["adresse_livraison"] == "12 rue corrigée"

        wait_for(revised, what="the correction archived", on_timeout=watcher.output)
    finally:
        assert watcher.stop() == 0
    after = database["Commande_archive"].find_one({"_id": order_id})
    assert after["archived_at"] == before["archived_at"]
    assert after["revised_at"] is not None
    assert before["revised_at"] is None
    assert after["source"]["adresse_livraison"] == "12 rue corrigée"
    assert database["Commande_archive"].count_documents({"_id": order_id}) == 1
    assert "1 archived order revised" in watcher.output()
