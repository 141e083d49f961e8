"""Watch mode's pure parts and token stores (no change streams needed)."""

import json
from datetime import UTC, datetime

import pytest
from bson import ObjectId
from bson.timestamp import Timestamp

from order_archiver.context import RunContext
from order_archiver.errors import FatalError
from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.mongodb.source import build_change_stream_pipeline, event_time, orders_to_archive
from order_archiver.mongodb.tokens import NO_TOKEN, UNUSABLE, FileTokenStore, MongoTokenStore, ResumeState
from tests.helpers import FakeChangeStream

TOKEN = {"_data": "8263A1B2C3000000012B022C0100296E5A1004"}


def test_change_stream_filter_lets_through_deliveries_and_corrections_of_delivered_orders():
    """An update whose looked-up order is delivered: the delivery itself, or a correction of a
    delivered order (a refund, a fixed address: ``status`` not among the changed fields)."""
    match = build_change_stream_pipeline("livrée")[0]["$match"]["$or"]
    both_forms = {"$in": ["livr\u00e9e", "livre\u0301e"]}  # NFC and NFD
    assert {"operationType": {"$in": ["insert", "replace"]}, "fullDocument.status": both_forms} in match
    assert {"operationType": "update", "fullDocument.status": both_forms} in match
    assert {"operationType": "invalidate"} in match


def event(order_id, status="livrée", op="update", document=True):
    full = {"_id": order_id, "status": status} if document else None
    return {
        "_id": {"_data": str(order_id)},
        "operationType": op,
        "documentKey": {"_id": order_id},
        "fullDocument": full,
    }


def test_orders_to_archive_dedupes_and_skips_deleted_or_changed_orders():
    a, b, c, d = ObjectId(), ObjectId(), ObjectId(), ObjectId()
    events = [event(a), event(b), event(a), event(c, document=False), event(d, status="annulée")]
    assert orders_to_archive(events, "livrée") == [a, b]


def test_event_time_prefers_wall_time():
    wall = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert event_time({"wallTime": wall, "clusterTime": Timestamp(0, 1)}) == wall
    assert event_time({"clusterTime": Timestamp(1_700_000_000, 3)}) == datetime.fromtimestamp(
        1_700_000_000, UTC
    )
    assert event_time({}) is None


def test_file_store_round_trip_is_atomic(tmp_path):
    store = FileTokenStore(tmp_path / "state" / "token.json", "livraison.Commande")
    assert store.load() == NO_TOKEN
    store.save(TOKEN)
    assert store.load() == ResumeState("token", TOKEN, invalidated=False)
    store.save(TOKEN, invalidated=True)
    assert store.load().invalidated is True
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["token.json"]  # no temp file left


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"namespace": "livraison.Commande", "token": "abc"}),
        json.dumps({"namespace": "livraison.Commande", "token": {"x": 1}}),
        json.dumps({"namespace": "other.Commande", "token": TOKEN}),
    ],
)
def test_file_store_refuses_unusable_content(tmp_path, content, caplog):
    path = tmp_path / "token.json"
    path.write_text(content)
    assert FileTokenStore(path, "livraison.Commande").load() == UNUSABLE
    assert "catching up instead" in caplog.text


def test_unwritable_folder_is_fatal(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FatalError, match="cannot write resume token file"):
        FileTokenStore(blocker / "token.json", "n").save(TOKEN)


def test_mongo_store_round_trip(mongo):
    import threading

    checkpoints = mongo["livraison"]["archiver_checkpoints"]
    store = MongoTokenStore(checkpoints, "eu-1", "livraison.Commande", threading.Event())
    assert store.load() == NO_TOKEN
    store.save(TOKEN)
    assert store.load() == ResumeState("token", TOKEN, invalidated=False)
    record = checkpoints.find_one({"_id": "watch:eu-1"})
    assert record["kind"] == "watch"
    assert record["namespace"] == "livraison.Commande"
    other = MongoTokenStore(checkpoints, "eu-2", "livraison.Commande", threading.Event())
    assert other.load() == NO_TOKEN


