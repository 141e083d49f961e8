"""The change stream helpers on the driver itself (order_archiver/mongodb/stream.py): the
events a getMore brought and not yet returned are counted through the one private attribute
the product reads, so a pymongo that moves it shows here, not as slower micro-batches."""

import pytest
from bson import ObjectId

from order_archiver.mongodb.stream import Prepended, buffered, micro_batch

pytestmark = pytest.mark.integration


def test_a_micro_batch_takes_what_one_getmore_brought(nx_client, db_name):
    orders = nx_client[db_name]["Commande"]
    orders.insert_one({"status": "en_attente"})  # the collection exists before the stream
    ids = [ObjectId() for _ in range(5)]
    with orders.watch(max_await_time_ms=200, batch_size=100) as stream:
        assert buffered(stream) == 0
        orders.insert_many([{"_id": i, "status": "livrée"} for i in ids])
        first = stream.next()
        assert first["documentKey"] == {"_id": ids[0]}
        assert buffered(stream) == 4  # the same getMore brought the other four
        prepended = Prepended(stream, first)
        assert buffered(prepended) == 5
        events, invalidate = micro_batch(prepended, prepended.try_next(), limit=3)
        assert [e["documentKey"]["_id"] for e in events] == ids[:3]
        assert invalidate is None
        assert buffered(stream) == 2
