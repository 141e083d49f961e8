"""Batch archiving against a real wire protocol (nx-27017)."""

from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from bson import ObjectId

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.cli.main import main
from order_archiver.context import RunContext
from order_archiver.operations.doctor import run_doctor
from order_archiver.orders.enrichment import finish_archive_document
from order_archiver.settings import Settings, parse_date_bound
from order_archiver.simulation.generator import default_anchor, strip_markers
from tests.helpers import assert_no_duplicates, delivered_rejects, expected_archive_ids, seed_database
from tests.integration.test_mongodb_refusals import recording_client

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def python_join(order, dataset):
    """The enrichment computed without any database: what the pipeline must produce."""
    by_id = {}
    for collection in (dataset.clients, dataset.couriers, dataset.restaurants, dataset.menus):
        by_id.update({doc["_id"]: doc for doc in collection})
    raw = dict(strip_markers(order))  # the order as stored: what the archive's "source" keeps
    for field, joined in (
        ("client_id", "_x_client"),
        ("livreur_id", "_x_livreur"),
        ("restaurant_id", "_x_restaurant"),
    ):
        raw[joined] = [by_id[order[field]]] if order.get(field) in by_id else []
    raw["_x_menus"] = [by_id[i["menu_id"]] for i in order.get("items") or [] if i["menu_id"] in by_id]
    return finish_archive_document(raw, archived_by="batch", archived_at=NOW)


@pytest.fixture
def seeded(nx_client, nx_settings):
    return seed_database(nx_client[nx_settings.mongodb_database], nx_settings, 800, p_anomalies=0.12, seed=11)


def test_archive_set_and_contents_are_exact_on_dirty_data(nx_client, nx_settings, seeded):
    report = BatchArchiver(
        nx_client, nx_settings, BatchOptions(run=True, batch_size=50), context=RunContext(clock=lambda: NOW)
    ).run()
    archive = nx_client[nx_settings.mongodb_database][nx_settings.archive_collection]
    documents = {d["_id"]: d for d in archive.find()}
    expected = expected_archive_ids(seeded)
    assert set(documents) == expected
    assert report.archived == len(expected)
    assert report.rejected == delivered_rejects(seeded)
    orders = {o["_id"]: o for o in seeded.orders}
    for order_id, document in documents.items():
        assert document == python_join(orders[order_id], seeded), order_id
    anomalies = {a for d in documents.values() for a in d["anomalies"]}
    assert {"client_missing", "restaurant_missing", "menu_missing", "no_items"} <= anomalies
    assert_no_duplicates(archive)
    indexes = archive.index_information()
    assert any(ix.get("unique") and ix["key"] == [("numero_commande", 1)] for ix in indexes.values())


def test_dry_run_writes_nothing(nx_client, nx_settings, seeded):
    database = nx_client[nx_settings.mongodb_database]

    def contents():
        # Documents, not collection names: nx-27017 creates a collection on a read (MongoDB
        # does not), so a dry run's reads of the archive show an empty one there.
        return {name: sorted(map(str, database[name].find())) for name in database.list_collection_names()}

    before = contents()
    report = BatchArchiver(nx_client, nx_settings, BatchOptions(run=False)).run()
    assert report.would_archive == len(expected_archive_ids(seeded))
    after = contents()
    assert {k: v for k, v in after.items() if v} == before
    assert not database[nx_settings.archive_collection].index_information().get("numero_commande_1")


def test_rerun_adds_nothing(nx_client, nx_settings, seeded):
    first = BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()
    archive = nx_client[nx_settings.mongodb_database][nx_settings.archive_collection]
    before = {d["_id"]: d for d in archive.find()}
    second = BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()
    assert (second.mode, second.archived, second.already_archived) == ("incremental", 0, 0)
    full = BatchArchiver(nx_client, nx_settings, BatchOptions(run=True, full=True)).run()
    assert (full.archived, full.already_archived) == (0, first.archived)
    assert {d["_id"]: d for d in archive.find()} == before


