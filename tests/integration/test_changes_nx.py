"""What a scheduled ``batch --run`` reads of the orders' change stream since its last pass
(order_archiver/mongodb/changes.py), at the wire, on test servers whose knobs scale down what
a real deployment does: change events stamped by a clock ahead of the one the pass reads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.settings import Duration, Settings
from tests.helpers import archived_ids, deliver, expected_archive_ids, pending_ids, seed_database
from teststand.nx_server import NxServer

pytestmark = pytest.mark.integration


@contextmanager
def knobbed_server(folder: Path, db_name: str, **knobs: str) -> Iterator[tuple[Any, Settings]]:
    """A test server of its own with ``knobs`` in its environment: a client and the settings."""
    server = NxServer(folder, env=knobs).start()
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            yield client, Settings(mongodb_uri=server.uri, mongodb_database=db_name, log_dir="")
    finally:
        server.stop()


def batch(client: Any, settings: Settings, **options: Any) -> Any:
    return BatchArchiver(client, settings, BatchOptions(run=True, **options)).run()


@pytest.mark.test_server_only("the test server's event clock knob (NX_EVENT_CLOCK_AHEAD_S)")
def test_changes_stamped_by_a_clock_ahead_of_the_pass_are_read_by_their_position(tmp_path, db_name):
    """A change event carries the time of the primary that wrote it (``wallTime``,
    ``clusterTime``: MongoDB manual, "Change Events"); behind ``mongos`` that is a shard's
    clock, which may run ahead of the router's clock the pass reads when it begins. Here the
    events' clock runs an hour ahead of ``hello``'s: every change since the last pass looks
    "after this pass began". A read that stopped on the time read none of them, and no later
    pass would either (each resumes from the position the last one saved); read by their
    position (resume tokens sort in stream order) the late deliveries and the correction are
    archived by the next run."""
    with knobbed_server(tmp_path / "nx", db_name, NX_EVENT_CLOCK_AHEAD_S="3600") as (client, settings):
        database = client[db_name]
        dataset = seed_database(database, settings, 200, seed=61, p_anomalies=0.0)
        assert batch(client, settings).mode == "full"
        late = pending_ids(dataset, 6)
        deliver(database["Commande"], late, when=datetime.now(UTC) - timedelta(hours=5))  # stamped 5 h ago
        corrected = sorted(expected_archive_ids(dataset))[0]
        database["Commande"].update_one({"_id": corrected}, {"$set": {"remboursement": 3.0}})
        report = batch(client, settings)
        assert report.mode == "incremental"
        assert (report.archived, report.revised, report.changes_read) == (6, 1, 7)
        assert archived_ids(database) == expected_archive_ids(dataset) | set(late)
        assert database["Commande_archive"].find_one({"_id": corrected})["source"]["remboursement"] == 3.0
        again = batch(client, settings)
        assert (again.archived, again.revised) == (0, 0)


# MongoDB's limit on a command: 16 MB (maxBsonObjectSize) + 16 KiB, checked by the driver
# before it sends (pymongo raises DocumentTooLarge, not a PyMongoError: nothing retries it).
# One $in of ~850,000 ObjectIds passes it; with the test server's maxBsonObjectSize at 32 KiB,
# ~2,500 do.
# (The history kept: a real oplog keeps hours of changes; nx-27017 keeps 1,000 rows past its
# slowest open stream by default, fewer than the changes here.)
SMALL_COMMANDS = {"NX_MAX_BSON_OBJECT_SIZE": str(16 * 1024), "NX_RESUME_RETENTION_ROWS": "100000"}


@pytest.mark.test_server_only("the test server's maxBsonObjectSize knob (NX_MAX_BSON_OBJECT_SIZE)")
def test_thousands_of_changes_since_the_last_pass_make_no_command_over_the_limit(tmp_path, db_name):
    """Every order delivered or corrected since the last pass is read, however many: with the
    limit scaled down, 2,000 changed orders stand for the million a real deployment can
    change between two runs (a restore, a bulk correction). A pass that sent them in one
    ``$in`` (the incremental selection, the full pass's anti-join) failed on every run until
    the oplog rolled past its position; each chunk of ids is now a read of its own."""
    with knobbed_server(tmp_path / "nx", db_name, **SMALL_COMMANDS) as (client, settings):
        assert client.admin.command("hello")["maxBsonObjectSize"] == 16 * 1024
        database = client[db_name]
        dataset = seed_database(database, settings, 2400, seed=62, p_anomalies=0.0, p_delivered=0.1)
        first = batch(client, settings, batch_size=500)
        assert (first.mode, first.archived) == ("full", len(expected_archive_ids(dataset)))
        late = set(pending_ids(dataset))
        # one $in of them all: over 16 KiB + 16 KiB (~1,850 ObjectIds), a chunk of 1,000 under it
        assert len(late) > 2000
        database["Commande"].update_many(  # delivered late, stamped a day ago: only the stream says so
            {"status": {"$ne": "livrée"}},
            {"$set": {"status": "livrée", "date_livraison": datetime.now(UTC) - timedelta(days=1)}},
        )
        incremental = batch(client, settings, batch_size=500)
        assert incremental.mode == "incremental", incremental.warnings
        assert (incremental.warnings, incremental.archived, incremental.changes_read) == (
            [],
            len(late),
            len(late),
        )
        assert archived_ids(database) == expected_archive_ids(dataset) | late
        database["Commande"].update_many({}, {"$set": {"remboursement": 1.0}})  # every order corrected
        full = batch(client, settings, batch_size=500, full=True)
        assert (full.mode, full.archived, full.revised) == ("full", 0, len(archived_ids(database)))
        assert database["Commande_archive"].count_documents({"source.remboursement": 1.0}) == len(
            archived_ids(database)
        )


# A new change stream's position (the one a pass takes when it begins) is a high-water mark
# just past the last oplog entry; a stream passes it only at the next entry: on an idle
# deployment the primary's periodic no-op, every periodicNoopIntervalSecs (10 s by default;
# every shard's on a sharded cluster). MongoDB: resume_token.cpp (high-water-mark tokens),
# document_source_change_stream*.cpp and plan_executor_pipeline.cpp (the postBatchResumeToken
# of a getMore is the last oplog entry it scanned), the manual's periodicNoopIntervalSecs. The
# test server answers positions so (teststand/stream_positions.py); its no-op interval here is 10
# minutes: no no-op comes during the test, as none comes within a run's first seconds on a
# quiet night.
QUIET = {"NX_PERIODIC_NOOP_S": "600"}


@pytest.mark.test_server_only("the test server's periodic no-op interval (NX_PERIODIC_NOOP_S)")
def test_runs_on_a_quiet_deployment_read_each_change_once_and_never_stall(tmp_path, db_name):
    """Night after night with nothing or little written since the last run: each run reads the
    changes since the last one to where the stream stands (its end, short of the pass's
    high-water mark) and completes, without a warning and without waiting for the next oplog
    entry; the next run reads on from there, not from further back."""
    with knobbed_server(tmp_path / "nx", db_name, **QUIET) as (client, settings):
        database = client[db_name]
        dataset = seed_database(database, settings, 200, seed=63, p_anomalies=0.0)
        assert batch(client, settings).mode == "full"
        pending = pending_ids(dataset)
        old_stamp = datetime.now(UTC) - timedelta(hours=5)
        deliver(database["Commande"], pending[:5], when=old_stamp)
        second = batch(client, settings)
        assert (second.mode, second.warnings, second.archived, second.changes_read) == (
            "incremental",
            [],
            5,
            5,
        )
        quiet = batch(client, settings)  # nothing written since
        assert (quiet.mode, quiet.warnings, quiet.archived, quiet.changes_read) == ("incremental", [], 0, 0)
        assert quiet.seconds < 5
        deliver(database["Commande"], pending[5:7], when=old_stamp)
        fourth = batch(client, settings)
        assert (fourth.warnings, fourth.archived, fourth.changes_read) == ([], 2, 2)
        assert archived_ids(database) == expected_archive_ids(dataset) | set(pending[:7])


@pytest.mark.test_server_only("drops and re-creates the orders collection; the test server's no-op knob")
def test_an_invalidate_in_the_history_is_passed_once_and_the_stream_read_after_it(tmp_path, db_name):
    """``mongorestore --drop`` between two runs (a drop, then every order inserted again): the
    orders' change stream holds an ``invalidate`` that ends every stream resumed from before
    it. The next run reads the changes before it, reads the window after it by delivery stamp
    and says so, and saves a position past it; the run after reads the stream again (a late
    delivery with an old stamp is archived), with no word of the invalidate."""
    with knobbed_server(tmp_path / "nx", db_name, **QUIET) as (client, settings):
        database = client[db_name]
        dataset = seed_database(database, settings, 200, seed=64, p_anomalies=0.0)
        assert batch(client, settings).mode == "full"
        pending = pending_ids(dataset)
        old_stamp = datetime.now(UTC) - timedelta(hours=5)
        deliver(database["Commande"], pending[:2], when=old_stamp)  # before the restore: from the stream
        orders = list(database["Commande"].find())
        database.drop_collection("Commande")  # mongorestore --drop
        database["Commande"].insert_many(orders)
        deliver(database["Commande"], pending[2:5])  # after it, stamped now
        restored = batch(client, settings)
        assert restored.mode == "incremental"
        assert [w for w in restored.warnings if "invalidated" in w] == restored.warnings
        assert len(restored.warnings) == 1
        assert restored.archived == 5
        deliver(database["Commande"], pending[5:8], when=old_stamp)
        after = batch(client, settings)
        assert (after.warnings, after.archived, after.changes_read) == ([], 3, 3)
        assert archived_ids(database) == expected_archive_ids(dataset) | set(pending[:8])


def test_a_limit_run_that_reads_an_order_past_the_retention_leaves_no_correction_behind(tmp_path, db_name):
    """``--limit N`` ends the pass's aggregation at N orders (``$limit``); an order read but not
    archived (past ARCHIVE_RETENTION: here a refund on an order delivered 400 days ago) does not
    count against N. The run took such a read, ended at its ``$limit`` with a chunk short of N,
    for the end of the window: it completed the pass and saved its change-stream position, past
    the changes beyond the cut. The correction of an archived order among them was then read by
    no run, not even ``--full`` (it skips the orders the archive holds, but for the changes since
    the last pass): the archive kept the version before the refund for good."""
    with knobbed_server(tmp_path / "nx", db_name) as (client, settings):
        settings = replace(settings, archive_retention=Duration(days=365))
        orders = client[db_name]["Commande"]
        dataset = seed_database(client[db_name], settings, 200, seed=63, p_anomalies=0.0)
        delivered = sorted(expected_archive_ids(dataset))
        old, corrected = delivered[0], delivered[-1]  # the first and the last in _id order
        orders.update_one({"_id": old}, {"$set": {"date_livraison": datetime.now(UTC) - timedelta(days=400)}})
        assert batch(client, settings).archived == len(delivered) - 1  # the old one is past the retention
        late = [one for one in pending_ids(dataset) if one < corrected][:10]
        deliver(orders, late)
        for one in (old, corrected):
            orders.update_one({"_id": one}, {"$set": {"remboursement": 3.0}})
        cut = batch(client, settings, limit=10)  # the old one and 9 of the 10 late ones read
        assert (cut.mode, cut.past_retention, cut.archived, cut.completed) == ("incremental", 1, 9, True)
        batch(client, settings, limit=10)
        batch(client, settings, full=True)
        assert archived_ids(client[db_name]) == set(delivered[1:]) | set(late)
        assert (
            client[db_name]["Commande_archive"].find_one({"_id": corrected})["source"]["remboursement"] == 3.0
        )
