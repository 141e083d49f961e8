"""Index builds on collections that already hold many documents, at the wire (#30 item 1).

MongoDB aborts an index build whose ``createIndexes`` outlasts its ``maxTimeMS``: the command's
wait is interrupted and it "defensively abort[s] the index build" (src/mongo/db/commands/
create_indexes_cmd.cpp, 4.4-8.0; for a two-phase build on every member). On a collection of
millions of documents a build takes longer than any such limit, so an index asked with one is
never built. A build asked without one goes on on the server when its client stops waiting
(createIndexes does not mark itself killed on disconnect: SERVER-101507), and an identical
createIndexes meeting it waits for it (IndexBuildAlreadyInProgress, 276). The test server scales
this down (teststand/index_catalog.py): over ``NX_INDEX_BUILD_ABORT_OVER`` documents a createIndexes
carrying maxTimeMS answers 50 MaxTimeMSExpired and builds nothing, and a build takes
``NX_INDEX_BUILD_SECONDS``, listed in progress meanwhile."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest
from bson import ObjectId

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.errors import ArchiverError
from order_archiver.operations.status import collect_status
from order_archiver.settings import Settings
from tests.conftest import NxServer
from tests.integration.test_mongodb_refusals import index_keys, recording_client

pytestmark = [pytest.mark.integration, pytest.mark.test_server_only("the test server's index build knobs")]

LARGE = 60  # documents: "a large collection" for the knobs below
NOW = datetime.now(UTC)


def start(tmp_path_factory: Any, name: str, env: dict[str, str]) -> NxServer:
    return NxServer(tmp_path_factory.mktemp(name), env=env).start()


@pytest.fixture(scope="module")
def aborting(tmp_path_factory: Any) -> Iterator[NxServer]:
    """Builds over LARGE documents outlast any maxTimeMS: aborted (50), never built."""
    server = start(tmp_path_factory, "abort", {"NX_INDEX_BUILD_ABORT_OVER": str(LARGE)})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slow(tmp_path_factory: Any) -> Iterator[NxServer]:
    """As ``aborting``, and a build over LARGE documents takes 4 s."""
    env = {"NX_INDEX_BUILD_ABORT_OVER": str(LARGE), "NX_INDEX_BUILD_SECONDS": "4"}
    server = start(tmp_path_factory, "slow", env)
    yield server
    server.stop()


def settings_for(uri: str, db_name: str, **overrides: Any) -> Settings:
    return Settings(mongodb_uri=uri, mongodb_database=db_name, log_dir="", **overrides)


def fill(client: pymongo.MongoClient, settings: Settings, archived: int, delivered: int) -> None:
    """An archive of ``archived`` documents with no index but ``_id`` (an archive from before the
    archiver's indexes, or restored without them), and ``delivered`` orders to archive."""
    database = client[settings.mongodb_database]
    when = NOW - timedelta(days=3)
    database[settings.archive_collection].insert_many(
        [
            {"_id": ObjectId(), "numero_commande": f"OLD-{n}", "date_commande": when, "date_livraison": when}
            for n in range(archived)
        ]
    )
    database[settings.orders_collection].insert_many(
        [
            {
                "_id": ObjectId(),
                "numero_commande": f"CMD-{n}",
                "status": settings.delivered_status,
                "date_commande": when,
                "date_livraison": when,
                "items": [],
            }
            for n in range(delivered)
        ]
    )


def in_progress(collection: Any) -> set[str]:
    reply = collection.database.command({"listIndexes": collection.name, "includeBuildUUIDs": True})
    return {e["spec"]["name"] for e in reply["cursor"]["firstBatch"] if "buildUUID" in e}


def test_the_indexes_of_a_large_archive_and_source_get_built(aborting, db_name):
    """Before: every createIndexes carried maxTimeMS, every build on the large archive and source
    was aborted, the unique index among them: every run failed, on every run. Now the builds
    carry no time limit and complete."""
    client, sent = recording_client(aborting.uri)
    with client:
        settings = settings_for(aborting.uri, db_name)
        fill(client, settings, archived=LARGE * 2, delivered=LARGE + 10)
        report = BatchArchiver(client, settings, BatchOptions(run=True)).run()
        assert report.archived == LARGE + 10
        assert report.indexes == []
        builds = [c for c in sent.commands if "createIndexes" in c]
        assert builds
        assert all("maxTimeMS" not in c for c in builds)
        archive = index_keys(client[db_name][settings.archive_collection])
        assert archive[("numero_commande",)]["unique"] is True
        assert {("forgotten_by", "date_livraison"), ("pii_policy",)} <= set(archive)
        assert ("status", "date_livraison") in index_keys(client[db_name][settings.orders_collection])


def test_the_test_server_aborts_a_build_that_carries_max_time_ms_on_a_large_collection(aborting, db_name):
    """The knob itself: what MongoDB answers when a build outlasts the command's maxTimeMS."""
    with pymongo.MongoClient(aborting.uri) as client:
        big = client[db_name]["big"]
        big.insert_many([{"x": n} for n in range(LARGE + 1)])
        with pytest.raises(pymongo.errors.ExecutionTimeout) as refused:
            big.create_index("x", maxTimeMS=60_000)
        assert refused.value.code == 50
        assert ("x",) not in index_keys(big)
        big.create_index("x")  # without a limit: built
        assert ("x",) in index_keys(big)


def test_a_build_that_outlasts_the_wait_is_pending_and_never_restarted_nor_aborted(slow, db_name):
    """The run waits INDEX_BUILD_WAIT_S (1 s) for builds that take 4 s: they are pending. The
    archive's unique index among them, the run archives nothing (a numero could be archived
    twice) and says why; the next run finds them in progress (listIndexes, includeBuildUUIDs)
    and starts no build; once the server has finished them, a run archives."""
    client, sent = recording_client(slow.uri)
    with client:
        settings = settings_for(slow.uri, db_name, index_build_wait_s=1)
        fill(client, settings, archived=LARGE * 2, delivered=5)
        archive = client[db_name][settings.archive_collection]
        first = BatchArchiver(client, settings, BatchOptions(run=True))
        with pytest.raises(ArchiverError, match="unique index numero_commande_1 is being built"):
            first.run()
        pending = {i["index"]: i for i in first.report.indexes}
        assert pending["numero_commande_1"]["state"] == "pending"
        assert "nothing is archived" in pending["numero_commande_1"]["cost"]
        assert any("ARCHIVE_PII_RETENTION scans the archive" in w for w in first.report.warnings)
        assert archive.count_documents({"numero_commande": {"$regex": "^CMD-"}}) == 0

        status = collect_status(client, settings)
        assert any("numero_commande_1 is being built" in p for p in status.problems)
        assert any("being built on the server" in line for line in status.lines())

        def archive_builds() -> int:
            return len([c for c in sent.commands if c.get("createIndexes") == settings.archive_collection])

        builds_before = archive_builds()
        second = BatchArchiver(client, settings, BatchOptions(run=True))
        with pytest.raises(ArchiverError, match="being built"):
            second.run()
        assert archive_builds() == builds_before  # none started again

        # listIndexes lists an index in progress as if it were ready, unless asked for build UUIDs
        assert ("numero_commande",) in index_keys(archive)
        assert "numero_commande_1" in in_progress(archive)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and in_progress(archive):
            time.sleep(0.2)
        assert in_progress(archive) == set()  # built, not aborted, though no client waits for them
        assert index_keys(archive)[("numero_commande",)]["unique"] is True
        third = BatchArchiver(client, settings, BatchOptions(run=True)).run()
        assert third.archived == 5
        assert third.indexes == []


def test_one_build_refused_whole_is_tried_index_by_index(nx_server, db_name):
    """The archive's indexes go in one createIndexes (one scan, one of the 3 builds a primary
    runs at once). MongoDB refuses such a command whole when one of its indexes conflicts with
    one the collection has (86 IndexKeySpecsConflict: the same name on another key): the others
    are then built one by one, and the one refused is named as missing, with MongoDB's reason."""
    with pymongo.MongoClient(nx_server.uri, tz_aware=True) as client:
        settings = settings_for(nx_server.uri, db_name)
        fill(client, settings, archived=3, delivered=2)
        archive = client[db_name][settings.archive_collection]
        archive.create_index([("policy", 1)], name="pii_policy_1")  # a user's index, in the way
        report = BatchArchiver(client, settings, BatchOptions(run=True)).run()
        assert report.archived == 2
        assert [(i["index"], i["state"]) for i in report.indexes] == [("pii_policy_1", "missing")]
        assert "86" in report.indexes[0]["problem"] or "conflict" in report.indexes[0]["problem"].lower()
        built = set(index_keys(archive))
        assert {("numero_commande",), ("date_commande",), ("forgotten_by", "date_livraison")} <= built
        assert ("pii_policy",) not in built


def test_a_timeout_in_the_uri_puts_no_time_limit_on_an_index_build(aborting, db_name):
    """A ``timeoutMS`` in MONGODB_URI (client-side operation timeout, pymongo 4.2+) is sent as
    ``maxTimeMS`` on every command, an index build included, unless the build opts out; MongoDB
    then aborts a build that outlasts it, as it aborts one that outlasts an explicit maxTimeMS.
    ``pymongo.timeout(None)`` does not opt out (it inherits the client's); ``timeout(0)`` does."""
    uri = f"{aborting.uri.rstrip('/')}/?timeoutMS=60000"
    client, sent = recording_client(uri)
    with client:
        settings = settings_for(uri, db_name)
        fill(client, settings, archived=LARGE * 2, delivered=3)
        report = BatchArchiver(client, settings, BatchOptions(run=True)).run()
        builds = [c for c in sent.commands if "createIndexes" in c]
        assert builds
        assert [c.get("maxTimeMS") for c in builds] == [None] * len(builds)
        assert report.archived == 3
        assert report.indexes == []


def test_an_index_on_numero_commande_that_is_not_unique_is_not_the_archives_unique_index(nx_server, db_name):
    """An archive with ``numero_commande_1`` built without ``unique`` (by hand, or restored
    without its options): the run's build is refused (85, the same name with other options)
    and nothing is archived: two orders sharing a numero would both be, against the contract.
    Before, the index's key alone made it "ready"."""
    with pymongo.MongoClient(nx_server.uri, tz_aware=True) as client:
        settings = settings_for(nx_server.uri, db_name)
        fill(client, settings, archived=2, delivered=3)
        archive = client[db_name][settings.archive_collection]
        archive.create_index([("numero_commande", 1)], name="numero_commande_1")  # not unique
        archiver = BatchArchiver(client, settings, BatchOptions(run=True))
        with pytest.raises(ArchiverError, match="cannot create the archive's unique index numero_commande_1"):
            archiver.run()
        assert archive.count_documents({"numero_commande": {"$regex": "^CMD-"}}) == 0
        assert "unique" not in index_keys(archive)[("numero_commande",)]


def test_an_archive_holding_two_orders_of_one_number_names_the_duplicate(nx_server, db_name):
    """An archive written without the unique index (an earlier version's watcher, started before
    any batch --run) holding two orders of one numero_commande: MongoDB refuses the unique index
    over them (11000, ``dup key``). The run archives nothing and its one line names the number,
    which the operator needs to repair without losing either order (docs/deployment.md, start
    order): each twin is a distinct order, perhaps purged from the source already."""
    with pymongo.MongoClient(nx_server.uri, tz_aware=True) as client:
        settings = settings_for(nx_server.uri, db_name)
        fill(client, settings, archived=2, delivered=3)
        archive = client[db_name][settings.archive_collection]
        archive.insert_one({"_id": ObjectId(), "numero_commande": "OLD-1", "date_commande": NOW})
        archiver = BatchArchiver(client, settings, BatchOptions(run=True))
        with pytest.raises(ArchiverError, match="numero_commande_1") as raised:
            archiver.run()
        assert "share numero_commande 'OLD-1'" in str(raised.value), raised.value
        assert "restore --id ID --run" in str(raised.value)  # never a bare delete: the twin is an order
        assert archive.count_documents({"numero_commande": {"$regex": "^CMD-"}}) == 0


def test_the_time_limit_ends_the_wait_for_a_build_which_is_left_running_and_said(slow, db_name):
    """#34: a build on a large archive is the heaviest write of all, and INDEX_BUILD_WAIT_S may be
    longer than the run's time. Before: --max-runtime 1s waited the whole build (4 s here; hours
    on a large archive), then archived past its time. Now the limit ends the wait: the run ends
    cleanly (exit 0, ``ended`` max_runtime), nothing written, each build left running on the
    server (MongoDB goes on with a build its client stops waiting for: SERVER-101507) and said
    pending; the next run finds it in progress and starts none."""
    client, sent = recording_client(slow.uri)
    with client:
        settings = settings_for(slow.uri, db_name, index_build_wait_s=60)
        fill(client, settings, archived=LARGE * 2, delivered=5)
        archive = client[db_name][settings.archive_collection]
        started = time.monotonic()
        options = BatchOptions(run=True, max_runtime=timedelta(seconds=1))
        report = BatchArchiver(client, settings, options).run()
        took = time.monotonic() - started
        assert (report.ended, report.completed) == ("max_runtime", False)
        assert took < 3.0  # not the build's 4 s
        pending = {i["index"]: i["state"] for i in report.indexes}
        assert pending["numero_commande_1"] == "pending"
        assert "ended at its time limit (--max-runtime)" in report.summary_line()
        assert archive.count_documents({"numero_commande": {"$regex": "^CMD-"}}) == 0
        assert "numero_commande_1" in in_progress(archive)  # left running, not aborted
        builds = len([c for c in sent.commands if c.get("createIndexes") == settings.archive_collection])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and in_progress(archive):
            time.sleep(0.2)
        after = BatchArchiver(client, settings, BatchOptions(run=True)).run()
        assert (after.ended, after.archived) == ("completed", 5)
        assert (
            len([c for c in sent.commands if c.get("createIndexes") == settings.archive_collection]) == builds
        )
