"""Each fix of devserver.py, shown on the running server (see shared/nx-27017.md)."""

import socket
import threading
from datetime import UTC, datetime

import pymongo
import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect, CursorNotFound, OperationFailure

from teststand.nx_server import NxServer, running_server

# The stand-in's own behaviour, some of it its own departure (an update path into an array by
# index is refused here, applied by MongoDB): not a test of another server (TEST_MONGODB_URI).
pytestmark = [pytest.mark.integration, pytest.mark.test_server_only("the test server's own fixes and knobs")]

DELIVERED_NOW = [
    {
        "$match": {
            "$or": [
                {"operationType": {"$in": ["insert", "replace"]}, "fullDocument.status": "livrée"},
                {"operationType": "update", "updateDescription.updatedFields.status": "livrée"},
            ]
        }
    }
]


@pytest.fixture
def db(nx_client, db_name):
    return nx_client[db_name]


@pytest.fixture
def joined(db):
    client_id, dish_id, order_id = ObjectId(), ObjectId(), ObjectId()
    db.Client.insert_one({"_id": client_id, "nom": "Dupont", "prenom": "Ana"})
    db.Menu.insert_one({"_id": dish_id, "nom": "Pizza", "prix": 12.5})
    db.Commande.insert_one(
        {
            "_id": order_id,
            "client_id": client_id,
            "status": "livrée",
            "items": [{"menu_id": dish_id, "quantite": 2}],
        }
    )
    return client_id, dish_id, order_id


def test_lookup_results_are_bson_and_keep_the_joined_id(db, joined):
    client_id, dish_id, order_id = joined
    result = list(
        db.Commande.aggregate(
            [
                {"$match": {"_id": order_id}},  # ObjectIds in a pipeline are converted
                {"$lookup": {"from": "Client", "localField": "client_id", "foreignField": "_id", "as": "c"}},
                {
                    "$lookup": {
                        "from": "Menu",
                        "localField": "items.menu_id",
                        "foreignField": "_id",
                        "as": "m",
                    }
                },
            ]
        )
    )
    assert len(result) == 1
    assert result[0]["_id"] == order_id  # an ObjectId, not a string
    assert result[0]["c"] == [{"_id": client_id, "nom": "Dupont", "prenom": "Ana"}]  # a list, with _id
    assert result[0]["m"][0]["_id"] == dish_id


def test_dotted_inclusion_projection_through_arrays(db, joined):
    _, _, order_id = joined
    result = db.Commande.aggregate(
        [
            {"$lookup": {"from": "Client", "localField": "client_id", "foreignField": "_id", "as": "c"}},
            {"$project": {"status": 1, "c.nom": 1}},
        ]
    ).next()
    assert result == {"_id": order_id, "status": "livrée", "c": [{"nom": "Dupont"}]}


def test_first_match_prefetch_returns_exactly_the_matching_documents(db):
    ids = [ObjectId() for _ in range(30)]
    db.X.insert_many([{"_id": i, "n": n} for n, i in enumerate(ids)])
    result = list(db.X.aggregate([{"$match": {"_id": {"$in": ids[5:8]}}}, {"$sort": {"n": -1}}]))
    assert [d["n"] for d in result] == [7, 6, 5]
    assert db.X.count_documents({"n": {"$gte": 10}}) == 20  # count_documents is an aggregate


def test_objectid_equality_on_other_fields(db, joined):
    client_id, _, order_id = joined
    assert db.Commande.find_one({"client_id": client_id})["_id"] == order_id
    assert db.Commande.count_documents({"client_id": {"$eq": client_id}}) == 1
    assert db.Commande.update_many({"client_id": client_id}, {"$set": {"x": 1}}).matched_count == 1
    assert db.Commande.find_one_and_update({"client_id": client_id}, {"$set": {"y": 2}})["_id"] == order_id
    assert len(list(db.Commande.aggregate([{"$match": {"$or": [{"client_id": client_id}]}}]))) == 1
    assert db.Commande.delete_many({"client_id": client_id}).deleted_count == 1


def assert_authentication_failed(uri: str) -> None:
    with (
        pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000) as client,
        pytest.raises(OperationFailure) as caught,
    ):
        client.admin.command("ping")
    assert caught.value.code == 18  # AuthenticationFailed, as MongoDB answers


@pytest.mark.test_server_only("puts credentials into the server's URI")
def test_credentials_get_authentication_failed(nx_server):
    assert_authentication_failed(nx_server.uri.replace("mongodb://", "mongodb://someone:wrong@"))


def test_change_events_are_bson_with_update_description(db):
    with db.Commande.watch(full_document="updateLookup") as stream:
        order_id = db.Commande.insert_one({"status": "en_attente", "at": datetime(2026, 1, 1, tzinfo=UTC)})
        order_id = order_id.inserted_id
        db.Commande.update_one({"_id": order_id}, {"$set": {"status": "livrée"}})
        db.Commande.delete_one({"_id": order_id})
        events = [stream.next() for _ in range(3)]
    insert, update, delete = events
    assert insert["operationType"] == "insert"
    assert insert["fullDocument"]["_id"] == order_id
    assert isinstance(insert["fullDocument"]["_id"], ObjectId)
    assert isinstance(insert["fullDocument"]["at"], datetime)
    assert insert["documentKey"] == {"_id": order_id}
    assert update["updateDescription"]["updatedFields"]["status"] == "livrée"
    assert delete["operationType"] == "delete"
    assert "fullDocument" not in delete


def test_change_events_name_each_document_by_its_id_in_its_type(db):
    """``documentKey._id`` is the document's ``_id`` as stored: an integer, a string, an
    ObjectId, an embedded document (MongoDB's change events; the watcher archives the orders
    its events name by it). The test server gave the text of its ``_id`` column: ``"7"`` for 7."""
    ids = [7, "s7", ObjectId(), {"a": 1}]
    with db.Commande.watch(full_document="updateLookup") as stream:
        for one in ids:
            db.Commande.insert_one({"_id": one, "status": "livrée"})
        db.Commande.update_one({"_id": 7}, {"$set": {"status": "en_attente"}})
        db.Commande.delete_one({"_id": 7})
        events = [stream.next() for _ in range(len(ids) + 2)]
    assert [e["documentKey"]["_id"] for e in events] == [*ids, 7, 7]


def test_stream_match_understands_or(db):
    with db.Commande.watch(DELIVERED_NOW, full_document="updateLookup") as stream:
        db.Commande.insert_one({"numero_commande": "A", "status": "en_attente"})
        delivered = db.Commande.insert_one({"numero_commande": "B", "status": "livrée"}).inserted_id
        event = stream.next()
        assert event["documentKey"]["_id"] == delivered
        assert stream.try_next() is None


def test_unreadable_resume_token_is_invalid_resume_token(db):
    db.Commande.insert_one({"x": 1})
    with (
        pytest.raises(OperationFailure) as caught,
        db.Commande.watch(resume_after={"_data": "not-a-token"}) as s,
    ):
        s.try_next()
    assert caught.value.code == 260


@pytest.mark.test_server_only("a server of its own with 5 rows of history (a real one: a small oplog)")
def test_pruned_history_is_change_stream_history_lost(tmp_path):
    server = NxServer(tmp_path / "nx", env={"NX_RESUME_RETENTION_ROWS": "5"}).start()
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            orders = client.h.Commande
            with orders.watch() as stream:
                orders.insert_one({"n": 0})
                stream.next()
                old_token = stream.resume_token
            with orders.watch() as reader:  # another stream reads on, keeping up: history is pruned
                for n in range(1, 60):
                    orders.insert_one({"n": n})
                    reader.next()
            with pytest.raises(OperationFailure) as caught, orders.watch(resume_after=old_token) as resumed:
                resumed.try_next()
            assert caught.value.code == 286
    finally:
        server.stop()


@pytest.mark.test_server_only("a server of its own with 5 rows of history (a real one: a small oplog)")
def test_history_is_capped_with_no_stream_open(tmp_path):
    """MongoDB's oplog drops its oldest entries whether or not anyone reads it (the manual,
    "Replica Set Oplog": a capped collection): a watcher stopped for a day of writes finds its
    token's history gone (286). nx-27017 pruned only while some stream read on."""
    server = NxServer(tmp_path / "nx", env={"NX_RESUME_RETENTION_ROWS": "5"}).start()
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            orders = client.h.Commande
            with orders.watch() as stream:
                orders.insert_one({"n": 0})
                stream.next()
                old_token = stream.resume_token
            orders.insert_many([{"n": n} for n in range(1, 60)])  # no stream open meanwhile
            with pytest.raises(OperationFailure) as caught, orders.watch(resume_after=old_token) as resumed:
                resumed.try_next()
            assert caught.value.code == 286
    finally:
        server.stop()


