"""What a replica set, a sharded cluster or Atlas answers that the test servers never do: the
exact exceptions pymongo raises, handed to the product's one classification and its one
write path (the same conditions are made at the wire in tests/e2e/test_cluster_faults_e2e.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bson import ObjectId
from pymongo import UpdateOne
from pymongo import errors as pymongo_errors
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DocumentTooLarge,
    OperationFailure,
    WriteConcernError,
    WTimeoutError,
)

from order_archiver.errors import FatalError, TransientError, describe, is_authorisation_error, is_transient
from order_archiver.mongodb.storage import ArchiveWriter


def bulk_error(write_errors=(), concern_errors=(), upserted=0, inserted=0) -> BulkWriteError:
    """What pymongo raises for an unordered bulk (pymongo/bulk_shared.py builds these details)."""
    return BulkWriteError(
        {
            "writeErrors": list(write_errors),
            "writeConcernErrors": list(concern_errors),
            "nInserted": inserted,
            "nUpserted": upserted,
            "nMatched": 0,
            "nModified": 0,
            "nRemoved": 0,
            "upserted": [],
        }
    )


WTIMEOUT = {"code": 64, "codeName": "WriteConcernTimeout", "errmsg": "waiting for replication timed out"}


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (bulk_error(concern_errors=[WTIMEOUT], upserted=2), True),  # applied, may be rolled back
        (bulk_error(concern_errors=[{"code": 91, "errmsg": "shutdown"}]), True),
        (bulk_error([{"index": 0, "code": 11000}], [WTIMEOUT]), True),  # the whole bulk again
        (bulk_error(concern_errors=[{"code": 100, "errmsg": "Not enough data-bearing nodes"}]), False),
        (bulk_error(concern_errors=[{"code": 79, "errmsg": "unrecognized write concern mode"}]), False),
        (WriteConcernError("timed out", 64), True),  # a single write (checkpoint, token, lease)
        (WTimeoutError("timed out", 64), True),
        (OperationFailure("not yet", 134), True),  # ReadConcernMajorityNotAvailableYet
        (OperationFailure("plan killed", 175), True),  # QueryPlanKilled
        (OperationFailure("cursor killed", 237), True),  # CursorKilled
        (OperationFailure("rate limited", 462), True),
        (
            OperationFailure("overloaded", 999, {"errorLabels": ["SystemOverloadedError", "RetryableError"]}),
            True,
        ),
        (AutoReconnect("reset"), True),
        (bulk_error([{"index": 0, "code": 17420}]), False),  # per-document: settled, not retried
        (
            OperationFailure(
                "user is not allowed to do action [find] on [x.y]",
                8000,
                {"errmsg": "user is not allowed to do action [find] on [x.y]", "code": 8000},
            ),
            False,
        ),
        (OperationFailure("Unauthorized", 13), False),
    ],
)
def test_is_transient(error, transient):
    assert is_transient(error) is transient


def test_atlas_authorisation_is_reported_as_such():
    error = OperationFailure(
        "user is not allowed to do action [insert] on [livraison.Commande_archive]",
        8000,
        {
            "ok": 0,
            "errmsg": "user is not allowed to do action [insert] on [livraison.Commande_archive]",
            "code": 8000,
            "codeName": "AtlasError",
        },
    )
    assert is_authorisation_error(error)
    assert describe(error).startswith("not authorised")
    assert not is_authorisation_error(
        OperationFailure("space quota exceeded", 8000, {"errmsg": "space quota"})
    )


class FakeArchive:
    """An archive collection whose bulk_write raises the given errors in turn, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def bulk_write(self, requests, ordered):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return written(requests)

    def find(self, *args, **kwargs):
        return []


def written(requests) -> object:
    """pymongo's BulkWriteResult of ``requests`` all applied (inserted, or upserted)."""
    upserts = {i: _id_of(r) for i, r in enumerate(requests) if isinstance(r, UpdateOne)}
    fields = {"inserted_count": len(requests) - len(upserts), "upserted_count": len(upserts)}
    return type("Result", (), {**fields, "upserted_ids": upserts})()


def _id_of(request) -> object:
    """The ``_id`` an InsertOne or an upsert keyed on ``_id`` writes."""
    return request._filter["_id"] if isinstance(request, UpdateOne) else request._doc["_id"]


# The writer's two ways of writing new orders: ``insert`` (the write path's first) and
# ``upsert`` (for a duplicate key the server did not name): the same edges for both.
WAYS = ["insert", "upsert"]


def documents(n: int) -> list[dict]:
    return [{"_id": ObjectId(), "numero_commande": f"CMD-{i}"} for i in range(n)]


@pytest.mark.parametrize("way", WAYS)
def test_a_write_concern_error_is_retried_never_counted(monkeypatch, way):
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    archive = FakeArchive(bulk_error(concern_errors=[WTIMEOUT], upserted=3))
    outcome = getattr(ArchiveWriter(archive), way)(documents(3))
    assert archive.calls == 2
    assert outcome.archived == 3


