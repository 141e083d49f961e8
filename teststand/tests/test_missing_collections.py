"""A read, or a write that is no upsert, on a collection that does not exist creates nothing
and answers as MongoDB does (``teststand/missing_collections.py``)."""

from collections.abc import Callable
from typing import Any

import pymongo
import pytest
from bson import ObjectId

pytestmark = [pytest.mark.integration, pytest.mark.test_server_only("the test server's own fixes and knobs")]

Database = Any

# Each command the product sends, on the collection "missing", with what MongoDB answers there.
READS: dict[str, tuple[Callable[[Database], Any], Any]] = {
    "count": (lambda db: db.command("count", "missing")["n"], 0),
    "count_documents": (lambda db: db.missing.count_documents({"status": "livrée"}), 0),
    "distinct": (lambda db: db.missing.distinct("status"), []),
    "aggregate": (
        lambda db: list(
            db.missing.aggregate([{"$match": {"a": 1}}, {"$group": {"_id": 1, "n": {"$sum": 1}}}])
        ),
        [],
    ),
    "update": (lambda db: db.missing.update_many({"a": 1}, {"$set": {"b": 1}}).matched_count, 0),
    "delete": (lambda db: db.missing.delete_many({"a": 1}).deleted_count, 0),
    "findAndModify": (lambda db: db.missing.find_one_and_update({"a": 1}, {"$set": {"b": 1}}), None),
    "findAndModify remove": (lambda db: db.missing.find_one_and_delete({"a": 1}), None),
    "find": (lambda db: list(db.missing.find({"a": 1}).sort("a", -1)), []),
}


@pytest.fixture
def db(nx_client: pymongo.MongoClient, db_name: str) -> Database:
    database = nx_client[db_name]
    database.other.insert_one({"x": 1})  # the database exists; the collection does not
    return database


@pytest.mark.parametrize("command", list(READS))
def test_a_read_or_a_write_that_is_no_upsert_creates_no_collection(db, command):
    """MongoDB: count11.js (a count of a missing collection is 0, the collection created
    afterwards), write_ops_exec.cpp ("An update on a non-existent collection is okay"),
    find_and_modify.cpp (created only "when performing an upsert"). nx-27017 created it."""
    call, expected = READS[command]
    assert call(db) == expected
    assert db.list_collection_names() == ["other"]
    db.create_collection("missing")  # MongoDB refuses it (48 NamespaceExists) had the read created it


def test_a_lookup_from_a_missing_collection_joins_nothing_and_creates_nothing(db):
    client_id = ObjectId()
    db.orders.insert_one({"_id": 1, "client_id": client_id})
    stage = {"$lookup": {"from": "missing", "localField": "client_id", "foreignField": "_id", "as": "client"}}
    assert list(db.orders.aggregate([stage])) == [{"_id": 1, "client_id": client_id, "client": []}]
    assert sorted(db.list_collection_names()) == ["orders", "other"]


def test_an_upsert_creates_the_collection_as_on_mongodb(db):
    db.missing.update_one({"_id": 1}, {"$set": {"b": 1}}, upsert=True)
    assert db.missing.find_one() == {"_id": 1, "b": 1}
    assert db.missing.count_documents({}) == 1
    assert db.missing.distinct("b") == [1]
