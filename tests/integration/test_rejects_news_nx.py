"""At the wire, the rejected orders' list as a batch beside a watcher reads it: what the watcher
listed first is news to the next batch run, once (``RejectStore.record``'s ``batch_news``)."""

from __future__ import annotations

import pytest
from bson import ObjectId

from order_archiver.mongodb.rejects import RejectStore
from order_archiver.orders.rejection import Rejection

pytestmark = pytest.mark.integration


def test_what_the_watcher_listed_first_is_news_to_the_next_batch_run_once(nx_client, nx_settings):
    """An SRE's batch beside a watcher never said a new rejected order (exit 0, -q silent):
    the watcher had listed it at its delivery. The next batch run to meet it says it (exit 3),
    the one after does not; the watcher meeting it again makes it no news; a new reason the
    watcher lists is news to batch again."""
    rejects = nx_client[nx_settings.archive_db_name][nx_settings.rejects_collection]
    order = ObjectId()
    missing, taken = Rejection(order, "numero_commande missing"), Rejection(order, "numero taken")
    watcher = RejectStore(rejects)
    assert watcher.record([missing], "watch") == 1
    assert RejectStore(rejects).not_news([missing], to_batch=True) == set()  # a dry run: news
    assert RejectStore(rejects).record([missing], "batch") == 1  # the night's run: exit 3
    assert watcher.record([missing], "watch") == 0
    assert RejectStore(rejects).record([missing], "batch") == 0  # told once
    assert watcher.record([taken], "watch") == 1  # fixed into another refusal
    assert RejectStore(rejects).record([taken], "batch") == 1
    entry = rejects.find_one({"_id": order})
    assert entry is not None
    assert "batch_news" not in entry
    assert entry["times_seen"] == 6


def test_a_dry_run_says_new_what_the_run_counts_new_a_changed_reason_included(nx_client, nx_settings):
    """Review: a dry run's "would be new" read the list by id alone, so an order fixed at the
    source into another refusal (its number now taken) was "already listed" to the dry run and
    new to the run (exit 3): the dry run's figure is the run's, for each kind of news."""
    rejects = nx_client[nx_settings.archive_db_name][nx_settings.rejects_collection]
    store = RejectStore(rejects)
    same, changed, unlisted = ObjectId(), ObjectId(), ObjectId()
    store.record(
        [Rejection(same, "numero_commande missing"), Rejection(changed, "numero_commande missing")], "batch"
    )
    met = [
        Rejection(same, "numero_commande missing"),
        Rejection(changed, "numero taken"),
        Rejection(unlisted, "numero_commande missing"),
    ]
    would_be_new = {r.order_id for r in met} - store.not_news(met, to_batch=True)
    assert would_be_new == {changed, unlisted}
    rejects.update_one(
        {"_id": same}, {"$set": {"batch_news": "a watcher's tag"}}
    )  # listed again by a watcher
    assert store.not_news(met, to_batch=True) == set()
    assert store.not_news(met) == {same}  # to another job than batch, the watcher's news is none
    assert store.record(met, "batch") == 3


def test_an_earlier_versions_watcher_listing_is_news_to_batch_not_to_the_new_watcher(nx_client, nx_settings):
    """An entry 844068a's watcher wrote (``git show 844068a:order_archiver/mongodb/rejects.py``:
    ``first_run``, ``first_source``, ``times_seen``; no ``counted_by`` nor flags) was told by that
    watcher, never by its batch: the upgraded watcher meeting it again keeps it no news to
    itself and leaves it news to the next batch run, told once."""
    rejects = nx_client[nx_settings.archive_db_name][nx_settings.rejects_collection]
    order = ObjectId()
    rejects.insert_one(
        {
            "_id": order,
            "reason": "numero_commande missing",
            "numero_commande": None,
            "source": "watch",
            "first_source": "watch",
            "first_run": "45697a357dd54680a0509285eec7e28f",
            "times_seen": 1,
        }
    )
    missing = Rejection(order, "numero_commande missing")
    assert RejectStore(rejects).record([missing], "watch") == 0
    assert RejectStore(rejects).not_news([missing], to_batch=True) == set()
    assert RejectStore(rejects).record([missing], "batch") == 1
    assert RejectStore(rejects).record([missing], "batch") == 0
    assert rejects.find_one({"_id": order})["times_seen"] == 4


def test_an_entry_from_before_first_source_is_news_to_batch_only_when_a_watcher_alone_met_it(
    nx_client, nx_settings
):
    """a70eb61 (2026-11-30: ``git show a70eb61:order_archiver/mongodb/rejects.py``) wrote no
    ``first_source``: ``source`` (the last job), ``first_run`` and ``times_seen``. Met once, by its
    watcher: listed by the watcher, never told by batch, news to the next batch run. Met by its
    batch, then by its watcher's catch-up (``source`` watch, seen twice): told then, known."""
    rejects = nx_client[nx_settings.archive_db_name][nx_settings.rejects_collection]
    by_watcher, by_batch = ObjectId(), ObjectId()
    old = {"reason": "numero_commande missing", "numero_commande": None, "source": "watch", "first_run": "r1"}
    rejects.insert_many(
        [{"_id": by_watcher, **old, "times_seen": 1}, {"_id": by_batch, **old, "times_seen": 2}]
    )
    met = [Rejection(by_watcher, "numero_commande missing"), Rejection(by_batch, "numero_commande missing")]
    assert RejectStore(rejects).not_news(met, to_batch=True) == {by_batch}
    assert RejectStore(rejects).record(met, "batch") == 1
    assert RejectStore(rejects).record(met, "batch") == 0
