"""`batch --run` from a scheduler, night after night: the second run reads what was delivered
since the first, late deliveries included; `--full` walks everything; `status` shows the
high-water mark. The CLI runs as a subprocess on nx-27017."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.conftest import run_cli
from tests.helpers import assert_no_duplicates, deliver, expected_archive_ids, pending_ids, seed_database

pytestmark = pytest.mark.e2e


def test_scheduled_runs_read_what_is_new_late_deliveries_included(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 1500, seed=21, p_anomalies=0.0)

    def batch(*args: str) -> dict:
        result = run_cli("batch", "--run", "--json", *args, env=nx_env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    first = batch()
    assert (first["mode"], first["since"]) == ("full", None)
    # Late deliveries: orders created before the first run (small _ids, old date_commande),
    # delivered now; and orders created and delivered since.
    late = pending_ids(dataset, 30)
    deliver(database["Commande"], late)
    template = {k: v for k, v in dataset.orders[0].items() if k not in ("_id", "_dirty")}
    now = datetime.now(UTC)
    new = (
        database["Commande"]
        .insert_many(
            [
                {
                    **template,
                    "numero_commande": f"NEW-{n}",
                    "status": "livrée",
                    "date_commande": now,
                    "date_livraison": now,
                }
                for n in range(20)
            ]
        )
        .inserted_ids
    )
    second = batch()
    assert second["mode"] == "incremental"
    assert second["since"] is not None
    assert (second["archived"], second["already_archived"], second["scanned"]) == (50, 0, 50)
    archive = database["Commande_archive"]
    assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected_archive_ids(dataset) | set(
        late
    ) | set(new)

    status = json.loads(run_cli("status", "--json", env=nx_env, cwd=tmp_path).stdout)
    assert status["batch"]["high_water"] is not None
    assert status["batch"]["pass_in_progress"] is False
    assert "the next run reads deliveries since" in run_cli("status", env=nx_env, cwd=tmp_path).stdout

    full = batch("--full")
    assert (full["mode"], full["pass_reason"], full["archived"]) == ("full", "--full", 0)
    assert full["already_archived"] == len(expected_archive_ids(dataset)) + 50
    assert_no_duplicates(archive)


@pytest.mark.test_server_only("the test server's fault knobs, and restarts it")
def test_a_failed_save_of_the_mark_after_the_archive_write_loses_nothing(nx_settings, db_name, tmp_path):
    """The archive write of the new deliveries is acknowledged, then every checkpoint write
    fails (write concern error 64, at the wire: teststand/nx_launcher.py): the run exits 1 with
    the old mark in place; the next run, on a healthy server, reads from the old mark again."""
    import pymongo

    from order_archiver.mongodb.checkpoint import checkpoint_key, state_from_document
    from teststand.nx_server import NxServer

    server = NxServer(tmp_path / "nx").start()
    env = {
        "MONGODB_URI": server.uri,
        "MONGODB_DATABASE": db_name,
        "LOG_DIR": "",
        "MONGODB_TIMEOUT_MS": "2000",
    }
    key = checkpoint_key(nx_settings, "batch", None, None)

    def mark(client) -> datetime:
        return state_from_document(client[db_name]["archiver_checkpoints"].find_one({"_id": key})).high_water

    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            dataset = seed_database(client[db_name], nx_settings, 600, seed=23, p_anomalies=0.0)
            assert run_cli("batch", "--run", "-q", env=env, cwd=tmp_path).returncode == 0
            first_mark = mark(client)
            late = pending_ids(dataset, 40)
            deliver(client[db_name]["Commande"], late)
        server.stop()
        server = NxServer(
            tmp_path / "nx", port=server.port, env={"NX_FAULT_WRITE_CONCERN": "archiver_checkpoints:1"}
        ).start()
        failed = run_cli("batch", "--run", "--batch-size", "500", env=env, cwd=tmp_path, timeout=120)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "Traceback" not in failed.stderr
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            archive = client[db_name]["Commande_archive"]
            assert set(late) <= {d["_id"] for d in archive.find({}, {"_id": 1})}  # written
            assert mark(client) == first_mark  # the mark did not move
        server.stop()
        server = NxServer(tmp_path / "nx", port=server.port).start()
        again = json.loads(run_cli("batch", "--run", "--json", env=env, cwd=tmp_path).stdout)
        # The knob undoes inserts only: the replace of the existing checkpoint that recorded
        # the pass's progress stayed (a real rollback would undo it too: then the run reads the
        # 40 again, as already archived). Either way nothing is written twice.
        assert (again["mode"], again["archived"], again["already_archived"]) == ("incremental", 0, 0)
        assert again["resumed_from"] is not None
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            archive = client[db_name]["Commande_archive"]
            assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected_archive_ids(dataset) | set(
                late
            )
            assert_no_duplicates(archive)
            assert mark(client) > first_mark
    finally:
        server.stop()
