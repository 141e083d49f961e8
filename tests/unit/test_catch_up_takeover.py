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
            stats = old.stats.caught_up
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


def test_a_long_catch_up_keeps_its_starting_point_saved_fresh(mongo, monkeypatch):
    """A catch-up saves where its stream starts before it begins (marked ``catching_up``), then
    reads and writes for as long as the history takes (hours on a first start): ``status`` (the
    shipped health timer: ``--max-heartbeat-age 2m``) took the watcher for dead once its token
    was older than that. Its starting point is saved again, still marked, before a chunk's write
    once WATCH_HEARTBEAT_S has passed, as a quiet stream's token is. The clock is a counter: a
    minute passes between each two looks at it."""
    from order_archiver.retry import Retry, RetryPolicy
    from order_archiver.watch import watcher as watcher_module
    from tests.helpers import FakeChangeStream
    from tests.unit.test_watcher_units import TOKEN

    settings = Settings(simulation=True, log_dir="", batch_size=5)
    database = mongo[settings.mongodb_database]
    seed_database(database, settings, 60, seed=6, p_anomalies=0.0)
    keys, options = ARCHIVE_INDEXES[0]
    database[settings.archive_collection].create_index(keys, **options)
    ticks = iter(range(0, 10**6, 60))
    monkeypatch.setattr(watcher_module, "time", type("Clock", (), {"monotonic": lambda: next(ticks)}))
    watcher = Watcher(mongo, settings, WatchOptions(token_store="mongo", name="eu-1"))
    saves: list[tuple[object, bool, int]] = []
    store_save = watcher.store.save

    def save(token, **fields):
        written = database[settings.archive_collection].count_documents({})
        saves.append((token, fields.get("catching_up", False), written))
        store_save(token, **fields)

    watcher.store.save = save  # type: ignore[method-assign]
    watcher._open = lambda state: FakeChangeStream(resume_token=TOKEN)  # type: ignore[method-assign]
    watcher._consume = lambda stream, policy: None  # type: ignore[method-assign]
    assert watcher.lease is not None
    assert watcher.lease.try_acquire()
    try:
        watcher._stream_once(RetryPolicy(Retry.SERVICE, on_stop="end"))
    finally:
        watcher.lease.release()
    assert saves[0] == (TOKEN, True, 0)  # before the catch-up wrote anything
    assert saves[-1][:2] == (TOKEN, False)  # caught up
    during = saves[1:-1]
    assert during, "no heartbeat while the catch-up ran"
    assert all(token == TOKEN and flagged for token, flagged, _ in during)
    written = [count for *_, count in during]
    assert written == sorted(written)  # before each chunk's write, chunk after chunk
    assert written[-1] > 0