@pytest.mark.test_server_only("a server of its own with 5 rows of history (a real one: a small oplog)")
def test_an_open_stream_that_falls_behind_its_history_loses_its_position(tmp_path):
    """An open change stream does not hold the oplog back: one left unread while more changes
    are written than the oplog keeps (a watcher busy with a long catch-up) has its position
    deleted under it, and its next getMore fails with CappedPositionLost (136: "CollectionScan
    died due to position in capped collection being deleted"), the cursor gone; resumed from
    its token, the history is lost (286). nx-27017 kept every change an open stream had not read."""
    server = NxServer(tmp_path / "nx", env={"NX_RESUME_RETENTION_ROWS": "5"}).start()
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            orders = client.h.Commande
            with orders.watch(max_await_time_ms=50) as idle:
                orders.insert_one({"n": 0})
                assert idle.next()["fullDocument"]["n"] == 0
                token = idle.resume_token
                orders.insert_many([{"n": n} for n in range(1, 60)])  # more than it keeps, unread
                with pytest.raises(OperationFailure) as caught:
                    idle.try_next()
            assert caught.value.code in (136, 286)  # pymongo may resume on its own first: then 286
            with pytest.raises(OperationFailure) as lost, orders.watch(resume_after=token) as resumed:
                resumed.try_next()
            assert lost.value.code == 286
            with orders.watch(max_await_time_ms=50) as within:  # a reader that keeps up is fine
                orders.insert_many([{"n": n} for n in range(60, 64)])
                assert [within.next()["fullDocument"]["n"] for _ in range(4)] == [60, 61, 62, 63]
    finally:
        server.stop()


def test_compound_index_with_id_is_accepted(db):
    db.Commande.insert_one({"status": "livrée"})
    db.Commande.create_index([("status", 1), ("_id", 1)])
    db.Commande.create_index([("status", 1), ("date_commande", 1)])
    keys = [ix["key"] for ix in db.Commande.index_information().values()]
    assert [("status", 1), ("date_commande", 1)] in keys


def test_a_compound_index_with_id_is_listed_as_built(db):
    """nx-27017 cannot build it (the server answers its build "ok" with nothing built); MongoDB
    lists every index it built, so a client that reads listIndexes after the build (batch's
    index step, status, doctor) must find it there, not "missing" on every run."""
    db.Commande.insert_one({"status": "livrée"})
    db.Commande.create_index([("status", 1), ("_id", 1)])
    listed = {ix["name"]: ix for ix in db.Commande.list_indexes()}
    assert listed["status_1__id_1"]["key"] == {"status": 1, "_id": 1}
    again = db.command(
        {"createIndexes": "Commande", "indexes": [{"key": {"status": 1, "_id": 1}, "name": "status_1__id_1"}]}
    )
    assert again.get("note") == "all indexes already exist"
    db.Commande.drop_index("status_1__id_1")
    assert "status_1__id_1" not in {ix["name"] for ix in db.Commande.list_indexes()}


def test_dropping_a_watched_collection_invalidates_the_stream(db):
    db.Commande.insert_one({"x": 1})
    with db.Commande.watch() as stream:
        db.drop_collection("Commande")
        event = stream.next()
        assert event["operationType"] == "invalidate"
        assert not stream.alive
        token = event["_id"]
    with db.Commande.watch(start_after=token) as resumed:
        db.Commande.insert_one({"x": 2})
        assert resumed.next()["fullDocument"]["x"] == 2


STANDALONE_REFUSAL = {
    "ok": 0.0,
    "errmsg": "The $changeStream stage is only supported on replica sets",
    "code": 40573,
    "codeName": "Location40573",
}


def test_a_standalone_refuses_change_streams_and_the_replica_set_serves_them(
    nx_client, standalone_client, db_name
):
    """nx-27017 served change streams as a standalone; a standalone mongod refuses every one
    (collection, database, cluster) with 40573 (``DocumentSourceChangeStream::
    assertIsLegalSpecification``, src/mongo/db/pipeline/document_source_change_stream.cpp,
    4.4 to 8.0): a watcher tested on it worked where a real standalone refuses it. The test
    servers are one-member replica sets by default, and serve them (on a collection: nx-27017
    answers a database's or the cluster's stream with an error of its own)."""
    on_standalone = standalone_client[db_name]
    for watch in (on_standalone["Commande"].watch, on_standalone.watch, standalone_client.watch):
        with pytest.raises(OperationFailure) as refused:
            watch(full_document="updateLookup")
        assert refused.value.details == STANDALONE_REFUSAL
    assert "setName" not in standalone_client.admin.command("hello")

    database = nx_client[db_name]
    assert nx_client.admin.command("hello")["setName"] == "rs0"
    with database["Commande"].watch() as stream:  # (nx-27017 has no database or cluster streams)
        database["Commande"].insert_one({"x": 1})
        event = next(stream)
    assert (event["operationType"], event["fullDocument"]["x"]) == ("insert", 1)


@pytest.mark.test_server_only("the test server's PLAIN account")
def test_plain_authentication_for_the_test_account(nx_server):
    from teststand.nx_server import PLAIN_PASSWORD, PLAIN_USER

    good = (
        nx_server.uri.replace("mongodb://", f"mongodb://{PLAIN_USER}:{PLAIN_PASSWORD}@")
        + "?authMechanism=PLAIN"
    )
    with pymongo.MongoClient(good, serverSelectionTimeoutMS=3000) as client:
        assert client.admin.command("ping")["ok"] == 1
    assert_authentication_failed(good.replace(PLAIN_PASSWORD, "wrong"))


def test_get_more_on_an_unknown_cursor_is_cursor_not_found(db):
    db.c.insert_many([{"i": i} for i in range(10)])
    cursor = db.c.find({}, batch_size=2)
    assert next(cursor)["i"] == 0
    db.command("killCursors", "c", cursors=[cursor.cursor_id])
    with pytest.raises(CursorNotFound):
        list(cursor)  # nx-27017 alone would end the cursor quietly after 2 of 10


@pytest.mark.test_server_only("a TCP proxy in front of the test server")
def test_a_cursor_lost_to_a_network_cut_is_an_error_not_an_early_end(nx_server, db_name):
    from teststand.fault_proxy import FaultProxy

    with FaultProxy(nx_server.port) as proxy, pymongo.MongoClient(proxy.uri) as client:
        collection = client[db_name].c
        collection.insert_many([{"i": i} for i in range(1000)])
        cursor = collection.find({}, batch_size=100)
        read = [next(cursor) for _ in range(100)]
        proxy.cut_all()
        for _ in range(5):  # until a fresh connection answers (the pooled ones are dead)
            try:
                client.admin.command("ping")
                break
            except AutoReconnect:
                continue
        with pytest.raises(CursorNotFound):
            list(cursor)  # nx-27017 alone would end it quietly after 100 of 1000
        assert len(read) == 100


def test_a_connection_opening_when_the_proxy_cuts_is_cut_too(monkeypatch):
    """A client's connection accepted by the proxy, its upstream one still opening, when the test
    cuts every connection: it is cut too (it was left open, and a test cutting "every" connection
    in the middle of a read saw that read go on: the reader had just opened its connection)."""
    import asyncio

    from teststand import fault_proxy

    opening, release = threading.Event(), threading.Event()
    open_connection = asyncio.open_connection

    async def slow_open(*args: object, **kwargs: object) -> object:
        opening.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return await open_connection(*args, **kwargs)

    monkeypatch.setattr(fault_proxy.asyncio, "open_connection", slow_open)
    upstream = socket.create_server(("127.0.0.1", 0))
    proxy = fault_proxy.FaultProxy(upstream.getsockname()[1])
    with upstream, proxy, socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
        assert opening.wait(5)
        proxy.cut_all()
        release.set()
        try:
            closed = client.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed  # before: recv timed out, the connection alive through the cut


def test_an_upsert_takes_its_id_from_the_filter_as_it_is(db):
    """MongoDB builds an upserted document from the filter's equality fields: the ``_id`` stays
    an ObjectId (nx stored its hex string; the rejects list relies on the MongoDB behaviour)."""
    key = ObjectId()
    db.rejects.update_one(
        {"_id": key},
        {"$set": {"reason": "x"}, "$setOnInsert": {"first": 1}, "$inc": {"times": 1}},
        upsert=True,
    )
    db.rejects.bulk_write([pymongo.UpdateOne({"_id": key}, {"$inc": {"times": 1}}, upsert=True)])
    document = db.rejects.find_one({"_id": key})
    assert document is not None
    assert isinstance(document["_id"], ObjectId)
    assert document["times"] == 2
    assert db.rejects.count_documents({}) == 1


