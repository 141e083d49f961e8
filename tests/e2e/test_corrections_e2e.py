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


def test_a_correction_after_archiving_is_archived_by_the_next_full_pass_then_purged(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """Wednesday's full pass reads the orders corrected since Monday's pass from the change
    stream (the archive in the source database skips archived orders on the server
    otherwise), replaces their archive documents, and only then does the purge delete them:
    the archive holds Tuesday's version, the correction exists."""
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
    assert (report["mode"], report["revised"], report["purged"], report["purge_kept"]) == (
        "full",
        3,
        len(delivered),
        0,
    )
    assert database["Commande"].count_documents({"status": "livrée"}) == 0
    assert archived_ids(database) == set(delivered)
    for order_id in corrected:
        archived = database["Commande_archive"].find_one({"_id": order_id})
        assert archived["source"]["remboursement"] == 4.5
        assert archived["adresse_livraison"] == "12 rue corrigée"
        assert archived["revised_at"] is not None


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
        code = watcher.stop()
        assert code == 0, watcher.output()[-3000:]
    after = database["Commande_archive"].find_one({"_id": order_id})
    assert after["archived_at"] == before["archived_at"]
    assert after["revised_at"] is not None
    assert before["revised_at"] is None
    assert after["source"]["adresse_livraison"] == "12 rue corrigée"
    assert database["Commande_archive"].count_documents({"_id": order_id}) == 1
    assert "1 archived order revised" in watcher.output()


def test_an_incremental_run_reads_late_deliveries_and_corrections_from_the_change_stream(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """A courier's phone offline for hours syncs "delivered" with the stamp of the moment it
    happened, older than BATCH_OVERLAP: no incremental run read it by its stamp. The run now
    resumes the orders' change stream from where the last run's pass began."""
    from datetime import UTC, datetime, timedelta

    from tests.helpers import deliver, pending_ids

    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 300, seed=43, p_anomalies=0.0)
    first = json.loads(run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path).stdout)
    assert first["mode"] == "full"
    late = pending_ids(dataset, 12)
    deliver(database["Commande"], late, when=datetime.now(UTC) - timedelta(hours=5))  # stamped 5 h ago
    corrected = sorted(expected_archive_ids(dataset))[0]
    database["Commande"].update_one({"_id": corrected}, {"$set": {"remboursement": 2.0}})
    result = run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "incremental"
    assert (report["archived"], report["revised"]) == (12, 1)
    assert report["changes_read"] >= 13
    assert archived_ids(database) == expected_archive_ids(dataset) | set(late)
    assert database["Commande_archive"].find_one({"_id": corrected})["source"]["remboursement"] == 2.0
    again = json.loads(run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path).stdout)
    assert (again["archived"], again["revised"]) == (0, 0)  # read again, nothing new


@pytest.mark.test_server_only("a history of a few change events (NX_RESUME_RETENTION_ROWS)")
def test_an_incremental_run_whose_change_history_is_gone_falls_back_to_stamps_and_says_so(tmp_path, db_name):
    import pymongo

    from order_archiver.settings import Settings
    from tests.helpers import deliver, pending_ids
    from teststand.nx_server import NxServer

    server = NxServer(tmp_path / "nx", env={"NX_RESUME_RETENTION_ROWS": "5"}).start()
    env = {"MONGODB_URI": server.uri, "MONGODB_DATABASE": db_name, "LOG_DIR": ""}
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            database = client[db_name]
            dataset = seed_database(database, Settings(simulation=True), 300, seed=44, p_anomalies=0.0)
            assert run_cli("batch", "--run", env=env, cwd=tmp_path).returncode == 0
            deliver(database["Commande"], pending_ids(dataset, 40))  # 40 changes, 5 kept
            result = run_cli("batch", "--run", "--json", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["mode"] == "incremental"
        assert any(
            "change history since the last run is not available (code 286)" in w for w in report["warnings"]
        )
        assert report["archived"] == 40  # stamped now: the stamps still find them
        # A new operator's try: the summary of the same run said "changed since the last run
        # (incremental, from the change history; ...)" below that warning; it reads stamps only.
        assert report["stamps_only"] == "the change history is not available (code 286)"
    finally:
        server.stop()


def test_personal_data_under_a_hash_policy_is_archived_purged_and_its_key_rotation_shown(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """ARCHIVE_PII=hash: names, e-mail, phone and address are keyed hashes in the archive and
    its source copy; the purge still deletes exactly the archived versions (it compares
    fingerprints of the order as the archive keeps it); a new key shows in `status`."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=45, p_anomalies=0.0)
    env = {**nx_env, "ARCHIVE_PII": "hash", "ARCHIVE_PII_KEY": "k" * 32}
    result = run_cli("batch", "--run", "--purge-source", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    delivered = expected_archive_ids(dataset)
    assert (report["purged"], report["purge_kept"]) == (len(delivered), 0)
    document = database["Commande_archive"].find_one({"_id": sorted(delivered)[0]})
    order = next(o for o in dataset.orders if o["_id"] == document["_id"])
    assert document["source"]["adresse_livraison"].startswith("hmac-sha256:")
    assert order["adresse_livraison"] not in str(document)
    assert document["client"]["nom"].startswith("hmac-sha256:")
    assert document["pii_policy"].startswith("hash:")
    quiet = run_cli("status", env=env, cwd=tmp_path)
    assert "personal data:" not in quiet.stdout
    rotated = run_cli("status", env={**env, "ARCHIVE_PII_KEY": "r" * 32}, cwd=tmp_path)
    assert (
        f"personal data: documents written under {document['pii_policy']}, not ARCHIVE_PII's hash:"
        in rotated.stdout
    )
