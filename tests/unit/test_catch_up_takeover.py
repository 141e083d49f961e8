"""A leader paused past its lease in the middle of its CATCH-UP (on start with no token, it
archives the delivered orders not archived yet, by the batch path): the standby that takes over
meanwhile archives a correction of an order the paused catch-up had read in its earlier version.
What the old leader writes, once awake, must never replace that correction (the stream's writes
are held to it: test_watch_takeover.py). The same scenario runs at the wire in
tests/integration/test_watch_takeover_nx.py. The pause is a hook at the catch-up's look before
each chunk's write (``before_write``: after the chunk was read and the archive asked about it)."""

from datetime import UTC, datetime, timedelta

import pytest

from order_archiver.batch.job import BatchArchiver
from order_archiver.batch.report import BatchOptions
from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.mongodb.lease import LeaseLost
from order_archiver.settings import Settings
from order_archiver.watch.watcher import Watcher, WatchOptions
from tests.helpers import expected_archive_ids, seed_database
from tests.unit.test_watch_takeover import CORRECTED, _event

# noticed: the pause outlasts the lease by the old leader's own clock too (its fence sees it);
# otherwise it wakes as if it had passed its fence a moment before (a pause right at the write).
CATCH_UP_SCENARIOS = pytest.mark.parametrize(
    ("purged", "noticed"), [(False, False), (True, False), (False, True)]
)


def catch_up_paused_after_a_takeover(client, settings: Settings, *, purged: bool, noticed: bool) -> dict:
    """The old leader's catch-up reads a delivered order not archived yet, then stops past its
    lease. The standby takes over, the order is corrected (a fixed address), the new leader
    archives the correction (its stream) and saves its token; with ``purged`` a
    ``batch --purge-source`` then deletes the corrected order from the source. The old leader
    wakes and goes on with its catch-up (with ``noticed`` its own clock says the lease ran out).
    What the archive holds of the order at the end is returned, with the old leader's token
    save refused under its old term."""
    database = client[settings.mongodb_database]
    dataset = seed_database(database, settings, 30, seed=6, p_anomalies=0.0)
    archive = database[settings.archive_collection]
    keys, options = ARCHIVE_INDEXES[0]
    archive.create_index(keys, **options)
    expected = expected_archive_ids(dataset)
    order_id = sorted(expected, key=str)[0]
    orders = database[settings.orders_collection]
    old = Watcher(client, settings, WatchOptions(token_store="mongo", name="eu-1"))
    new = Watcher(client, settings, WatchOptions(token_store="mongo", name="eu-1"))
    assert old.lease is not None
    assert new.lease is not None
    assert old.lease.try_acquire()
    look = old.unique_index.still_there
    paused = []

    def paused_before_its_write() -> None:
        look()
        if paused:
            return
        paused.append(1)
        assert archive.count_documents({"_id": order_id}) == 0  # read, not archived yet
        # It stops here past its lease: the standby takes over...
        database[settings.checkpoint_collection].update_one(
            {"_id": "lease:eu-1"}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
        )
        assert new.lease.try_acquire()
        # ...the order is corrected, and the new leader archives the correction.
        orders.update_one({"_id": order_id}, {"$set": {"adresse_livraison": CORRECTED}})
        new._archive([_event(order_id, 2)])
        new._save_token({"_data": "t2"})
        assert archive.find_one({"_id": order_id})["source"]["adresse_livraison"] == CORRECTED
        if purged:
            report = BatchArchiver(client, settings, BatchOptions(run=True, purge_source=True)).run()
            assert report.purged > 0
            assert orders.count_documents({"_id": order_id}) == 0
        if noticed:
            old.lease._valid_until = 0.0  # by its own clock, its lease ran out during the pause

    old.unique_index.still_there = paused_before_its_write  # type: ignore[method-assign]
    try:
        if noticed:
            with pytest.raises(LeaseLost):  # fenced: it writes nothing more
                old._catch_up()
        else:
            old._catch_up()
            # Each order counted once (the one read again too), none revised: with the purge,
            # the corrected order is no longer delivered in the source, and counted nowhere.
            stats = old.stats
            assert (stats.archived + stats.already_archived, stats.revised) == (len(expected) - purged, 0)
        assert paused
        assert archive.count_documents({"_id": order_id}) == 1
        with pytest.raises(LeaseLost):  # its stream's starting point, saved under its old term, is refused
            old._save_token({"_data": "t1"})
        return archive.find_one({"_id": order_id})
    finally:
        new.lease.release()
        old.lease.release()


@CATCH_UP_SCENARIOS
def test_a_catch_up_paused_past_its_lease_never_writes_back_an_older_version(mongo, purged, noticed):
    """The catch-up's writes were neither fenced by the lease nor held to the copies read before
    the orders: the old leader, woken, found the archive holding another version than the one
    its catch-up had read, and revised it back to it (the correction gone from the archive; with
    the purge, gone for good: no event brings it back). Now a catch-up checks the lease before
    each chunk's write, and replaces no copy it did not read before the order: an order the
    archive holds in another version is read again, the stream's way."""
    settings = Settings(simulation=True, log_dir="")
    held = catch_up_paused_after_a_takeover(mongo, settings, purged=purged, noticed=noticed)
    assert held["source"]["adresse_livraison"] == CORRECTED
    assert held["revised_at"] is None  # archived once, by the new leader, never replaced