def test_an_update_with_id_beside_or_touches_that_id_only(db):
    """A fenced save (``{_id, $or: [...]}``) next to other keys' documents: only its own
    document is replaced or upserted, as on MongoDB (nx rewrote the first ``$or`` match)."""
    db.ck.insert_many([{"_id": "lease:a", "term": 1}, {"_id": "batch:x", "kind": "batch"}])
    fenced = {"_id": "watch:a", "$or": [{"term": {"$lte": 1}}, {"term": None}]}
    result = db.ck.replace_one(fenced, {"_id": "watch:a", "term": 1}, upsert=True)
    assert result.upserted_id == "watch:a"
    db.ck.update_one(fenced, {"$set": {"saved": True}})
    assert sorted(d["_id"] for d in db.ck.find()) == ["batch:x", "lease:a", "watch:a"]
    assert db.ck.find_one({"_id": "batch:x"}) == {"_id": "batch:x", "kind": "batch"}
    assert db.ck.find_one({"_id": "watch:a"})["saved"] is True


def test_status_in_both_unicode_forms_matches_in_queries_and_streams(db):
    """The delivered status is matched as ``$in`` of its NFC and NFD forms, in a find, in a
    pipeline's ``$match`` and in a change stream's ``$match``."""
    forms = ["livr\u00e9e", "livre\u0301e"]
    with db.Commande.watch(
        [{"$match": {"operationType": "insert", "fullDocument.status": {"$in": forms}}}],
        max_await_time_ms=200,
    ) as stream:
        db.Commande.insert_many([{"status": forms[0]}, {"status": forms[1]}, {"status": "annulée"}])
        seen = [stream.try_next() for _ in range(6)]
    assert sorted(e["fullDocument"]["status"] for e in seen if e) == sorted(forms)
    assert db.Commande.count_documents({"status": {"$in": forms}}) == 2
    assert len(list(db.Commande.aggregate([{"$match": {"status": {"$in": forms}}}]))) == 2


def test_a_date_set_by_an_update_reads_back_as_a_date(db):
    when = datetime(2026, 11, 26, 14, 8, 13, 755000, tzinfo=UTC)
    key = db.leases.insert_one({"n": 1}).inserted_id
    db.leases.update_one({"_id": key}, {"$set": {"at": when}})
    db.leases.update_one({"_id": "u"}, {"$set": {"seen": when}, "$setOnInsert": {"first": when}}, upsert=True)
    db.leases.find_one_and_update({"_id": key}, {"$set": {"expires": when}})
    document, upserted = db.leases.find_one({"_id": key}), db.leases.find_one({"_id": "u"})
    assert document["at"] == when
    assert document["expires"] == when
    assert upserted["seen"] == when
    assert upserted["first"] == when
    assert db.leases.count_documents({"at": {"$gte": when}}) == 1
    assert len(list(db.leases.aggregate([{"$match": {"expires": {"$lt": datetime.now(UTC)}}}]))) == 1


def test_a_bool_set_by_an_update_reads_back_as_a_bool(db):
    """MongoDB stores the BSON boolean an update sends (type 8, ``$type: "bool"``), never the
    integer 1 or 0 (nx's SQL tier bound a bool set into an existing document as an integer).
    ``is``, not ``==``: in Python ``1 == True``."""
    db.flags.insert_many(
        [{"_id": 1, "a": True, "n": {"k": 1}, "l": []}, {"_id": 2, "q": 1}, {"_id": 3, "q": 1}]
    )
    db.flags.update_one({"_id": 1}, {"$set": {"b": True, "c": False, "n.x": True}, "$inc": {"k": 1}})
    db.flags.update_one({"_id": 1}, {"$max": {"k": 5}, "$push": {"l": False}, "$setOnInsert": {"i": True}})
    db.flags.find_one_and_update({"_id": 1}, {"$set": {"f": True}})
    db.flags.bulk_write([pymongo.UpdateOne({"_id": 1}, {"$set": {"w": False, "arr": [True, False]}})])
    db.flags.update_many({"q": 1}, {"$set": {"m": True}})
    db.flags.update_one({"_id": 4}, {"$set": {"u": True}, "$setOnInsert": {"i": False}}, upsert=True)
    document = db.flags.find_one({"_id": 1})
    assert "i" not in document
    assert document["k"] == 5
    written = [document[f] for f in ("a", "b", "c", "f", "w")] + [document["n"]["x"], document["l"][0]]
    written += [document["arr"][0]] + [d["m"] for d in db.flags.find({"q": 1})]
    upserted = db.flags.find_one({"_id": 4})
    written += [upserted["u"], upserted["i"]]
    assert [(type(v).__name__, v) for v in written] == [
        ("bool", v) for v in (True, True, False, True, False, True, False, True, True, True, True, False)
    ]
    assert db.flags.count_documents({"b": {"$type": "bool"}, "m": {"$exists": False}}) == 1


def test_an_upserted_replacement_takes_its_id_from_the_filter(db):
    """MongoDB's manual, ``db.collection.replaceOne()``, upsert: "MongoDB will add the _id field
    to the replacement document if it is not specified in either the filter or replacement
    documents" (a replacement without ``_id`` takes the filter's ``_id`` equality, and no other
    field of the filter); the drivers' CRUD specification tests say the same (replaceOne.yml,
    findOneAndReplace-upsert.yml: filter ``{_id: 4}``, replacement ``{x: 1}``, upsertedId 4).
    nx inserted the replacement under a new ObjectId."""
    key = ObjectId()
    assert db.rp.replace_one({"_id": 3}, {"e": True}, upsert=True).upserted_id == 3
    assert db.rp.replace_one({"_id": key, "x": 2}, {"e": 1}, upsert=True).upserted_id == key
    assert db.rp.replace_one({"_id": {"$eq": "s"}}, {"e": 2}, upsert=True).upserted_id == "s"
    bulk = db.rp.bulk_write([pymongo.ReplaceOne({"_id": 7}, {"e": 7}, upsert=True)])
    assert bulk.upserted_ids == {0: 7}
    after = pymongo.ReturnDocument.AFTER
    assert db.rp.find_one_and_replace({"_id": 5}, {"e": 5}, upsert=True, return_document=after) == {
        "_id": 5,
        "e": 5,
    }
    assert db.rp.update_one({"_id": 6}, {"$set": {"e": 6}}, upsert=True).upserted_id == 6
    assert db.rp.find_one_and_update({"_id": 8}, {"$set": {"e": 8}}, upsert=True, return_document=after) == {
        "_id": 8,
        "e": 8,
    }
    assert db.rp.replace_one({"_id": 3}, {"e": "again"}, upsert=True).matched_count == 1
    assert sorted(str(d["_id"]) for d in db.rp.find()) == sorted(map(str, [3, key, "s", 7, 5, 6, 8]))
    assert db.rp.find_one({"_id": 3}) == {"_id": 3, "e": "again"}
    assert db.rp.find_one({"_id": key}) == {"_id": key, "e": 1}  # the filter's x is not taken


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory):
    """A server with both write fault knobs on (see teststand/nx_launcher.py)."""
    server = NxServer(
        tmp_path_factory.mktemp("faulty"),
        env={
            "NX_FAULT_WRITE_CONCERN": "archive:2",
            "NX_FAULT_REFUSE_NUMERO": "CMD-HUGE",
            "NX_FAULT_ARCHIVE": "archive",
            "NX_FAULT_REFUSE_INSERT": "orders:V=121,K=11000,I=11000/_id,O=11000/_id/older,N=11000/~_id",
        },
    ).start()
    yield server
    server.stop()


@pytest.mark.test_server_only("the test server's fault knobs")
def test_write_fault_knobs_answer_what_a_cluster_answers(faulty_server, db_name):
    with pymongo.MongoClient(faulty_server.uri, tz_aware=True) as client:
        archive = client[db_name]["archive"]

        def upserts(*numeros):
            return [
                pymongo.UpdateOne({"_id": ObjectId()}, {"$setOnInsert": {"numero_commande": n}}, upsert=True)
                for n in numeros
            ]

        first = archive.bulk_write(upserts("A", "B"), ordered=False)  # update 1 of 2: applied
        assert first.upserted_count == 2
        with pytest.raises(pymongo.errors.BulkWriteError) as caught:  # update 2: rolled back
            archive.bulk_write(upserts("C", "D"), ordered=False)
        assert caught.value.details["writeConcernErrors"][0]["code"] == 64
        assert not caught.value.details["writeErrors"]
        assert sorted(d["numero_commande"] for d in archive.find()) == ["A", "B"]  # C, D undone

        with pytest.raises(pymongo.errors.BulkWriteError) as caught:  # update 3: one refused
            archive.bulk_write(upserts("E", "CMD-HUGE", "F"), ordered=False)
        details = caught.value.details
        assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 17420)]
        assert sorted(u["index"] for u in details["upserted"]) == [0, 2]
        assert sorted(d["numero_commande"] for d in archive.find()) == ["A", "B", "E", "F"]


