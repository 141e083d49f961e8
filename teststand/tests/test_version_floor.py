"""The test server answering as MongoDB 4.4 (``NX_MONGODB_VERSION=4.4``, the version floor)
refuses what 4.4 refuses: fields, stages and operators added since, and an insert's document
with a top-level "$" field name. The product's side of it: tests/integration/test_mongodb_refusals.py."""

from __future__ import annotations

from collections.abc import Iterator

import pymongo
import pytest
from pymongo.errors import OperationFailure

from teststand.nx_server import NxServer, running_server

pytestmark = [pytest.mark.integration, pytest.mark.test_server_only("the test server's 4.4 mode")]


@pytest.fixture(scope="module")
def floor_server() -> Iterator[NxServer]:
    """A test server answering as MongoDB 4.4 (a standalone)."""
    with running_server({"NX_MONGODB_VERSION": "4.4"}, prefix="nx-44-") as server:
        yield server


# --- the version floor -------------------------------------------------------------------------

NEWER_THAN_44 = [
    ("let (5.0)", lambda db: list(db.c.find({}, let={"a": 1}))),
    ("aggregate let (5.0)", lambda db: list(db.c.aggregate([{"$match": {}}], let={"a": 1}))),
    ("showExpandedEvents (6.0)", lambda db: db.c.watch(show_expanded_events=True).close()),
    (
        "$changeStreamSplitLargeEvent (7.0)",
        lambda db: db.c.watch([{"$changeStreamSplitLargeEvent": {}}]).close(),
    ),
    ("$setWindowFields (5.0)", lambda db: list(db.c.aggregate([{"$setWindowFields": {"output": {}}}]))),
    ("$getField (5.0)", lambda db: list(db.c.aggregate([{"$project": {"v": {"$getField": "a"}}}]))),
    (
        "$dateTrunc (5.0)",
        lambda db: list(db.c.aggregate([{"$project": {"v": {"$dateTrunc": {"date": "$d", "unit": "day"}}}}])),
    ),
    (
        "$top (5.2)",
        lambda db: list(
            db.c.aggregate([{"$group": {"_id": None, "v": {"$top": {"output": "$a", "sortBy": {"a": 1}}}}}])
        ),
    ),
    (
        "$sortArray (5.2)",
        lambda db: list(db.c.aggregate([{"$project": {"v": {"$sortArray": {"input": "$a", "sortBy": 1}}}}])),
    ),
    (
        "$lookup localField with pipeline (5.0)",
        lambda db: list(
            db.c.aggregate(
                [
                    {
                        "$lookup": {
                            "from": "d",
                            "localField": "a",
                            "foreignField": "b",
                            "pipeline": [],
                            "as": "j",
                        }
                    }
                ]
            )
        ),
    ),
]


@pytest.mark.parametrize(("label", "send"), NEWER_THAN_44, ids=[n[0] for n in NEWER_THAN_44])
def test_a_44_server_refuses_what_44_does_not_know(floor_server, label, send):
    client: pymongo.MongoClient = pymongo.MongoClient(floor_server.uri, serverSelectionTimeoutMS=5000)
    with client:
        assert client.server_info()["version"].startswith("4.4.")
        assert client.admin.command("hello")["maxWireVersion"] == 9
        client.floor.c.insert_one({"a": 1})
        with pytest.raises(OperationFailure) as refused:
            send(client.floor)
        assert refused.value.code in (40415, 40324, 168, 51047)


# --- an insert refused document by document ------------------------------------------------------


def test_4_4_refuses_a_dollar_field_name_in_an_insert_document_by_document(floor_server, db_name):
    """Before 5.0 an insert refuses a document with a top-level "$" field name (2 BadValue,
    ``fixDocumentForInsert``); an unordered insert inserts the others, an ordered one stops
    there. A "$" name inside a subdocument is taken."""
    with pymongo.MongoClient(floor_server.uri, tz_aware=True) as client:
        orders = client[db_name]["orders"]
        with pytest.raises(pymongo.errors.BulkWriteError) as caught:
            orders.insert_many(
                [{"_id": 1}, {"_id": 2, "$note": "x"}, {"_id": 3, "nested": {"$note": "x"}}], ordered=False
            )
        (error,) = caught.value.details["writeErrors"]
        assert (error["index"], error["code"]) == (1, 2)
        assert error["errmsg"] == "Document can't have $ prefixed field names: $note"
        assert sorted(d["_id"] for d in orders.find()) == [1, 3]
        with pytest.raises(pymongo.errors.BulkWriteError):
            orders.insert_many([{"_id": 4, "$note": "x"}, {"_id": 5}], ordered=True)
        assert sorted(d["_id"] for d in orders.find()) == [1, 3]
