"""Refusals that hit a whole write, made at the wire by the launcher's fault knobs:

- a validator added to the archive refuses every order alike (121 for each upsert): the
  deployment, not the data. The run stops (exit 1, the code and the collection named), lists
  nothing as rejected and moves no mark; fixed, the next run archives everything;
- one order's archive document makes the whole update command too large (10334, nothing
  applied): the write is split down to that order, which is rejected; the rest is archived,
  by batch and by watch (which no longer replays the same event forever).
"""

from __future__ import annotations

import json

import pymongo
import pytest

from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import generate_dataset
from tests.conftest import run_cli
from tests.helpers import (
    ANCHOR,
    WatchProcess,
    archived_ids,
    assert_no_duplicates,
    deliver,
    expected_archive_ids,
    token_saved,
    wait_for,
)
from teststand.nx_server import NxServer

pytestmark = [pytest.mark.e2e, pytest.mark.test_server_only("the test server's fault knobs")]

SEED = 29


def dataset():
    return generate_dataset(400, seed=SEED, anchor=ANCHOR, p_anomalies=0.0)


def environment(server: NxServer, db_name: str, tmp_path) -> dict[str, str]:
    return {
        "MONGODB_URI": server.uri,
        "MONGODB_DATABASE": db_name,
        "LOG_DIR": "",
        "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
        "WATCH_HEARTBEAT_S": "1",
    }


def test_a_validator_refusing_every_order_stops_the_run_and_lists_nothing(tmp_path, db_name):
    data = dataset()
    server = NxServer(tmp_path / "nx", env={"NX_FAULT_REFUSE_ALL": "Commande_archive:121"}).start()
    env = environment(server, db_name, tmp_path)
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            fill_database(client[db_name], data, _settings())
        refused = run_cli("batch", "--run", "--batch-size", "50", env=env, cwd=tmp_path)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        last = refused.stderr.strip().splitlines()[-1]
        assert f"{db_name}.Commande_archive refused every one of" in last
        assert "code 121 DocumentValidationFailure" in last
        assert "Traceback" not in refused.stderr
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            database = client[db_name]
            assert database["archiver_rejects"].count_documents({}) == 0  # nothing listed
            assert archived_ids(database) == set()
            mark = database["archiver_checkpoints"].find_one({"kind": "batch"}) or {}
            assert mark.get("high_water") is None  # no mark moved
        server.stop()
        server = NxServer(tmp_path / "nx", port=server.port).start()  # the validator removed
        fixed = run_cli("batch", "--run", "--json", env=env, cwd=tmp_path)
        assert fixed.returncode == 0, fixed.stderr
        assert json.loads(fixed.stdout)["rejected"] == 0
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            assert archived_ids(client[db_name]) == expected_archive_ids(data)
    finally:
        server.stop()


def test_one_order_too_large_for_the_whole_write_is_rejected_alone_by_batch_and_watch(tmp_path, db_name):
    data = dataset()
    orders = [o for o in data.orders if o["status"] != "livrée" and "_dirty" not in o]
    huge = orders[5]  # pending now: delivered live below, in the middle of a burst
    server = NxServer(tmp_path / "nx", env={"NX_FAULT_COMMAND_TOO_LARGE": huge["numero_commande"]}).start()
    env = environment(server, db_name, tmp_path)
    client: pymongo.MongoClient = pymongo.MongoClient(server.uri, tz_aware=True)
    try:
        database = client[db_name]
        fill_database(database, data, _settings())
        deliver(database["Commande"], [huge["_id"]])
        batch = run_cli("batch", "--run", "--json", "--batch-size", "100", env=env, cwd=tmp_path)
        assert batch.returncode == 3, batch.stderr  # one new rejected order: the huge one
        report = json.loads(batch.stdout)
        assert report["rejections"] == {"archive document too large: code 10334 BSONObjectTooLarge": 1}
        assert archived_ids(database) == expected_archive_ids(data)  # every other one
        # watch: the same order delivered again in a burst of others (a correction of its
        # status), the stream goes on past it.
        database["Commande"].update_one({"_id": huge["_id"]}, {"$set": {"status": "en_livraison"}})
        database["archiver_rejects"].delete_many({})
        watcher = WatchProcess(env, tmp_path, "--from-now")
        try:
            wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")
            later = [o["_id"] for o in orders[:20]]
            deliver(database["Commande"], later)  # the huge one among them
            expected = expected_archive_ids(data) | (set(later) - {huge["_id"]})
            wait_for(lambda: archived_ids(database) == expected, timeout=60, what="the burst")
            wait_for(
                lambda: database["archiver_rejects"].find_one({"_id": huge["_id"]}) is not None,
                what="the huge order listed",
            )
            assert database["archiver_rejects"].find_one({"_id": huge["_id"]})["reason"] == (
                "archive document too large: code 10334 BSONObjectTooLarge"
            )
            assert watcher.process.poll() is None  # still serving
        finally:
            assert watcher.stop() == 0
        assert "Traceback" not in watcher.output()
        assert_no_duplicates(database["Commande_archive"])
    finally:
        client.close()
        server.stop()


def _settings():
    from order_archiver.settings import Settings

    return Settings(simulation=True)