def test_no_change_streams_is_a_clear_fatal_error(mongo):
    from pymongo.errors import OperationFailure

    from order_archiver.errors import NotSupportedError
    from order_archiver.retry import Retry, RetryPolicy
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions

    watcher = Watcher(mongo, Settings(simulation=True, log_dir=""), WatchOptions())
    policy = RetryPolicy(Retry.SERVICE, on_stop="end")
    standalone = OperationFailure("The $changeStream stage is only supported on replica sets", code=40573)
    with pytest.raises(NotSupportedError, match="needs a replica set"):
        watcher._after_failure(standalone, policy)
    with pytest.raises(FatalError, match="authentication failed"):
        watcher._after_failure(OperationFailure("auth", code=18), policy)
    watcher.stop_event.set()  # the wait after a transient error then ends at once
    watcher._after_failure(OperationFailure("stepdown", code=189), policy)  # transient: no raise
    assert watcher.stats.reconnects == 1
    watcher._after_failure(OperationFailure("history lost", code=286), policy)
    assert watcher._distrust_saved_token  # a refused resume point: catch up


@pytest.mark.parametrize(
    ("code", "refused"),
    [(286, True), (260, True), (280, True), (2, True), (189, False), (18, False), (13, False)],
)
def test_which_errors_mean_the_token_is_refused(code, refused):
    from pymongo.errors import OperationFailure

    from order_archiver.watch.opening import token_refused

    assert token_refused(OperationFailure("x", code=code)) is refused


def test_change_events_are_projected_to_what_the_handler_reads():
    """A delivered order of several MB, looked up in full, would make an event over 16 MB:
    the stream keeps the resume token, the keys, the times and the status only."""
    pipeline = build_change_stream_pipeline("livrée")
    assert list(pipeline[0]) == ["$match"]
    assert list(pipeline[1]) == ["$project"]
    projection = pipeline[1]["$project"]
    assert "_id" not in projection or projection["_id"] == 1  # the resume token is kept
    assert set(projection) == {
        "operationType",
        "documentKey",
        "clusterTime",
        "wallTime",
        "fullDocument._id",
        "fullDocument.status",
    }
    projected = {
        "_id": TOKEN,
        "operationType": "update",
        "documentKey": {"_id": 1},
        "fullDocument": {"_id": 1, "status": "livrée"},
    }
    assert orders_to_archive([projected], "livrée") == [1]


@pytest.mark.parametrize("invalidated", [True, False])
def test_after_an_invalidate_the_watcher_catches_up_before_streaming(mongo, invalidated):
    """A collection replaced by a rename, $out or a restore with --drop brings orders that made
    no insert event: a stream reopened after an invalidate catches up first (the stream is
    already open, so nothing delivered meanwhile is missed). (The test server cannot rename
    over a collection: renameCollection with dropTarget leaves both as they were.)"""
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions

    watcher = Watcher(mongo, Settings(simulation=True, log_dir=""), WatchOptions())
    calls: list[str] = []
    watcher.store = type("Store", (), {"load": lambda self: ResumeState("token", TOKEN, invalidated)})()
    watcher._open = lambda state: (
        calls.append(f"open start_after={state.invalidated}") or FakeChangeStream(resume_token=TOKEN)
    )
    watcher._catch_up = lambda *start: calls.append("catch up")
    watcher._consume = lambda stream, backoff: calls.append("consume")
    from order_archiver.retry import Retry, RetryPolicy

    watcher._stream_once(RetryPolicy(Retry.SERVICE, on_stop="end"))
    expected = (
        ["open start_after=True", "catch up", "consume"]
        if invalidated
        else [
            "open start_after=False",
            "consume",
        ]
    )
    assert calls == expected


def test_the_lease_runs_on_the_servers_clock(mongo, monkeypatch):
    """Expiries are written and compared in the server's time: a host whose clock is an hour
    behind still sees the lease held, and one an hour ahead cannot take it early."""
    from datetime import timedelta

    from order_archiver.mongodb import lease as lease_module
    from order_archiver.mongodb.lease import Lease

    server_now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(lease_module, "server_time", lambda client: server_now)
    checkpoints = mongo["livraison"]["archiver_checkpoints"]
    leader = Lease(checkpoints, "eu-1", ttl_s=10, renew_s=2, owner="a")
    assert leader.try_acquire()
    try:
        assert checkpoints.find_one({"_id": "lease:eu-1"})["expires_at"].replace(
            tzinfo=UTC
        ) == server_now + timedelta(seconds=10)
        rival = Lease(checkpoints, "eu-1", ttl_s=10, renew_s=2, owner="b")
        server_now += timedelta(seconds=9)
        assert not rival.try_acquire()  # whatever the rival host's own clock says
        server_now += timedelta(seconds=2)
        assert rival.try_acquire()  # expired by the server's clock
        rival.release()
    finally:
        leader.release()