def test_purge_moves_exactly_the_archived_orders(nx_client, nx_settings, seeded):
    database = nx_client[nx_settings.mongodb_database]
    report = BatchArchiver(
        nx_client, nx_settings, BatchOptions(run=True, purge_source=True, batch_size=64)
    ).run()
    archived = {d["_id"] for d in database[nx_settings.archive_collection].find({}, {"_id": 1})}
    remaining = {d["_id"] for d in database[nx_settings.orders_collection].find({}, {"_id": 1})}
    assert report.purged == len(archived) == len(expected_archive_ids(seeded))
    assert not archived & remaining
    assert archived | remaining == {o["_id"] for o in seeded.orders}
    rejected_kept = [o["_id"] for o in seeded.orders if o.get("_dirty") == "numero_commande_missing"]
    assert set(rejected_kept) <= remaining


@pytest.mark.parametrize(
    ("date_from", "date_to"), [("yesterday", "today"), ("7d", None), ("2026-11-10", "2026-11-20T12:00:00")]
)
def test_date_windows_through_the_cli(nx_client, nx_env, db_name, nx_settings, capsys, date_from, date_to):
    dataset = seed_database(nx_client[db_name], nx_settings, 600, anchor=default_anchor(), days=30, seed=5)
    argv = ["batch", "--run", "-q", "--date-from", date_from] + (["--date-to", date_to] if date_to else [])
    code = main(argv)
    capsys.readouterr()
    low = parse_date_bound(date_from)
    high = parse_date_bound(date_to) if date_to else None
    expected = expected_archive_ids(dataset, low, high)
    archived = {d["_id"] for d in nx_client[db_name][nx_settings.archive_collection].find({}, {"_id": 1})}
    assert archived == expected
    assert code in (0, 3)
    if date_from != "2026-11-10":
        assert expected  # the window is not trivially empty


def test_string_dates_are_windowed_after_parsing(nx_client, nx_settings, seeded):
    database = nx_client[nx_settings.mongodb_database]
    stringy = [
        o for o in seeded.orders if o.get("_dirty") == "date_commande_string" and o["status"] == "livrée"
    ]
    assert stringy
    when = datetime.fromisoformat(stringy[0]["date_commande"])
    options = BatchOptions(
        run=True, date_from=when - timedelta(seconds=1), date_to=when + timedelta(seconds=1)
    )
    BatchArchiver(nx_client, nx_settings, options).run()
    archived = list(database[nx_settings.archive_collection].find())
    assert stringy[0]["_id"] in {d["_id"] for d in archived}
    assert all(options.date_from <= d["date_commande"] < options.date_to for d in archived)


def test_unreachable_server_exits_1_without_traceback_or_password(capsys, monkeypatch):
    monkeypatch.setenv(
        "MONGODB_URI", "mongodb://archiver:Hunter2-secret@127.0.0.1:9/?serverSelectionTimeoutMS=200"
    )
    monkeypatch.setenv("MONGODB_TIMEOUT_MS", "200")
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    assert main(["batch", "--run"]) == 1
    captured = capsys.readouterr()
    assert "cannot reach MongoDB: 127.0.0.1:9: connection refused" in captured.err
    assert "error: unexpected" not in captured.err  # a known failure, classified: never the catch-all
    assert "Hunter2-secret" not in captured.err + captured.out


