"""A leader whose lease runs out in the middle of a micro-batch's write, and the standby that
takes over meanwhile: what the old leader was writing must never replace what its successor
archived since (a correction made while it was paused). The same scenario runs at the wire in
tests/integration/test_watch_takeover_nx.py."""

from datetime import UTC, datetime, timedelta

import pytest

from order_archiver.batch.job import BatchArchiver
from order_archiver.batch.report import BatchOptions
from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.mongodb.lease import LeaseLost
from order_archiver.settings import Settings
from order_archiver.watch.watcher import Watcher, WatchOptions
from tests.helpers import expected_archive_ids, seed_database

CORRECTED = "12 rue corrigée"
SCENARIOS = pytest.mark.parametrize(
    ("archived_before", "purged"), [(False, False), (False, True), (True, False)]
)


def _event(order_id, n):
    return {
        "_id": {"_data": f"t{n}"},
        "operationType": "update",
        "documentKey": {"_id": order_id},
        "fullDocument": {"_id": order_id, "status": "livrée"},
    }


def paused_leader_after_a_takeover(
    client, settings: Settings, *, archived_before: bool, purged: bool
) -> dict:
    """The old leader reads an order, passes its fence (its lease held), then stops past its
    lease (a GC pause, a frozen VM). Meanwhile the standby takes over, the order is corrected (a
    fixed address) and the new leader archives the correction and saves its token; with
    ``purged`` a ``batch --purge-source`` then deletes the corrected order from the source (the
    archive holds it in that version); with ``archived_before`` the old leader's micro-batch is
    itself a correction of an order archived before (a third version). The old leader wakes
    and finishes its write. What the archive holds of the order at the end is returned."""
    database = client[settings.mongodb_database]
    dataset = seed_database(database, settings, 30, seed=6, p_anomalies=0.0)
    archive = database[settings.archive_collection]
    keys, options = ARCHIVE_INDEXES[0]
    archive.create_index(keys, **options)
    order_id = sorted(expected_archive_ids(dataset), key=str)[0]
    orders = database[settings.orders_collection]
    old = Watcher(client, settings, WatchOptions(token_store="mongo", name="eu-1"))
    new = Watcher(client, settings, WatchOptions(token_store="mongo", name="eu-1"))
    assert old.lease is not None
    assert new.lease is not None
    assert old.lease.try_acquire()
    if archived_before:
        old._archive([_event(order_id, 0)])
        orders.update_one({"_id": order_id}, {"$set": {"pourboire": 2.5}})  # its micro-batch's correction
    fence = old.lease.check
    paused = []

    def paused_after_the_fence() -> None:
        fence()  # the old leader holds its lease here: the fence lets it write
        if paused:
            return
        paused.append(1)
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

    object.__setattr__(old.events.step, "fence", paused_after_the_fence)
    try:
        old._archive([_event(order_id, 1)])  # the version it read before its pause
        assert paused
        assert archive.count_documents({"_id": order_id}) == 1
        with pytest.raises(LeaseLost):  # its token, saved under its old term, is refused
            old._save_token({"_data": "t1"})
        return archive.find_one({"_id": order_id})
    finally:
        new.lease.release()
        old.lease.release()


@SCENARIOS
def test_a_leader_paused_after_its_fence_never_writes_back_an_older_version(mongo, archived_before, purged):
    """The old leader, woken, found the archive holding another version than its own and revised
    it back to the one it had read: the correction was gone from the archive (with the purge,
    gone for good), and no later event brought it back. The watcher now reads the archive's
    copies before the orders and replaces only a copy still as it read it
    (``ArchiveWriter.write(expected=...)``): the old leader reads the order again and finds the
    archive up to date."""
    settings = Settings(simulation=True, log_dir="")
    held = paused_leader_after_a_takeover(mongo, settings, archived_before=archived_before, purged=purged)
    assert held["source"]["adresse_livraison"] == CORRECTED


def test_a_number_freed_by_a_correction_in_a_micro_batch_still_goes_to_the_new_order(mongo):
    """A micro-batch first asks nothing of the archive before the orders, so a correction is
    never revised by its first reading: it is read again after the archive's copy. Order A
    archived as N and corrected to M, new order B numbered N, in one micro-batch: B's insert
    met A's N in the first reading, and is read again with A instead of rejected, then archived
    once A's revision freed N (as a batch chunk does: test_archive_inserts.py). Without the
    orders refused for a taken number read again with the conflicts, B was rejected."""
    settings = Settings(simulation=True, log_dir="")
    database = mongo[settings.mongodb_database]
    dataset = seed_database(database, settings, 30, seed=6, p_anomalies=0.0)
    archive = database[settings.archive_collection]
    keys, options = ARCHIVE_INDEXES[0]
    archive.create_index(keys, **options)
    a, b = sorted(expected_archive_ids(dataset), key=str)[:2]
    orders = database[settings.orders_collection]
    watcher = Watcher(mongo, settings, WatchOptions())
    watcher._archive([_event(a, 0)])
    number = orders.find_one({"_id": a})["numero_commande"]
    orders.update_one({"_id": a}, {"$set": {"numero_commande": "CMD-CORRIGÉE"}})
    orders.update_one({"_id": b}, {"$set": {"numero_commande": number}})
    watcher._archive([_event(b, 1), _event(a, 2)])
    assert archive.find_one({"_id": a})["numero_commande"] == "CMD-CORRIGÉE"
    assert archive.find_one({"_id": b})["numero_commande"] == number
    assert database[settings.rejects_collection].count_documents({}) == 0
    assert (watcher.stats.archived, watcher.stats.revised, watcher.stats.rejected) == (2, 1, 0)
