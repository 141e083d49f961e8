"""The size limit the test server enforces with ``NX_MAX_BSON_OBJECT_SIZE`` (``document_sizes.py``),
as MongoDB enforces its 16 MB; and a change stream's ``$project`` applied to its events."""

import bson
import pymongo
import pytest
from bson import ObjectId
from pymongo.errors import BulkWriteError, OperationFailure

from teststand.nx_server import NxServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.test_server_only("the test server's maxBsonObjectSize knob"),
]

LIMIT = 32 * 1024  # scaled down: 16 MB on MongoDB, and 16 MB + 16 KiB for a command or a result
INTERNAL = LIMIT + 16 * 1024


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    server = NxServer(tmp_path_factory.mktemp("nx"), env={"NX_MAX_BSON_OBJECT_SIZE": str(LIMIT)}).start()
    with pymongo.MongoClient(server.uri, tz_aware=True) as client:
        yield client.sizes
    server.stop()


def test_an_insert_refuses_a_document_over_the_limit_alone(small):
    """``fixDocumentForInsert`` (insert.cpp): 2 BadValue for that document, the others inserted."""
    ids = [ObjectId() for _ in range(3)]
    documents = [{"_id": ids[0]}, {"_id": ids[1], "pad": "x" * (LIMIT + 100)}, {"_id": ids[2]}]
    with pytest.raises(BulkWriteError) as refused:
        small.insert_refused.insert_many(documents, ordered=False)
    (error,) = refused.value.details["writeErrors"]
    assert (error["index"], error["code"]) == (1, 2)
    assert error["errmsg"].startswith("object to insert too large. size in bytes: ")
    assert error["errmsg"].endswith(f", max size: {LIMIT}")
    assert {d["_id"] for d in small.insert_refused.find()} == {ids[0], ids[2]}


def test_a_command_holding_an_object_over_the_limit_and_16_kib_is_refused_whole(small):
    """10334 BSONObjectTooLarge (``BSONObj::_assertInvalid``), nothing applied, as MongoDB
    answers a document sequence's document over 16 MB + 16 KiB: an insert, an update."""
    kept = {"_id": ObjectId()}
    with pytest.raises(OperationFailure) as whole:
        small.refused_whole.insert_many([kept, {"_id": ObjectId(), "pad": "x" * INTERNAL}], ordered=False)
    assert (whole.value.code, whole.value.details["codeName"]) == (10334, "BSONObjectTooLarge")
    assert small.refused_whole.count_documents({}) == 0
    small.refused_whole.insert_one(kept)
    update = pymongo.UpdateOne({"_id": kept["_id"]}, {"$set": {"pad": "y" * INTERNAL}})
    with pytest.raises(OperationFailure) as refused:
        small.refused_whole.bulk_write([update])
    assert refused.value.code == 10334
    assert "is invalid. Size must be between 0 and" in str(refused.value)
    assert small.refused_whole.find_one(kept) == kept


def test_a_result_over_the_limit_and_16_kib_fails_the_aggregation(small):
    """A joined result over it fails (10334); the same order without the join is read."""
    client_id, order_id = ObjectId(), ObjectId()
    small.Client.insert_one({"_id": client_id, "adresse": "y" * (LIMIT // 2 + 1000)})
    small.Commande.insert_one({"_id": order_id, "client_id": client_id, "pad": "x" * (LIMIT - 200)})
    lookup = {"$lookup": {"from": "Client", "localField": "client_id", "foreignField": "_id", "as": "c"}}
    with pytest.raises(OperationFailure) as refused:
        list(small.Commande.aggregate([{"$match": {"_id": order_id}}, lookup]))
    assert (refused.value.code, refused.value.details["codeName"]) == (10334, "BSONObjectTooLarge")
    (alone,) = small.Commande.aggregate([{"$match": {"_id": order_id}}])
    assert LIMIT - 200 < len(bson.encode(alone)) <= LIMIT


def test_a_change_event_over_the_limit_fails_the_stream_unless_projected_down(small):
    """An update event with the looked-up order and its changed fields is over the limit: the
    stream fails (10334), as the manual says of an event over 16 MB; projected down to a few
    fields, as MongoDB applies a stream's ``$project``, it is read."""
    order_id = ObjectId()
    small.Commande.insert_one({"_id": order_id, "status": "en_livraison", "pad": "a" * (LIMIT // 2)})
    projected = [{"$project": {"operationType": 1, "fullDocument._id": 1, "fullDocument.status": 1}}]
    with small.Commande.watch(projected, full_document="updateLookup") as stream:
        small.Commande.update_one(
            {"_id": order_id}, {"$set": {"status": "livrée", "pad": "b" * (LIMIT - 300)}}
        )
        event = stream.next()
    assert event["fullDocument"] == {"_id": order_id, "status": "livrée"}
    assert set(event) == {"_id", "operationType", "fullDocument"}
    with small.Commande.watch([], full_document="updateLookup") as stream:
        small.Commande.update_one({"_id": order_id}, {"$set": {"pad": "c" * (LIMIT - 300)}})
        with pytest.raises(OperationFailure) as refused:
            stream.next()
    assert refused.value.code == 10334


def test_an_update_whose_result_is_over_the_limit_is_refused_and_the_others_applied(small):
    """``update_stage.cpp`` (4.4 to 8.0): 17419 "Resulting document after update is larger
    than"; an upsert that inserts, 17420 (``upsert_stage.cpp``). Unordered: the others applied;
    a single update: pymongo's ``WriteError``, nothing changed."""
    near, small_one, new = ObjectId(), ObjectId(), ObjectId()
    small.updates.insert_many([{"_id": near, "pad": "x" * (LIMIT - 40)}, {"_id": small_one}])
    requests = [
        pymongo.UpdateOne({"_id": near}, {"$set": {"restored_at": "a moment, as a long string"}}),
        pymongo.UpdateOne({"_id": small_one}, {"$set": {"seen": True}}),
        pymongo.UpdateOne({"_id": new}, {"$setOnInsert": {"pad": "y" * LIMIT}}, upsert=True),
    ]
    with pytest.raises(BulkWriteError) as refused:
        small.updates.bulk_write(requests, ordered=False)
    details = refused.value.details
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(0, 17419), (2, 17420)]
    assert details["writeErrors"][0]["errmsg"] == f"Resulting document after update is larger than {LIMIT}"
    assert details["nModified"] == 1
    assert small.updates.find_one({"_id": small_one}) == {"_id": small_one, "seen": True}
    assert "restored_at" not in small.updates.find_one({"_id": near})
    assert small.updates.find_one({"_id": new}) is None
    with pytest.raises(pymongo.errors.WriteError) as alone:
        small.updates.update_many({"_id": {"$in": [near]}}, {"$set": {"restored_at": "b" * 100}})
    assert alone.value.code == 17419
    small.updates.update_one({"_id": near}, {"$unset": {"pad": ""}, "$set": {"restored_at": "c"}})
    assert small.updates.find_one({"_id": near}) == {"_id": near, "restored_at": "c"}
