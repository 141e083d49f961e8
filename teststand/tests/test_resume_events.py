"""teststand/resume_events.py on the running server: a change stream resumed after an event its
``$match`` (on the ``updateLookup`` order) now drops fails with 280 answering as 6.0 and later,
and resumes answering as 5.0 (MongoDB's stage order, in the module's docstring)."""

import time
from collections.abc import Iterator

import pymongo
import pytest
from bson import ObjectId
from pymongo.errors import OperationFailure

from teststand.nx_server import NxServer

pytestmark = [pytest.mark.integration, pytest.mark.test_server_only("the test server's own fixes and knobs")]

# The product's filter (order_archiver/mongodb/source.py), trimmed to what decides here.
DELIVERED = [
    {
        "$match": {
            "$or": [
                {"operationType": {"$in": ["insert", "replace"]}, "fullDocument.status": "livrée"},
                {"operationType": "update", "fullDocument.status": "livrée"},
            ]
        }
    }
]


@pytest.fixture(scope="module", params=["5.0", "6.0", "8.0"])
def client(request, tmp_path_factory) -> Iterator[pymongo.MongoClient]:
    folder = tmp_path_factory.mktemp(f"nx{request.param.replace('.', '')}")
    server = NxServer(folder, env={"NX_MONGODB_VERSION": request.param}).start()
    with pymongo.MongoClient(server.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as connected:
        yield connected
    server.stop()


def refuses(client: pymongo.MongoClient) -> bool:
    return tuple(client.server_info()["versionArray"][:2]) >= (6, 0)


def first_event(stream) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        event = stream.try_next()
        if event is not None:
            return event
    raise AssertionError("no event within 10 s")


def delivered_then(client, change) -> tuple[pymongo.collection.Collection, ObjectId, dict, dict, ObjectId]:
    """Order A delivered and read from a stream, then ``change`` made to it; the stream's
    position once it has read past that change too (a getMore that scanned it)."""
    orders = client[f"t_{ObjectId()}"].Commande
    a, b = ObjectId(), ObjectId()
    orders.insert_many([{"_id": a, "status": "en_attente"}, {"_id": b, "status": "en_attente"}])
    with orders.watch(DELIVERED, full_document="updateLookup", max_await_time_ms=1) as stream:
        stream.try_next()
        orders.update_one({"_id": a}, {"$set": {"status": "livrée"}})
        event = first_event(stream)
        assert event["documentKey"] == {"_id": a}
        change(orders, a)
        deadline = time.monotonic() + 10
        while stream.resume_token == event["_id"] and time.monotonic() < deadline:
            stream.try_next()
        past = stream.resume_token
    assert past != event["_id"]
    orders.update_one({"_id": b}, {"$set": {"status": "livrée"}})  # the next delivery
    return orders, b, event["_id"], past, a


def purged(orders, order_id) -> None:
    orders.delete_one({"_id": order_id})  # what batch --run --purge-source sends for it


def returned(orders, order_id) -> None:
    orders.update_one({"_id": order_id}, {"$set": {"status": "retournée"}})


@pytest.mark.parametrize("change", [purged, returned])
def test_a_stream_resumed_after_an_event_its_match_now_drops(client, change):
    orders, b, token, _, _ = delivered_then(client, change)
    with orders.watch(
        DELIVERED, full_document="updateLookup", resume_after=token, max_await_time_ms=1
    ) as stream:
        if not refuses(client):  # 5.0: the resume event is swallowed before the lookup
            assert first_event(stream)["documentKey"] == {"_id": b}
            return
        with pytest.raises(OperationFailure, match="the resume token was not found") as caught:
            first_event(stream)
        assert caught.value.code == 280  # ChangeStreamFatalError
        assert not stream.alive


@pytest.mark.parametrize("change", [purged, returned])
def test_a_stream_resumed_from_the_position_past_the_change_is_not_checked(client, change):
    """The position a getMore gave after scanning the change (a high-water mark on MongoDB)
    needs no event: every version resumes from it."""
    orders, b, _, past, _ = delivered_then(client, change)
    with orders.watch(
        DELIVERED, full_document="updateLookup", resume_after=past, max_await_time_ms=1
    ) as stream:
        assert first_event(stream)["documentKey"] == {"_id": b}


def test_a_resume_event_that_still_matches_is_swallowed(client):
    """A delivered order corrected since (still delivered): its event is found again, on 6.0+ too."""
    orders, _, token, _, a = delivered_then(client, corrected)
    with orders.watch(
        DELIVERED, full_document="updateLookup", resume_after=token, max_await_time_ms=1
    ) as stream:
        assert first_event(stream)["documentKey"] == {"_id": a}  # the correction, after the token


def corrected(orders, order_id) -> None:
    orders.update_one({"_id": order_id}, {"$set": {"adresse_livraison": "2 rue Neuve"}})
