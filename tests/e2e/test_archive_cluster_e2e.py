"""The archive on another deployment (ARCHIVE_MONGODB_URI): a second nx-27017. Batch (with
purge), status, verify, rejects, doctor and watch work across the two, the archive exact,
the source untouched unless purged, nothing of the archive side left on the source."""

from __future__ import annotations

import json

import pymongo
import pytest

from tests.conftest import run_cli
from tests.helpers import (
    WatchProcess,
    archived_ids,
    assert_no_duplicates,
    deliver,
    expected_archive_ids,
    pending_ids,
    seed_database,
    token_saved,
    wait_for,
)
from tests.nx_server import NxServer

pytestmark = [pytest.mark.e2e, pytest.mark.test_server_only("a second server of its own (the archive's)")]


@pytest.fixture(scope="module")
def archive_server(tmp_path_factory):
    server = NxServer(tmp_path_factory.mktemp("archive-cluster")).start()
    yield server
    server.stop()


def test_batch_status_verify_doctor_and_watch_with_the_archive_elsewhere(
    nx_client, nx_settings, nx_env, db_name, archive_server, tmp_path
):
    source = nx_client[db_name]
    dataset = seed_database(source, nx_settings, 400, seed=31, p_anomalies=0.05)
    expected = expected_archive_ids(dataset)
    env = {**nx_env, "ARCHIVE_MONGODB_URI": archive_server.uri, "WATCH_HEARTBEAT_S": "1"}
    with pymongo.MongoClient(archive_server.uri, tz_aware=True) as archive_client:
        archive_db = archive_client[db_name]

        report = json.loads(
            run_cli("batch", "--run", "--purge-source", "--json", env=env, cwd=tmp_path).stdout
        )
        assert report["archived"] == len(expected)
        assert report["purged"] == len(expected)
        assert {d["_id"] for d in archive_db["Commande_archive"].find({}, {"_id": 1})} == expected
        assert_no_duplicates(archive_db["Commande_archive"])
        # The archive side lives on the archive deployment only; the source lost exactly the purged.
        assert {"Commande_archive", "archiver_checkpoints"} <= set(archive_db.list_collection_names())
        assert not {"Commande_archive", "archiver_checkpoints"} & set(source.list_collection_names())
        remaining = {d["_id"] for d in source["Commande"].find({}, {"_id": 1})}
        assert remaining == {o["_id"] for o in dataset.orders} - expected

        status = run_cli("status", "--json", env=env, cwd=tmp_path)
        assert json.loads(status.stdout)["archive_size"] == len(expected)
        verify = run_cli("verify", "--json", env=env, cwd=tmp_path)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        rejects = json.loads(run_cli("rejects", "--json", env=env, cwd=tmp_path).stdout)
        assert rejects["total"] == report["rejected"]
        doctor = run_cli("doctor", env=env, cwd=tmp_path)
        assert doctor.returncode == 0, doctor.stdout
        assert "archive version: MongoDB" in doctor.stdout

        watcher = WatchProcess(
            {**env, "RESUME_TOKEN_FILE": str(tmp_path / "t.json")}, tmp_path, "--token-store", "mongo"
        )
        try:
            wait_for(
                lambda: archive_db["archiver_checkpoints"].find_one({"_id": "watch:default"}) is not None,
                what="the watcher's token on the archive side",
            )
            later = pending_ids(dataset, 10)
            deliver(source["Commande"], later)
            wait_for(
                lambda: set(later) <= archived_ids(archive_db), what="live deliveries archived elsewhere"
            )
        finally:
            assert watcher.stop() == 0
        assert not token_saved(source.client[db_name], tmp_path, "mongo")  # nothing on the source
        assert_no_duplicates(archive_db["Commande_archive"])


def test_the_archive_deployment_down_is_named(nx_env, tmp_path):
    env = {
        **nx_env,
        "ARCHIVE_MONGODB_URI": "mongodb://archiver:Pa55word-x@127.0.0.1:9/",
        "MONGODB_TIMEOUT_MS": "200",
    }
    result = run_cli("batch", "--run", env=env, cwd=tmp_path)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "error: archive deployment: cannot reach MongoDB: 127.0.0.1:9: connection refused"
    ), line
    assert "Pa55word-x" not in result.stdout + result.stderr
