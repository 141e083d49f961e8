"""The archive on another deployment (ARCHIVE_MONGODB_URI): a second nx-27017. Batch (with
purge), status, verify, rejects, doctor and watch work across the two, the archive exact,
the source untouched unless purged, nothing of the archive side left on the source."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pymongo
import pytest

from order_archiver.settings import Settings
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
from teststand.nx_server import NxServer, running_server

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


@pytest.fixture(scope="module")
def rolling_back_archive(tmp_path_factory):
    """An archive deployment that rolls back every 3rd write to the archive, answering with a
    write concern error (code 64): acknowledged by its primary, never by a majority."""
    server = NxServer(
        tmp_path_factory.mktemp("archive-rollbacks"), env={"NX_FAULT_WRITE_CONCERN": "Commande_archive:3"}
    ).start()
    yield server
    server.stop()


def test_a_purge_across_deployments_never_deletes_a_rolled_back_archive_write(
    nx_client, nx_settings, nx_env, db_name, rolling_back_archive, tmp_path
):
    source = nx_client[db_name]
    dataset = seed_database(source, nx_settings, 500, seed=33, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    env = {**nx_env, "ARCHIVE_MONGODB_URI": rolling_back_archive.uri}
    result = run_cli(
        "batch", "--run", "--purge-source", "--batch-size", "50", "--json", env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    with pymongo.MongoClient(rolling_back_archive.uri, tz_aware=True) as archive_client:
        archive = archive_client[db_name]["Commande_archive"]
        archived = {d["_id"] for d in archive.find({}, {"_id": 1})}
        assert archived == expected  # every rolled-back write was retried
        assert_no_duplicates(archive)
    remaining = {d["_id"] for d in source["Commande"].find({}, {"_id": 1})}
    purged = {o["_id"] for o in dataset.orders} - remaining
    assert purged <= archived  # never an order whose archive document is not there
    assert purged == archived
    assert report["archived"] == report["purged"] == len(expected)


@pytest.mark.parametrize("side", ["archive", "source"])
def test_one_deployment_going_down_mid_run_is_named_and_a_rerun_completes(
    nx_server, nx_client, nx_settings, nx_env, db_name, archive_server, tmp_path, side
):
    """One side refuses every connection once the run has archived a first chunk: exit 1
    with a line naming that deployment; the source never purged; a re-run with both sides
    up completes, exactly."""
    import threading

    from teststand.fault_proxy import FaultProxy

    source = nx_client[db_name]
    dataset = seed_database(source, nx_settings, 3000, seed=35, p_delivered=0.5, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    down = archive_server if side == "archive" else nx_server
    with (
        pymongo.MongoClient(archive_server.uri, tz_aware=True) as archive_client,
        FaultProxy(down.port) as proxy,
    ):
        archive = archive_client[db_name]["Commande_archive"]
        uris = {"MONGODB_URI": nx_server.uri, "ARCHIVE_MONGODB_URI": archive_server.uri}
        uris["ARCHIVE_MONGODB_URI" if side == "archive" else "MONGODB_URI"] = proxy.uri
        env = {**nx_env, **uris, "MONGODB_TIMEOUT_MS": "1000"}

        def take_it_down() -> None:
            wait_for(lambda: archive.estimated_document_count() > 0, timeout=60, what="a first chunk")
            proxy.refuse_for(120)

        downer = threading.Thread(target=take_it_down, daemon=True)
        downer.start()
        failed = run_cli("batch", "--run", "--batch-size", "50", env=env, cwd=tmp_path, timeout=180)
        downer.join(5)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        line = failed.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {side} deployment: "), line
        assert "Traceback" not in failed.stderr
        again = run_cli(
            "batch", "--run", env={**nx_env, "ARCHIVE_MONGODB_URI": archive_server.uri}, cwd=tmp_path
        )
        assert again.returncode == 0, again.stderr
        assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected
        assert_no_duplicates(archive)
    assert source["Commande"].count_documents({}) == len(dataset.orders)  # never purged


def test_watch_killed_then_its_token_lost_with_the_archive_elsewhere(
    nx_client, nx_settings, nx_env, db_name, archive_server, tmp_path
):
    """kill -9 mid-burst, restart: resumed from the token on the archive side; the token
    deleted, restart: a catch-up (a full pass) on the source. The archive exact each time."""
    import signal

    source = nx_client[db_name]
    dataset = seed_database(source, nx_settings, 1500, seed=37, p_delivered=0.3, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    env = {
        **nx_env,
        "ARCHIVE_MONGODB_URI": archive_server.uri,
        "WATCH_HEARTBEAT_S": "1",
        "WATCH_LEASE_TTL_S": "3",
        "WATCH_LEASE_RENEW_S": "1",
    }
    args = ("--token-store", "mongo")
    with pymongo.MongoClient(archive_server.uri, tz_aware=True) as archive_client:
        archive_db = archive_client[db_name]
        watcher = WatchProcess(env, tmp_path, *args)
        try:
            wait_for(lambda: archived_ids(archive_db) == expected, what="catch-up")
            wait_for(lambda: token_saved(archive_db, tmp_path, "mongo"), what="the token, archive side")
            burst = pending_ids(dataset, 400)
            deliver(source["Commande"], burst[:200])
            wait_for(lambda: len(archived_ids(archive_db)) >= len(expected) + 50, what="the burst")
        finally:
            watcher.stop(signal.SIGKILL)
        deliver(source["Commande"], burst[200:])  # while no watcher runs
        expected |= set(burst)
        restarted = WatchProcess(env, tmp_path, *args)
        try:
            wait_for(lambda: archived_ids(archive_db) == expected, timeout=60, what="recovery")
        finally:
            assert restarted.stop() == 0
        assert "catching up" not in restarted.output()  # resumed from its token
        archive_db["archiver_checkpoints"].delete_one({"_id": "watch:default"})  # the token lost
        later = pending_ids(dataset)[400:420]
        deliver(source["Commande"], later)
        expected |= set(later)
        again = WatchProcess(env, tmp_path, *args)
        try:
            wait_for(lambda: archived_ids(archive_db) == expected, timeout=60, what="the catch-up")
        finally:
            assert again.stop() == 0
        assert "catching up" in again.output()
        assert_no_duplicates(archive_db["Commande_archive"])


def test_watch_goes_on_through_an_archive_deployment_outage(
    nx_client, nx_settings, nx_env, db_name, archive_server, tmp_path
):
    """The archive side refuses connections for 4 s (past the 1 s selection timeout) while
    deliveries go on at the source: the watcher keeps its token, backs off, and archives
    everything once the archive is back; nothing lost, nothing twice."""
    import time

    from teststand.fault_proxy import FaultProxy

    source = nx_client[db_name]
    dataset = seed_database(source, nx_settings, 600, seed=41, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    with (
        pymongo.MongoClient(archive_server.uri, tz_aware=True) as archive_client,
        FaultProxy(archive_server.port) as proxy,
    ):
        archive_db = archive_client[db_name]
        env = {
            **nx_env,
            "ARCHIVE_MONGODB_URI": proxy.uri,
            "MONGODB_TIMEOUT_MS": "1000",
            "WATCH_HEARTBEAT_S": "1",
        }
        watcher = WatchProcess({**env, "RESUME_TOKEN_FILE": str(tmp_path / "token.json")}, tmp_path)
        try:
            wait_for(lambda: archived_ids(archive_db) == expected, what="catch-up")
            wait_for(lambda: (tmp_path / "token.json").exists(), what="the token")
            first, during = pending_ids(dataset, 40)[:20], pending_ids(dataset, 40)[20:]
            deliver(source["Commande"], first)
            wait_for(lambda: set(first) <= archived_ids(archive_db), what="deliveries before the outage")
            proxy.refuse_for(4)
            deliver(source["Commande"], during)
            time.sleep(4)
            expected |= set(first) | set(during)
            wait_for(
                lambda: archived_ids(archive_db) == expected,
                timeout=60,
                what="deliveries during the outage",
                on_timeout=watcher.output,
            )
        finally:
            code = watcher.stop()
        assert code == 0
        assert "Traceback" not in watcher.output()
        assert_no_duplicates(archive_db["Commande_archive"])


def test_the_archive_retentions_run_on_the_archive_deployments_clock(archive_server, db_name, tmp_path):
    """ARCHIVE_RETENTION's undated orders and ARCHIVE_PII_RETENTION are decisions about the
    archive: MongoDB's TTL monitor expires the dated ones on the archive deployment's clock, and
    the cold tier's move measures its ages there too. With the source's clock two days ahead
    (NX_CLOCK_AHEAD_S: a deployment whose clock is ahead of another's), batch --run measured the
    other two on the source's clock: an undated order ordered 59 days ago was deleted under a
    60-day retention, and the personal data of an order delivered 29 days ago was erased under
    a 30-day one. Both are now measured on the archive's clock; the orders past the limits on
    it still go (the mechanism works)."""
    now = datetime.now(UTC)
    with (
        running_server({"NX_CLOCK_AHEAD_S": str(2 * 86400)}) as source_server,
        pymongo.MongoClient(source_server.uri, tz_aware=True) as source_client,
        pymongo.MongoClient(archive_server.uri, tz_aware=True) as archive_client,
    ):
        source = source_client[db_name]
        settings = Settings(mongodb_uri=source_server.uri, mongodb_database=db_name, log_dir="")
        dataset = seed_database(source, settings, 60, seed=32, p_anomalies=0.0)
        delivered = sorted(expected_archive_ids(dataset), key=str)
        undated_kept, undated_gone, pii_kept, pii_gone = delivered[:4]
        orders = source["Commande"]
        orders.update_many({"_id": {"$in": delivered}}, {"$set": {"date_livraison": now - timedelta(days=2)}})
        for order_id, ordered in ((undated_kept, 59), (undated_gone, 62)):
            orders.update_one(
                {"_id": order_id},
                {
                    "$set": {"date_commande": now - timedelta(days=ordered)},
                    "$unset": {"date_livraison": ""},
                },
            )
        for order_id, days in ((pii_kept, 29), (pii_gone, 32)):
            orders.update_one({"_id": order_id}, {"$set": {"date_livraison": now - timedelta(days=days)}})
        env = {
            "MONGODB_URI": source_server.uri,
            "MONGODB_DATABASE": db_name,
            "ARCHIVE_MONGODB_URI": archive_server.uri,
            "LOG_DIR": "",
        }
        first = run_cli("batch", "--run", "-q", env=env, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        archive = archive_client[db_name]["Commande_archive"]
        assert archive.count_documents({"_id": {"$in": [undated_kept, undated_gone]}}) == 2

        retained = {**env, "ARCHIVE_RETENTION": "60d", "ARCHIVE_PII_RETENTION": "30d"}
        report = json.loads(run_cli("batch", "--run", "--json", env=retained, cwd=tmp_path).stdout)
        # Erased: the order delivered 32 days ago, and the undated one kept (ordered 59 days ago)
        assert (report["undated_expired"], report["pii_erased"]) == (1, 2), report
        assert archive.count_documents({"_id": undated_kept}) == 1  # 59 days on the archive's clock
        assert archive.count_documents({"_id": undated_gone}) == 0
        erased = {
            d["_id"]: d.get("forgotten_by") for d in archive.find({"_id": {"$in": [pii_kept, pii_gone]}})
        }
        assert erased == {pii_kept: None, pii_gone: "ARCHIVE_PII_RETENTION"}