@pytest.mark.test_server_only("the test server's fault knobs")
def test_write_fault_knobs_answer_inserts_as_a_cluster_answers_them(tmp_path, db_name):
    """The same knobs on ``insert`` commands (MongoDB refuses a document over 16 MB and rolls
    back an unreplicated write inserted or updated alike): over 16 MB, an insert's document is
    2 BadValue "object to insert too large" (``fixDocumentForInsert``), not an upsert's 17420.
    Counted with the updates: every 2nd write command on the archive is rolled back."""
    knobs = {
        "NX_FAULT_WRITE_CONCERN": "archive:2",
        "NX_FAULT_REFUSE_NUMERO": "CMD-HUGE",
        "NX_FAULT_ARCHIVE": "archive",
    }
    with running_server(knobs) as server, pymongo.MongoClient(server.uri, tz_aware=True) as client:
        archive = client[db_name]["archive"]

        def inserts(*numeros):
            return [pymongo.InsertOne({"_id": ObjectId(), "numero_commande": n}) for n in numeros]

        assert archive.bulk_write(inserts("A", "B"), ordered=False).inserted_count == 2  # write 1 of 2
        with pytest.raises(pymongo.errors.BulkWriteError) as caught:  # write 2: rolled back
            archive.bulk_write(inserts("C", "D"), ordered=False)
        assert caught.value.details["writeConcernErrors"][0]["code"] == 64
        assert caught.value.details["nInserted"] == 2
        assert sorted(d["numero_commande"] for d in archive.find()) == ["A", "B"]  # C, D undone

        with pytest.raises(pymongo.errors.BulkWriteError) as caught:  # write 3: one refused
            archive.bulk_write(inserts("E", "CMD-HUGE", "F"), ordered=False)
        details = caught.value.details
        assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 2)]
        assert details["writeErrors"][0]["errmsg"].startswith("object to insert too large")
        assert details["nInserted"] == 2
        assert sorted(d["numero_commande"] for d in archive.find()) == ["A", "B", "E", "F"]
        # The source's own inserts (another collection) are not the archive document it stands for.
        client[db_name]["orders_huge"].insert_one({"numero_commande": "CMD-HUGE"})


@pytest.mark.test_server_only("the test server's fault knobs")
def test_the_insert_refusal_knob_answers_what_mongodb_answers(faulty_server, db_name):
    """An unordered insert refused in part: the rest inserted, one write error per refused
    document at its index, in MongoDB's shapes (121 with errInfo, 11000 with keyPattern and
    keyValue); an ordered one stops at its first error."""
    with pymongo.MongoClient(faulty_server.uri, tz_aware=True) as client:
        orders = client[db_name]["orders"]
        documents = [
            {"_id": ObjectId(), "numero_commande": n, "source_hash": "h"}
            for n in ("A", "V", "K", "I", "B", "O", "N")
        ]
        with pytest.raises(pymongo.errors.BulkWriteError) as caught:
            orders.insert_many(documents, ordered=False)
        errors = caught.value.details["writeErrors"]
        assert [(e["index"], e["code"]) for e in errors] == [
            (1, 121),
            (2, 11000),
            (3, 11000),
            (5, 11000),
            (6, 11000),
        ]
        assert (errors[3]["keyPattern"], orders.find_one({"_id": documents[5]["_id"]})["source_hash"]) == (
            {"_id": 1},
            "older-h",  # another writer archived an older version of it first
        )
        assert "keyPattern" not in errors[4]  # without DuplicateKeyErrorInfo
        assert "keyValue" not in errors[4]
        assert errors[4]["errmsg"].startswith("E11000 duplicate key error")
        assert errors[0]["errInfo"]["failingDocumentId"] == documents[1]["_id"]
        assert errors[0]["errInfo"]["details"]["operatorName"] == "$jsonSchema"
        assert (errors[1]["keyPattern"], errors[1]["keyValue"]) == (
            {"numero_commande": 1},
            {"numero_commande": "K"},
        )
        assert (errors[2]["keyPattern"], errors[2]["keyValue"]) == ({"_id": 1}, {"_id": documents[3]["_id"]})
        assert caught.value.details["nInserted"] == 2
        assert sorted(d["numero_commande"] for d in orders.find()) == [
            "A",
            "B",
            "I",
            "N",
            "O",
        ]  # put there first
        with pytest.raises(pymongo.errors.BulkWriteError) as caught:
            orders.insert_many([{"numero_commande": n} for n in ("C", "V", "D")], ordered=True)
        assert [(e["index"], e["code"]) for e in caught.value.details["writeErrors"]] == [(1, 121)]
        assert sorted(d["numero_commande"] for d in orders.find()) == ["A", "B", "C", "I", "N", "O"]


def test_a_delete_that_compares_the_whole_document_deletes_only_that_version(db):
    """The purge's filter: ``$$ROOT`` equal to the archived copy, field by field in order,
    numbers by value, dates to the millisecond (what MongoDB's $eq on documents does)."""
    when = datetime(2026, 11, 20, 19, 40, tzinfo=UTC)
    kept, gone = ObjectId(), ObjectId()
    as_archived = {
        "_id": gone,
        "numero_commande": "CMD-1",
        "items": [{"q": 2}],
        "date_livraison": when,
        "n": 5,
    }
    db.Commande.insert_many([dict(as_archived), {**as_archived, "_id": kept, "numero_commande": "CMD-2"}])
    db.Commande.update_one({"_id": kept}, {"$set": {"adresse_livraison": "corrigée"}})  # a correction
    corrected_copy = {**as_archived, "_id": kept, "numero_commande": "CMD-2"}  # the version archived before
    for order, copy in ((gone, {**as_archived, "n": 5.0}), (kept, corrected_copy)):
        db.Commande.delete_one({"_id": order, "$expr": {"$eq": ["$$ROOT", {"$literal": copy}]}})
    assert {d["_id"] for d in db.Commande.find({}, {"_id": 1})} == {kept}
    reordered = {"numero_commande": "CMD-2", "_id": kept}  # same fields, another order: not equal
    assert (
        db.Commande.delete_one(
            {"_id": kept, "$expr": {"$eq": ["$$ROOT", {"$literal": reordered}]}}
        ).deleted_count
        == 0
    )


def test_a_change_events_time_is_when_it_was_written_not_when_it_is_read(db):
    """A stream resumed later (an incremental batch reading the changes since its last run)
    tells old changes from new ones by their ``clusterTime``/``wallTime``."""
    import time

    with db.Commande.watch(max_await_time_ms=1) as stream:
        stream.try_next()
        token = stream.resume_token
    db.Commande.insert_one({"n": 1})
    written = datetime.now(UTC)
    time.sleep(0.3)  # read a while after it was written
    with db.Commande.watch(resume_after=token, max_await_time_ms=100) as stream:
        event = stream.try_next()
    assert event is not None
    for field in ("clusterTime", "wallTime"):
        when = event[field]
        when = when.as_datetime() if hasattr(when, "as_datetime") else when.replace(tzinfo=when.tzinfo or UTC)
        assert when <= written, field


def test_resume_tokens_sort_in_stream_order(db):
    """MongoDB 4.0+: ``_data`` strings sort in the order of the stream (a reader draining a
    stream up to a position compares them); nx's decimal row ids put ``nx:10`` before ``nx:9``."""
    with db.Commande.watch(max_await_time_ms=1) as stream:
        stream.try_next()
        start = stream.resume_token
    db.Commande.insert_many([{"n": i} for i in range(12)])
    with db.Commande.watch(resume_after=start, max_await_time_ms=100) as stream:
        tokens = [stream.try_next()["_id"]["_data"] for _ in range(12)]
    assert tokens == sorted(tokens)
    assert start["_data"] < tokens[0]


@pytest.mark.test_server_only("the test server's event clock knob")
def test_change_events_are_stamped_by_a_clock_ahead_of_hello_with_the_knob(tmp_path):
    """``NX_EVENT_CLOCK_AHEAD_S``: events carry the writing primary's time, here a clock an
    hour ahead of the one ``hello`` answers with (a shard's clock ahead of ``mongos``)."""
    server = NxServer(tmp_path / "nx", env={"NX_EVENT_CLOCK_AHEAD_S": "3600"}).start()
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            with client.h.Commande.watch(max_await_time_ms=100) as stream:
                client.h.Commande.insert_one({"n": 1})
                event = stream.next()
            local = client.admin.command("hello")["localTime"]
        wall = event["wallTime"]
        ahead = wall.replace(tzinfo=wall.tzinfo or UTC) - local.replace(tzinfo=local.tzinfo or UTC)
        assert 3590 < ahead.total_seconds() < 3610
    finally:
        server.stop()