def test_a_leader_whose_lease_lapsed_while_mongodb_was_away_leads_on_and_says_nothing_wrong(mongo, caplog):
    """A new user's try: MongoDB away 20 s (longer than the lease's life by this process's
    clock, its renewals failing), then back: the leader logged "standby: another watcher named
    eu-1 leads" (itself: the lease still its owner's and term's) and never "leader of" again,
    while it went on archiving as term 2. Now it renews its own lease and leads on; a lease
    of its own it can no longer renew (its renewer ended) is said to be its own."""
    import threading

    from order_archiver.mongodb.lease import Lease
    from order_archiver.watch.leadership import Leadership

    checkpoints = mongo["livraison"]["archiver_checkpoints"]
    lease = Lease(checkpoints, "eu-1", ttl_s=10, renew_s=2, owner="a")
    assert lease.try_acquire()
    term = lease.term
    try:
        lease._valid_until = 0.0  # its renewals failed past its validity: MongoDB was away
        assert not lease.held()
        with caplog.at_level("INFO"):
            assert Leadership(lease, "eu-1", threading.Event()).lead()
        assert (lease.held(), lease.term) == (True, term)  # the same term: no takeover
        assert not [r for r in caplog.records if "another watcher" in r.getMessage()]
        lease._lost.set()  # its renewer gave up: the lease, still its own, runs out first
        caplog.clear()
        with caplog.at_level("INFO"):
            leadership = Leadership(lease, "eu-1", threading.Event())
            leadership.stop.set()  # no wait for the renewal period
            assert not leadership.lead()
        said = [r.getMessage() for r in caplog.records]
        assert said == ["lease of eu-1 lapsed: this watcher takes it again once it runs out (10s)"]
    finally:
        lease.release()


def _event(n, op="update", status="livrée"):
    return {
        "_id": {"_data": f"t{n}"},
        "operationType": op,
        "documentKey": {"_id": n},
        "fullDocument": {"_id": n, "status": status},
    }


def consuming_watcher(mongo, tmp_path, max_batch=500):
    from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions

    settings = Settings(
        simulation=True, log_dir="", watch_max_batch=max_batch, resume_token_file=str(tmp_path / "t.json")
    )
    keys, options = ARCHIVE_INDEXES[0]
    mongo[settings.mongodb_database][settings.archive_collection].create_index(keys, **options)
    watcher = Watcher(mongo, settings, WatchOptions())
    assert watcher.unique_index.ready()  # the archive's unique index, as the first batch --run builds it
    calls = []
    watcher._archive = lambda events: calls.append(("archive", [e["documentKey"]["_id"] for e in events]))
    watcher._save_token = lambda token, invalidated=False: calls.append(("save", token["_data"]))
    watcher._on_invalidate = lambda event: calls.append(("invalidate", event["_id"]["_data"]))
    watcher._on_quiet = lambda stream: calls.append(("quiet", None))
    return watcher, calls


def test_the_consume_loop_writes_a_burst_in_few_batches_and_saves_each_token_after_its_write(mongo, tmp_path):
    """What a getMore brought is drained into one micro-batch (up to WATCH_MAX_BATCH), archived,
    then its last event's token saved: never a token before the write that covers it."""
    from order_archiver.retry import Retry, RetryPolicy

    watcher, calls = consuming_watcher(mongo, tmp_path, max_batch=3)
    stream = FakeChangeStream([[_event(1), _event(2), _event(3), _event(4)], [], [_event(5)]])
    watcher._consume(stream, RetryPolicy(Retry.SERVICE, on_stop="end"))
    assert calls == [
        ("archive", [1, 2, 3]),
        ("save", "t3"),
        ("archive", [4]),
        ("save", "t4"),
        ("quiet", None),
        ("archive", [5]),
        ("save", "t5"),
        ("quiet", None),
    ]


def test_an_invalidate_ends_the_loop_after_the_events_before_it(mongo, tmp_path):
    from order_archiver.retry import Retry, RetryPolicy

    watcher, calls = consuming_watcher(mongo, tmp_path)
    stream = FakeChangeStream([[_event(1), _event(2), _event(3, op="invalidate"), _event(4)]])
    watcher._consume(stream, RetryPolicy(Retry.SERVICE, on_stop="end"))
    assert calls == [("archive", [1, 2]), ("save", "t2"), ("invalidate", "t3")]


