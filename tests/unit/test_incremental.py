"""Incremental batch (checkpoint.py): which pass a run makes, what it remembers, and that
late deliveries, crashes and dirty stamps never lose an order. mongomock; the server's clock
is injected, so every pass boundary is exact."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.context import RunContext
from order_archiver.errors import ArchiverError
from order_archiver.mongodb.checkpoint import (
    EPOCH,
    BatchState,
    Pass,
    checkpoint_key,
    plan_pass,
    state_document,
    state_from_document,
)
from order_archiver.operations.status import collect_status
from order_archiver.settings import Duration, Settings
from tests.helpers import assert_no_duplicates, expected_archive_ids, pending_ids, seed_database

# The generated orders were delivered up to ANCHOR (2026-11-26 00:00) + 75 min.
DAY1 = datetime(2026, 11, 26, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)
WEEK = timedelta(days=7)


class Clock:
    """The server's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock(DAY1)


@pytest.fixture
def seeded(mongo, settings):
    return seed_database(mongo[settings.mongodb_database], settings, 300, p_anomalies=0.05)


def run(mongo, settings, clock, **options):
    options.setdefault("run", True)
    options.setdefault("batch_size", 25)
    archiver = BatchArchiver(
        mongo,
        settings,
        BatchOptions(**options),
        context=RunContext(clock=clock),
        server_clock=clock,
    )
    return archiver.run()


def orders(mongo, settings):
    return mongo[settings.mongodb_database][settings.orders_collection]


def archived(mongo, settings):
    archive = mongo[settings.archive_db_name][settings.archive_collection]
    return {d["_id"] for d in archive.find({}, {"_id": 1})}


def state_of(mongo, settings, date_from=None, date_to=None):
    key = checkpoint_key(settings, "batch", date_from, date_to)
    return state_from_document(
        mongo[settings.mongodb_database]["archiver_checkpoints"].find_one({"_id": key})
    )


# --- the plan (pure) ---------------------------------------------------------------------


def plan(state, now=DAY1, **kwargs):
    kwargs.setdefault("overlap", HOUR)
    kwargs.setdefault("full_sweep_every", WEEK)
    return plan_pass(state, now, **kwargs)


def test_which_pass_a_run_makes():
    assert plan(BatchState()).pass_ == Pass(None, DAY1)  # first run
    done = BatchState(high_water=DAY1 - HOUR, last_full_at=DAY1 - 2 * HOUR)
    assert plan(done).pass_ == Pass(DAY1 - 2 * HOUR, DAY1)  # since: the mark less the overlap
    assert plan(done, force_full=True).pass_.full
    assert plan(done, now=DAY1 - 2 * HOUR + WEEK).pass_.full  # the weekly sweep is due
    assert plan(done, full_sweep_every=timedelta(0)).pass_.full  # 0d: always full
    assert plan(BatchState(high_water=DAY1 + HOUR, last_full_at=DAY1)).pass_.full  # a mark ahead


def test_a_pass_in_progress_is_resumed_unless_told_otherwise():
    incremental = Pass(DAY1 - 3 * HOUR, DAY1 - HOUR, last_id=ObjectId())
    state = BatchState(high_water=DAY1 - 2 * HOUR, last_full_at=DAY1 - 5 * HOUR, current=incremental)
    assert plan(state).pass_ == incremental
    assert plan(state, resume=False).pass_ == Pass(DAY1 - 3 * HOUR, DAY1)  # --restart: a fresh one
    assert plan(state, force_full=True).pass_ == Pass(None, DAY1)  # --full: not the incremental one
    full = Pass(None, DAY1 - HOUR, last_id=ObjectId())
    assert plan(BatchState(current=full), force_full=True).pass_ == full  # a full one goes on


def test_a_complete_pass_moves_the_marks():
    state = BatchState(high_water=DAY1 - 5 * HOUR, last_full_at=DAY1 - WEEK)
    incremental = Pass(DAY1 - 6 * HOUR, DAY1 - HOUR, last_id=ObjectId())
    assert state.after(incremental) == BatchState(high_water=DAY1 - HOUR, last_full_at=DAY1 - WEEK)
    full = Pass(None, DAY1, last_id=ObjectId())
    assert state.after(full) == BatchState(high_water=DAY1, last_full_at=DAY1)