@pytest.mark.test_server_only("the test server's maxBsonObjectSize knob")
def test_a_lowered_max_bson_object_size_makes_the_driver_refuse_a_large_command(tmp_path):
    """``NX_MAX_BSON_OBJECT_SIZE``: ``hello`` answers it, and pymongo refuses a command over
    it (a find's filter) or over it + 16 KiB (an aggregate) before sending
    (``DocumentTooLarge``), as it does at 16 MB on MongoDB."""
    from pymongo.errors import DocumentTooLarge

    server = NxServer(tmp_path / "nx", env={"NX_MAX_BSON_OBJECT_SIZE": str(32 * 1024)}).start()
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            assert client.admin.command("hello")["maxBsonObjectSize"] == 32 * 1024
            orders = client.h.Commande
            assert list(orders.find({"_id": {"$in": [ObjectId() for _ in range(1000)]}})) == []
            with pytest.raises(DocumentTooLarge):
                list(orders.find({"_id": {"$in": [ObjectId() for _ in range(3000)]}}))
    finally:
        server.stop()


@pytest.mark.test_server_only("the test server's blocking-sort memory knob")
def test_a_blocking_sort_over_the_knob_fails_before_6_0_unless_it_may_spill(tmp_path):
    """``NX_SORT_MEMORY_OVER``: answering as 4.4, a find sorted on no index's order over more
    than N documents fails with 292 unless it asks for ``allowDiskUse``; one an index gives (the
    ``_id``, an index's prefix, reversed) or a top-k within N does not. As 6.0 (its
    ``allowDiskUseByDefault``): no failure."""
    env = {"NX_SORT_MEMORY_OVER": "3", "NX_MONGODB_VERSION": "4.4"}
    server = NxServer(tmp_path / "nx", env=env).start()
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            rejects = client.h.rejects
            rejects.insert_many([{"seen": i, "at": i} for i in range(5)])
            rejects.create_index([("at", 1), ("seen", 1)])
            with pytest.raises(pymongo.errors.OperationFailure) as refused:
                list(rejects.find({}).sort("seen", -1))
            assert (refused.value.code, refused.value.details["codeName"]) == (
                292,
                "QueryExceededMemoryLimitNoDiskUseAllowed",
            )
            assert len(list(rejects.find({}, allow_disk_use=True).sort("seen", -1))) == 5
            assert len(list(rejects.find({}).sort("seen", -1).limit(3))) == 3
            assert len(list(rejects.find({}).sort("_id", -1))) == 5
            assert len(list(rejects.find({}).sort("$natural", -1))) == 5
            assert len(list(rejects.find({}).sort([("at", -1), ("seen", -1)]))) == 5
            with pytest.raises(pymongo.errors.OperationFailure):
                list(rejects.find({}).sort([("at", 1), ("seen", -1)]))
    finally:
        server.stop()
    server = NxServer(tmp_path / "nx6", env={**env, "NX_MONGODB_VERSION": "6.0"}).start()
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            client.h.rejects.insert_many([{"seen": i} for i in range(5)])
            assert len(list(client.h.rejects.find({}).sort("seen", -1))) == 5
    finally:
        server.stop()


@pytest.mark.test_server_only("the test server's periodic no-op interval")
def test_positions_are_high_water_marks_last_scanned_entries_and_periodic_no_ops(tmp_path):
    """As MongoDB gives them (teststand/stream_positions.py): a new stream stands just past the last
    write; a stream resumed from before it and scanned to the end stands on the last entry,
    matched or not, short of that mark; the next periodic no-op (here every 1.5 s, MongoDB's
    periodicNoopIntervalSecs, 10 s) moves it past."""
    import time

    server = NxServer(tmp_path / "nx", env={"NX_PERIODIC_NOOP_S": "1.5"}).start()
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            orders = client.h.Commande
            with orders.watch(max_await_time_ms=1) as stream:
                stream.try_next()
                before = stream.resume_token
            orders.insert_many([{"status": "en_attente"} for _ in range(3)])
            with orders.watch(DELIVERED_NOW, max_await_time_ms=1) as stream:
                stream.try_next()
                high_water = stream.resume_token
            with orders.watch(DELIVERED_NOW, resume_after=before, max_await_time_ms=1) as stream:
                assert stream.try_next() is None  # the filter drops the three
                scanned = stream.resume_token
                assert stream.try_next() is None
                assert stream.resume_token == scanned  # idle: it stands there
                time.sleep(1.6)
                assert stream.try_next() is None
                after_noop = stream.resume_token
        assert before["_data"] < scanned["_data"] < high_water["_data"] < after_noop["_data"]
    finally:
        server.stop()


def test_a_stream_on_a_collection_that_does_not_exist_does_not_create_it(db):
    """MongoDB opens a change stream on a namespace before the collection exists and does not
    create it (mongodb/mongo jstests/change_streams/does_not_implicitly_create_database.js:
    "will not implicitly create either"); the stream reports the collection's first insert.
    nx-27017 created the collection to put its triggers on it."""
    with db.Commande.watch(max_await_time_ms=1) as stream:
        assert stream.try_next() is None
        assert db.list_collection_names() == []
        db.Commande.insert_one({"x": 1})  # creates it: the stream sees this first insert
        event = stream.try_next() or stream.try_next()
        assert event is not None
        assert (event["operationType"], event["fullDocument"]["x"]) == ("insert", 1)
    assert db.list_collection_names() == ["Commande"]


def test_a_stream_opened_after_a_drop_waits_for_the_collection_again(db):
    """Dropped, then watched before it is re-created: the stream does not re-create it, and
    neither meets the old collection's history (its drop) nor misses the new one's first insert."""
    db.Commande.insert_one({"x": 1})
    db.drop_collection("Commande")
    with db.Commande.watch(max_await_time_ms=1) as stream:
        assert stream.try_next() is None
        assert "Commande" not in db.list_collection_names()
        db.Commande.insert_one({"x": 2})
        event = stream.try_next() or stream.try_next()
        assert event is not None
        assert (event["operationType"], event["fullDocument"]["x"]) == ("insert", 2)


def test_a_stream_resumed_from_before_a_drop_meets_the_invalidate_again(db):
    """The drop is in the history: a stream resumed from before it ends at an ``invalidate``,
    even once the collection exists again; ``startAfter`` it reads the new collection."""
    db.Commande.insert_one({"x": 1})
    with db.Commande.watch(max_await_time_ms=1) as stream:
        stream.try_next()
        before = stream.resume_token
    db.drop_collection("Commande")
    with db.Commande.watch(max_await_time_ms=1) as stream:  # the collection is watched again
        stream.try_next()
    db.Commande.insert_one({"x": 3})
    with db.Commande.watch(resume_after=before, max_await_time_ms=1) as stream:
        event = stream.try_next()
        assert event is not None
        assert event["operationType"] == "invalidate"
        assert stream.try_next() is None
        assert not stream.alive
    with db.Commande.watch(start_after=event["_id"], max_await_time_ms=1) as stream:
        assert stream.try_next()["fullDocument"]["x"] == 3


def test_an_update_path_into_an_array_is_refused_not_ignored(db):
    """nx-27017 acknowledged ``$inc``/``$set`` on ``items.0.quantite`` and changed nothing (the
    chaos run's corrections vanished); MongoDB applies them. Refused loudly instead."""
    db.Commande.insert_one({"_id": 1, "items": [{"menu_id": 5, "quantite": 2}]})
    for change in ({"$inc": {"items.0.quantite": 1}}, {"$set": {"items.0.quantite": 3}}):
        with pytest.raises(OperationFailure, match=r"path into an array \(items\.0\.quantite\)") as caught:
            db.Commande.update_one({"_id": 1}, change)
        assert caught.value.code == 2
        with pytest.raises(OperationFailure, match="path into an array"):
            db.Commande.find_one_and_update({"_id": 1}, change)
    db.Commande.update_one({"_id": 1}, {"$set": {"items": [{"menu_id": 5, "quantite": 3}]}})
    assert db.Commande.find_one({"_id": 1})["items"][0]["quantite"] == 3  # a whole array is set