@pytest.mark.parametrize("way", WAYS)
def test_write_concern_errors_that_persist_fail_the_write_as_transient(monkeypatch, way):
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    archive = FakeArchive(*[bulk_error(concern_errors=[WTIMEOUT], upserted=3) for _ in range(10)])
    with pytest.raises(TransientError, match="write concern not satisfied"):
        getattr(ArchiveWriter(archive), way)(documents(3))


@pytest.mark.parametrize("way", WAYS)
def test_an_unsatisfiable_write_concern_fails_at_once(way):
    archive = FakeArchive(
        bulk_error(concern_errors=[{"code": 100, "errmsg": "Not enough nodes"}], upserted=3)
    )
    with pytest.raises(FatalError, match="write concern not satisfied"):
        getattr(ArchiveWriter(archive), way)(documents(3))
    assert archive.calls == 1


@pytest.mark.parametrize(
    ("code", "name"),
    [(17420, "DocumentTooLarge"), (121, "DocumentValidationFailure"), (52, "DollarPrefixedFieldName")],
)
def test_one_refused_document_is_a_rejected_order_not_a_failed_run(code, name):
    batch = documents(3)
    archive = FakeArchive(bulk_error([{"index": 1, "code": code, "errmsg": "refused"}], upserted=2))
    outcome = ArchiveWriter(archive).upsert(batch)
    assert outcome.archived == 2
    assert [(r.order_id, r.reason) for r in outcome.rejections] == [
        (batch[1]["_id"], f"archive write refused: code {code} {name}")
    ]


def test_writes_wait_for_a_majority_and_deciding_reads_go_to_the_primary():
    """Whatever the URI says (here: read from secondaries, w: 1), the archive, checkpoints,
    tokens, leases, rejects and the purge write with w: majority and read from the primary;
    only the batch's source scan follows the URI."""
    from pymongo import MongoClient, ReadPreference

    from order_archiver.mongodb.storage import Collections
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions

    settings = Settings(
        mongodb_uri="mongodb://h/?readPreference=secondary&w=1", mongodb_write_timeout_ms=7000
    )
    with MongoClient(settings.mongodb_uri, connect=False) as client:
        collections = Collections.of(client, settings)
        for durable in (
            collections.archive,
            collections.checkpoints,
            collections.rejects,
            collections.orders_primary,
        ):
            assert durable.write_concern.document == {"w": "majority", "wtimeout": 7000}
            assert durable.read_preference == ReadPreference.PRIMARY
        assert collections.orders.read_preference == ReadPreference.SECONDARY
        watcher = Watcher(client, settings, WatchOptions(token_store="mongo"))
        assert watcher.orders_primary.read_preference == ReadPreference.PRIMARY
        assert watcher.lease.collection.write_concern.document["w"] == "majority"
        assert watcher.store.collection.write_concern.document["w"] == "majority"


@pytest.mark.parametrize(
    ("reply", "quorum"),
    [
        ({"ok": 1, "isWritablePrimary": True}, False),  # a standalone: 2 BadValue with commitQuorum
        ({"ok": 1, "setName": "rs0", "isWritablePrimary": True}, True),
        ({"ok": 1, "msg": "isdbgrid"}, True),  # mongos passes it to the shards
        ({}, False),  # the in-process simulation answers nothing
    ],
)
def test_index_builds_ask_a_majority_only_where_there_is_one(reply, quorum):
    """On 4.4+ a replicated build waits for every voting member by default (a member down would
    block the run): it asks a majority, on the command; a standalone refuses the field. The
    server's side of this is at the wire: tests/integration/test_mongodb_refusals.py."""
    from order_archiver.mongodb.deployment import index_build_options

    # Never maxTimeMS: MongoDB aborts a build that outlasts it (indexes.py).
    expected = {"commitQuorum": "majority"} if quorum else {}
    assert index_build_options(reply) == expected


class _Admin:
    def __init__(self, replies: list) -> None:
        self.replies = replies
        self.asked: list[str] = []

    def command(self, name: str):
        self.asked.append(name)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_the_server_clock_keeps_its_last_offset_through_an_election():
    """A ``hello`` that fails (no primary during an election) must not switch a lease to this
    host's clock: the last offset measured against the server's is applied instead; before
    any measurement the error is raised (the caller retries)."""
    from datetime import UTC, datetime, timedelta

    from order_archiver.mongodb.lease import server_time

    ahead = timedelta(hours=1)  # the deployment's clock runs an hour ahead of this host's
    admin = _Admin(
        [
            pymongo_errors.AutoReconnect("no primary"),
            {"ok": 1, "localTime": datetime.now(UTC) + ahead},
            pymongo_errors.NotPrimaryError("not primary"),
        ]
    )
    client = type("Client", (), {"admin": admin})()
    with pytest.raises(pymongo_errors.AutoReconnect):
        server_time(client)
    assert abs(server_time(client) - (datetime.now(UTC) + ahead)) < timedelta(seconds=2)
    assert abs(server_time(client) - (datetime.now(UTC) + ahead)) < timedelta(seconds=2)  # the election


