"""A large archive from before the archiver's indexes, as an operator meets it (#30 item 1).

On MongoDB its unique index takes minutes to hours to build; the test server takes 4 s over a
build on a collection of more than 60 documents (``NX_INDEX_BUILD_SECONDS``,
``NX_INDEX_BUILD_ABORT_OVER``: teststand/index_catalog.py), and aborts one carrying ``maxTimeMS`` there
(50), as MongoDB aborts a build that outlasts it (create_indexes_cmd.cpp). The process ends
while the build runs: MongoDB does not abort a createIndexes whose client went away
(SERVER-101507), and the next runs find it in progress."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest
from bson import ObjectId

from tests.conftest import NxServer, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.test_server_only("the test server's index build knobs")]


@pytest.fixture(scope="module")
def slow(tmp_path_factory: Any) -> Iterator[NxServer]:
    # A build of 10 s: long beside INDEX_BUILD_WAIT_S (1 s), and beside the next command's start on
    # a loaded machine (status must still find it building).
    env = {"NX_INDEX_BUILD_ABORT_OVER": "60", "NX_INDEX_BUILD_SECONDS": "10"}
    server = NxServer(tmp_path_factory.mktemp("slow-builds"), env=env).start()
    yield server
    server.stop()


def test_a_run_on_a_large_archive_without_its_unique_index_waits_for_the_server_not_for_ever(
    slow, db_name, tmp_path
):
    when = datetime.now(UTC) - timedelta(days=2)
    with pymongo.MongoClient(slow.uri) as client:
        database = client[db_name]
        database["Commande_archive"].insert_many(
            [{"_id": ObjectId(), "numero_commande": f"OLD-{n}", "date_livraison": when} for n in range(100)]
        )
        database["Commande"].insert_many(
            [
                {
                    "numero_commande": f"CMD-{n}",
                    "status": "livrée",
                    "date_commande": when,
                    "date_livraison": when,
                }
                for n in range(5)
            ]
        )
    env = {"MONGODB_URI": slow.uri, "MONGODB_DATABASE": db_name, "LOG_DIR": "", "INDEX_BUILD_WAIT_S": "1"}

    dry = run_cli("batch", "--json", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    missing = {
        i["index"]: i["state"]
        for i in json.loads(dry.stdout)["indexes"]
        if i["collection"] == "Commande_archive"
    }
    assert missing["numero_commande_1"] == "missing"

    started = time.monotonic()
    first = run_cli("batch", "--run", env=env, cwd=tmp_path)
    assert first.returncode == 1
    assert "unique index numero_commande_1 is being built on the server" in first.stderr
    assert "Traceback" not in first.stderr
    assert time.monotonic() - started < 30  # waited INDEX_BUILD_WAIT_S, not for the build

    status = run_cli("status", env=env, cwd=tmp_path)
    assert "index numero_commande_1 on Commande_archive: being built on the server" in status.stdout
    assert status.returncode == 3  # unhealthy: nothing is archived meanwhile

    deadline = time.monotonic() + 40
    while True:  # the build goes on, its process gone
        done = run_cli("batch", "--run", env=env, cwd=tmp_path)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert done.returncode == 0, done.stderr
    with pymongo.MongoClient(slow.uri) as client:
        assert (
            client[db_name]["Commande_archive"].count_documents({"numero_commande": {"$regex": "^CMD-"}}) == 5
        )