def test_a_prepended_event_comes_first_then_the_stream():
    from order_archiver.mongodb.stream import Prepended as _Prepended
    from order_archiver.mongodb.stream import buffered as _buffered

    stream = FakeChangeStream([[_event(2), _event(3)]])
    first = stream.try_next()
    prepended = _Prepended(stream, _event(1))
    assert _buffered(prepended) == 2  # the put-back event and the one the getMore holds
    assert [prepended.try_next()["documentKey"]["_id"] for _ in range(2)] == [1, 3]
    assert first["documentKey"]["_id"] == 2
    assert prepended.alive
    assert prepended.try_next() is None
    assert not prepended.alive


def test_archive_skips_what_is_not_delivered_now_and_counts_it(mongo, tmp_path):
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions

    settings = Settings(simulation=True, log_dir="", resume_token_file=str(tmp_path / "t.json"))
    watcher = Watcher(mongo, settings, WatchOptions())
    watcher._archive([_event(1, status="annulée"), {**_event(2), "fullDocument": None}])
    assert (watcher.stats.events, watcher.stats.skipped, watcher.stats.archived) == (2, 2, 0)


def test_a_catch_up_counts_what_it_found_archived_and_stamps_with_the_watchers_clock(mongo):
    """The catch-up is the batch path run by the watcher: its stats add every count the batch
    report has (with the archive in another database, the orders archived before are read
    and found archived), and the documents it writes carry the watcher's clock."""
    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions
    from tests.helpers import expected_archive_ids, seed_database

    settings = Settings(simulation=True, log_dir="", archive_database="archives")
    dataset = seed_database(mongo["livraison"], settings, 80, seed=3, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    BatchArchiver(mongo, settings, BatchOptions(run=True, limit=10)).run()
    archive = mongo["archives"]["Commande_archive"]
    first = {d["_id"] for d in archive.find({}, {"_id": 1})}
    assert len(first) == 10
    moment = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    watcher = Watcher(mongo, settings, WatchOptions(), context=RunContext(clock=lambda: moment))
    watcher._catch_up()
    assert (watcher.stats.caught_up.archived, watcher.stats.caught_up.already_archived) == (
        len(expected) - 10,
        10,
    )
    stamped = {d["archived_at"] for d in archive.find({"_id": {"$nin": list(first)}}, {"archived_at": 1})}
    assert stamped == {moment}


def test_a_catch_up_builds_no_index_and_applies_no_retention(mongo, caplog):
    """#31 item 9: the watcher's user holds no createIndex, collMod, dropIndex nor remove on the
    archive. Its catch-up archives without building an index (each missing one said, naming
    batch --run, which builds it) and leaves ARCHIVE_RETENTION's TTL index and
    ARCHIVE_PII_RETENTION's erasure to batch --run."""
    from order_archiver.settings import Settings, parse_duration
    from order_archiver.watch.watcher import Watcher, WatchOptions
    from tests.helpers import expected_archive_ids, seed_database

    settings = Settings(
        simulation=True,
        log_dir="",
        archive_retention=parse_duration("20000d"),
        archive_pii_retention=parse_duration("1d"),
    )
    dataset = seed_database(mongo["livraison"], settings, 60, seed=5, p_anomalies=0.0)
    archive = mongo["livraison"]["Commande_archive"]
    # One order archived before, with its personal data: no retention walk erases it here.
    earlier = dataset.orders[0] | {"status": "livrée", "date_livraison": datetime(2020, 1, 1, tzinfo=UTC)}
    mongo["livraison"]["Commande"].replace_one({"_id": earlier["_id"]}, earlier)
    archive.insert_one(
        {"_id": earlier["_id"], "numero_commande": earlier["numero_commande"], "client": {"email": "x@y.fr"}}
    )
    # The unique index alone, as a first batch --run builds it: without it the watcher archives
    # nothing (test_a_catch_up_without_the_unique_index_archives_nothing).
    archive.create_index(ARCHIVE_INDEXES[0][0], **ARCHIVE_INDEXES[0][1])
    watcher = Watcher(mongo, settings, WatchOptions())
    with caplog.at_level("WARNING"):
        watcher._catch_up()
    assert watcher.stats.caught_up.archived == len(expected_archive_ids(dataset) - {earlier["_id"]}) > 0
    assert set(archive.index_information()) == {"_id_", "numero_commande_1"}  # nor the TTL index
    assert set(mongo["livraison"]["Commande"].index_information()) == {"_id_"}
    assert archive.find_one({"_id": earlier["_id"]})["client"]["email"] == "x@y.fr"  # no walk erased it
    # (What the catch-up itself writes past ARCHIVE_PII_RETENTION is written erased, as every
    # writer does: source.Finisher; not a retention applied.)
    assert any("date_commande_1" in r.message and "batch --run" in r.message for r in caplog.records)


def test_a_catch_up_without_the_unique_index_archives_nothing(mongo):
    """A review: the catch-up (the batch path inside the watcher) refused the unique index only
    while it was being built; missing, it archived two orders sharing a number. It now stops
    (the watcher waits for the index again), and looks again before each chunk it writes: a
    catch-up can last hours, the index dropped meanwhile."""
    from order_archiver.mongodb.indexes import UniqueIndexMissing
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions
    from tests.helpers import seed_database

    settings = Settings(simulation=True, log_dir="", batch_size=10)
    seed_database(mongo["livraison"], settings, 80, seed=5, p_anomalies=0.0)
    archive = mongo["livraison"]["Commande_archive"]
    watcher = Watcher(mongo, settings, WatchOptions())
    with pytest.raises(UniqueIndexMissing, match="numero_commande_1 is missing"):
        watcher._catch_up()
    assert archive.count_documents({}) == 0
    archive.create_index(ARCHIVE_INDEXES[0][0], **ARCHIVE_INDEXES[0][1])
    assert watcher.unique_index.ready()
    looks = []
    look = watcher.unique_index.still_there

    def dropped_after_the_first_chunk() -> None:
        looks.append(1)
        if len(looks) == 2:
            archive.drop_index("numero_commande_1")
            watcher.unique_index.seen_at = -1e9  # its last look long ago: this one looks
        look()

    watcher.unique_index.still_there = dropped_after_the_first_chunk
    with pytest.raises(UniqueIndexMissing):
        watcher._catch_up()
    assert archive.count_documents({}) == settings.batch_size  # the first chunk only


def test_a_leader_whose_lease_ran_out_writes_nothing(mongo, tmp_path):
    """#33 item 4, the fence: a leader paused past its lease (a GC pause, a frozen VM: a standby
    has taken over meanwhile) must not write the delivery it was holding when it wakes. The
    lease check before every archive write is the guard; removing it failed no test."""
    from order_archiver.mongodb.lease import LeaseLost
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions
    from tests.helpers import expected_archive_ids, seed_database

    settings = Settings(simulation=True, log_dir="")
    dataset = seed_database(mongo[settings.mongodb_database], settings, 30, seed=6, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset), key=str)[0]
    watcher = Watcher(mongo, settings, WatchOptions(token_store="mongo", name="fence"))
    assert watcher.lease is not None
    assert watcher.lease.try_acquire()
    try:
        watcher.lease._valid_until = 0.0  # paused past its lease: by its own clock, no longer leader
        event = {
            **_event(1),
            "documentKey": {"_id": delivered},
            "fullDocument": {"_id": delivered, "status": "livrée"},
        }
        with pytest.raises(LeaseLost):
            watcher._archive([event])
        assert mongo[settings.mongodb_database]["Commande_archive"].count_documents({}) == 0
    finally:
        watcher.lease.release()


