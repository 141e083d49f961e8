"""The test server answering as ``mongos`` (``NX_MONGOS``, ``NX_SHARDED_COLLECTIONS``:
``teststand/mongos.py``), each answer as MongoDB's router gives it (``src/mongo/s/commands/``):
``hello`` with ``msg: "isdbgrid"`` and no replica-set field (pymongo's topology: Sharded);
``replSetGetStatus`` "not supported through mongos" (``info: "mongos"``, no code);
``replSetGetConfig`` not a command (59); ``config.collections`` listing the sharded collections;
an upsert not targeting one shard refused alone (61); before 5.1, ``$lookup`` from a sharded
collection refused (28769). Off by default: the usual server answers as a replica set's primary."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pymongo
import pytest
from pymongo.errors import BulkWriteError, OperationFailure, WriteError

from teststand.nx_server import NxServer, running_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.test_server_only("the test server's own mongos answers"),
]

SHARDED = "Menu,Keyed:kind"


@pytest.fixture(scope="module")
def router() -> Iterator[NxServer]:
    with running_server({"NX_MONGOS": "1", "NX_SHARDED_COLLECTIONS": SHARDED}, prefix="nx-mongos-") as server:
        yield server


@pytest.fixture(scope="module")
def router_5_0() -> Iterator[NxServer]:
    env = {"NX_MONGOS": "1", "NX_SHARDED_COLLECTIONS": SHARDED, "NX_MONGODB_VERSION": "5.0"}
    with running_server(env, prefix="nx-mongos-50-") as server:
        yield server


@pytest.fixture
def client(router: NxServer) -> Iterator[pymongo.MongoClient]:
    with pymongo.MongoClient(router.uri, serverSelectionTimeoutMS=5000) as client:
        yield client


def test_hello_answers_as_a_router_and_the_driver_sees_a_sharded_cluster(client):
    reply = client.admin.command("hello")
    assert (reply["msg"], reply["isWritablePrimary"]) == ("isdbgrid", True)
    assert not {"setName", "hosts", "primary", "me", "secondary"} & set(reply)
    assert client.topology_description.topology_type_name == "Sharded"


def test_without_the_knob_it_is_a_replica_set_primary(nx_client):
    reply = nx_client.admin.command("hello")
    assert "msg" not in reply
    assert reply["setName"] == "rs0"


def test_replica_set_commands_are_not_a_routers(client):
    with pytest.raises(OperationFailure) as status:
        client.admin.command("replSetGetStatus")
    assert status.value.code is None
    assert status.value.details == {
        "ok": 0.0,
        "errmsg": "replSetGetStatus is not supported through mongos",
        "info": "mongos",
    }
    with pytest.raises(OperationFailure) as config:
        client.admin.command("replSetGetConfig")
    assert (config.value.code, config.value.details["codeName"]) == (59, "CommandNotFound")


def test_config_collections_lists_the_sharded_collections_asked_for(client, db_name):
    asked = [f"{db_name}.Menu", f"{db_name}.Keyed", f"{db_name}.Commande"]
    found = {d["_id"]: d["key"] for d in client.config.collections.find({"_id": {"$in": asked}}, {"key": 1})}
    assert found == {f"{db_name}.Menu": {"_id": "hashed"}, f"{db_name}.Keyed": {"kind": 1}}


def test_an_upsert_without_the_shard_key_is_refused_alone(client, db_name):
    keyed = client[db_name]["Keyed"]
    with pytest.raises(WriteError) as refused:
        keyed.update_one({"_id": 1}, {"$setOnInsert": {"kind": "a"}}, upsert=True)
    assert refused.value.code == 61
    assert "Failed to target upsert by query :: could not extract exact shard key" in str(refused.value)
    assert keyed.update_one({"_id": 1, "kind": "a"}, {"$set": {"v": 1}}, upsert=True).upserted_id == 1
    client[db_name]["Menu"].update_one({"_id": 2}, {"$set": {"v": 1}}, upsert=True)  # hashed _id: targeted
    requests = [
        pymongo.UpdateOne({"_id": 3, "kind": "b"}, {"$set": {"v": 1}}, upsert=True),
        pymongo.UpdateOne({"_id": 4}, {"$set": {"v": 1}}, upsert=True),
        pymongo.UpdateOne({"_id": 5, "kind": "b"}, {"$set": {"v": 1}}, upsert=True),
    ]
    with pytest.raises(BulkWriteError) as unordered:
        keyed.bulk_write(requests, ordered=False)
    assert [(e["index"], e["code"]) for e in unordered.value.details["writeErrors"]] == [(1, 61)]
    assert sorted(d["_id"] for d in keyed.find()) == [1, 3, 5]  # the others applied
    with pytest.raises(BulkWriteError) as ordered:
        keyed.bulk_write([pymongo.UpdateOne({"_id": 7}, {"$set": {"v": 1}}, upsert=True), requests[0]])
    assert ordered.value.details["nUpserted"] == 0  # an ordered update stops at the refusal


def test_lookup_from_a_sharded_collection_before_5_1(router, router_5_0, db_name):
    pipeline = [{"$lookup": {"from": "Menu", "localField": "m", "foreignField": "_id", "as": "menu"}}]
    with pymongo.MongoClient(router_5_0.uri, serverSelectionTimeoutMS=5000) as old:
        old[db_name]["Orders"].insert_one({"m": 1})
        with pytest.raises(OperationFailure) as refused:
            list(old[db_name]["Orders"].aggregate(pipeline))
        assert refused.value.code == 28769
        assert str(refused.value).startswith(f"{db_name}.Menu cannot be sharded")
    with pymongo.MongoClient(router.uri, serverSelectionTimeoutMS=5000) as new:
        new[db_name]["Orders"].insert_one({"m": 1})
        version = tuple(int(part) for part in new.server_info()["version"].split(".")[:2])
        if version < (5, 1):  # the suite's version floor (--mongodb-version 4.4): refused there too
            with pytest.raises(OperationFailure, match="cannot be sharded"):
                list(new[db_name]["Orders"].aggregate(pipeline))
        else:  # 5.1 and after: allowed
            assert len(list(new[db_name]["Orders"].aggregate(pipeline))) == 1


def test_change_streams_open_through_the_router(client, db_name):
    """mongos serves change streams (it merges its shards'): not refused as on a standalone (40573)."""
    with client[db_name]["Orders"].watch(max_await_time_ms=200) as stream:
        client[db_name]["Orders"].insert_one({"x": 1})
        deadline = time.monotonic() + 15
        change = None
        while change is None and time.monotonic() < deadline:
            change = stream.try_next()
    assert change is not None
    assert change["operationType"] == "insert"
