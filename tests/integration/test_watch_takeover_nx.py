"""tests/unit/test_watch_takeover.py's and test_catch_up_takeover.py's scenarios at the wire: the archive's duplicate `_id` comes
back from the server with its `keyPattern` (the insert path; mongomock's, without it, goes
through the upsert), the lease and the token store are the server's documents."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.mongodb.lease import LeaseLost
from order_archiver.retry import Retry, RetryPolicy
from order_archiver.watch.watcher import Watcher, WatchOptions
from tests.helpers import expected_archive_ids, seed_database
from tests.unit.test_catch_up_takeover import CATCH_UP_SCENARIOS, catch_up_paused_after_a_takeover
from tests.unit.test_watch_takeover import CORRECTED, SCENARIOS, paused_leader_after_a_takeover

pytestmark = pytest.mark.integration


@SCENARIOS
def test_a_leader_paused_after_its_fence_never_writes_back_an_older_version(
    nx_client, nx_settings, archived_before, purged
):
    held = paused_leader_after_a_takeover(
        nx_client, nx_settings, archived_before=archived_before, purged=purged
    )
    assert held["source"]["adresse_livraison"] == CORRECTED


@CATCH_UP_SCENARIOS
def test_a_catch_up_paused_past_its_lease_never_writes_back_an_older_version(
    nx_client, nx_settings, purged, noticed
):
    """tests/unit/test_catch_up_takeover.py's scenario at the wire: the catch-up's scan is the
    server's aggregation, its chunk's write meets the successor's copy on the `_id` (keyPattern)."""
    held = catch_up_paused_after_a_takeover(nx_client, nx_settings, purged=purged, noticed=noticed)
    assert held["source"]["adresse_livraison"] == CORRECTED
    assert held["revised_at"] is None


def test_a_successor_replays_the_stream_from_before_a_paused_catch_up(nx_client, nx_settings):
    """The old leader's catch-up reads an order not archived yet and stops past its lease right
    after its fence. The order is corrected; the standby takes over. With no token saved (the
    old leader saved its stream's starting point only after its catch-up) the new leader opened
    its stream *after* the correction; the old leader woke and inserted the version it had read
    (no copy to hold it to: an insert), and the new leader's catch-up skipped the order as
    archived. No event ever came for the correction: the archive kept the older version for good
    (the purge keeps the source's, so nothing is deleted; only a batch pass reading the change
    stream would revise it). Now a catch-up first saves where its stream starts, marked "catch-up
    not done": a successor resumes the stream from there (and catches up again), so it sees the
    correction and archives it. Deterministic: events order the two watchers (no sleep); a
    delivery made after the new leader's catch-up, once archived by it, says its stream has gone past
    everything before it."""
    settings = nx_settings
    database = nx_client[settings.mongodb_database]
    dataset = seed_database(database, settings, 30, seed=6, p_anomalies=0.0)
    archive = database[settings.archive_collection]
    keys, options = ARCHIVE_INDEXES[0]
    archive.create_index(keys, **options)
    order_id = sorted(expected_archive_ids(dataset), key=str)[0]
    orders = database[settings.orders_collection]
    marker = orders.find_one({"status": {"$ne": settings.delivered_status}}, {"_id": 1})["_id"]
    old = Watcher(nx_client, settings, WatchOptions(token_store="mongo", name="eu-1"))
    new = Watcher(nx_client, settings, WatchOptions(token_store="mongo", name="eu-1"))
    assert old.lease is not None
    assert new.lease is not None
    assert old.lease.try_acquire()
    opened, old_done, new_caught_up, failures = threading.Event(), threading.Event(), threading.Event(), []
    look, old_catch_up, new_open, new_catch_up = (
        old.unique_index.still_there,
        old._catch_up,
        new._open,
        new._catch_up,
    )

    def new_leader() -> None:
        try:
            new._stream_once(_policy())
        except BaseException as exc:
            failures.append(exc)
            opened.set()

    def paused_before_its_write() -> None:
        look()
        if opened.is_set():
            return
        # It stops here past its lease: the order is corrected, the standby takes over...
        orders.update_one({"_id": order_id}, {"$set": {"adresse_livraison": CORRECTED}})
        database[settings.checkpoint_collection].update_one(
            {"_id": "lease:eu-1"}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
        )
        assert new.lease.try_acquire()
        follower.start()
        assert opened.wait(30)  # ...and opens its stream, before the old leader wakes

    def opening(state):
        stream = new_open(state)
        opened.set()
        return stream

    def catching_up_after_the_old_leader(*start) -> None:
        assert old_done.wait(30)
        new_catch_up(*start)
        new_caught_up.set()

    def old_catch_up_then_lost(*start) -> None:
        old_catch_up(*start)
        old.lease._valid_until = 0.0  # its renewal has found the lease taken
        old_done.set()

    follower = threading.Thread(target=new_leader, daemon=True)
    old.unique_index.still_there = paused_before_its_write  # type: ignore[method-assign]
    old._catch_up = old_catch_up_then_lost  # type: ignore[method-assign]
    new._open = opening  # type: ignore[method-assign]
    new._catch_up = catching_up_after_the_old_leader  # type: ignore[method-assign]
    try:
        with pytest.raises(LeaseLost):
            old._stream_once(_policy())
        assert old_done.is_set()
        assert new_caught_up.wait(30)  # the marker is then the stream's, not the catch-up's
        orders.update_one(
            {"_id": marker},
            {"$set": {"status": settings.delivered_status, "date_livraison": datetime.now(UTC)}},
        )
        deadline = time.monotonic() + 30
        while archive.count_documents({"_id": marker}) == 0 and time.monotonic() < deadline and not failures:
            threading.Event().wait(0.05)
        assert not failures
        assert archive.count_documents({"_id": marker}) == 1
        assert archive.find_one({"_id": order_id})["source"]["adresse_livraison"] == CORRECTED
    finally:
        new.stop_event.set()
        follower.join(30)
        new.lease.release()
        old.lease.release()


def _policy() -> RetryPolicy:
    return RetryPolicy(Retry.SERVICE, on_stop="end", retryable=lambda exc: False)
