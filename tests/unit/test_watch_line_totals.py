"""The watcher's periodic line: its totals add up (a new user's first day, items 2 and 3)."""

from __future__ import annotations

import logging

from order_archiver.settings import Settings
from tests.helpers import expected_archive_ids, seed_database, unique_index


def _event(n, order_id, status="livrée", document=True):
    return {
        "_id": {"_data": f"t{n}"},
        "operationType": "update",
        "documentKey": {"_id": order_id},
        "fullDocument": {"_id": order_id, "status": status} if document else None,
    }


def a_watcher_that_caught_up_then_streamed(mongo, settings=None):
    """A first start's catch-up over 40 orders, then one micro-batch of 6 events: a replay, a
    correction and its order's event again, an order given another's number, one deleted, one
    no longer delivered."""
    from order_archiver.watch.watcher import Watcher, WatchOptions

    settings = settings or Settings(simulation=True, log_dir="")
    database = mongo[settings.mongodb_database]
    dataset = seed_database(database, settings, 40, seed=11, p_anomalies=0.0)
    unique_index(database[settings.archive_collection])
    watcher = Watcher(mongo, settings, WatchOptions())
    watcher._catch_up()
    orders = database[settings.orders_collection]
    a, b, c, d, e = sorted(expected_archive_ids(dataset), key=str)[:5]
    orders.update_one({"_id": b}, {"$set": {"adresse_livraison": "1 rue corrigée"}})
    numero = orders.find_one({"_id": a})["numero_commande"]
    orders.update_one({"_id": c}, {"$set": {"numero_commande": numero}})
    events = [
        _event(1, a),  # replayed: already archived
        _event(2, b),  # corrected: revised
        _event(3, b),  # the same order again in the micro-batch
        _event(4, c),  # another order's number: rejected
        _event(5, d, document=False),  # deleted before its event was read
        _event(6, e, status="annulée"),  # no longer delivered
    ]
    watcher._archive(events)
    return watcher


def the_line(watcher, caplog):
    watcher.lines.interval_s = 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="order_archiver"):
        watcher.lines.maybe()
    return next(r for r in caplog.records if r.getMessage().startswith("watch: "))


def test_the_periodic_line_says_every_event_once(mongo, caplog):
    """Item 2: "in all 1192 events, 0 archived, 1187 already archived, 4 rejected" summed to
    1191: the revised order was left out. Each event is said as one of what it can end as."""
    watcher = a_watcher_that_caught_up_then_streamed(mongo)
    record = the_line(watcher, caplog)
    message = record.getMessage()
    assert "in all 6 events: 0 archived, 1 already archived, 1 revised, 1 rejected, 3 skipped" in message, (
        message
    )
    figures = record.stats
    assert figures["events"] == 6
    assert sum(figures[k] for k in ("archived", "already_archived", "revised", "rejected", "skipped")) == 6


def test_the_catch_ups_orders_are_said_apart_from_the_streams_events(mongo, caplog):
    """Item 3: "in all 116 events, 115 archived, 1166 already archived, 3 rejected" mixed the
    start-up catch-up's orders into the stream's events (1284, not 116). Each part adds up."""
    watcher = a_watcher_that_caught_up_then_streamed(mongo)
    caught_up = watcher.stats.caught_up
    assert caught_up.orders == caught_up.archived == 24  # every delivered order of the 40
    message = the_line(watcher, caplog).getMessage()
    assert message.endswith(
        "; catch-up: 24 orders: 24 archived, 0 already archived, 0 revised, 0 rejected"
    ), message
    assert watcher.stats.stopped_line() == (
        "stopped: 6 events: 0 archived, 1 already archived, 1 revised, 1 rejected, 3 skipped; "
        "catch-up: 24 orders: 24 archived, 0 already archived, 0 revised, 0 rejected"
    )


def test_metrics_count_the_revised_orders(mongo):
    """Item 2: /metrics had no revised counter (MONITORING.md lists it now)."""
    watcher = a_watcher_that_caught_up_then_streamed(mongo)
    sample = watcher.metrics.registry.get_sample_value
    assert sample("order_archiver_orders_revised_total", {"mode": "watch"}) == 1
    assert sample("order_archiver_orders_revised_total", {"mode": "catch-up"}) == 0