def test_hello_falls_back_to_is_master_on_4_4_0_and_4_4_1():
    from datetime import UTC, datetime, timedelta

    from order_archiver.mongodb.deployment import hello
    from order_archiver.mongodb.lease import server_time

    not_found = pymongo_errors.OperationFailure("no such command: 'hello'", code=59)
    admin = _Admin(
        [not_found, {"ok": 1, "setName": "rs0"}, not_found, {"ok": 1, "localTime": datetime.now(UTC)}]
    )
    client = type("Client", (), {"admin": admin})()
    assert hello(client)["setName"] == "rs0"
    assert abs(server_time(client) - datetime.now(UTC)) < timedelta(seconds=2)
    assert admin.asked == ["hello", "isMaster", "hello", "isMaster"]
    with pytest.raises(pymongo_errors.OperationFailure):  # any other refusal is raised
        hello(type("Client", (), {"admin": _Admin([pymongo_errors.OperationFailure("denied", code=13)])})())


def test_a_date_out_of_pythons_range_rejects_its_order_instead_of_failing_the_batch():
    """pymongo raises InvalidBSON (not a PyMongoError) for a BSON date before year 1 or after
    9999 while decoding a whole batch; with the client's DATETIME_AUTO it is a DatetimeMS, and
    that order alone is rejected (its delivery date, an anomaly)."""
    import bson
    from bson.codec_options import CodecOptions, DatetimeConversion
    from bson.datetime_ms import DatetimeMS
    from bson.errors import InvalidBSON

    from order_archiver.errors import InvalidOrderError
    from order_archiver.mongodb.connection import client_options
    from order_archiver.orders.enrichment import finish_archive_document
    from order_archiver.settings import Settings

    raw = bson.encode({"_id": ObjectId(), "numero_commande": "CMD-1", "date_commande": DatetimeMS(2**62)})
    with pytest.raises(InvalidBSON):
        bson.decode(raw, CodecOptions(tz_aware=True))
    options = client_options(Settings(mongodb_uri="mongodb://h"))
    assert options["datetime_conversion"] == "DATETIME_AUTO"
    decoded = bson.decode(
        raw, CodecOptions(tz_aware=True, datetime_conversion=DatetimeConversion.DATETIME_AUTO)
    )
    with pytest.raises(InvalidOrderError, match="date_commande unreadable: a date out of range"):
        finish_archive_document(decoded, archived_by="batch", archived_at=datetime.now(UTC))
    fine = {
        **decoded,
        "date_commande": datetime(2026, 1, 1, tzinfo=UTC),
        "date_livraison": DatetimeMS(-(2**62)),
    }
    document = finish_archive_document(fine, archived_by="batch", archived_at=datetime.now(UTC))
    assert document["date_livraison"] is None
    assert "date_livraison_unreadable" in document["anomalies"]


def test_items_meet_their_dishes_with_mongodb_equality():
    """$lookup joins numbers by value across types; the finishing step matches them the same way."""
    from bson.decimal128 import Decimal128
    from bson.int64 import Int64

    from order_archiver.orders.enrichment import finish_archive_document

    raw = {
        "_id": ObjectId(),
        "numero_commande": "CMD-1",
        "date_commande": datetime(2026, 1, 1, tzinfo=UTC),
        "items": [
            {"menu_id": Decimal128("5"), "quantite": 1},
            {"menu_id": 7.0, "quantite": 2},
            {"menu_id": "5", "quantite": 1},
            {"menu_id": True, "quantite": 1},
        ],
        "_x_menus": [{"_id": 5, "nom": "Pizza", "prix": 10}, {"_id": Int64(7), "nom": "Tarte", "prix": 3}],
    }
    items = finish_archive_document(raw, archived_by="batch", archived_at=datetime.now(UTC))["items"]
    assert [i["nom"] for i in items] == ["Pizza", "Tarte", None, None]  # "5" and true are not 5 or 1


def oversized_for(bad_id):
    """An aggregate that fails as MongoDB does when one order's enrichment passes 16 MB: any
    aggregation that would include ``bad_id`` raises BSONObjectTooLarge (10334)."""

    def includes(match):
        key = match.get("_id")
        if key is None:
            return True  # a scan of the window
        if isinstance(key, dict):
            return bad_id in key.get("$in", []) or ("$gt" in key and key["$gt"] < bad_id)
        return key == bad_id

    def wrap(original):
        def aggregate(pipeline, *args, **kwargs):
            if includes(pipeline[0]["$match"]):
                raise OperationFailure(
                    "BSONObj size: 17000000 (0x1036640) is invalid. Size must be between 0 and 16793600(16MB)",
                    10334,
                    {"ok": 0, "code": 10334, "codeName": "BSONObjectTooLarge", "errmsg": "BSONObj size"},
                )
            return original(pipeline, *args, **kwargs)

        return aggregate

    return wrap


