"""The test server refuses what MongoDB refuses, and the product sends only what MongoDB accepts.

A stand-in that accepts a command MongoDB refuses is a lie in every test that sends it: 410
tests passed while every real ``batch --run`` failed on its index build (``commitQuorum`` in
the index specification: 197 on every MongoDB since 3.4). Each refusal below is MongoDB's
documented answer (``mongodb_definitions.py`` names the server definitions it comes from); the
plain ones hold on any MongoDB (``TEST_MONGODB_URI``), those that need a standalone, a
version mode or a replica-set mode of the test server are marked.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest
from pymongo import IndexModel, monitoring
from pymongo.errors import OperationFailure

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.mongodb.deployment import check_deployments, hello
from order_archiver.mongodb.lease import server_time
from order_archiver.settings import Duration, Settings
from tests.conftest import NxServer
from teststand.nx_server import running_server

pytestmark = pytest.mark.integration


class Recorder(monitoring.CommandListener):
    """The commands a client put on the wire (pymongo's command monitoring) and the server's
    refusals: what was really sent and accepted, not what a mock was called with."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []
        self.refusals: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        # A missing collection's listIndexes is MongoDB's answer, not a refusal: code 26, which
        # pymongo's list_indexes reads as "no index" (a first run asks before it creates).
        if event.command_name != "listIndexes" or event.failure.get("code") != 26:
            self.refusals.append(event.failure)


def index_keys(collection: Any) -> dict[tuple[str, ...], dict[str, Any]]:
    """Each index by its key fields (nx-27017 names indexes its own way; MongoDB keeps the name)."""
    return {tuple(k for k, _ in ix["key"]): ix for ix in collection.index_information().values()}


ARCHIVER_INDEXES = {("numero_commande",), ("date_commande",), ("archived_at",)}


@pytest.fixture(scope="module")
def replica_set_44() -> Iterator[NxServer]:
    """A test server answering as a one-member replica set of MongoDB 4.4.1 (no ``hello``)."""
    with running_server(
        {"NX_REPLICA_SET": "rs0", "NX_MONGODB_VERSION": "4.4.1"}, prefix="nx-rs44-"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def floor_server() -> Iterator[NxServer]:
    """A test server answering as MongoDB 4.4 (a one-member replica set, as every test server)."""
    with running_server({"NX_MONGODB_VERSION": "4.4"}, prefix="nx-44-") as server:
        yield server


def recording_client(uri: str) -> tuple[pymongo.MongoClient, Recorder]:
    recorder = Recorder()
    client: pymongo.MongoClient = pymongo.MongoClient(
        uri, tz_aware=True, serverSelectionTimeoutMS=5000, event_listeners=[recorder]
    )
    return client, recorder


# --- the fix: index builds as MongoDB reads them ------------------------------------------------


@pytest.mark.test_server_only("a standalone server (a replica set accepts commitQuorum)")
def test_a_batch_builds_its_indexes_on_a_standalone_that_refuses_what_mongodb_refuses(
    standalone_server, db_name
):
    """The previous build put ``commitQuorum`` in the index specification (197 on every MongoDB
    since 3.4); in the command, a standalone refuses it too (2 BadValue). The run's indexes
    are built, each ``createIndexes`` carrying its specification alone (no ``maxTimeMS``: MongoDB
    aborts a build that outlasts it)."""
    client, sent = recording_client(standalone_server.uri)
    with client:
        settings = Settings(mongodb_uri=standalone_server.uri, mongodb_database=db_name, log_dir="")
        BatchArchiver(client, settings, BatchOptions(run=True)).ensure_indexes()
        builds = [c for c in sent.commands if "createIndexes" in c]
        # One build per collection, of all the indexes it lacks: one scan each, and the three
        # builds a primary runs at once (maxNumActiveUserIndexBuilds), not fifteen (the record of
        # forgotten persons' partial index of the erasures a forget left unfinished the third).
        assert sorted((b["createIndexes"], len(b["indexes"])) for b in builds) == [
            ("Commande", 4),
            ("Commande_archive", 10),
            ("archiver_forgotten", 1),
        ]
        assert sent.refusals == []
        for build in builds:
            assert "maxTimeMS" not in build
            assert "commitQuorum" not in build
            allowed = {"key", "name", "unique", "sparse", "partialFilterExpression"}
            assert all(set(spec) <= allowed for spec in build["indexes"])
        archive = client[db_name][settings.archive_collection]
        assert index_keys(archive)[("numero_commande",)]["unique"] is True
        assert set(index_keys(archive)) >= ARCHIVER_INDEXES


@pytest.mark.test_server_only("the test server's replica-set and 4.4.1 modes")
def test_a_replica_set_gets_commit_quorum_on_the_command_and_hello_falls_back_to_is_master(replica_set_44):
    """On a replica set member the build asks a majority (``commitQuorum`` on the command, where
    4.4 reads it); on 4.4.0-4.4.1 ``hello`` is CommandNotFound and ``isMaster`` answers."""
    client, sent = recording_client(replica_set_44.uri)
    with client:
        assert hello(client)["setName"] == "rs0"
        settings = Settings(mongodb_uri=replica_set_44.uri, mongodb_database="quorum", log_dir="")
        BatchArchiver(client, settings, BatchOptions(run=True)).ensure_indexes()
        builds = [c for c in sent.commands if "createIndexes" in c]
        assert len(builds) == 3  # one per collection (the record of forgotten persons' the third)
        assert all(b["commitQuorum"] == "majority" and "maxTimeMS" not in b for b in builds)
        assert all("commitQuorum" not in spec for b in builds for spec in b["indexes"])
        assert [r for r in sent.refusals if r.get("code") != 59] == []  # 59: hello, before isMaster
        assert set(index_keys(client.quorum[settings.archive_collection])) >= ARCHIVER_INDEXES


@pytest.mark.test_server_only("the test server's 4.4.1 mode")
def test_the_server_clock_and_the_layout_check_use_is_master_where_hello_is_missing(replica_set_44):
    client, _ = recording_client(replica_set_44.uri)
    with client:
        with pytest.raises(OperationFailure) as refused:
            client.admin.command("hello")
        assert refused.value.code == 59
        now = server_time(client)
        assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)
        check_deployments(client, Settings(mongodb_uri=replica_set_44.uri, log_dir=""), client)  # no error


# --- what the test server refuses, as MongoDB does ------------------------------------------------


def test_an_index_specification_field_mongodb_does_not_define_fails_the_whole_command(nx_client, db_name):
    collection = nx_client[db_name].refusals
    with pytest.raises(OperationFailure) as refused:
        collection.create_index([("a", 1)], commitQuorum="majority")  # pymongo puts it in the spec
    assert refused.value.code == 197
    assert "commitQuorum" in str(refused.value)
    with pytest.raises(OperationFailure) as refused:
        collection.create_indexes([IndexModel([("b", 1)]), IndexModel([("c", 1)], unknownOption=True)])
    assert refused.value.code == 197
    assert set(index_keys(collection)) <= {("_id",)}  # the whole command failed: b not built either


@pytest.mark.test_server_only("a standalone server")
def test_commit_quorum_on_a_standalone_is_bad_value(standalone_server, db_name):
    with (
        pymongo.MongoClient(standalone_server.uri) as client,
        pytest.raises(OperationFailure) as refused,
    ):
        client[db_name].refusals.create_indexes([IndexModel([("a", 1)])], commitQuorum="majority")
    assert (refused.value.code, refused.value.details["errmsg"]) == (
        2,
        "Standalones can't specify commitQuorum",
    )


UNKNOWN_FIELDS: list = [
    ("find", {"find": "c", "filter": {}, "x": 1}, "find.x"),
    ("aggregate", {"aggregate": "c", "pipeline": [], "cursor": {}, "x": 1}, "aggregate.x"),
    ("count", {"count": "c", "query": {}, "x": 1}, "count.x"),
    ("distinct", {"distinct": "c", "key": "a", "x": 1}, "distinct.x"),
    ("insert", {"insert": "c", "documents": [{"a": 1}], "x": 1}, "insert.x"),
    ("update", {"update": "c", "updates": [{"q": {}, "u": {"$set": {"a": 1}}}], "x": 1}, "update.x"),
    (
        "update statement",
        {"update": "c", "updates": [{"q": {}, "u": {"$set": {"a": 1}}, "x": 1}]},
        "update.updates.x",
    ),
    ("delete", {"delete": "c", "deletes": [{"q": {}, "limit": 0}], "x": 1}, "delete.x"),
    ("delete statement", {"delete": "c", "deletes": [{"q": {}, "limit": 0, "x": 1}]}, "delete.deletes.x"),
    pytest.param(
        "findAndModify",
        {"findAndModify": "c", "query": {}, "update": {"$set": {"a": 1}}, "x": 1},
        "findAndModify.x",
        # 4.4 parsed findAndModify by hand (its IDL came later): whether it refuses is unverified.
        marks=pytest.mark.test_server_only("4.4's findAndModify parser predates its IDL definition"),
        id="findAndModify",
    ),
    (
        "createIndexes",
        {"createIndexes": "c", "indexes": [{"key": {"a": 1}, "name": "a_1"}], "x": 1},
        "createIndexes.x",
    ),
]


@pytest.mark.parametrize(
    ("label", "command", "path"),
    UNKNOWN_FIELDS,
    ids=[u[0] if isinstance(u, tuple) else u.id for u in UNKNOWN_FIELDS],
)
def test_a_field_a_command_does_not_define_is_refused(nx_client, db_name, label, command, path):
    with pytest.raises(OperationFailure) as refused:
        nx_client[db_name].command(command)
    if refused.value.code == 9:  # a real 4.4: its hand-written find and aggregate parsers
        assert "nrecognized field 'x'" in refused.value.details["errmsg"]
        return
    assert refused.value.code == 40415
    assert refused.value.details["errmsg"] == f"BSON field '{path}' is an unknown field."


def test_a_get_more_with_a_field_it_does_not_define_is_refused(nx_client, db_name):
    nx_client[db_name].c.insert_many([{"a": i} for i in range(5)])
    reply = nx_client[db_name].command({"find": "c", "batchSize": 1})
    with pytest.raises(OperationFailure) as refused:
        nx_client[db_name].command({"getMore": reply["cursor"]["id"], "collection": "c", "x": 1})
    assert refused.value.code == 40415


def test_buildinfo_in_either_spelling_gives_the_version(nx_client):
    assert nx_client.server_info()["version"]  # pymongo sends "buildinfo"
    assert nx_client.admin.command("buildinfo")["version"] == nx_client.admin.command("buildInfo")["version"]


@pytest.mark.test_server_only("the test server's replica-set and 4.4.1 modes")
def test_archive_retention_creates_changes_and_drops_its_ttl_index_as_4_4_accepts(replica_set_44):
    """ARCHIVE_RETENTION's TTL index on a 4.4 replica set: created with ``expireAfterSeconds``
    in the specification and ``commitQuorum`` on the command, its age changed in place by
    ``collMod`` (4.4 changes a TTL index's age; it cannot make a plain index a TTL one), dropped
    by name once the setting is unset; no command refused."""
    client, sent = recording_client(replica_set_44.uri)
    with client:
        base = Settings(mongodb_uri=replica_set_44.uri, mongodb_database="retention", log_dir="")
        archive = client.retention[base.archive_collection]

        def run_with(retention: Duration | None) -> dict[str, Any]:
            archiver = BatchArchiver(
                client, base.with_overrides(archive_retention=retention), BatchOptions(run=True)
            )
            archiver.ensure_indexes()
            assert archiver.report.retention is not None
            return archiver.report.retention

        def ttl() -> Any:
            return {ix["name"]: ix for ix in archive.list_indexes()}.get("archive_retention")

        assert run_with(Duration(days=3650))["action"] == "create"
        assert (dict(ttl()["key"]), ttl()["expireAfterSeconds"]) == ({"date_livraison": 1}, 3650 * 86400)
        build = next(
            c
            for c in sent.commands
            if "createIndexes" in c and c["indexes"][0]["name"] == "archive_retention"
        )
        assert build["commitQuorum"] == "majority"
        assert run_with(Duration(days=3650))["action"] == "keep"
        assert run_with(Duration(days=365))["action"] == "change"
        assert ttl()["expireAfterSeconds"] == 365 * 86400
        assert [c["index"] for c in sent.commands if "collMod" in c] == [
            {"name": "archive_retention", "expireAfterSeconds": 365 * 86400}
        ]
        assert run_with(None)["action"] == "drop"
        assert ttl() is None
        assert run_with(None)["action"] == "none"
        assert [r for r in sent.refusals if r.get("code") != 59] == []


# --- an insert refused document by document (the server's side: teststand/tests/test_version_floor.py)


@pytest.mark.test_server_only("a server answering as MongoDB 4.4")
def test_a_restore_into_4_4_reports_the_order_whose_field_name_it_refuses(floor_server, db_name):
    """An order stored with a top-level "$" field name (MongoDB 5.0+ takes it) restored into a
    4.4 source: that order is refused (2), reported with MongoDB's message, and not marked; the
    other is restored and marked."""
    from bson import ObjectId

    from order_archiver.operations.restore import RestoreSelection, restore

    odd = {"_id": ObjectId(), "numero_commande": "CMD-1", "$note": "x"}
    plain = {"_id": ObjectId(), "numero_commande": "CMD-2"}
    with pymongo.MongoClient(floor_server.uri, tz_aware=True) as client:
        archive = client[db_name]["Commande_archive"]
        archive.insert_many(
            [{"_id": o["_id"], "numero_commande": o["numero_commande"], "source": o} for o in (odd, plain)]
        )
        settings = Settings(mongodb_uri=floor_server.uri, mongodb_database=db_name, log_dir="")
        report = restore(client, settings, RestoreSelection(("CMD-1", "CMD-2")), run=True)
        assert (report.restored, report.refused) == (1, 1)
        assert (
            report.refused_orders[0].line()
            == "CMD-1 (code 2: Document can't have $ prefixed field names: $note)"
        )
        assert [d["_id"] for d in client[db_name]["Commande"].find()] == [plain["_id"]]
        marks = {d["_id"]: d.get("restored_at") for d in archive.find()}
        assert marks[odd["_id"]] is None
        assert marks[plain["_id"]] is not None


def test_list_indexes_of_a_collection_that_does_not_exist_is_namespace_not_found_and_creates_nothing(
    nx_client, db_name
):
    """MongoDB answers code 26 and creates nothing (jstests/core/list_indexes2.js); pymongo's
    ``list_indexes`` reads that as no index. nx-27017 listed an ``_id`` index and created the
    collection: a `doctor`, which writes nothing, left the archive collection behind."""
    database = nx_client[db_name]
    with pytest.raises(OperationFailure) as refused:
        database.command("listIndexes", "never_created")
    assert refused.value.code == 26
    assert list(database["never_created"].list_indexes()) == []
    assert "never_created" not in database.list_collection_names()


@pytest.mark.test_server_only("a standalone of its own: the suite's servers are replica sets")
def test_incremental_runs_on_a_standalone_say_why_they_read_delivery_stamps_only(
    standalone_server, db_name, caplog
):
    """A standalone has no change streams (40573): each run finds no position to save, and the
    next, incremental, reads delivery stamps only and says so, with the reason and --full, in its
    log: not as a warning, which a new user's `-q` cron mailed on every run (a standalone's
    property, no news)."""
    from tests.helpers import seed_database

    caplog.set_level("INFO")
    settings = Settings(mongodb_uri=standalone_server.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(standalone_server.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        seed_database(client[db_name], settings, 60, seed=11, p_anomalies=0.0)
        first = BatchArchiver(client, settings, BatchOptions(run=True)).run()
        second = BatchArchiver(client, settings, BatchOptions(run=True)).run()
    assert (first.mode, second.mode) == ("full", "incremental")
    assert [w for w in second.warnings if "change-stream position" in w] == []
    said = [r for r in caplog.records if "change-stream position" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in said] == [
        (
            "INFO",
            "no change-stream position saved (a standalone server has no change streams): this "
            "incremental run reads delivery stamps only (batch --run --full reads the orders "
            "delivered with older stamps)",
        )
    ]


@pytest.mark.test_server_only("a standalone of its own: the suite's servers are replica sets")
def test_a_standalone_incremental_run_says_what_it_cannot_see_and_the_command_that_does(
    standalone_server, db_name
):
    """A new user's try: `batch --run`, then `simulate.py` adding orders delivered hours before,
    then `batch --run` said "0 delivered since ..." and the user took it for a bug (on a
    standalone, which has no change streams, an incremental run reads by delivery stamp alone;
    only the full sweep finds them). The run's report says so, and names the command that
    archives them now; that command does; status names it too."""
    from bson import ObjectId

    from order_archiver.mongodb.changes import STANDALONE
    from order_archiver.operations.status import collect_status
    from tests.helpers import seed_database

    settings = Settings(mongodb_uri=standalone_server.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(standalone_server.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        seed_database(client[db_name], settings, 40, seed=12, p_anomalies=0.0)
        BatchArchiver(client, settings, BatchOptions(run=True)).run()
        orders = client[db_name][settings.orders_collection]
        late = dict(orders.find_one({"status": "livrée"}), _id=ObjectId(), numero_commande="CMD-LATE-1")
        now = server_time(client)
        late.update(date_commande=now - timedelta(hours=4), date_livraison=now - timedelta(hours=3))
        orders.insert_one(late)  # delivered 3 hours ago, added now: before the next run's stamps
        second = BatchArchiver(client, settings, BatchOptions(run=True)).run()
        status = collect_status(client, settings)
        full = BatchArchiver(client, settings, BatchOptions(run=True, full=True)).run()
    assert (second.mode, second.archived, second.stamps_only) == ("incremental", 0, STANDALONE)
    said = second.lines()[1]
    assert said.startswith(
        f"{STANDALONE}: an order delivered before {second.since.isoformat()} but added since"
    )
    assert "waits for the full sweep due by" in said
    assert "(in 7d; BATCH_FULL_SWEEP_EVERY)" in said
    assert said.endswith("python main.py batch --run --full archives it now")
    installed = second.lines(program="order-archiver")[1]  # the command as the user typed it
    assert installed.endswith("; order-archiver batch --run --full archives it now")
    assert "(incremental, by delivery stamp only)" in second.summary_line()
    assert any("python main.py batch --run --full archives them now" in p for p in status.problems)
    assert full.archived == 1