def test_an_objectid_equality_on_a_dotted_path_matches_in_updates(db):
    """nx-27017 matched nothing for ``update_many({"client.id": oid})`` (count_documents did
    match): forget's erasure changed no document. Rewritten to ``$in``, which nx matches."""
    client, other = ObjectId(), ObjectId()
    ids = [ObjectId() for _ in range(3)]
    db.Commande_archive.insert_many(
        [{"_id": ids[i], "client": {"id": client if i < 2 else other, "nom": "X"}} for i in range(3)]
    )
    result = db.Commande_archive.update_many({"client.id": client}, {"$set": {"client.nom": None}})
    assert (result.matched_count, result.modified_count) == (2, 2)
    names = {d["_id"]: d["client"]["nom"] for d in db.Commande_archive.find()}
    assert names == {ids[0]: None, ids[1]: None, ids[2]: "X"}


def test_an_index_keeps_its_name_key_and_options(db):
    """MongoDB lists an index as it was created: its name, its key's directions, its options."""
    db.archive.create_index([("date_livraison", 1)], name="archive_retention", expireAfterSeconds=3600)
    db.archive.create_index([("a.b", -1)], name="ab_down")
    listed = {ix["name"]: ix for ix in db.archive.list_indexes()}
    assert listed["archive_retention"]["key"] == {"date_livraison": 1}
    assert listed["archive_retention"]["expireAfterSeconds"] == 3600
    assert listed["ab_down"]["key"] == {"a.b": -1}
    assert set(listed) == {"_id_", "archive_retention", "ab_down"}


def test_an_index_build_that_conflicts_with_an_existing_index_is_refused(db):
    db.archive.create_index([("date_livraison", 1)], name="archive_retention", expireAfterSeconds=3600)
    db.archive.create_index(
        [("date_livraison", 1)], name="archive_retention", expireAfterSeconds=3600
    )  # no-op
    refusals = [
        ({"name": "archive_retention", "expireAfterSeconds": 60}, 85),  # same name, other options
        ({"name": "archive_retention_2", "expireAfterSeconds": 3600}, 85),  # same key, other name
        ({"name": "archive_retention_3"}, 85),  # same key, other name and options
    ]
    for options, code in refusals:
        with pytest.raises(OperationFailure) as caught:
            db.archive.create_index([("date_livraison", 1)], **options)
        assert caught.value.code == code, options
    with pytest.raises(OperationFailure) as caught:  # same name, another key
        db.archive.create_index([("date_commande", 1)], name="archive_retention")
    assert caught.value.code == 86
    assert [ix["expireAfterSeconds"] for ix in db.archive.list_indexes() if ix["name"] != "_id_"] == [3600]


def test_coll_mod_changes_a_ttl_index_and_refuses_what_mongodb_refuses(db):
    db.archive.create_index([("date_livraison", 1)], name="archive_retention", expireAfterSeconds=3600)
    db.archive.create_index([("date_commande", 1)], name="date_commande_1")
    reply = db.command(
        {"collMod": "archive", "index": {"name": "archive_retention", "expireAfterSeconds": 7200}}
    )
    assert (reply["expireAfterSeconds_old"], reply["expireAfterSeconds_new"]) == (3600, 7200)
    listed = {ix["name"]: ix for ix in db.archive.list_indexes()}
    assert listed["archive_retention"]["expireAfterSeconds"] == 7200
    with pytest.raises(OperationFailure) as caught:
        db.command({"collMod": "archive", "index": {"name": "nope", "expireAfterSeconds": 60}})
    assert caught.value.code == 27  # IndexNotFound
    by_key = {"keyPattern": {"date_livraison": 1}, "expireAfterSeconds": 60}
    assert db.command({"collMod": "archive", "index": by_key})["expireAfterSeconds_new"] == 60


def test_dropping_an_index_by_its_name(db):
    db.archive.create_index([("date_livraison", 1)], name="archive_retention", expireAfterSeconds=3600)
    db.archive.drop_index("archive_retention")
    assert [ix["name"] for ix in db.archive.list_indexes()] == ["_id_"]
    db.archive.insert_one({"date_livraison": datetime(2001, 1, 1, tzinfo=UTC)})
    assert db.archive.count_documents({}) == 1  # a dropped TTL index expires nothing more
    with pytest.raises(OperationFailure) as caught:
        db.archive.drop_index("archive_retention")
    assert caught.value.code == 27  # IndexNotFound
    db.archive.create_index([("date_livraison", 1)], name="plain")  # the key is free again
    assert "expireAfterSeconds" not in {ix["name"]: ix for ix in db.archive.list_indexes()}["plain"]


@pytest.mark.test_server_only("MongoDB's TTL monitor runs once a minute; the test server's expires on reads")
def test_a_ttl_index_expires_documents_past_its_age(db):
    """And past the age ``collMod`` gave it: the server's expiry reads the changed age."""
    old, recent = datetime(2001, 1, 1, tzinfo=UTC), datetime.now(UTC)
    db.archive.insert_many([{"date_livraison": old}, {"date_livraison": recent}, {"date_livraison": None}])
    db.archive.create_index([("date_livraison", 1)], name="archive_retention", expireAfterSeconds=2**31 - 1)
    assert db.archive.count_documents({}) == 3
    db.command({"collMod": "archive", "index": {"name": "archive_retention", "expireAfterSeconds": 86400}})
    remaining = [d["date_livraison"] for d in db.archive.find({}, {"_id": 0}).sort("date_livraison", 1)]
    assert len(remaining) == 2
    assert remaining[0] is None  # a null is never expired
    assert remaining[1] > datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def server_44(tmp_path_factory):
    server = NxServer(tmp_path_factory.mktemp("nx44"), env={"NX_MONGODB_VERSION": "4.4"}).start()
    yield server
    server.stop()


@pytest.mark.test_server_only("a server answering as MongoDB 4.4")
def test_coll_mod_cannot_make_a_plain_index_a_ttl_one_before_5_1(server_44, db_name):
    with pymongo.MongoClient(server_44.uri) as client:
        archive = client[db_name].archive
        archive.create_index([("date_livraison", 1)], name="plain")
        with pytest.raises(OperationFailure) as caught:
            client[db_name].command(
                {"collMod": "archive", "index": {"name": "plain", "expireAfterSeconds": 60}}
            )
        assert caught.value.code == 72  # InvalidOptions: "no expireAfterSeconds field to update"


def test_null_equality_matches_null_and_missing_inside_and_or_and_counts(db):
    """``{field: null}`` matches a field holding null and a missing one, alone, side by side,
    inside ``$and``/``$or``, in find, count and update alike (the erasure's "every personal
    field is null")."""
    db.archive.insert_many(
        [
            {
                "_id": 1,
                "client": {"nom": None},
                "adresse_livraison": None,
                "source": {"adresse_livraison": None},
            },
            {"_id": 2, "client": None, "adresse_livraison": None},
            {"_id": 3, "client": {"nom": "X"}, "adresse_livraison": "rue"},
            {"_id": 4},
        ]
    )
    for query in (
        {"$and": [{"adresse_livraison": None}]},
        {"$or": [{"adresse_livraison": None}]},
        {"adresse_livraison": None, "client.nom": None},
        {
            "$and": [
                {"_id": {"$gt": 0}},
                {"client.nom": None},
                {"client.prenom": None},
                {"source.adresse_livraison": None},
            ]
        },
    ):
        assert sorted(d["_id"] for d in db.archive.find(query)) == [1, 2, 4], query
        assert db.archive.count_documents(query) == 3, query
        assert db.archive.update_many(query, {"$set": {"seen": True}}).matched_count == 3, query


def test_a_dropped_collections_indexes_go_with_it(db):
    db.archive.create_index([("date_livraison", 1)], name="archive_retention", expireAfterSeconds=60)
    db.archive.drop()
    db.archive.create_index([("date_livraison", 1)], name="by_delivery")
    listed = {ix["name"]: ix for ix in db.archive.list_indexes()}
    assert set(listed) == {"_id_", "by_delivery"}
    assert "expireAfterSeconds" not in listed["by_delivery"]
    db.archive.insert_one({"date_livraison": datetime(2001, 1, 1, tzinfo=UTC)})
    assert db.archive.count_documents({}) == 1  # nothing expires under a plain index