def test_an_order_whose_enrichment_is_over_the_limits_is_rejected_and_the_run_goes_on(mongo, monkeypatch):
    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.settings import Settings
    from tests.helpers import expected_archive_ids, seed_database

    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    settings = Settings(simulation=True, log_dir="")
    dataset = seed_database(mongo["livraison"], settings, 300, seed=4, p_anomalies=0.0)
    expected = sorted(expected_archive_ids(dataset))
    bad = expected[len(expected) // 2]
    archiver = BatchArchiver(mongo, settings, BatchOptions(run=True))
    archiver.orders.aggregate = oversized_for(bad)(archiver.orders.aggregate)
    report = archiver.run()
    archived = {d["_id"] for d in mongo["livraison"]["Commande_archive"].find({}, {"_id": 1})}
    assert archived == set(expected) - {bad}
    assert report.rejections == {"enrichment over the server's limits: code 10334 BSONObjectTooLarge": 1}
    assert mongo["livraison"]["archiver_rejects"].find_one({"_id": bad}) is not None


def test_the_watcher_rejects_an_order_over_the_limits_and_archives_the_others(mongo):
    from order_archiver.settings import Settings
    from order_archiver.watch.watcher import Watcher, WatchOptions
    from tests.helpers import expected_archive_ids, seed_database

    settings = Settings(simulation=True, log_dir="")
    dataset = seed_database(mongo["livraison"], settings, 60, seed=4, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset))[:5]
    watcher = Watcher(mongo, settings, WatchOptions())
    watcher.orders_primary.aggregate = oversized_for(delivered[2])(watcher.orders_primary.aggregate)
    events = [
        {
            "_id": TOKEN_OF(i),
            "operationType": "update",
            "documentKey": {"_id": order_id},
            "fullDocument": {"_id": order_id, "status": "livrée"},
        }
        for i, order_id in enumerate(delivered)
    ]
    watcher._archive(events)
    archived = {d["_id"] for d in mongo["livraison"]["Commande_archive"].find({}, {"_id": 1})}
    assert archived == set(delivered) - {delivered[2]}
    assert watcher.stats.rejected == 1
    assert mongo["livraison"]["archiver_rejects"].find_one({"_id": delivered[2]})["source"] == "watch"


def TOKEN_OF(i: int) -> dict:
    return {"_data": f"82{i:08X}"}


def test_one_retry_policy_for_every_loop():
    """N failures in a row and the loop gives up (0: never); progress resets the count; what
    is not retryable, or comes after a stop, is raised at once; a stop during a wait raises."""
    import threading

    from order_archiver.errors import classify
    from order_archiver.retry import Purpose, RetryPolicy

    three, never = Purpose(3), Purpose(0)
    policy = RetryPolicy(three, on_stop="raise")
    cut = AutoReconnect("cut")
    assert policy.increment(cut) >= 0
    assert policy.increment(cut) >= 0
    with pytest.raises(TransientError):
        policy.increment(cut)  # the third failure in a row
    policy.reset()
    assert policy.increment(cut) >= 0  # counting starts again after progress
    with pytest.raises(FatalError):
        RetryPolicy(three, on_stop="raise").increment(OperationFailure("Unauthorized", 13))
    forever = RetryPolicy(never, on_stop="end")
    assert all(forever.increment(cut) >= 0 for _ in range(50))
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(TransientError):
        RetryPolicy(three, on_stop="raise", stop_event=stopped).increment(cut)
    with pytest.raises(TransientError):  # a walk, one command: never looks complete
        RetryPolicy(three, on_stop="raise", stop_event=stopped).wait(0.0, cut)
    # a service, a reader whose caller reports the stop: the wait says so, the loop ends
    assert RetryPolicy(three, on_stop="end", stop_event=stopped).wait(0.0, cut) is True
    assert RetryPolicy(three, on_stop="end").wait(0.0, cut) is False
    assert classify(OperationFailure("lost", 286)) == "token_unusable"
    # An open stream's place deleted from the capped oplog (a getMore): lost as 286 is.
    assert classify(OperationFailure("CollectionScan died due to position in capped collection", 136)) == (
        "token_unusable"
    )
    assert classify(OperationFailure("standalone", 40573)) == "no_change_streams"
    assert classify(TransientError("x")) == "transient"
    assert classify(cut) == "transient"
    assert classify(FatalError("x")) == "fatal"
    assert classify(OperationFailure("denied", 13)) == "fatal"