def test_the_checkpoint_document_is_validated_on_load():
    state = BatchState(DAY1, DAY1 - HOUR, Pass(DAY1 - 2 * HOUR, DAY1 - HOUR, last_id="CMD-7"))
    assert state_from_document(state_document("k", state)) == state
    for broken in (
        {"kind": "batch", "version": 99},
        {"kind": "watch", "version": 2},
        {"kind": "batch", "version": 2, "high_water": "yesterday"},
        {"kind": "batch", "version": 2, "pass": {"since": None, "last_id": 1}},  # no started_at
        {"kind": "batch", "version": 2, "pass": {"since": None, "started_at": DAY1}},  # no last_id
        {"kind": "batch"},
        ["not", "a", "document"],
    ):
        with pytest.raises(ValueError, match=r".+"):
            state_from_document(broken)
    # An earlier version's document: its pass goes on, as a full one begun at the epoch.
    legacy = state_from_document({"kind": "batch", "last_id": "CMD-9"})
    assert legacy == BatchState(current=Pass(None, EPOCH, "CMD-9"))


def test_the_change_stream_position_goes_with_the_pass_and_is_validated():
    """Where the orders' change stream stood when a pass began: kept with a pass in progress,
    the state's once the pass is complete (the next incremental pass reads every change
    since), a resume token as MongoDB gives it or nothing."""
    token = {"_data": "8263A1B2C3000000012B022C0100296E5A1004"}
    running = Pass(None, DAY1, last_id="CMD-3", stream_token=token)
    state = BatchState(DAY1 - WEEK, DAY1 - WEEK, running, stream_token={"_data": "older"})
    assert state_from_document(state_document("k", state)) == state
    assert state.after(running).stream_token == token
    for broken in ({"_data": ""}, "8263A1B2", {"ts": 1}):
        with pytest.raises(ValueError, match="not a resume token"):
            state_from_document({"kind": "batch", "version": 2, "stream_token": broken})


# --- runs --------------------------------------------------------------------------------


def test_a_late_delivery_is_archived_by_the_next_incremental_run(mongo, settings, seeded, clock):
    first = run(mongo, settings, clock)
    assert (first.mode, first.pass_reason) == ("full", "first run: no high-water mark yet")
    assert state_of(mongo, settings).high_water == DAY1
    # An order created before the first run (a small _id, an old date_commande), delivered
    # after it; and a new order created and delivered since.
    late = pending_ids(seeded)[0]
    clock.now = DAY1 + 2 * HOUR
    orders(mongo, settings).update_one(
        {"_id": late}, {"$set": {"status": "livrée", "date_livraison": DAY1 + 90 * timedelta(minutes=1)}}
    )
    new = (
        orders(mongo, settings)
        .insert_one(
            {
                **{k: v for k, v in seeded.orders[0].items() if k not in ("_id", "_dirty")},
                "numero_commande": "CMD-NEW-1",
                "status": "livrée",
                "date_commande": DAY1 + HOUR,
                "date_livraison": DAY1 + HOUR,
            }
        )
        .inserted_id
    )
    second = run(mongo, settings, clock)
    assert (second.mode, second.since) == ("incremental", DAY1 - HOUR)
    assert second.archived == 2
    assert second.scanned == 2 + first.rejected  # the two, and the rejects list read again
    assert archived(mongo, settings) == expected_archive_ids(seeded) | {late, new}
    assert state_of(mongo, settings).high_water == DAY1 + 2 * HOUR


def test_an_order_delivered_during_a_run_is_read_by_the_next(mongo, settings, seeded, clock):
    """Stamped by an application clock a little behind the server's, a moment before the
    pass began, and written after the pass read past it: the overlap catches it."""
    run(mongo, settings, clock)
    in_flight = pending_ids(seeded)[1]
    orders(mongo, settings).update_one(
        {"_id": in_flight}, {"$set": {"status": "livrée", "date_livraison": DAY1 - timedelta(minutes=5)}}
    )
    clock.now = DAY1 + HOUR
    report = run(mongo, settings, clock)
    assert report.archived == 1
    assert in_flight in archived(mongo, settings)


