"""The test server's replSetGetStatus and replSetGetConfig (``teststand/replica_status.py``): a
standalone refuses both as MongoDB does (76 NoReplicationEnabled), a replica set lists its
primary and, with ``NX_SECONDARY_LAG_FILE``, a secondary as far behind as the file says, read
at every call; on any database but ``admin`` both are refused (13 Unauthorized), as MongoDB's
admin-only commands are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
from pymongo.errors import OperationFailure

from teststand.nx_server import NxServer, running_server
from teststand.replica_status import SECONDARY_HOST

pytestmark = [
    pytest.mark.integration,
    pytest.mark.test_server_only("the test server's own replica set answers"),
]


@pytest.fixture(scope="module")
def lag_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lag") / "lag_s"


@pytest.fixture(scope="module")
def replica_set(lag_file: Path) -> Iterator[NxServer]:
    env = {"NX_REPLICA_SET": "rs0", "NX_SECONDARY_LAG_FILE": str(lag_file), "NX_MONGODB_VERSION": "4.4"}
    with running_server(env, prefix="nx-rs-lag-") as server:
        yield server


def test_a_standalone_refuses_both_with_76(standalone_client):
    for name in ("replSetGetStatus", "replSetGetConfig"):
        with pytest.raises(OperationFailure) as refused:
            standalone_client.admin.command(name)
        assert (refused.value.code, refused.value.details["codeName"]) == (76, "NoReplicationEnabled")


def test_only_on_admin(nx_client):
    with pytest.raises(OperationFailure) as refused:
        nx_client["livraison"].command("replSetGetStatus")
    assert refused.value.code == 13


def test_the_secondary_lags_as_the_file_says_at_every_call(replica_set, lag_file):
    with pymongo.MongoClient(replica_set.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        behind = []
        for lag in ("42", "0", ""):
            lag_file.write_text(lag)
            status = client.admin.command("replSetGetStatus")
            primary, secondary = status["members"]
            assert (primary["stateStr"], secondary["stateStr"], secondary["name"]) == (
                "PRIMARY",
                "SECONDARY",
                SECONDARY_HOST,
            )
            behind.append(round((primary["optimeDate"] - secondary["optimeDate"]).total_seconds()))
        assert behind == [42, 0, 0]
        lag_file.unlink()
        assert len(client.admin.command("replSetGetStatus")["members"]) == 2  # no file: 0 s behind
        members = client.admin.command("replSetGetConfig")["config"]["members"]
        assert members[1] == {
            "_id": 1,
            "host": SECONDARY_HOST,
            "priority": 1.0,
            "slaveDelay": 0,
        }  # 4.4's name
