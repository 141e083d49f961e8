"""The record of what the product sends, checked against what MongoDB 4.4-8.0 accept
(``mongodb_definitions``): the shapes it makes and the problems it names, without a server."""

from __future__ import annotations

import pytest
from bson import ObjectId

from teststand.mongodb_definitions import CommandShape, command_shape, refusal, shape_problems

pytestmark = pytest.mark.test_server_only("the test server's definitions of what MongoDB accepts")

LSID = {"lsid": {"id": "x"}, "$db": "livraison"}


def test_the_index_build_every_mongodb_refused_is_named():
    """What ``create_index(keys, commitQuorum="majority", maxTimeMS=...)`` sent: the option in
    the index specification (197 on every MongoDB since 3.4)."""
    sent = {
        "createIndexes": "Commande_archive",
        "indexes": [{"key": {"numero_commande": 1}, "name": "numero_commande_1", "commitQuorum": "majority"}],
        "maxTimeMS": 60000,
        **LSID,
    }
    assert shape_problems(command_shape(sent)) == [
        "index specification field commitQuorum: unknown to MongoDB"
    ]
    assert refusal(sent, (8, 0), replica_set=True)["code"] == 197
    assert refusal(sent, (4, 4), replica_set=True)["code"] == 197


def test_fields_stages_and_operators_newer_than_the_floor_are_named_with_their_version():
    find = {
        "find": "Commande",
        "filter": {"$expr": {"$eq": [{"$getField": "a"}, 1]}},
        "let": {"x": 1},
        **LSID,
    }
    assert shape_problems(command_shape(find)) == [
        "find.let: new in MongoDB 5.0",
        "operator $getField: new in MongoDB 5.0",
    ]
    window = {
        "aggregate": "Commande",
        "pipeline": [{"$setWindowFields": {"output": {}}}],
        "cursor": {},
        **LSID,
    }
    assert shape_problems(command_shape(window)) == ["stage $setWindowFields: new in MongoDB 5.0"]
    stream = {
        "aggregate": "Commande",
        "pipeline": [{"$changeStream": {"fullDocument": "updateLookup", "showExpandedEvents": True}}],
        "cursor": {},
        **LSID,
    }
    assert shape_problems(command_shape(stream)) == ["$changeStream.showExpandedEvents: new in MongoDB 6.0"]
    assert shape_problems(CommandShape("frobnicate", ())) == [
        "frobnicate: a command not in the table (check MongoDB's definition, then add it)"
    ]


def test_the_archivers_own_commands_are_accepted_from_4_4_on():
    upsert = {
        "update": "Commande_archive",
        "ordered": False,
        "updates": [
            {
                "q": {"_id": ObjectId()},
                "u": {"$setOnInsert": {"numero_commande": "CMD-1", "items": []}},
                "upsert": True,
                "multi": False,
            }
        ],
        "writeConcern": {"w": "majority", "wtimeout": 10000},
        **LSID,
    }
    enrichment = {
        "aggregate": "Commande",
        "pipeline": [
            {"$match": {"_id": {"$in": [ObjectId()]}, "status": {"$in": ["livrée", "livrée"]}}},
            {
                "$lookup": {
                    "from": "Client",
                    "localField": "client_id",
                    "foreignField": "_id",
                    "as": "_x_client",
                }
            },
            {"$project": {"numero_commande": 1, "_x_client.nom": 1}},
        ],
        "cursor": {},
        "allowDiskUse": True,
        **LSID,
    }
    for command in (upsert, enrichment):
        assert shape_problems(command_shape(command)) == []
        assert refusal(command, (4, 4, 29), replica_set=False) is None


def test_a_shape_keeps_names_never_values():
    """Field names and operators make a shape; the data (the archived document, the ids) does
    not, so a suite of thousands of commands makes a few dozen shapes."""
    one = command_shape({"find": "A", "filter": {"_id": {"$in": [1, 2]}, "status": "x"}, **LSID})
    two = command_shape({"find": "B", "filter": {"_id": {"$in": [3]}, "status": "y"}, **LSID})
    assert one == two
    assert str(one) == "find {$db, filter, lsid} operators [$in]"


@pytest.mark.parametrize("version", [(4, 4), (8, 0)])
def test_a_standalone_refuses_a_change_stream_after_its_fields_a_replica_set_takes_it(version):
    """``DocumentSourceChangeStream::assertIsLegalSpecification``
    (src/mongo/db/pipeline/document_source_change_stream.cpp): 40573 on a standalone, the same
    code and text from 4.4 to 8.0, checked once the stage's own fields are parsed."""
    stream = {"aggregate": 1, "pipeline": [{"$changeStream": {}}, {"$match": {}}], "cursor": {}, **LSID}
    assert refusal(stream, version, replica_set=True) is None
    assert refusal(stream, version, replica_set=False) == {
        "ok": 0.0,
        "code": 40573,
        "codeName": "Location40573",
        "errmsg": "The $changeStream stage is only supported on replica sets",
    }
    newer = {**stream, "pipeline": [{"$changeStream": {"showExpandedEvents": True}}]}
    assert refusal(newer, version, replica_set=False)["code"] == (40415 if version < (6, 0) else 40573)
    plain = {"aggregate": "Commande", "pipeline": [{"$match": {}}], "cursor": {}, **LSID}
    assert refusal(plain, version, replica_set=False) is None


def partial(expression: object, **options: object) -> dict[str, object]:
    index = {"key": {"cold_pending": 1}, "name": "cold_pending_1", "partialFilterExpression": expression}
    return {"createIndexes": "archiver_forgotten", "indexes": [{**index, **options}], **LSID}


def test_a_partial_index_mongodb_refuses_is_refused_as_it_refuses_it_version_by_version():
    """MongoDB's checks of a partial index's filter before it builds it (4.4:
    ``_checkValidFilterExpressions``; 6.0 took ``$or``, ``$in`` and a nested ``$and``): 67
    CannotCreateIndex for a negation (``$ne``, ``$exists: false``), for ``sparse`` beside it, for
    a filter that is not a document. The archiver's own (``{cold_pending: true}``, an equality)
    is taken by every version."""
    for version in ((4, 4), (5, 0), (6, 0), (8, 0)):
        assert refusal(partial({"cold_pending": True}), version, replica_set=True) is None
        for refused in (
            partial({"cold_pending": {"$ne": None}}),
            partial({"cold_pending": {"$exists": False}}),
            partial({"cold_pending": True}, sparse=True),
            partial(5),
        ):
            answer = refusal(refused, version, replica_set=True) or {}
            assert (answer.get("code"), answer.get("codeName")) == (67, "CannotCreateIndex"), refused
    wider = partial({"$or": [{"a": 1}, {"b": {"$in": [1, 2]}}]})
    assert (refusal(wider, (4, 4), replica_set=True) or {}).get("code") == 67
    assert (refusal(wider, (5, 0), replica_set=True) or {}).get("code") == 67
    assert refusal(wider, (6, 0), replica_set=True) is None
    nested = partial({"$and": [{"$and": [{"a": 1}]}]})
    assert (refusal(nested, (4, 4), replica_set=True) or {}).get("code") == 67
    assert refusal(nested, (6, 0), replica_set=True) is None
    taken = partial(
        {"$and": [{"a": {"$gt": 1, "$lte": 5}}, {"b": {"$type": "string"}}, {"c": {"$exists": True}}]}
    )
    assert refusal(taken, (4, 4), replica_set=True) is None
