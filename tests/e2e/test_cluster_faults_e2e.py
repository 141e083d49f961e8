"""What a real cluster does that the test server does not, made at the wire by the launcher's
fault knobs (teststand/nx_launcher.py), and survived by the command line end to end:

- a write the primary acknowledged, then rolled back, answered with a write-concern error
  (code 64): never counted as archived, retried, the archive exact;
- one archive document refused alone (over 16 MB: code 2 BadValue "object to insert too large"
  for the insert the archive is written by, 17420 for an upsert): that order is rejected, the
  run and the stream go on.
"""

from __future__ import annotations

import json

import pytest

from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import generate_dataset
from tests.conftest import run_cli
from tests.helpers import (
    ANCHOR,
    WatchProcess,
    archived_ids,
    assert_no_duplicates,
    expected_archive_ids,
    pending_ids,
    token_saved,
    wait_for,
)
from teststand.nx_server import NxServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.test_server_only("the test server's fault knobs"),
]

SEED = 71
# What MongoDB answers an insert's document over 16 MB (fixDocumentForInsert), as rejections say it.
TOO_LARGE = "archive write refused: code 2 BadValue (object to insert too large: over 16 MB)"


def dataset():
    return generate_dataset(600, seed=SEED, anchor=ANCHOR, p_anomalies=0.0)


@pytest.fixture(scope="module")
def huge():
    """A delivered order and a pending one whose archive documents the server refuses."""
    orders = dataset().orders
    delivered = next(o for o in orders if o["status"] == "livrée")
    return delivered["numero_commande"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, huge):
    """A server that rolls back every 3rd archive write (write concern error 64) and refuses
    the archive document of one order (over 16 MB)."""
    server = NxServer(
        tmp_path_factory.mktemp("cluster"),
        env={"NX_FAULT_WRITE_CONCERN": "Commande_archive:3", "NX_FAULT_REFUSE_NUMERO": huge},
    ).start()
    yield server
    server.stop()


@pytest.fixture
def seeded(cluster, db_name, tmp_path):
    import pymongo

    from order_archiver.settings import Settings

    client = pymongo.MongoClient(cluster.uri, tz_aware=True)
    data = dataset()
    fill_database(client[db_name], data, Settings(simulation=True))
    env = {
        "MONGODB_URI": cluster.uri,
        "MONGODB_DATABASE": db_name,
        "LOG_DIR": "",
        "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
        "WATCH_HEARTBEAT_S": "1",
    }
    yield client[db_name], data, env
    client.close()


def test_batch_never_counts_a_rolled_back_write_and_rejects_the_refused_order(seeded, huge, tmp_path):
    database, data, env = seeded
    refused = next(o["_id"] for o in data.orders if o["numero_commande"] == huge)
    expected = expected_archive_ids(data) - {refused}
    result = run_cli(
        "batch", "--run", "--batch-size", "50", "--json", "--purge-source", env=env, cwd=tmp_path
    )
    report = json.loads(result.stdout)
    assert result.returncode == 3, result.stderr  # one new invalid order: the refused one
    assert archived_ids(database) == expected
    assert report["archived"] == len(expected)  # rolled-back writes were not counted
    assert report["rejections"] == {TOO_LARGE: 1}
    assert "write concern not satisfied (code 64)" in result.stderr  # retried, said so
    # The purge deleted exactly the archived orders: the refused one stays in the source.
    assert database["Commande"].count_documents({"_id": {"$in": sorted(expected)}}) == 0
    assert database["Commande"].find_one({"_id": refused}) is not None
    listed = json.loads(run_cli("rejects", "--json", env=env, cwd=tmp_path).stdout)
    assert [e["id"] for e in listed["rejected"]] == [str(refused)]
    assert_no_duplicates(database["Commande_archive"])


def test_watch_goes_on_through_rolled_back_writes_and_a_refused_order(seeded, huge, tmp_path):
    database, data, env = seeded
    refused = next(o["_id"] for o in data.orders if o["numero_commande"] == huge)
    watcher = WatchProcess(env, tmp_path)
    try:
        expected = expected_archive_ids(data) - {refused}
        wait_for(lambda: archived_ids(database) == expected, timeout=60, what="catch-up")
        wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")
        later = pending_ids(data, 40)
        for order_id in later:  # one write per delivery: every third is rolled back
            database["Commande"].update_one({"_id": order_id}, {"$set": {"status": "livrée"}})
        expected |= set(later)
        wait_for(lambda: archived_ids(database) == expected, timeout=60, what="live deliveries")
        assert database["archiver_rejects"].find_one({"_id": refused})["reason"] == TOO_LARGE
    finally:
        assert watcher.stop() == 0
    output = watcher.output()
    assert "write concern not satisfied (code 64)" in output
    assert "Traceback" not in output
    assert_no_duplicates(database["Commande_archive"])