def test_a_duplicate_key_names_its_index_key_and_value(db):
    """MongoDB (4.4+, ``DuplicateKeyErrorInfo``) answers an insert refused by a unique index
    with ``keyPattern`` and ``keyValue``: the only way to tell a duplicate ``_id`` from one on
    another unique index (``restore`` counts the first as "already there", the second as
    refused). nx-27017 answered SQLite's "UNIQUE constraint failed" alone."""
    orders = db["unique_orders"]
    orders.create_index("numero_commande", unique=True)
    taken = ObjectId()
    orders.insert_one({"_id": taken, "numero_commande": "CMD-1"})
    with pytest.raises(pymongo.errors.BulkWriteError) as caught:
        orders.insert_many(
            [{"_id": ObjectId(), "numero_commande": "CMD-1"}, {"_id": taken, "numero_commande": "CMD-2"}],
            ordered=False,
        )
    on_numero, on_id = caught.value.details["writeErrors"]
    assert (on_numero["index"], on_numero["code"]) == (0, 11000)
    assert on_numero["keyPattern"] == {"numero_commande": 1}
    assert on_numero["keyValue"] == {"numero_commande": "CMD-1"}
    assert "index: numero_commande_1 dup key" in on_numero["errmsg"]
    assert (on_id["index"], on_id["keyPattern"], on_id["keyValue"]) == (1, {"_id": 1}, {"_id": taken})
    assert "index: _id_ dup key" in on_id["errmsg"]
    # The same order again (its _id and its number): MongoDB checks the _id index first.
    with pytest.raises(pymongo.errors.BulkWriteError) as caught:
        orders.insert_many([{"_id": taken, "numero_commande": "CMD-1"}], ordered=False)
    (again,) = caught.value.details["writeErrors"]
    assert (again["keyPattern"], again["keyValue"]) == ({"_id": 1}, {"_id": taken})
    assert "index: _id_ dup key: { _id: ObjectId(" in again["errmsg"]


def test_objectid_equalities_on_indexed_fields_are_read_from_the_indexes(db):
    """An ObjectId equality on an indexed field, alone or as every branch of an ``$or`` (forget's
    and restore's ``client.id`` / ``source.client_id``), is answered right (a null reference,
    a missing field, another id) and, in the server's
    SQL, from the indexes: SQLite's plan for the query is a "MULTI-INDEX OR" of index searches,
    as MongoDB reads an ``$or`` whose branches all have an index (the manual's ``$or`` page,
    "$or Clauses and Indexes"). With a branch on a field without an index: a scan, as MongoDB."""
    import sqlite3

    import neosqlite
    from neosqlite.objectid import ObjectId as NeoObjectId

    from teststand import devserver

    wanted, other = ObjectId(), ObjectId()
    db.archive.create_index([("client.id", 1)])
    db.archive.create_index([("source.client_id", 1)])
    db.archive.insert_many(
        [
            {"_id": 1, "client": {"id": wanted}, "source": {"client_id": wanted}},
            {"_id": 2, "client": None, "source": {"client_id": wanted}},  # a dangling reference
            {"_id": 4, "client": {"id": other}, "source": {"client_id": other}},
            {"_id": 5},
        ]
    )

    def found(query: dict) -> list[int]:
        return sorted(d["_id"] for d in db.archive.find(query, {"_id": 1}))

    assert found({"$or": [{"client.id": wanted}, {"source.client_id": wanted}]}) == [1, 2]
    assert found({"client.id": wanted}) == [1]
    assert found({"source.client_id": {"$in": [other, wanted]}}) == [1, 2, 4]
    assert found({"$or": [{"client.id": other}, {"n": 5}]}) == [4]

    devserver._fix_indexed_objectid_selections()  # the same fix, in this process, to read its SQL plans
    connection = neosqlite.Connection(":memory:")
    archive = connection["archive"]
    archive.create_index([("client.id", 1)])
    archive.create_index([("source.client_id", 1)])
    archive.insert_one({"client": {"id": NeoObjectId()}})
    sent: list[str] = []
    connection.db.set_trace_callback(sent.append)

    def plan(query: dict) -> str:
        sent.clear()
        list(archive.find(query))
        (select,) = [s for s in sent if s.startswith("SELECT id")]
        explained = sqlite3.connect(":memory:")  # the plan only: the same schema, no data
        explained.execute("CREATE TABLE archive (id INTEGER PRIMARY KEY, _id TEXT, data TEXT)")
        for path in ("$.client.id", "$.source.client_id"):
            explained.execute(f"CREATE INDEX 'ix{path}' ON archive(json_extract(data, '{path}'))")
        return " / ".join(row[3] for row in explained.execute("EXPLAIN QUERY PLAN " + select))

    oid = NeoObjectId()
    union = plan({"$or": [{"client.id": {"$in": [oid]}}, {"source.client_id": {"$in": [oid]}}]})
    assert "MULTI-INDEX OR" in union
    assert union.count("USING INDEX") == 2, union
    assert "USING INDEX" in plan({"client.id": {"$in": [oid]}})
    assert "USING INDEX" not in plan({"$or": [{"client.id": {"$in": [oid]}}, {"n": 5}]})


def test_objectid_ranges_on_id_are_read_in_sql_and_answer_as_mongodb(db):
    """A keyset page (``{status: ..., _id: {$gt: oid}}`` sorted on ``_id``, a ``--partition``
    share's and the page-by-page read's walk) is answered as MongoDB answers it: only ObjectId
    ``_id``s compare with an ObjectId (a string of 24 hexadecimal digits, a number and an embedded
    document are other types), every bound kept, the page in ``_id`` order. And, in the server's
    SQL, without decoding the collection in Python: MongoDB reads such a page from an index range,
    and a walk of the history page by page there costs each page, not the history."""
    ids = sorted(ObjectId() for _ in range(6))
    db.orders.insert_many(
        [{"_id": one, "status": "livrée" if n % 3 else "en cours"} for n, one in enumerate(ids)]
        + [
            {"_id": "f" * 24, "status": "livrée"},  # 24 hexadecimal digits, a string: another type
            {"_id": "zzz", "status": "livrée"},
            {"_id": 7, "status": "livrée"},
            {"_id": {"k": 1}, "status": "livrée"},
        ]
    )

    def page(query: dict, limit: int = 0) -> list:
        return [d["_id"] for d in db.orders.find(query, {"_id": 1}).sort("_id", 1).limit(limit)]

    delivered = {"status": {"$in": ["livrée", "livre\u0301e"]}}
    assert page({**delivered, "_id": {"$gt": ids[0]}}) == [ids[1], ids[2], ids[4], ids[5]]
    assert page({**delivered, "_id": {"$gt": ids[0]}}, limit=2) == [ids[1], ids[2]]
    assert page({**delivered, "_id": {"$gte": ids[1], "$lt": ids[5]}}) == [ids[1], ids[2], ids[4]]
    assert page({"_id": {"$lte": ids[2]}}) == ids[:3]
    assert page({"status": "en cours", "_id": {"$gt": ids[0]}}) == [ids[3]]

    # The product's walk across types (order_archiver.orders.selection.ids_after's filter): the
    # ObjectIds after the bound in _id order, then the _ids MongoDB sorts after ObjectId (a
    # bool, then a date), the limit counting both.
    def ids_after(last: object) -> dict:
        later_types = ["bool", "date", "timestamp", "regex"]
        return {"$or": [{"_id": {"$gt": last}}, *({"_id": {"$type": name}} for name in later_types)]}

    day = datetime(2024, 1, 1, tzinfo=UTC)
    db.orders.insert_many([{"_id": day, "status": "livrée"}, {"_id": True, "status": "livrée"}])
    walk = {**delivered, **ids_after(ids[1])}
    assert page(walk) == [ids[2], ids[4], ids[5], True, day]
    assert page(walk, limit=4) == [ids[2], ids[4], ids[5], True]
    assert page(walk, limit=2) == [ids[2], ids[4]]
    assert page({**delivered, **ids_after(ids[5])}) == [True, day]
    unsorted = [d["_id"] for d in db.orders.find(walk, {"_id": 1})]
    assert sorted(map(str, unsorted)) == sorted(map(str, [ids[2], ids[4], ids[5], True, day]))

    import neosqlite
    from neosqlite.objectid import ObjectId as NeoObjectId

    from teststand import devserver

    devserver._fix_objectid_range_selections()  # the same fixes, in this process, to read their SQL
    devserver._fix_id_walk_across_types()
    connection = neosqlite.Connection(":memory:")
    orders = connection["orders"]
    orders.insert_many([{"status": "livrée"} for _ in range(3)])
    sent: list[str] = []
    connection.db.set_trace_callback(sent.append)
    # A full page from the ObjectIds: one SQL read, nothing decoded beyond the page.
    page_of_two = orders.find({"status": "livrée", **ids_after(NeoObjectId("0" * 24))}).sort([("_id", 1)])
    assert len(list(page_of_two.limit(2))) == 2
    (select,) = [s for s in sent if s.startswith("SELECT id")]
    assert "._id > " in select, select  # the range, in SQL
    assert "ORDER BY" in select, select
    assert "LIMIT 2" in select, select