def test_a_crash_before_the_mark_is_saved_loses_nothing(mongo, settings, seeded, clock, monkeypatch):
    run(mongo, settings, clock)
    late = pending_ids(seeded)[:30]
    clock.now = DAY1 + 2 * HOUR
    orders(mongo, settings).update_many(
        {"_id": {"$in": late}}, {"$set": {"status": "livrée", "date_livraison": DAY1 + HOUR}}
    )
    # The archive writes go through; the save of the new mark fails for good (the
    # checkpoint write retried, then the run fails as a transient error).
    import mongomock

    original = mongomock.collection.Collection.replace_one

    def replace_one(self, selector, replacement, *args, **kwargs):
        if replacement.get("kind") == "batch" and replacement.get("pass") is None:
            raise AutoReconnect("connection reset by peer")
        return original(self, selector, replacement, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "replace_one", replace_one)
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    with pytest.raises(ArchiverError):
        run(mongo, settings, clock)
    assert set(late) <= archived(mongo, settings)  # written before the failure
    assert state_of(mongo, settings).high_water == DAY1  # the old mark: the next run reads again
    monkeypatch.setattr(mongomock.collection.Collection, "replace_one", original)
    clock.now = DAY1 + 3 * HOUR
    again = run(mongo, settings, clock)
    # The failed run's pass goes on after its last saved _id: what it wrote is not written again.
    assert (again.mode, again.since, again.archived) == ("incremental", DAY1 - HOUR, 0)
    assert again.resumed_from is not None
    assert again.already_archived <= 30
    assert archived(mongo, settings) == expected_archive_ids(seeded) | set(late)
    assert_no_duplicates(mongo[settings.archive_db_name][settings.archive_collection])
    # The failed run's pass was resumed and completed: its start (not this run's) is the mark.
    assert state_of(mongo, settings).high_water == DAY1 + 2 * HOUR


@pytest.mark.parametrize(
    "stamp",
    [None, "2026-11-26T13:00:00Z", datetime(2026, 11, 1, tzinfo=UTC)],
    ids=["missing", "a string", "long before the status changed"],
)
def test_a_dirty_delivery_stamp_is_archived_by_the_full_sweep(mongo, settings, seeded, clock, stamp):
    run(mongo, settings, clock)
    dirty = pending_ids(seeded)[2]
    update = {"$set": {"status": "livrée", "date_livraison": stamp}}
    orders(mongo, settings).update_one({"_id": dirty}, update)
    clock.now = DAY1 + HOUR
    assert run(mongo, settings, clock).archived == 0  # not by an incremental run...
    clock.now = DAY1 + WEEK  # ... but by the sweep once it is due
    sweep = run(mongo, settings, clock)
    assert (sweep.mode, sweep.pass_reason) == ("full", "full sweep due (BATCH_FULL_SWEEP_EVERY)")
    assert dirty in archived(mongo, settings)
    assert state_of(mongo, settings).last_full_at == DAY1 + WEEK


def test_full_forces_the_walk_and_resets_the_sweep(mongo, settings, seeded, clock):
    run(mongo, settings, clock)
    dirty = pending_ids(seeded)[3]
    orders(mongo, settings).update_one({"_id": dirty}, {"$set": {"status": "livrée"}})
    clock.now = DAY1 + HOUR
    report = run(mongo, settings, clock, full=True)
    assert (report.mode, report.pass_reason, report.archived) == ("full", "--full", 1)
    assert state_of(mongo, settings).last_full_at == DAY1 + HOUR


def test_a_dry_run_reports_the_incremental_selection_and_writes_nothing(mongo, settings, seeded, clock):
    run(mongo, settings, clock)
    before = mongo[settings.mongodb_database]["archiver_checkpoints"].find_one()
    new = pending_ids(seeded)[:4]
    orders(mongo, settings).update_many(
        {"_id": {"$in": new}}, {"$set": {"status": "livrée", "date_livraison": DAY1 + HOUR}}
    )
    clock.now = DAY1 + 2 * HOUR
    dry = run(mongo, settings, clock, run=False)
    assert (dry.mode, dry.would_archive, dry.since) == ("incremental", 4, DAY1 - HOUR)
    assert mongo[settings.mongodb_database]["archiver_checkpoints"].find_one() == before
    assert not set(new) & archived(mongo, settings)