def test_a_released_lease_is_not_renewed_after_its_release(mongo, monkeypatch, caplog):
    """A renewal the renewer was waiting to send when the lease was released is not sent: the
    process's client may be closed by then ('lease ... not renewed (InvalidOperation)' after a
    share's run ended, a new user saw), and the lease is no longer this process's."""
    import order_archiver.mongodb.lease as lease_module
    from order_archiver.mongodb.lease import Lease

    monkeypatch.setattr(lease_module, "server_time", lambda client: datetime(2026, 11, 26, tzinfo=UTC))
    checkpoints = mongo["livraison"]["archiver_checkpoints"]
    lease = Lease(checkpoints, "eu-1", ttl_s=1.0, renew_s=0.2, owner="a")
    assert lease.try_acquire()
    renewals = []
    monkeypatch.setattr(lease, "_renew", lambda: renewals.append(1) or True)
    lease.release()
    assert lease._renewer is not None
    lease._renewer.join(2)
    assert not lease._renewer.is_alive()
    assert renewals == []


def test_a_restarted_watcher_that_sees_no_event_keeps_saying_when_the_last_one_was(mongo, tmp_path):
    """Each save wrote the process's own last event time: a restart on a quiet night made
    `status` say "last event none yet" of a watcher that had archived orders before."""
    from datetime import UTC, datetime

    from order_archiver.mongodb.tokens import FileTokenStore
    from order_archiver.retry import Retry, RetryPolicy
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions

    settings = Settings(simulation=True, log_dir="", resume_token_file=str(tmp_path / "token.json"))
    before = datetime(2026, 12, 6, 21, 30, tzinfo=UTC)
    namespace = f"{settings.mongodb_database}.{settings.orders_collection}"
    FileTokenStore(settings.resume_token_file, namespace).save(TOKEN, last_event_at=before)
    watcher = Watcher(mongo, settings, WatchOptions())
    watcher._open = lambda state: FakeChangeStream(resume_token=TOKEN)
    watcher._consume = lambda stream, backoff: watcher._save_token(TOKEN)  # a heartbeat, no event
    watcher._stream_once(RetryPolicy(Retry.SERVICE, on_stop="end"))
    assert FileTokenStore(settings.resume_token_file, namespace).load().last_event_at == before


