"""``status`` at the wire: what a probe asks of the server stays bounded by the new work, not
the history (a probe runs every few seconds, on a source of tens of millions of orders)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from order_archiver.operations import status
from order_archiver.operations.status import collect_status
from order_archiver.settings import Duration

pytestmark = pytest.mark.integration


def test_the_next_purge_is_counted_up_to_a_bound(nx_client, nx_settings, monkeypatch):
    """A deployment that never purges keeps every delivered order in the source: "what the
    next --purge-source would move" counted them all at every probe (tens of millions of index
    keys). The count stops one past ``PURGE_COUNTED_AT_MOST`` (MongoDB's count with a limit:
    the ``count_documents`` aggregation's ``$limit`` stops the index scan there), scaled down
    here to 5 of 8 orders; the report says "more than"."""
    monkeypatch.setattr(status, "PURGE_COUNTED_AT_MOST", 5)
    settings = nx_settings.with_overrides(purge_after=Duration(days=1))
    now = datetime.now(UTC)
    orders = nx_client[settings.mongodb_database][settings.orders_collection]
    old = [
        {"_id": ObjectId(), "status": "livrée", "date_livraison": now - timedelta(days=3 + i)}
        for i in range(8)
    ]
    recent = {"_id": ObjectId(), "status": "livrée", "date_livraison": now - timedelta(hours=1)}
    orders.insert_many([*old, recent])
    report = collect_status(nx_client, settings, now=now)
    assert report.purge_movable == 5  # counted no further (before: all 8)
    assert report.purge_movable_more
    assert any(
        line.startswith("next --purge-source: more than 5 delivered orders") for line in report.lines()
    )
    orders.delete_many({"_id": {"$in": [o["_id"] for o in old[:4]]}})
    exact = collect_status(nx_client, settings, now=now)
    assert (exact.purge_movable, exact.purge_movable_more) == (4, False)