def test_status_shows_the_mark_and_the_next_sweep(mongo, settings, seeded, clock):
    assert collect_status(mongo, settings, now=DAY1).batch["high_water"] is None
    run(mongo, settings, clock)
    batch = collect_status(mongo, settings, now=DAY1 + HOUR).batch
    assert batch["high_water"] == DAY1
    assert batch["high_water_age_s"] == 3600
    assert batch["next_since"] == DAY1 - HOUR
    assert batch["next_full_sweep_by"] == DAY1 + WEEK
    assert batch["pass_in_progress"] is False
    lines = collect_status(mongo, settings, now=DAY1 + HOUR).lines()
    assert any(line.startswith("batch: high-water mark 2026-11-26T12:00:00+00:00 (1h ago)") for line in lines)


@pytest.mark.parametrize(
    ("delivered", "catching_up"),
    [
        # Delivered before the next incremental run's start (the mark less BATCH_OVERLAP) and
        # added since, with no change-stream position saved: only a full pass reads it.
        (DAY1 - 3 * HOUR, "python main.py batch --run --full archives them now"),
        (DAY1 - HOUR / 2, "the next python main.py batch --run archives them"),
    ],
)
def test_status_names_the_command_that_archives_its_backlog(
    mongo, settings, seeded, clock, delivered, catching_up
):
    """A new user's try on a standalone: `batch --run`, a later `simulate.py` adding orders
    delivered hours before, and status said 'not archived, the oldest for 14400s (limit 900s)',
    no command; the next incremental run's '0 delivered' then looked like a bug. Status says
    the ages as durations are written, and which command archives the backlog."""
    run(mongo, settings, clock)
    assert state_of(mongo, settings).stream_token is None  # as on a standalone: no change streams
    order = dict(orders(mongo, settings).find_one({"status": "livrée"}), _id=ObjectId())
    order.update(numero_commande="CMD-LATE-1", date_commande=delivered - HOUR, date_livraison=delivered)
    orders(mongo, settings).insert_one(order)
    report = collect_status(mongo, settings, now=DAY1 + HOUR)
    age = DAY1 + HOUR - delivered
    [problem] = report.problems
    assert problem.startswith(
        f"1 delivered order not archived, the oldest delivered {Duration(seconds=age.total_seconds())} "
        "ago (limit 15m): "
    )
    assert catching_up in problem
    installed = collect_status(mongo, settings, now=DAY1 + HOUR, program="order-archiver").problems[0]
    assert catching_up.replace("python main.py", "order-archiver") in installed  # as the user typed it
    assert report.batch is not None
    assert report.batch["reads_changes"] is False


def test_a_limit_pass_goes_on_across_runs_then_becomes_the_mark(mongo, settings, seeded, clock):
    first = run(mongo, settings, clock, limit=60)
    state = state_of(mongo, settings)
    assert state.high_water is None
    assert state.current.started_at == DAY1
    clock.now = DAY1 + HOUR
    while state_of(mongo, settings).current is not None:
        report = run(mongo, settings, clock, limit=60)
        assert report.mode == "full"  # the same pass, begun at DAY1
    assert state_of(mongo, settings).high_water == DAY1  # the pass's start, not the last run's
    assert first.archived > 0
    assert archived(mongo, settings) == expected_archive_ids(seeded)


def _past_the_retention(mongo, settings, ids):
    """The oldest orders of a history (the first in ``_id`` order): delivered 400 days ago,
    past ARCHIVE_RETENTION (365d): read, counted, not archived."""
    orders(mongo, settings).update_many(
        {"_id": {"$in": ids}}, {"$set": {"date_livraison": DAY1 - timedelta(days=400)}}
    )
    return Settings(simulation=True, log_dir="", archive_retention=Duration(days=365)), None