def test_status_lists_no_token_file_of_another_databases_watcher(mongo, tmp_path):
    """`MONGODB_DATABASE=bulk4 status` listed the livraison.Commande file watcher as its own."""
    from order_archiver.mongodb.tokens import FileTokenStore
    from order_archiver.operations.status import collect_status
    from order_archiver.settings import Settings

    token_file = str(tmp_path / "token.json")
    FileTokenStore(token_file, "livraison.Commande").save(TOKEN)
    mine = Settings(simulation=True, log_dir="", resume_token_file=token_file)
    other = mine.with_overrides(mongodb_database="bulk4")
    assert [w["store"] for w in collect_status(mongo, mine).watchers] == ["file"]
    assert collect_status(mongo, other).watchers == []


def test_the_verbose_line_names_only_the_orders_written(mongo, caplog):
    """A new user's try: two delivered orders sharing a number; -v said "order rejected ...
    numero_commande already archived for another order", then "archived order CMD-..." for the
    same order (every order of the micro-batch got the line, refused ones included)."""
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions
    from tests.helpers import expected_archive_ids, seed_database, unique_index

    settings = Settings(simulation=True, log_dir="")
    dataset = seed_database(mongo[settings.mongodb_database], settings, 30, seed=6, p_anomalies=0.0)
    database = mongo[settings.mongodb_database]
    unique_index(database[settings.archive_collection])
    first, second = sorted(expected_archive_ids(dataset), key=str)[:2]
    numero = database["Commande"].find_one({"_id": first})["numero_commande"]
    database["Commande"].update_one({"_id": second}, {"$set": {"numero_commande": numero}})
    watcher = Watcher(mongo, settings, WatchOptions())

    def event(order_id):
        return {
            **_event(1),
            "documentKey": {"_id": order_id},
            "fullDocument": {"_id": order_id, "status": "livrée"},
        }

    watcher._archive([event(first)])
    with caplog.at_level("DEBUG", logger="order_archiver"):
        watcher._archive([event(second)])
    said = [r.getMessage() for r in caplog.records]
    assert "order rejected" in said, said  # the reason is a field of the record
    assert not any(line.startswith("archived order") for line in said), said


def test_a_finished_catch_up_from_a_resumed_token_is_saved_as_done(mongo):
    """A watcher that resumes from a predecessor's unfinished catch-up (``catching_up``) catches
    up, then saves the token as done: a reconnect before its first event or heartbeat read the
    whole history again (a review; the path of a newly opened stream saved it already)."""
    from order_archiver.retry import Retry, RetryPolicy
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions
    from tests.helpers import seed_database

    settings = Settings(simulation=True, log_dir="")
    database = mongo[settings.mongodb_database]
    seed_database(database, settings, 20, seed=6, p_anomalies=0.0)
    keys, options = ARCHIVE_INDEXES[0]
    database[settings.archive_collection].create_index(keys, **options)
    watcher = Watcher(mongo, settings, WatchOptions(token_store="mongo", name="eu-1"))
    watcher._open = lambda state: FakeChangeStream(resume_token=TOKEN)  # type: ignore[method-assign]
    watcher._consume = lambda stream, policy: None  # type: ignore[method-assign]
    assert watcher.lease is not None
    assert watcher.lease.try_acquire()
    try:
        watcher._save_token(TOKEN, catching_up=True)  # a predecessor paused in its catch-up
        watcher._stream_once(RetryPolicy(Retry.SERVICE, on_stop="end"))  # resumes, catches up
        assert watcher.stats.catch_ups == 1
        watcher._stream_once(RetryPolicy(Retry.SERVICE, on_stop="end"))  # a reconnect, no event yet
    finally:
        watcher.lease.release()
    assert watcher.stats.catch_ups == 1, "the whole catch-up ran again after a reconnect"