def test_values_of_different_types_sort_and_match_type_as_in_mongodb(db):
    """MongoDB's order of types (the manual's "Comparison/Sort Order": null, numbers, strings,
    objects, arrays, binary data, ObjectId, booleans, dates) in an aggregation's ``$sort`` and a
    find's sort made in Python, and ``$type`` matching an ObjectId, a date and binary data by name
    and number: a walk past a string ``_id`` (``{$type: "objectId"}``) reaches the ObjectIds. (A
    find's sort that the server makes in SQL still orders types as SQLite does: test-servers.md.)"""
    oid, day = ObjectId(), datetime(2024, 1, 1, tzinfo=UTC)
    values = [None, 3, "text", {"k": 1}, b"ab", oid, True, day]  # b"ab": binary data, subtype 0
    db.kinds.insert_many([{"_id": n, "v": value} for n, value in enumerate(reversed(values))])
    everything = {"$or": [{"v": {"$exists": True}}, {"w": 1}]}  # an $or: filtered and sorted in Python
    assert [d["v"] for d in db.kinds.find(everything, {"v": 1}).sort("v", 1)] == values
    assert [d["v"] for d in db.kinds.aggregate([{"$sort": {"v": -1}}])] == list(reversed(values))
    for name, wanted in (("objectId", oid), (7, oid), ("date", day), (9, day), ("binData", b"ab")):
        assert [d["v"] for d in db.kinds.find({"v": {"$type": name}})] == [wanted], name
    assert sorted(d["_id"] for d in db.kinds.find({"v": {"$type": ["string", "date"]}})) == [0, 5]
    assert [d["v"] for d in db.kinds.find({"v": {"$type": "string"}})] == ["text"]
    # Embedded documents, field by field: each value's type, then the name, then the value
    # ({b: 1} before {a: "x"}: a number before a string); numbers of both kinds together.
    inner = [{"b": 1}, {"b": 2.5}, {"a": "x"}, {"a": "x", "c": None}]
    db.inner.insert_many([{"_id": n, "v": value} for n, value in enumerate(reversed(inner))])
    assert [d["v"] for d in db.inner.aggregate([{"$sort": {"v": 1}}])] == inner


def test_an_update_filtered_on_ne_also_matches_a_document_without_the_field(db):
    """MongoDB's ``$ne`` matches the documents without the field; nx's update path matched only
    those holding it (a tagged update, ``{_id: x, counted_by: {$ne: tag}}``, never applied)."""
    db.tagged.insert_many([{"_id": 1}, {"_id": 2, "counted_by": "T"}, {"_id": 3, "counted_by": "U"}])
    for key in (1, 2, 3):
        db.tagged.update_one(
            {"_id": key, "counted_by": {"$ne": "T"}}, {"$inc": {"n": 1}, "$set": {"counted_by": "T"}}
        )
    assert {d["_id"]: d.get("n") for d in db.tagged.find()} == {1: 1, 2: None, 3: 1}
    assert db.tagged.update_many({"counted_by": {"$ne": "T"}}, {"$set": {"x": 1}}).modified_count == 0
    assert db.tagged.delete_many({"_id": 1, "other": {"$ne": 5}}).deleted_count == 1


@pytest.mark.test_server_only("the test server's fault knobs")
def test_the_slow_reads_knob_answers_each_batch_late_and_a_release_lets_a_held_one_go(tmp_path, db_name):
    """``NX_SLOW_READS_FILE``: each batch of a read of the named collection (the find's, each
    getMore's) answered that many seconds late, nothing else (another collection, a change
    stream, a write); written lower, a reply held goes at once."""
    import threading
    import time

    slow = tmp_path / "slow"
    slow.write_text("")
    with (
        running_server({"NX_SLOW_READS_FILE": str(slow)}) as server,
        pymongo.MongoClient(server.uri) as client,
    ):
        db = client[db_name]
        db.orders.insert_many([{"_id": n} for n in range(6)])
        db.other.insert_one({"_id": 1})
        slow.write_text("orders=0.4\n")
        with db.orders.watch() as stream:  # a change stream on the slow collection: not slowed
            started = time.monotonic()
            db.other.find_one()
            db.orders.insert_one({"_id": 6})  # a write: not slowed
            assert stream.try_next() is not None
            assert time.monotonic() - started < 0.4
        started, stamps = time.monotonic(), []
        for _ in db.orders.find().batch_size(3):  # three batches: the find's, two getMores'
            stamps.append(time.monotonic() - started)
        assert len(stamps) == 7
        assert stamps[0] >= 0.4  # the find's batch
        assert stamps[3] - stamps[2] >= 0.4  # each getMore's
        assert stamps[6] - stamps[5] >= 0.4
        slow.write_text("orders=600\n")  # a read hung
        read: list[object] = []
        held = threading.Thread(target=lambda: read.append(db.orders.find_one({"_id": 2})))
        held.start()
        held.join(1.0)
        assert held.is_alive()  # still held
        slow.write_text("")  # released
        held.join(5.0)
        assert read == [{"_id": 2}]


def test_a_natural_sort_reads_the_inserts_in_their_order_or_its_reverse(db):
    """``sort({$natural: -1})``: the most recent inserts first, as MongoDB documents it (the
    manual's ``cursor.sort()``, natural order); nx-27017 gave the oldest first, as for ``1``."""
    db.record.insert_many([{"_id": f"k{n:02d}", "n": n} for n in (3, 1, 4, 0, 2)])
    newest = [d["n"] for d in db.record.find({}, sort=[("$natural", -1)], limit=3)]
    oldest = [d["n"] for d in db.record.find({}, sort=[("$natural", 1)], limit=3)]
    assert (newest, oldest) == ([2, 0, 4], [3, 1, 4])
    filtered = [d["n"] for d in db.record.find({"n": {"$gte": 1}}, sort=[("$natural", -1)])]
    assert filtered == [2, 4, 1, 3]


def test_a_partial_index_mongodb_refuses_is_refused_at_the_wire(db):
    """A partial index's filter MongoDB does not take (a negation, ``sparse`` beside it): 67
    CannotCreateIndex, nothing built; nx-27017 built both. The one it takes is built and listed
    with its filter."""
    for options in (
        {"partialFilterExpression": {"p": {"$ne": None}}},
        {"partialFilterExpression": {"p": True}, "sparse": True},
    ):
        with pytest.raises(OperationFailure) as refused:
            db.record.create_index([("p", 1)], **options)
        assert refused.value.code == 67, options
    db.record.create_index([("p", 1)], partialFilterExpression={"p": True})
    [built] = [i for i in db.record.list_indexes() if i["name"] == "p_1"]
    assert built["partialFilterExpression"] == {"p": True}


@pytest.mark.test_server_only("a server of its own with its default time-limit knob")
def test_a_default_time_limit_stops_a_long_read_at_its_getmore(tmp_path):
    """NX_DEFAULT_MAX_TIME_DOCS: MongoDB 8.0's defaultMaxTimeMS (a read sent without maxTimeMS
    gets the cluster's), its cursor's leftover time rolled over to each getMore
    (getmore_cmd.cpp), scaled down to documents returned. The getMore past the budget fails 50
    and its cursor is gone; an explicit maxTimeMS overrides the default (the manual); a short
    read (a limit) fits; a change stream is not limited."""
    with (
        running_server({"NX_DEFAULT_MAX_TIME_DOCS": "50"}, prefix="nx-max-time-") as server,
        pymongo.MongoClient(server.uri) as client,
    ):
        database = client["limit"]
        ids = [f"{i:03d}" for i in range(120)]
        database["t"].insert_many([{"_id": one} for one in ids])
        opened = database.command("find", "t", sort={"_id": 1}, batchSize=20)["cursor"]
        read = list(opened["firstBatch"])
        more = database.command("getMore", opened["id"], collection="t", batchSize=20)
        read += more["cursor"]["nextBatch"]
        with pytest.raises(OperationFailure) as stopped:
            database.command("getMore", opened["id"], collection="t", batchSize=20)
        assert (stopped.value.code, stopped.value.details["codeName"]) == (50, "MaxTimeMSExpired")
        assert "operation exceeded time limit" in str(stopped.value)
        assert [d["_id"] for d in read] == ids[:40]
        with pytest.raises(OperationFailure) as gone:
            database.command("getMore", opened["id"], collection="t", batchSize=20)
        assert gone.value.code == 43  # CursorNotFound: the server deleted it
        with pytest.raises(OperationFailure) as first:
            list(database["t"].aggregate([{"$match": {}}]))  # its first batch (101) past it
        assert first.value.code == 50
        assert len(list(database["t"].find(batch_size=20, max_time_ms=600_000))) == 120
        assert len(list(database["t"].find().limit(20))) == 20
        with database["t"].watch(max_await_time_ms=100) as stream:
            database["t"].insert_many([{"_id": f"new-{i}"} for i in range(60)])
            seen = [stream.try_next() for _ in range(80)]
        assert len([event for event in seen if event is not None]) == 60