def _outside_the_window(mongo, settings, ids):
    """Dirty data: ``date_commande`` stored as a string, selected whatever its text and found
    outside the window only once read (``in_window``)."""
    orders(mongo, settings).update_many(
        {"_id": {"$in": ids}}, {"$set": {"date_commande": "2001-01-01T00:00:00"}}
    )
    return settings, datetime(2020, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("skipped_by", [_past_the_retention, _outside_the_window])
def test_a_limit_run_that_reads_orders_it_does_not_archive_goes_on_across_runs(
    mongo, settings, seeded, clock, skipped_by
):
    """``--limit N`` ends the pass's aggregation at N orders (``$limit``), and an order read but
    not archived (past ARCHIVE_RETENTION, a string date outside the window) does not count
    against N: such a read ended at its ``$limit`` with a chunk short of N, and the run took
    the end of that read for the end of the window. It marked the pass complete, its start the
    high-water mark: every later run was incremental from there and the rest of the history
    (and, on a deployment with change streams, the corrections of archived orders beyond the
    cut: the stream position moved past them) was never read by ``--limit`` runs."""
    delivered = orders(mongo, settings).find({"status": "livrée"}, {"_id": 1}).sort("_id", 1).limit(3)
    skipped = [doc["_id"] for doc in delivered]
    settings, date_from = skipped_by(mongo, settings, skipped)
    first = run(mongo, settings, clock, limit=40, date_from=date_from)
    assert first.archived == 37  # 40 orders read, 3 of them not archivable
    state = state_of(mongo, settings, date_from)
    assert state.high_water is None  # the pass goes on
    assert state.current is not None
    clock.now = DAY1 + HOUR
    for _ in range(20):
        if state_of(mongo, settings, date_from).current is None:
            break
        assert run(mongo, settings, clock, limit=40, date_from=date_from).mode == "full"  # the same pass
    assert state_of(mongo, settings, date_from).high_water == DAY1
    assert archived(mongo, settings) == expected_archive_ids(seeded) - set(skipped)


class _ScanningStream:
    """What MongoDB may answer a stream resumed far back behind a filter: empty batches while
    its scan of the oplog advances (``resume_token`` moves), then the events further on."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.resume_token = {"_data": "0001"}

    def try_next(self):
        position, event = self.answers.pop(0)
        self.resume_token = {"_data": position}
        return event

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_reading_the_changes_goes_on_through_empty_batches_until_the_pass_start(mongo, settings):
    """An empty getMore short of where this pass began is not the end: the server may still be
    scanning past changes the filter drops. Stopping there would lose every change between,
    since the next run reads from this pass's start."""
    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.mongodb.changes import reached
    from order_archiver.mongodb.checkpoint import Pass

    later = {
        "_id": {"_data": "0007"},
        "operationType": "update",
        "documentKey": {"_id": 7},
        "fullDocument": {"_id": 7, "status": "livrée"},
        "wallTime": DAY1 - HOUR,
    }
    stream = _ScanningStream([("0002", None), ("0004", None), ("0007", later), ("0009", None)])
    archiver = BatchArchiver(mongo, settings, BatchOptions(run=True), server_clock=lambda: DAY1)
    archiver.orders_primary = type("Orders", (), {"watch": lambda *a, **k: stream})()  # type: ignore[assignment]
    archiver.current = Pass(DAY1 - WEEK, DAY1, stream_token={"_data": "0008"})
    assert archiver._planner().changed_since({"_data": "0001"}, archiver.current)[0] == [7]
    assert archiver.report.changes_read == 1
    assert reached({"_data": "0009"}, {"_data": "0008"})
    assert not reached({"_data": "0004"}, {"_data": "0008"})


# --- the orders read besides the selection, a bounded chunk of ids at a time -----------------


def also_source(mongo, settings, also, **fields):
    from order_archiver.mongodb.source import OrderSource
    from order_archiver.orders.enrichment import CollectionNames
    from order_archiver.orders.selection import IdList

    return OrderSource(
        orders(mongo, settings),
        CollectionNames(),
        settings.delivered_status,
        None,
        None,
        archived_ids=lambda ids: set(),
        also_ids=IdList.of(also),
        **fields,
    )


@pytest.mark.parametrize("page_size", [2, 3, 500])
def test_the_orders_read_besides_the_selection_are_merged_in_id_order_once_each(
    mongo, settings, monkeypatch, page_size
):
    """An incremental pass reads the orders stamped since its mark (one read) and the changed
    ones whatever their stamp (reads of at most ID_CHUNK ids each), merged in ``_id`` order
    (the checkpoint's keyset), each once; the pages after a read failure alike, with pages and
    chunks far smaller than the ids, some of which are not delivered (skipped, never an end)."""
    from order_archiver.mongodb import source as source_module
    from order_archiver.orders import selection

    monkeypatch.setattr(source_module, "PAGE_SIZE", page_size)
    monkeypatch.setattr(selection, "ID_CHUNK", 2)
    collection = orders(mongo, settings)
    ids = [ObjectId() for _ in range(14)]
    since = DAY1 - HOUR
    for n, one in enumerate(ids):
        delivered = n % 3 != 2
        stamp = since + HOUR if n % 2 == 0 else since - WEEK  # even: stamped since the mark
        collection.insert_one(
            {
                "_id": one,
                "numero_commande": f"CMD-{n}",
                "status": "livrée" if delivered else "en_attente",
                "date_commande": DAY1 - WEEK,
                "date_livraison": stamp if delivered else None,
                "items": [],
            }
        )
    changed = [ids[n] for n in (13, 1, 2, 5, 7, 8, 4)]  # unsorted, some not delivered, some stamped too
    source = also_source(mongo, settings, changed, delivered_since=since)
    expected = [one for n, one in enumerate(ids) if n % 3 != 2 and (n % 2 == 0 or one in changed)]
    streamed = [raw["_id"] for raw, _ in source.stream(None, None)]
    paged = [item["_id"] for item, _ in source.pages(None) if item is not None]
    assert streamed == paged == expected
    assert [raw["_id"] for raw, _ in source.stream(expected[2], None)] == expected[3:]
    assert [raw["_id"] for raw, _ in source.stream(None, 4)] == expected[:4]
    ends = [end for item, end in source.pages(None) if item is None]
    assert ends == sorted(ends)
    assert ends[-1] >= expected[-1]


@pytest.mark.parametrize("page_size", [2, 500])
def test_the_changed_orders_are_read_where_also_from_says_and_the_scans_copy_left_out(
    mongo, settings, monkeypatch, page_size
):
    """A full pass scans through the URI's read preference (a secondary, maybe behind) and reads
    the orders the change history names from the primary (``also_from``): for those, the
    primary's answer alone decides, in the stream and in the pages. Here the scan's member is
    a copy behind (older versions; a correction, an un-delivery and a delivery not applied yet):
    a changed order is read as the primary holds it, once; the others as the scan finds them."""
    from order_archiver.mongodb import source as source_module
    from order_archiver.orders import selection

    monkeypatch.setattr(source_module, "PAGE_SIZE", page_size)
    monkeypatch.setattr(selection, "ID_CHUNK", 2)
    primary = orders(mongo, settings)
    behind = mongo["behind"][settings.orders_collection]  # the secondary, as it stands
    ids = [ObjectId() for _ in range(9)]

    def order(n, version, delivered=True):
        return {
            "_id": ids[n],
            "numero_commande": f"CMD-{n}",
            "status": "livrée" if delivered else "en_attente",
            "date_commande": DAY1 - WEEK,
            "date_livraison": DAY1 - HOUR if delivered else None,
            "items": [],
            "version": version,
        }

    for n in range(9):
        behind.insert_one(order(n, 1, delivered=n != 6))
        primary.insert_one(order(n, 2 if n in (1, 4, 6) else 1, delivered=n != 7))
    # 1, 4: corrected; 6: delivered; 7: no longer delivered (all on the primary only)
    source = also_source(mongo, settings, [ids[n] for n in (1, 4, 6, 7)], also_from=primary)
    source = dataclasses.replace(source, orders=behind)
    expected = [(ids[n], 2 if n in (1, 4, 6) else 1) for n in range(9) if n != 7]
    streamed = [(raw["_id"], raw["version"]) for raw, _ in source.stream(None, None)]
    paged = [(item["_id"], item["version"]) for item, _ in source.pages(None) if item is not None]
    assert streamed == expected
    assert paged == expected


def test_an_id_list_sorts_and_cuts_ids_as_mongodb_sorts_them():
    """BSON's comparison order across types (dirty ``_id``s): numbers, strings, ObjectIds, dates."""
    from order_archiver.orders.selection import IdList

    oid = ObjectId()
    ids = IdList.of([oid, "b", 2, DAY1, "a", 1.5, oid])
    assert ids.ids == (1.5, 2, "a", "b", oid, DAY1)
    assert ids.following("a", 2) == ("b", oid)
    assert list(ids.chunks(2, size=2)) == [("a", "b"), (oid, DAY1)]
    assert list(ids.chunks(None, size=4)) == [(1.5, 2, "a", "b"), (oid, DAY1)]
    later = ObjectId()  # what a scan read, in _id order: those of the list left out
    scanned = [1, 1.5, "a", "c", oid, later, DAY1, DAY1 + HOUR]
    assert list(ids.without(scanned, lambda one: one)) == [1, "c", later, DAY1 + HOUR]


# Each kind of pass after a first run archived the window: the runs made before it, then its
# own options. "scanned" means one thing in each: the orders of the pass gone through.
PASS_KINDS = {
    "full": ([], {"full": True}),
    "incremental": ([], {}),
    "limit": ([], {"full": True, "limit": 2}),
    "partition": ([], {"full": True, "partition": (1, 3)}),
    "resume": ([{"full": True, "limit": 2}], {}),  # goes on with the full pass the limit left
}


@pytest.mark.parametrize("kind", PASS_KINDS)
def test_scanned_counts_the_orders_gone_through_in_every_kind_of_pass(mongo, settings, seeded, clock, kind):
    """A new user's try: a `--full` run said "scanned 0, ... already archived 294" (the server
    skipped the archived orders by _id), an incremental one "scanned 2, already archived 2" (it
    read them): scanned counted the archived orders in some passes and not in others. Now, in
    every kind of pass, scanned = archived + already archived + revised + rejected."""
    from order_archiver.orders.partition import Partition

    run(mongo, settings, clock)
    archive = mongo[settings.archive_db_name][settings.archive_collection]
    lost = [d["_id"] for d in archive.find({}, {"_id": 1}).sort("_id", 1)][::30]  # to archive again
    archive.delete_many({"_id": {"$in": lost}})
    clock.now += HOUR
    before, options = PASS_KINDS[kind]
    for earlier in before:
        run(mongo, settings, clock, **earlier)
    if "partition" in options:
        options = {**options, "partition": Partition(*options["partition"])}
    report = run(mongo, settings, clock, **options)
    if kind == "resume":
        assert report.pass_reason == "resuming an interrupted pass"
    assert report.mode == ("incremental" if kind == "incremental" else "full")
    parts = report.archived + report.already_archived + report.revised + report.rejected
    assert report.scanned == parts, (
        report.scanned,
        report.archived,
        report.already_archived,
        report.rejected,
    )
    if kind != "incremental":  # the window's orders went through: the archived ones counted
        assert report.already_archived > 0
    if report.delivered is not None:  # a complete pass without --limit: each delivered order once
        gone_through = report.scanned + report.outside_window + report.past_retention + report.past_cold_after
        assert gone_through == report.delivered


def test_an_incremental_summary_says_its_orders_come_from_the_change_history_too():
    """With the change history (not a standalone), an incremental pass reads the orders stamped
    since its start and those changed since the last run, whatever their stamps: "of 311
    delivered since 12:49" made a new user think they were delivered then (a second simulate.py
    spreads deliveries over 30 days)."""
    from order_archiver.batch.report import BatchReport

    since = datetime(2026, 12, 7, 12, 49, 8, tzinfo=UTC)
    line = BatchReport(delivered=311, since=since).summary_line()
    assert (
        f"of 311 delivered: stamped since {since.isoformat()} or changed since the last run "
        "(incremental, from the change history; --full reads them all)"
    ) in line
    by_stamp = BatchReport(delivered=3, since=since, stamps_only="standalone").summary_line()
    assert f"of 3 delivered since {since.isoformat()} (incremental, by delivery stamp only)" in by_stamp