def test_the_verbose_line_and_the_latency_say_what_happened_to_each_order(mongo, caplog):
    """A new user's restart replayed 7 minutes of history: `watch -v` logged 4,694 "archived
    order CMD-..., 259253 ms after the change" for orders its own minute line counted "already
    archived", and "last archived 259.25s after its change" (and the latency histogram) took
    those replays' age. Each order's line now says what happened to it (archived, revised,
    already archived), and the latency counts only the orders this watcher wrote."""
    from order_archiver.settings import Settings

    each_order_said(mongo, Settings(simulation=True, log_dir=""), caplog)


def each_order_said(client, settings, caplog):
    """One order archived, replayed, corrected: the -v line of each, the latency of the writes
    only (also at the wire: tests/integration/test_watch_lines_nx.py)."""
    from datetime import timedelta

    from order_archiver.watch.watcher import Watcher, WatchOptions
    from tests.helpers import expected_archive_ids, seed_database

    dataset = seed_database(client[settings.mongodb_database], settings, 10, seed=7, p_anomalies=0.0)
    orders = client[settings.mongodb_database][settings.orders_collection]
    order = sorted(expected_archive_ids(dataset), key=str)[0]
    numero = orders.find_one({"_id": order})["numero_commande"]
    watcher = Watcher(client, settings, WatchOptions())
    latency = watcher.metrics.registry.get_sample_value

    def delivered(seconds_ago):
        changed = datetime.now(UTC) - timedelta(seconds=seconds_ago)
        return {
            **_event(1),
            "documentKey": {"_id": order},
            "fullDocument": {"_id": order, "status": "livrée"},
            "wallTime": changed,
        }

    def lines(events):
        caplog.clear()
        with caplog.at_level("DEBUG", logger="order_archiver"):
            watcher._archive(events)
        return [r.getMessage() for r in caplog.records if str(order) in r.getMessage()]

    first = lines([delivered(0.2)])
    assert len(first) == 1, first
    assert first[0].startswith(f"archived order {numero} ({order}), "), first
    assert first[0].endswith("ms after its change"), first
    assert latency("order_archiver_archive_latency_seconds_count") == 1
    written_after = watcher.stats.last_latency_s
    assert written_after is not None
    assert written_after < 60

    replayed = lines([delivered(259)])  # the replay after a restart: found archived as it is
    assert replayed == [f"order {numero} ({order}) already archived: nothing written"], replayed
    assert latency("order_archiver_archive_latency_seconds_count") == 1  # not a latency of ours
    assert latency("order_archiver_archive_latency_seconds_sum") < 60
    assert watcher.stats.last_latency_s == written_after
    assert watcher.stats.already_archived == 1

    orders.update_one({"_id": order}, {"$set": {"adresse_livraison": "1 rue corrigée"}})
    corrected = lines([delivered(0.1)])
    assert len(corrected) == 1, corrected
    assert corrected[0].startswith(f"revised order {numero} ({order}), "), corrected
    assert latency("order_archiver_archive_latency_seconds_count") == 2
    assert watcher.stats.revised == 1


def test_a_fenced_out_leader_exports_no_token_age_and_says_it_stands_by(mongo):
    """An SRE's failover (SIGSTOP the leader, the standby takes over, SIGCONT): the old leader,
    back to standby, kept exporting the age of its own last save (31 s, 111 s, 353 s), and
    OrderArchiverTokenStale paged about 7 minutes after every failover on a healthy pair; no
    metric said which process led. A standby's token age is NaN (a never-leader's was already),
    and ``order_archiver_watch_leader`` says who leads."""
    import math

    from order_archiver.mongodb.lease import LeaseLost
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions

    settings = Settings(simulation=True, log_dir="")
    leader = Watcher(mongo, settings, WatchOptions(token_store="mongo", name="eu-1"))
    standby = Watcher(mongo, settings, WatchOptions(token_store="mongo", name="eu-1"))
    assert leader.lease is not None
    assert leader.lease.try_acquire()
    try:
        leader._save_token(TOKEN)
        leader.metrics.event_seen(1)
        figure = leader.metrics.registry.get_sample_value
        assert figure("order_archiver_watch_leader") == 1
        assert 0 <= figure("order_archiver_token_age_seconds") < 60
        assert 0 <= figure("order_archiver_seconds_since_last_event") < 60
        assert standby.metrics.registry.get_sample_value("order_archiver_watch_leader") == 0
        assert math.isnan(standby.metrics.registry.get_sample_value("order_archiver_token_age_seconds"))

        leader.lease._valid_until = 0.0  # paused past its lease: fenced out, by its own clock
        assert figure("order_archiver_watch_leader") == 0
        assert math.isnan(figure("order_archiver_token_age_seconds"))
        assert math.isnan(figure("order_archiver_seconds_since_last_event"))
        # Its loop then meets the fence and goes back to standby: its old term's moments are gone.
        leader.leadership.lead = lambda: (_ for _ in ()).throw(LeaseLost("lease lost (term 1)"))  # type: ignore[method-assign]
        leader.unique_index.ready = lambda: not leader.stop_event.is_set()  # type: ignore[method-assign]
        leader.metrics.stood_down = _then_stop(leader.metrics.stood_down, leader.stop_event)  # type: ignore[method-assign]
        leader._serve(None)  # type: ignore[arg-type]
        leader.lease._valid_until = float("inf")  # leads again: NaN until its first save
        assert figure("order_archiver_watch_leader") == 1
        assert math.isnan(figure("order_archiver_token_age_seconds"))
    finally:
        leader.lease.release()