def test_a_purge_deletes_only_what_a_majority_of_the_archive_holds(mongo, settings, monkeypatch):
    """The purge asks the archive with read concern "majority": a document the archive's
    primary has but a failover could roll back does not count (the server applies the read
    concern, see the next test; here five orders the majority read does not return stay in
    the source)."""
    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.mongodb.storage import ArchiveWriter
    from tests.helpers import seed_database

    dataset = seed_database(mongo[settings.mongodb_database], settings, 120, seed=3, p_anomalies=0.0)
    levels = []
    original = ArchiveWriter.confirmed_hashes
    held_back = {o["_id"] for o in dataset.orders if o["status"] == "livrée"}
    held_back = set(sorted(held_back)[:5])  # acknowledged by the primary only

    def confirmed_hashes(self, ids):
        levels.append(len(ids))
        return {k: v for k, v in original(self, ids).items() if k not in held_back}

    monkeypatch.setattr(ArchiveWriter, "confirmed_hashes", confirmed_hashes)
    report = BatchArchiver(mongo, settings, BatchOptions(run=True, purge_source=True)).run()
    remaining = {d["_id"] for d in mongo[settings.mongodb_database]["Commande"].find({}, {"_id": 1})}
    assert held_back <= remaining  # not deleted: not confirmed by a majority
    assert report.purged == report.archived - 5
    assert levels  # the purge went through confirmed_hashes, not existing_ids


def test_confirmed_hashes_reads_with_majority_read_concern(mongo, settings):
    from order_archiver.mongodb.storage import ArchiveWriter, Held

    seen = {}

    class Recording:
        def with_options(self, **options):
            seen.update(options)
            return self

        def find(self, *_args, **_kwargs):
            return [{"_id": 1, "source_hash": "ab"}]

    assert ArchiveWriter(Recording()).confirmed_hashes([1, 2]) == {1: Held("ab")}
    assert seen["read_concern"].level == "majority"


def test_errors_name_the_archive_deployment_once():
    from order_archiver.errors import FatalError, TransientError
    from order_archiver.retry import named_side

    side = "archive deployment: "
    with (
        pytest.raises(TransientError, match=r"^archive deployment: connection lost$"),
        named_side(side),
        named_side(side),
    ):
        raise TransientError("connection lost")
    with pytest.raises(FatalError, match=r"^refused$"), named_side(""):
        raise FatalError("refused")


@pytest.mark.parametrize(
    ("options", "plan", "primary"),
    [
        ({}, "first run: full", False),  # a full pass: the URI's preference (its cost, its choice)
        ({}, "incremental", True),  # a lagging secondary would hide what the mark moves past
        ({"read_primary": True, "archived_by": "watch"}, "first run: full", True),  # the catch-up
    ],
)
def test_the_reads_that_decide_what_a_pass_archives_go_to_the_primary(options, plan, primary):
    """The URI reads from secondaries. An incremental pass and the watcher's catch-up read the
    orders from the primary: a member behind would hide deliveries that no later run reads."""
    from datetime import timedelta

    import mongomock
    from pymongo import ReadPreference

    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.mongodb.checkpoint import BatchState
    from order_archiver.settings import Settings
    from order_archiver.simulation.database import new_client

    new_client()  # the simulation's shims
    now = datetime(2026, 11, 30, tzinfo=UTC)
    client = mongomock.MongoClient(tz_aware=True, read_preference=ReadPreference.SECONDARY)
    archiver = BatchArchiver(
        client,
        Settings(simulation=True, log_dir=""),
        BatchOptions(run=True, **options),
        server_clock=lambda: now,
    )
    if plan == "incremental":
        state = BatchState(high_water=now - timedelta(hours=2), last_full_at=now - timedelta(hours=2))
        archiver.checkpoint.load = lambda: state  # type: ignore[method-assign]
    archiver._begin_pass()
    assert archiver.report.mode == ("incremental" if plan == "incremental" else "full")
    expected = ReadPreference.PRIMARY if primary else ReadPreference.SECONDARY
    assert archiver.source.orders.read_preference == expected
    assert archiver.reader.source.orders.read_preference == expected
    # The orders the change history names: the primary in every pass (the position moves past them)
    assert archiver.source.also_from.read_preference == ReadPreference.PRIMARY


def _orders(count: int) -> list[dict]:
    return [{"_id": ObjectId(), "numero_commande": f"CMD-{i:06d}"} for i in range(count)]


