"""The archive is written by one unordered ``insert`` a chunk (#34 item 6), and what MongoDB
refuses in it is told apart by the write error alone, at the wire: the test server refuses
chosen archive documents as MongoDB does (teststand/nx_launcher.py, ``NX_FAULT_REFUSE_INSERT``:
11000 with ``keyPattern``/``keyValue``, MongoDB's ``DuplicateKeyErrorInfo``, 4.4 to 8.0):

- an order another writer archived meanwhile as it is (11000 on ``_id``): already archived;
- one another writer archived in an older version (11000 on ``_id``, another ``source_hash``):
  revised, ``archived_at`` kept, ``revised_at`` set;
- one refused on ``_id`` by a server that does not name the key (no ``keyPattern``): written
  by the upsert, which matches it: already archived, never guessed a reused number;
- one whose ``numero_commande`` another order holds (11000 on ``numero_commande``): rejected,
  listed, exit 3.

(The duplicates made by the real unique indexes, a correction of an archived order, are in
tests/e2e/test_corrections_e2e.py; an order over 16 MB in test_cluster_faults_e2e.py.)
"""

from __future__ import annotations

import json

import pymongo
import pytest

from order_archiver.settings import Settings
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import generate_dataset
from tests.conftest import run_cli
from tests.helpers import ANCHOR, archived_ids, assert_no_duplicates, expected_archive_ids
from teststand.nx_server import NxServer

pytestmark = [pytest.mark.e2e, pytest.mark.test_server_only("the test server's fault knobs")]

SEED = 83


def dataset():
    return generate_dataset(300, seed=SEED, anchor=ANCHOR, p_anomalies=0.0)


def test_a_first_run_tells_each_duplicate_key_apart_by_its_key_pattern(tmp_path, db_name):
    data = dataset()
    delivered = [o for o in data.orders if o["_id"] in expected_archive_ids(data)]
    same, older, unnamed, reused = delivered[3], delivered[40], delivered[77], delivered[120]
    refusals = (
        f"{same['numero_commande']}=11000/_id,{older['numero_commande']}=11000/_id/older,"
        f"{unnamed['numero_commande']}=11000/~_id,{reused['numero_commande']}=11000"
    )
    server = NxServer(tmp_path / "nx", env={"NX_FAULT_REFUSE_INSERT": f"Commande_archive:{refusals}"}).start()
    env = {"MONGODB_URI": server.uri, "MONGODB_DATABASE": db_name, "LOG_DIR": ""}
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            database = client[db_name]
            fill_database(database, data, Settings(simulation=True))
            result = run_cli("batch", "--run", "--batch-size", "50", "--json", env=env, cwd=tmp_path)
            report = json.loads(result.stdout)
            assert result.returncode == 3, result.stderr  # one order rejected: the reused number
            expected = expected_archive_ids(data) - {reused["_id"]}
            assert archived_ids(database) == expected
            assert report["archived"] == len(expected) - 3
            assert (report["already_archived"], report["revised"]) == (2, 1)  # same, unnamed; older
            assert report["rejections"] == {"numero_commande already archived for another order": 1}
            archive = database["Commande_archive"]
            revised = archive.find_one({"_id": older["_id"]})
            assert not revised["source_hash"].startswith("older-")  # the order as it is now
            assert revised["revised_at"] is not None
            listed = json.loads(run_cli("rejects", "--json", env=env, cwd=tmp_path).stdout)
            assert [e["id"] for e in listed["rejected"]] == [str(reused["_id"])]
            assert_no_duplicates(archive)
    finally:
        server.stop()