def _then_stop(func, stop):
    def wrapped():
        func()
        stop.set()

    return wrapped


def test_an_old_leader_leading_again_keeps_its_successors_last_event(mongo):
    """After a takeover `status` said "last event 16:38:36" where the last event was 16:45:35:
    a watcher that had led before kept its own last event time over the one its successor
    saved (``own or saved``), and wrote it back: the value went backwards. The later one wins."""
    from order_archiver.retry import Retry, RetryPolicy
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions

    settings = Settings(simulation=True, log_dir="")
    watcher = Watcher(mongo, settings, WatchOptions(token_store="mongo", name="eu-1"))
    mine = datetime(2026, 12, 7, 16, 38, 36, tzinfo=UTC)
    successors = datetime(2026, 12, 7, 16, 45, 35, tzinfo=UTC)
    watcher.stats.last_event_at = mine  # its own, from when it led before
    assert watcher.lease is not None
    assert watcher.lease.try_acquire()
    try:
        watcher.store.save(TOKEN, last_event_at=successors, term=watcher.lease.term)  # the successor's
        watcher._open = lambda state: FakeChangeStream(resume_token=TOKEN)  # type: ignore[method-assign]
        watcher._consume = lambda stream, policy: watcher._save_token(TOKEN)  # type: ignore[method-assign]
        watcher._stream_once(RetryPolicy(Retry.SERVICE, on_stop="end"))
        assert watcher.store.load().last_event_at == successors
    finally:
        watcher.lease.release()


def test_the_rejected_orders_counters_say_what_was_met_and_what_was_news(mongo):
    """An SRE's watcher restart: its catch-up met 2 rejected orders already listed (`rejected 2
    (0 new)`), and `order_archiver_orders_rejected_total` took 2, which MONITORING.md's "new
    rejected orders" rule read as news. ``orders_rejected_total`` counts the rejections met;
    ``orders_rejected_new_total`` those newly listed, by the stream and by the catch-up."""
    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions
    from tests.helpers import expected_archive_ids, seed_database

    settings = Settings(simulation=True, log_dir="")
    dataset = seed_database(mongo[settings.mongodb_database], settings, 40, seed=3, p_anomalies=0.0)
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    broken = sorted(expected_archive_ids(dataset), key=str)[:2]
    orders.update_many({"_id": {"$in": broken}}, {"$unset": {"numero_commande": ""}})
    BatchArchiver(mongo, settings, BatchOptions(run=True)).run()  # lists both
    watcher = Watcher(mongo, settings, WatchOptions())
    figure = watcher.metrics.registry.get_sample_value
    watcher._catch_up()  # a restart's: meets both again, listed
    assert figure("order_archiver_orders_rejected_total", {"mode": "catch-up"}) == 2
    assert figure("order_archiver_orders_rejected_new_total", {"mode": "catch-up"}) == 0
    fresh = sorted(expected_archive_ids(dataset), key=str)[2]
    orders.update_one({"_id": fresh}, {"$unset": {"numero_commande": ""}})
    event = {**_event(1), "documentKey": {"_id": fresh}, "fullDocument": {"_id": fresh, "status": "livrée"}}
    watcher._archive([event])  # news
    watcher._archive([event])  # met again
    assert figure("order_archiver_orders_rejected_total", {"mode": "watch"}) == 2
    assert figure("order_archiver_orders_rejected_new_total", {"mode": "watch"}) == 1