@pytest.mark.test_server_only("puts credentials into the server's URI")
def test_bad_credentials_exit_1_with_clear_message(nx_server, capsys, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", nx_server.uri.replace("mongodb://", "mongodb://bob:Wr0ng-pass@"))
    assert main(["batch", "--run"]) == 1
    err = capsys.readouterr().err
    assert "authentication failed" in err
    assert "Wr0ng-pass" not in err


def test_two_incremental_runs_at_once_leave_the_archive_exact(nx_client, nx_settings, seeded):
    """Two scheduled runs overlapping (a slow night, a manual run): both read the same new
    deliveries, each write is an idempotent upsert, and the mark moves to a start that a
    complete pass covered."""
    import threading

    from order_archiver.mongodb.checkpoint import checkpoint_key, state_from_document
    from tests.helpers import deliver, pending_ids

    database = nx_client[nx_settings.mongodb_database]
    BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()
    late = pending_ids(seeded, 150)
    deliver(database["Commande"], late)
    reports = []

    def one_run() -> None:
        reports.append(BatchArchiver(nx_client, nx_settings, BatchOptions(run=True, batch_size=20)).run())

    runs = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(60)
    assert [r.mode for r in reports] == ["incremental", "incremental"]
    assert sum(r.archived for r in reports) == len(late)  # each order written once, by one of them
    archive = database[nx_settings.archive_collection]
    assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected_archive_ids(seeded) | set(late)
    assert_no_duplicates(archive)
    key = checkpoint_key(nx_settings, "batch", None, None)
    state = state_from_document(database["archiver_checkpoints"].find_one({"_id": key}))
    assert state.current is None
    assert state.high_water is not None


@pytest.mark.parametrize(
    "stamp",
    [None, "2026-11-26T13:00:00Z", datetime(2026, 10, 1, tzinfo=UTC)],
    ids=["missing", "a string", "long before the status changed"],
)
def test_a_dirty_delivery_stamp_is_read_from_the_change_stream_or_waits_for_a_full_pass(
    nx_client, nx_settings, seeded, stamp
):
    """An incremental run reads the orders delivered since the last pass from the change
    stream, whatever their stamp; without a saved position (a checkpoint an earlier version
    wrote) it reads by stamp alone, says so, and a dirty stamp waits for the full pass."""
    from tests.helpers import pending_ids

    database = nx_client[nx_settings.mongodb_database]
    BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()
    first, second = pending_ids(seeded)[:2]
    database["Commande"].update_one({"_id": first}, {"$set": {"status": "livrée", "date_livraison": stamp}})
    archive = database[nx_settings.archive_collection]
    incremental = BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()
    assert (incremental.mode, incremental.archived) == ("incremental", 1)
    assert archive.find_one({"_id": first}) is not None
    database["Commande"].update_one({"_id": second}, {"$set": {"status": "livrée", "date_livraison": stamp}})
    database["archiver_checkpoints"].update_one({"kind": "batch"}, {"$set": {"stream_token": None}})
    by_stamp = BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()
    assert (by_stamp.mode, by_stamp.archived) == ("incremental", 0)
    assert any("reads delivery stamps only" in w for w in by_stamp.warnings)
    assert archive.find_one({"_id": second}) is None
    full = BatchArchiver(nx_client, nx_settings, BatchOptions(run=True, full=True)).run()
    assert (full.mode, full.archived) == ("full", 1)
    assert archive.find_one({"_id": second}) is not None


def test_doctor_on_a_real_wire_protocol(nx_env, nx_client, nx_settings, db_name, capsys):
    """On the test server: a single server that opens change streams, no authentication
    (each branch it cannot show: tests/unit/test_doctor.py)."""
    import json

    seed_database(nx_client[db_name], nx_settings, 30)  # the orders and references exist

    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("ok   version: MongoDB ")
    assert any(line.startswith("ok   change streams: a change stream opens on") for line in lines)
    assert lines[-1] == "ready"
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is True
    assert {c["name"] for c in report["checks"]} >= {"version", "topology", "change streams", "privileges"}


def test_doctor_is_not_ready_when_archive_twins_stop_the_unique_index(
    nx_env, nx_client, nx_settings, db_name, capsys
):
    """Two archive documents sharing a numero_commande (an earlier version's watcher archived
    them before any batch --run built the unique index): MongoDB refuses that index over them
    (11000), so batch --run archives nothing and a watcher waits for the index for ever. doctor
    said "ready"; it says NOT READY (exit 3), names the shared numbers and the repair, and reads
    the archive for them only while the index is missing (once built, no such read)."""
    import json

    seed_database(nx_client[db_name], nx_settings, 30)  # the orders and references exist
    archive = nx_client[db_name][nx_settings.archive_collection]
    twins = [
        {"_id": ObjectId(), "numero_commande": number, "date_commande": NOW}
        for number in ("OLD-1", "OLD-1", "OLD-2", "OLD-2", "OLD-2", "OLD-3")
    ]
    archive.insert_many(twins)

    assert main(["doctor"]) == 3
    lines = capsys.readouterr().out.strip().splitlines()
    unique = next(line for line in lines if line.startswith("FAIL unique index: "))
    assert "numero_commande 'OLD-1', 'OLD-2':" in unique, unique  # OLD-3 is alone
    assert "restore --id ID --run" in unique
    assert "then delete its archive document" in unique
    assert lines[-1].startswith("NOT READY: ")
    assert "unique index" in lines[-1]
    assert main(["doctor", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["healthy"] is False

    # Repaired (each twin but one restored, then deleted) and the index built: ready, no scan.
    archive.delete_many({"_id": {"$in": [twins[1]["_id"], twins[3]["_id"], twins[4]["_id"]]}})
    BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).ensure_indexes()
    assert main(["doctor"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "ready"
    client, sent = recording_client(nx_settings.mongodb_uri or "")
    with client:
        assert run_doctor(client, nx_settings).healthy
    assert not [c for c in sent.commands if c.get("aggregate") == nx_settings.archive_collection]


@pytest.mark.test_server_only("a test server of its own, with its time-limit knob")
def test_doctor_only_warns_when_its_look_for_shared_numbers_runs_out_of_time(tmp_path, monkeypatch, capsys):
    """On a large archive the look for shared numbers (one $group over the whole archive,
    maxTimeMS one minute) outlasts its time limit: MongoDB stops it, 50 MaxTimeMSExpired
    ("operation exceeded time limit"). Scaled down by the test server's knob
    (NX_SCAN_TIME_LIMIT_OVER: a whole-collection aggregate over N documents with maxTimeMS).
    doctor says the answer is not known, as a warning: the index may still build."""
    from teststand.nx_server import running_server

    with running_server({"NX_SCAN_TIME_LIMIT_OVER": "3"}, prefix="nx-time-limit-") as server:
        for key, value in {"MONGODB_URI": server.uri, "MONGODB_DATABASE": "limit", "LOG_DIR": ""}.items():
            monkeypatch.setenv(key, value)
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            seed_database(client["limit"], Settings(mongodb_database="limit", log_dir=""), 20)
            archive = client["limit"]["Commande_archive"]
            archive.insert_many(
                [
                    {"_id": ObjectId(), "numero_commande": n, "date_commande": NOW}
                    for n in ("A", "A", "B", "C")
                ]
            )
            with pytest.raises(pymongo.errors.OperationFailure) as stopped:
                list(archive.aggregate([{"$group": {"_id": "$numero_commande"}}], maxTimeMS=60_000))
            assert (stopped.value.code, stopped.value.details["codeName"]) == (50, "MaxTimeMSExpired")
            assert list(archive.aggregate([{"$group": {"_id": "$numero_commande"}}]))  # no limit: read
            assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    unique = next(line for line in lines if "unique index:" in line)
    assert unique.startswith("warn unique index: "), unique
    assert "is not known" in unique
    assert "operation exceeded time limit" in unique


def test_a_number_freed_by_a_correction_goes_to_the_new_order_of_the_same_chunk(nx_client, nx_settings):
    """Order A archived as its number N, then corrected at the source to M (still delivered);
    a new delivered order B numbered N. The next run reads both in one chunk: its insert met A's
    N in the archive's unique index (the test server's 11000, keyPattern numero_commande) before
    A's revision freed it, and B was rejected as "number taken". The dry run predicts, and the
    run does: B archived, A revised, nothing rejected; a live clash still rejected."""
    database = nx_client[nx_settings.mongodb_database]
    dataset = seed_database(database, nx_settings, 40, seed=5, p_anomalies=0.0)
    assert BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run().archived > 2
    first, holder = sorted(expected_archive_ids(dataset))[:2]
    number = database["Commande"].find_one({"_id": first})["numero_commande"]
    held = database["Commande"].find_one({"_id": holder})["numero_commande"]
    database["Commande"].update_one({"_id": first}, {"$set": {"numero_commande": "CMD-FIXED"}})
    template = {k: v for k, v in database["Commande"].find_one({"_id": first}).items() if k != "_id"}
    new = database["Commande"].insert_one({**template, "numero_commande": number}).inserted_id
    clash = database["Commande"].insert_one({**template, "numero_commande": held}).inserted_id

    dry = BatchArchiver(nx_client, nx_settings, BatchOptions()).run()
    assert (dry.would_archive, dry.rejected) == (2, 1)  # A's revision and B; the clash refused
    report = BatchArchiver(nx_client, nx_settings, BatchOptions(run=True)).run()
    assert (report.archived, report.revised, report.rejected) == (1, 1, 1), report
    archive = database[nx_settings.archive_collection]
    assert archive.find_one({"numero_commande": number})["_id"] == new
    assert archive.find_one({"numero_commande": "CMD-FIXED"})["_id"] == first
    assert archive.find_one({"numero_commande": held})["_id"] == holder
    assert archive.find_one({"_id": clash}) is None
    assert_no_duplicates(archive)


class ArchiveReads(pymongo.monitoring.CommandListener):
    """Every command that reads the archive collection, or joins it, as it went on the wire."""

    def __init__(self, archive: str) -> None:
        self.archive = archive
        self.finds: list[dict] = []
        self.joins: list[dict] = []

    def started(self, event: pymongo.monitoring.CommandStartedEvent) -> None:
        command = dict(event.command)
        if command.get("find") == self.archive:
            self.finds.append(command)
        for stage in command.get("pipeline") or []:
            if (stage.get("$lookup") or {}).get("from") == self.archive:
                self.joins.append(command)

    def succeeded(self, event: pymongo.monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: pymongo.monitoring.CommandFailedEvent) -> None:
        pass


def test_a_full_sweep_tests_archived_orders_by_id_only(nx_server, nx_settings, seeded):
    """#30 item 6: a full pass skips the orders the archive holds by asking the archive for
    their ``_id``s only (``find({_id: {$in}}, {_id: 1})``: on MongoDB a covered read of the
    ``_id`` index), never by joining the archive, which fetched each archive document whole
    (its source copy included) only to see that one exists, and which a joined document near
    16 MB made fail (4568, the ``$lookup`` result over the limit) for an order archived fine."""
    reads = ArchiveReads(nx_settings.archive_collection)
    with pymongo.MongoClient(nx_server.uri, tz_aware=True, event_listeners=[reads]) as client:
        first = BatchArchiver(client, nx_settings, BatchOptions(run=True, full=True)).run()
        reads.finds.clear()
        sweep = BatchArchiver(client, nx_settings, BatchOptions(run=True, full=True)).run()
    assert first.archived > 0
    assert (sweep.archived, sweep.already_archived) == (0, first.archived)
    assert reads.joins == []
    by_id = [f for f in reads.finds if set((f.get("filter") or {}).get("_id") or {}) == {"$in"}]
    assert by_id, reads.finds
    assert all(f.get("projection") == {"_id": 1} for f in by_id)
    assert max(len(f["filter"]["_id"]["$in"]) for f in by_id) <= 500  # one page of ids each


class ArchiveSideCommands(pymongo.monitoring.CommandListener):
    """A run's commands on a collection, as they went on the wire: ``(name, collection)``, and
    ``(name + " by _id", collection)`` again for a read of ``_id``s (``{_id: {$in: [...]}}``),
    ``("held", collection)`` for one of what the archive holds of them (``storage.read_held``)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []

    def started(self, event: pymongo.monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        collection = event.command.get(name)
        if isinstance(collection, str):
            self.commands.append((name, collection))
            if "$in" in ((event.command.get("filter") or {}).get("_id") or {}):
                self.commands.append((f"{name} by _id", collection))
            if "source_hash" in (event.command.get("projection") or {}):
                self.commands.append(("held", collection))

    def count(self, name: str, collection: str) -> int:
        return self.commands.count((name, collection))

    def succeeded(self, event: pymongo.monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: pymongo.monitoring.CommandFailedEvent) -> None:
        pass


def test_a_first_run_reads_the_record_once_a_chunk_when_the_next_is_read_already(
    nx_server, nx_settings, seeded
):
    """#34 item 6: each chunk of a first run reads the record of forgotten persons after its
    write, and that read serves as the read before the next chunk's write when the reader has
    handed the next chunk over already (here, where the server answers 500 orders a batch:
    every chunk but the last): about one read a chunk, where it read once before and once
    after each write (and twice before, earlier). It stops asking the archive by ``_id`` which
    orders it holds once a chunk's asking found none (a first run: it holds none); a re-run,
    whose archive holds them all, asks on every chunk and writes nothing."""
    commands = ArchiveSideCommands()
    archive, record = nx_settings.archive_collection, nx_settings.forgotten_collection
    options = BatchOptions(run=True, full=True, batch_size=100)
    with pymongo.MongoClient(nx_server.uri, tz_aware=True, event_listeners=[commands]) as client:
        # The archive in another database: the read cannot skip archived orders on the server.
        settings = nx_settings.with_overrides(archive_database=f"{nx_settings.mongodb_database}_archive")
        first = BatchArchiver(client, settings, options).run()
        writes = commands.count("insert", archive)  # each chunk's write: one insert
        assert first.archived == len(expected_archive_ids(seeded))
        assert writes >= 4
        reads = commands.count("find by _id", record)
        assert writes + 1 <= reads < 2 * writes  # the first chunk's before its write, one after each
        assert commands.count("held", archive) == 1  # the first chunk's asking
        commands.commands.clear()
        again = BatchArchiver(client, settings, options).run()
    assert (again.archived, again.already_archived) == (0, first.archived)
    assert (
        commands.count("insert", archive) + commands.count("update", archive) == 0
    )  # asked first: nothing sent
    assert commands.count("held", archive) == writes


def test_after_the_lag_s_wait_the_record_is_read_again_before_the_write(nx_server, nx_settings, seeded):
    """#34 item 6 with --max-lag: the wait before a write can last minutes, so the record of
    forgotten persons read while asking the archive (the first chunk) is read again after it:
    a person forgotten during the wait is written erased, not only erased after the write. (The
    test server's replica set has no secondary: the hold lets each chunk through.)"""
    commands = ArchiveSideCommands()
    record = nx_settings.forgotten_collection
    settings = nx_settings.with_overrides(archive_database=f"{nx_settings.mongodb_database}_archive")
    options = BatchOptions(run=True, full=True, batch_size=100, max_lag=timedelta(seconds=5))
    with pymongo.MongoClient(nx_server.uri, tz_aware=True, event_listeners=[commands]) as client:
        report = BatchArchiver(client, settings, options).run()
    writes = commands.count("insert", nx_settings.archive_collection)
    assert report.archived == len(expected_archive_ids(seeded))
    assert commands.count("held", nx_settings.archive_collection) == 1
    assert commands.count("find by _id", record) == 2 * writes + 1  # the asking chunk's read again