@pytest.mark.parametrize("way", WAYS)
def test_every_order_of_a_write_refused_alike_is_the_deployment_not_the_data(way):
    """A validator added to the archive answers 121 for every upsert: not a thousand rejected
    orders but one failure naming the code and the collection (exit 1), nothing listed."""
    documents = _orders(3)
    refusals = [{"index": i, "code": 121, "codeName": "DocumentValidationFailure"} for i in range(3)]
    archive = FakeArchive(bulk_error(refusals))
    archive.full_name = "livraison.Commande_archive"
    with pytest.raises(FatalError) as stopped:
        getattr(ArchiveWriter(archive), way)(documents)
    assert (
        "livraison.Commande_archive refused every one of 3 orders with code 121 DocumentValidationFailure"
        in str(stopped.value)
    )
    # One refused among good ones, or a write of one order: that order is rejected.
    one = FakeArchive(bulk_error([{"index": 1, "code": 121}], upserted=2))
    outcome = getattr(ArchiveWriter(one), way)(_orders(3))
    assert [r.reason for r in outcome.rejections] == [
        "archive write refused: code 121 DocumentValidationFailure"
    ]
    alone = getattr(ArchiveWriter(FakeArchive(bulk_error([{"index": 0, "code": 121}]))), way)(_orders(1))
    assert len(alone.rejections) == 1
    # Duplicates among them are not refusals: already archived (or another order's numero).
    numero = {
        "index": 0,
        "code": 11000,
        "keyPattern": {"numero_commande": 1},
        "keyValue": {"numero_commande": "x"},
    }
    mixed = FakeArchive(bulk_error([numero, {"index": 1, "code": 121}]))
    assert len(getattr(ArchiveWriter(mixed), way)(_orders(2)).rejections) == 2


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(
    "refusal",
    [
        {
            "code": 2,
            "codeName": "BadValue",
            "errmsg": "object to insert too large. size in bytes: 16777300, max size: 16777216",
        },
        {"code": 17420, "errmsg": "Document to upsert is larger than 16777216"},
    ],
)
def test_every_order_of_a_write_refused_for_its_size_is_the_data_each_rejected(way, refusal):
    """Two large orders alone in a write (a watcher's micro-batch, the last chunk, a half of a
    write split for its size) both refused for their size: each order is rejected with its
    reason, never "the deployment refuses them" (exit 1 on every run, the same orders again)."""
    documents = _orders(2)
    archive = FakeArchive(bulk_error([{"index": i, **refusal} for i in range(2)]))
    archive.full_name = "livraison.Commande_archive"
    outcome = getattr(ArchiveWriter(archive), way)(documents)
    assert sorted(r.order_id for r in outcome.rejections) == sorted(d["_id"] for d in documents)


class SizeLimitedArchive(FakeArchive):
    """Refuses any write holding ``huge`` whole, as the server (10334) or pymongo does."""

    def __init__(self, huge: dict, error: BaseException) -> None:
        super().__init__()
        self.huge, self.error, self.written = huge, error, []

    def bulk_write(self, requests, ordered):
        self.calls += 1
        ids = [_id_of(r) for r in requests]
        if self.huge["_id"] in ids:
            raise self.error
        self.written += ids
        return written(requests)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            OperationFailure("BSONObj size: 16793600 is invalid", 10334, {"codeName": "BSONObjectTooLarge"}),
            "archive document too large: code 10334 BSONObjectTooLarge",
        ),
        # pymongo's own refusal, before anything is sent: a bson error, not a PyMongoError.
        (
            DocumentTooLarge("BSON document too large (50331648 bytes)"),
            "archive document too large: DocumentTooLarge",
        ),
    ],
)
@pytest.mark.parametrize("way", WAYS)
def test_a_write_refused_whole_for_its_size_is_split_down_to_the_one_order(error, reason, way):
    documents = _orders(8)
    archive = SizeLimitedArchive(documents[5], error)
    outcome = getattr(ArchiveWriter(archive), way)(documents)
    assert [r.order_id for r in outcome.rejections] == [documents[5]["_id"]]
    assert outcome.rejections[0].reason == reason
    assert sorted(archive.written) == sorted(d["_id"] for d in documents if d is not documents[5])
    assert outcome.archived == 7
    assert archive.calls <= 2 * 3 + 1  # halves: log2(8) levels


def test_every_retry_reads_its_attempts_from_one_table():
    """Retry counts and waits had drifted (6, 5, 6 twice, literal 2, 3 and 6; Backoff(0.5, 5)
    here, (0.5, 30) there): each call names its purpose in retry.Retry, and no product module
    writes a count, a wait or a stop behaviour of its own."""
    import re

    from order_archiver.retry import Retry
    from tests.helpers import product_files

    literal = re.compile(r"\battempts\s*[=:]\s*(?:int\s*=\s*)?\d")
    modules = product_files()
    assert any(module.name == "source.py" for module in modules)
    for module in modules:
        text = module.read_text()
        assert not literal.search(text), f"{module.name}: a retry count outside retry.Retry"
        assert not re.search(r"RetryPolicy\(\s*\d", text), module.name
        if module.name != "retry.py":
            assert not re.search(r"\bBackoff\(|\bPurpose\(", text), (
                f"{module.name}: waits outside retry.Retry"
            )
            assert not re.search(r"\.stop_event\.wait\(delay\)", text), (
                f"{module.name}: a wait outside a policy"
            )
    attempts = [p.attempts for p in (Retry.READ, Retry.WRITE, Retry.COMMAND, Retry.SERVICE)]
    assert attempts == [6, 6, 5, 0]


def test_verify_counts_an_order_over_the_limits_as_invalid_and_checks_the_others(mongo, monkeypatch):
    """verify reads through batch's path: the one order whose enrichment passes 16 MB is
    rejected alone, as batch rejects it, and the others are reconciled."""
    import mongomock.collection

    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.operations.verify import verify
    from order_archiver.settings import Settings
    from tests.helpers import expected_archive_ids, seed_database

    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    settings = Settings(simulation=True, log_dir="")
    dataset = seed_database(mongo["livraison"], settings, 300, seed=4, p_anomalies=0.0)
    expected = sorted(expected_archive_ids(dataset))
    bad = expected[len(expected) // 2]
    original = mongomock.collection.Collection.aggregate

    def aggregate(self, pipeline, *args, **kwargs):
        def plain(p, *a, **k):
            return original(self, p, *a, **k)

        if self.name != settings.orders_collection:
            return plain(pipeline, *args, **kwargs)
        return oversized_for(bad)(plain)(pipeline, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "aggregate", aggregate)
    BatchArchiver(mongo, settings, BatchOptions(run=True)).run()
    report = verify(mongo, settings)
    assert report.consistent
    assert report.invalid == 1
    assert report.checked == len(expected) - 1
    assert report.missing == 0


def test_verify_counts_an_order_the_archive_refused_as_rejected_not_missing(mongo):
    """Found by the chaos run (bench/chaos.py, seed 11): an order the archive refuses (its
    document over 16 MB, 17420) is rejected and listed, and can never be archived; verify called
    it missing, exit 3 for ever, and --repair could not help. It is rejected, as the list says."""
    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.mongodb.rejects import RejectStore
    from order_archiver.operations.verify import verify
    from order_archiver.orders.rejection import Rejection
    from order_archiver.settings import Settings
    from tests.helpers import expected_archive_ids, seed_database

    settings = Settings(simulation=True, log_dir="")
    database = mongo["livraison"]
    dataset = seed_database(database, settings, 120, seed=5, p_anomalies=0.0)
    BatchArchiver(mongo, settings, BatchOptions(run=True)).run()
    refused = sorted(expected_archive_ids(dataset))[3]
    database["Commande_archive"].delete_one({"_id": refused})  # what a refused write leaves
    RejectStore(database["archiver_rejects"], None).record(
        [Rejection(refused, "archive write refused: code 17420 DocumentTooLarge", None)], source="batch"
    )
    report = verify(mongo, settings)
    assert (report.missing, report.consistent) == (0, True)
    assert report.invalid == 1
    assert report.checked == len(expected_archive_ids(dataset)) - 1
    database["archiver_rejects"].delete_many({})  # not listed: missing, as before
    assert verify(mongo, settings).missing == 1


def test_a_refusal_without_a_code_is_not_said_as_code_none():
    """A new user's try read "MongoDB error None: UNIQUE constraint failed"."""
    from pymongo.errors import OperationFailure

    from order_archiver.errors import describe

    assert describe(OperationFailure("UNIQUE constraint failed")) == "MongoDB error: UNIQUE constraint failed"
    assert describe(OperationFailure("E11000 duplicate key", code=11000)).startswith("MongoDB error 11000: ")


def test_a_member_not_configured_yet_is_no_wrong_replica_set_name():
    """A replica set member before rs.initiate() (RSGhost: `isreplicaset`, no set name: a
    compose stack's first seconds) may still join the set replicaSet= names: the connection
    waits for it (exit 1 at the timeout), it is not told to drop replicaSet= (exit 2). A
    standalone's or another set's hello is a setting to fix."""
    from pymongo import MongoClient
    from pymongo.hello import Hello
    from pymongo.monitoring import ServerHeartbeatSucceededEvent

    from order_archiver.mongodb.connection import HelloReplies, _wrong_replica_set

    replies = HelloReplies()
    client: MongoClient = MongoClient(
        "mongodb://h1:1/?replicaSet=rs0", connect=False, event_listeners=[replies]
    )

    def heard(host: str, reply: dict) -> None:
        replies.succeeded(ServerHeartbeatSucceededEvent(0.001, Hello({"ok": 1, **reply}), (host, 1), False))

    try:
        heard("h1", {"isreplicaset": True})  # RSGhost
        assert _wrong_replica_set(client, "rs0") is None
        heard("h2", {"isWritablePrimary": True})  # a standalone
        found = _wrong_replica_set(client, "rs0")
        assert found is not None
        assert found.configuration
        assert "h2:1 is in no replica set" in found.message
        assert "h1" not in found.message
        heard("h1", {"isWritablePrimary": True, "setName": "rsX", "hosts": ["h1:1"]})
        found = _wrong_replica_set(client, "rs0")
        assert found is not None
        assert "h1:1 is a member of replica set 'rsX'" in found.message
        heard("h1", {"isWritablePrimary": True, "setName": "rs0", "hosts": ["h1:1"]})
        assert _wrong_replica_set(client, "rs0") is None  # a member of it answered
    finally:
        client.close()


@pytest.mark.parametrize(
    ("reply", "standalone"),
    [
        ({"ok": 1, "isWritablePrimary": True, "maxWireVersion": 21}, True),
        ({"ok": 1, "isreplicaset": True, "maxWireVersion": 21}, False),  # before rs.initiate()
        ({"ok": 1, "setName": "rs0", "isWritablePrimary": True, "maxWireVersion": 21}, False),
        ({"ok": 1, "setName": "rs0", "arbiterOnly": True, "maxWireVersion": 21}, False),
        ({"ok": 1, "msg": "isdbgrid", "maxWireVersion": 21}, False),  # mongos
        ({"ok": 1, "serviceId": ObjectId(), "maxWireVersion": 21}, False),  # behind a load balancer
        ({"ok": 0}, False),  # not heard: not known
    ],
)
def test_watch_refuses_at_start_only_what_the_driver_calls_a_standalone(reply, standalone):
    """watch says at start that a standalone has no change streams (deployment.is_standalone):
    by pymongo's own classification of the servers it heard, never for a member not configured
    yet (a compose stack's first seconds, RSGhost), a mongos, an arbiter or a load balancer."""
    from pymongo.hello import Hello
    from pymongo.server_description import ServerDescription

    from order_archiver.mongodb.deployment import is_standalone

    class Described:
        def __init__(self, servers: list[ServerDescription]) -> None:
            self.servers = servers

        def server_descriptions(self) -> dict:
            return {server.address: server for server in self.servers}

    class Client:
        topology_description = Described([ServerDescription(("h", 27017), Hello(reply))])

    assert is_standalone(Client()) is standalone  # type: ignore[arg-type]
    assert is_standalone(type("Nothing", (), {"topology_description": Described([])})()) is False  # type: ignore[arg-type]


def test_a_delete_retried_after_an_election_counts_what_every_try_deleted(mongo):
    """An election kills a delete_many after its first documents (11602, no label: pymongo does
    not retry it, it raises NotPrimaryError); the retry deletes the rest and answers for those
    only. The count is what is gone, read back: every try's deletions, none twice."""
    from order_archiver.retry import Purpose, deleted_across_retries

    orders = mongo["db"]["orders"]
    orders.insert_many([{"_id": i} for i in range(6)])
    tries = []

    def delete():
        tries.append(1)
        if len(tries) == 1:  # killed in flight: 2 deleted, then the stepdown's error
            orders.delete_many({"_id": {"$in": [0, 1]}})
            raise pymongo_errors.NotPrimaryError(
                "operation was interrupted",
                {"ok": 0.0, "code": 11602, "codeName": "InterruptedDueToReplStateChange"},
            )
        return orders.delete_many({"_id": {"$in": [0, 1, 2, 3]}})

    deleted = deleted_across_retries(
        delete,
        4,
        lambda: orders.count_documents({"_id": {"$in": [0, 1, 2, 3]}}),
        purpose=Purpose(3, 0.0, 0.0),
    )
    assert (deleted, len(tries)) == (4, 2)
    untouched = deleted_across_retries(lambda: orders.delete_many({"_id": 4}), 1, lambda: 99)
    assert untouched == 1  # no retry: the delete's own answer, nothing read back


def test_a_replica_set_without_a_primary_is_said_as_such_not_unreachable():
    """pymongo's ServerSelectionTimeoutError during an election: its message describes the
    topology (members answering as secondaries, none primary). The line names the election;
    a server that does not answer at all stays "unreachable"."""
    from pymongo.hello import Hello
    from pymongo.server_description import ServerDescription
    from pymongo.synchronous.settings import TopologySettings
    from pymongo.topology_description import TOPOLOGY_TYPE, TopologyDescription

    from order_archiver.errors import NO_PRIMARY

    def timed_out(description: ServerDescription) -> pymongo_errors.ServerSelectionTimeoutError:
        topology = TopologyDescription(
            TOPOLOGY_TYPE.ReplicaSetNoPrimary,
            {description.address: description},
            "rs0",
            None,
            None,
            TopologySettings(),
        )
        return pymongo_errors.ServerSelectionTimeoutError(
            f'No replica set members match selector "Primary()", Timeout: 5.0s, Topology Description: {topology!r}'
        )

    secondary = ServerDescription(
        ("db1", 27017),
        Hello(
            {"ok": 1, "isWritablePrimary": False, "secondary": True, "setName": "rs0", "hosts": ["db1:27017"]}
        ),
    )
    assert describe(timed_out(secondary)) == NO_PRIMARY
    assert describe(timed_out(ServerDescription(("db1", 27017)))) == (
        "MongoDB server unreachable (server selection timed out)"
    )
    assert is_transient(timed_out(secondary))
