"""Batch archiving on mongomock: the archive's exact set and contents, modes and bookkeeping."""

import re
from datetime import UTC, datetime, timedelta

import mongomock
import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect, OperationFailure, _OperationCancelled

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.context import RunContext
from order_archiver.errors import FatalError, TransientError
from order_archiver.mongodb.checkpoint import checkpoint_key
from order_archiver.orders.selection import build_selection, in_window
from order_archiver.settings import Settings
from tests.helpers import ANCHOR, assert_no_duplicates, delivered_rejects, expected_archive_ids, seed_database

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


@pytest.fixture
def seeded(mongo, settings):
    dataset = seed_database(mongo[settings.mongodb_database], settings, 300, p_anomalies=0.15)
    return dataset


def archive_of(mongo, settings):
    return mongo[settings.archive_db_name][settings.archive_collection]


def run(mongo, settings, **options):
    options.setdefault("run", True)
    options.setdefault("batch_size", 25)
    return BatchArchiver(
        mongo,
        settings,
        BatchOptions(**options),
        context=RunContext(clock=lambda: NOW),
        server_clock=lambda: NOW,
    ).run()


def test_archive_holds_exactly_the_valid_delivered_orders(mongo, settings, seeded):
    report = run(mongo, settings)
    archive = archive_of(mongo, settings)
    expected = expected_archive_ids(seeded)
    assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected
    assert report.archived == len(expected)
    assert report.rejected == delivered_rejects(seeded) > 0
    assert report.rejections == {"numero_commande missing": report.rejected}
    assert report.scanned == report.archived + report.rejected
    assert_no_duplicates(archive)


def test_archive_documents_are_enriched_and_dirty_cases_flagged(mongo, settings, seeded):
    run(mongo, settings)
    archive = archive_of(mongo, settings)
    by_kind = {o.get("_dirty"): o for o in seeded.orders if o["status"] == "livrée"}
    clean = archive.find_one({"_id": by_kind[None]["_id"]})
    assert clean["anomalies"] == []
    assert clean["archived_by"] == "batch"
    assert clean["client"]["nom"]
    assert clean["restaurant"]["type_cuisine"]
    assert clean["montant_total"] == round(sum(i["sous_total"] for i in clean["items"]), 2) > 0
    assert clean["archived_at"] == NOW.replace(tzinfo=clean["archived_at"].tzinfo)
    expectations = {
        "client_missing": ("client", "client_missing"),
        "livreur_missing": ("livreur", "livreur_missing"),
        "livreur_id_missing": ("livreur", "livreur_id_missing"),
        "restaurant_missing": ("restaurant", "restaurant_missing"),
    }
    for kind, (field, anomaly) in expectations.items():
        if kind in by_kind:
            doc = archive.find_one({"_id": by_kind[kind]["_id"]})
            assert doc[field] is None, kind
            assert anomaly in doc["anomalies"], kind
    if "date_commande_string" in by_kind:
        doc = archive.find_one({"_id": by_kind["date_commande_string"]["_id"]})
        assert isinstance(doc["date_commande"], datetime)


def test_dry_run_writes_nothing_and_reports(mongo, settings, seeded):
    database = mongo[settings.mongodb_database]
    before = sorted(database.list_collection_names())
    report = run(mongo, settings, run=False, samples=2)
    assert sorted(database.list_collection_names()) == before
    assert report.would_archive == len(expected_archive_ids(seeded))
    assert report.rejected == delivered_rejects(seeded)
    assert len(report.samples) == 2
    assert report.archived == 0
    assert "nothing was written" in report.summary_line()


def test_rerun_adds_nothing_and_counts_already_archived(mongo, settings, seeded):
    first = run(mongo, settings)
    archive = archive_of(mongo, settings)
    snapshot = {d["_id"]: d for d in archive.find()}
    second = run(mongo, settings)  # incremental: nothing delivered since the first run
    assert (second.mode, second.archived, second.already_archived) == ("incremental", 0, 0)
    assert second.scanned == first.rejected  # only the rejects list is read again
    full = run(mongo, settings, full=True)
    assert (full.mode, full.archived, full.already_archived) == ("full", 0, first.archived)
    assert {d["_id"]: d for d in archive.find()} == snapshot  # never rewritten


def test_limit_then_rest(mongo, settings, seeded):
    first = run(mongo, settings, limit=40)
    assert first.archived + first.rejected == 40
    rest = run(mongo, settings)
    assert first.archived + rest.archived == len(expected_archive_ids(seeded))
    assert_no_duplicates(archive_of(mongo, settings))


def test_date_window(mongo, settings, seeded):
    date_from, date_to = ANCHOR - timedelta(days=10), ANCHOR - timedelta(days=3)
    run(mongo, settings, date_from=date_from, date_to=date_to)
    archived = {d["_id"] for d in archive_of(mongo, settings).find({}, {"_id": 1})}
    assert archived == expected_archive_ids(seeded, date_from, date_to)
    assert archived


def test_purge_moves_exactly_the_archived_orders(mongo, settings, seeded):
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    report = run(mongo, settings, purge_source=True)
    archived = {d["_id"] for d in archive_of(mongo, settings).find({}, {"_id": 1})}
    remaining = {d["_id"] for d in orders.find({}, {"_id": 1})}
    assert report.purged == len(archived)
    assert not archived & remaining
    assert remaining | archived == {o["_id"] for o in seeded.orders}


def test_without_purge_the_source_is_untouched(mongo, settings, seeded):
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    before = list(orders.find().sort("_id"))
    run(mongo, settings)
    assert list(orders.find().sort("_id")) == before


def test_archive_in_another_database(mongo, seeded):
    settings = Settings(simulation=True, log_dir="", archive_database="archives")
    report = run(mongo, settings)
    assert report.archived == len(expected_archive_ids(seeded))
    assert mongo["archives"]["Commande_archive"].count_documents({}) == report.archived
    again = run(mongo, settings)
    assert again.archived == 0
    assert mongo["archives"]["Commande_archive"].count_documents({}) == report.archived


def test_interrupted_run_resumes_from_its_checkpoint(mongo, settings, seeded):
    archiver = BatchArchiver(
        mongo, settings, BatchOptions(run=True, batch_size=20), context=RunContext(clock=lambda: NOW)
    )
    chunks = 0
    original = archiver.write_chunk

    def write_then_crash(chunk, upcoming=None):
        nonlocal chunks
        original(chunk, upcoming)
        chunks += 1
        if chunks == 3:
            raise RuntimeError("power cut")

    archiver.write_chunk = write_then_crash
    with pytest.raises(Exception, match="power cut"):
        archiver.run()
    checkpoint = mongo[settings.mongodb_database]["archiver_checkpoints"].find_one()
    assert checkpoint["kind"] == "batch"
    assert checkpoint["pass"]["last_id"] is not None
    assert checkpoint["high_water"] is None  # no pass completed yet
    resumed = run(mongo, settings)
    assert resumed.resumed_from == str(checkpoint["pass"]["last_id"])
    assert {d["_id"] for d in archive_of(mongo, settings).find({}, {"_id": 1})} == expected_archive_ids(
        seeded
    )
    done = mongo[settings.mongodb_database]["archiver_checkpoints"].find_one()
    assert done["pass"] is None  # complete: nothing to resume
    assert done["high_water"] is not None


def test_invalid_checkpoint_is_ignored(mongo, settings, seeded):
    key = checkpoint_key(settings, "batch", None, None)
    mongo[settings.mongodb_database]["archiver_checkpoints"].insert_one({"_id": key, "garbage": True})
    report = run(mongo, settings)
    assert report.resumed_from is None
    assert report.archived == len(expected_archive_ids(seeded))


def test_transient_write_errors_are_retried(mongo, settings, seeded, monkeypatch):
    failures = iter([AutoReconnect("connection reset"), AutoReconnect("connection reset")])
    original = mongomock.collection.Collection.bulk_write

    def flaky(self, *args, **kwargs):
        error = next(failures, None)
        if error is not None:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "bulk_write", flaky)
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    report = run(mongo, settings)
    assert report.archived == len(expected_archive_ids(seeded))


def test_a_write_whose_reply_was_lost_counts_what_it_wrote_as_archived(mongo, settings, seeded, monkeypatch):
    """#34 item 4: a 4-share backfill's reports summed to 10,957 archived, its archive held 11,957.
    A chunk's upsert applied by the server whose reply is lost (the connection's wait for the
    answer cancelled or cut: pymongo raises an AutoReconnect) is sent again and finds its orders
    archived, by its own first attempt: they are counted archived (this run wrote them), not
    already archived (which says an earlier run or a watcher did)."""
    original = mongomock.collection.Collection.bulk_write
    cut: list[int] = []

    def applied_then_cut(self, requests, *args, **kwargs):
        result = original(self, requests, *args, **kwargs)
        if self.name == settings.archive_collection and len(cut) < 2:
            cut.append(len(requests))
            # What pymongo raised in the bench (partitions.py, 100,000 orders, 2 shares): its pool
            # cleared under a heartbeat that timed out, the reply awaited is cancelled
            # (pymongo/network_layer.py); an AutoReconnect, retried by the writer.
            raise _OperationCancelled("operation cancelled")
        return result

    monkeypatch.setattr(mongomock.collection.Collection, "bulk_write", applied_then_cut)
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    report = run(mongo, settings)
    assert cut == [25, 25]  # the first chunk's reply lost, and its first retry's
    assert (report.archived, report.already_archived) == (len(expected_archive_ids(seeded)), 0)


def test_persistent_transient_errors_fail_as_transient(mongo, settings, seeded, monkeypatch):
    def down(self, *args, **kwargs):
        raise AutoReconnect("connection refused")

    monkeypatch.setattr(mongomock.collection.Collection, "bulk_write", down)
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    with pytest.raises(TransientError, match="connection to MongoDB lost"):
        run(mongo, settings)


def test_authorisation_error_fails_fast(mongo, settings, seeded, monkeypatch):
    calls = []

    def denied(self, *args, **kwargs):
        calls.append(1)
        raise OperationFailure("not authorized on livraison to execute command", code=13)

    monkeypatch.setattr(mongomock.collection.Collection, "bulk_write", denied)
    with pytest.raises(FatalError, match="not authorised"):
        run(mongo, settings)
    assert len(calls) == 1


def test_numero_already_archived_for_another_order_is_rejected(mongo, settings, seeded):
    archive = archive_of(mongo, settings)
    archive.create_index("numero_commande", unique=True)
    victim = next(o for o in seeded.orders if o["status"] == "livrée" and "_dirty" not in o)
    archive.insert_one({"_id": ObjectId(), "numero_commande": victim["numero_commande"]})
    report = run(mongo, settings)
    assert report.rejections.get("numero_commande already archived for another order") == 1
    assert archive.find_one({"_id": victim["_id"]}) is None


def test_selection_filter():
    # The accented status matches both stored forms: composed (NFC) and decomposed (NFD).
    assert build_selection("livrée") == {"status": {"$in": ["livr\u00e9e", "livre\u0301e"]}}
    assert build_selection("delivered") == {"status": "delivered"}
    oid = ObjectId()
    selection = build_selection("livrée", NOW, None, oid)
    window, after = selection["$and"]
    assert window["$or"][0] == {"date_commande": {"$gte": NOW}}
    # After an ObjectId come the types that sort after it (type bracketing: $gt alone stays
    # within ObjectIds); after a string, the ObjectIds too.
    assert after["$or"][0] == {"_id": {"$gt": oid}}
    assert {c["_id"]["$type"] for c in after["$or"][1:]} == {"bool", "date", "timestamp", "regex"}
    assert {"_id": {"$type": "objectId"}} in build_selection("livrée", after_id="CMD-7")["$or"]
    assert build_selection("livrée", after_id=re.compile("x")) == {
        "status": {"$in": ["livr\u00e9e", "livre\u0301e"]},
        "_id": {"$gt": re.compile("x")},
    }
    assert in_window(NOW, NOW, None)
    assert not in_window(NOW, None, NOW)


def test_no_walk_ends_at_a_change_of_id_type(mongo, settings, seeded, monkeypatch):
    """Dirty ``_id``s (a number, strings) sort before the ObjectIds: keyset pages and the purge,
    which go on after the last ``_id`` done, reach the ObjectIds after them."""
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    monkeypatch.setattr(
        "order_archiver.mongodb.source.PAGE_SIZE", 2
    )  # pages of two: every type change is a page break
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    template = next(o for o in seeded.orders if o["status"] == "livrée" and "_dirty" not in o)
    odd = [7, "A-1", "Z-9"]
    for i, order_id in enumerate(odd):
        fields = {k: v for k, v in template.items() if k not in ("_id", "_dirty")}
        orders.insert_one({**fields, "_id": order_id, "numero_commande": f"ODD-{i}"})
    expected = expected_archive_ids(seeded) | set(odd)
    original = mongomock.collection.Collection.aggregate
    failed = []

    def fail_the_stream_once(self, pipeline, *args, **kwargs):
        if not failed and any("$sort" in stage for stage in pipeline):
            failed.append(1)
            raise AutoReconnect("cut")  # the stream fails at once: the whole run goes in pages
        return original(self, pipeline, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "aggregate", fail_the_stream_once)
    report = run(mongo, settings, purge_source=True, batch_size=2)
    archive = archive_of(mongo, settings)
    assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected
    assert report.purged == len(expected)


def test_a_failed_read_goes_on_in_pages(mongo, settings, seeded, monkeypatch, caplog):
    original = mongomock.collection.Collection.aggregate
    calls = []

    def flaky(self, pipeline, *args, **kwargs):
        calls.append(pipeline)
        if len(calls) == 1:
            raise AutoReconnect("connection reset")
        return original(self, pipeline, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "aggregate", flaky)
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    monkeypatch.setattr("order_archiver.mongodb.source.PAGE_SIZE", 40)
    report = run(mongo, settings)
    assert "going on in pages of 40" in caplog.text
    assert report.read_retries == 1
    assert "; went on through 1 read failure" in report.summary_line()  # (then the indexes it built)
    assert {d["_id"] for d in archive_of(mongo, settings).find({}, {"_id": 1})} == expected_archive_ids(
        seeded
    )
    assert report.scanned == report.archived + report.rejected
    assert len(calls) > 3  # one aggregation per page after the failure


def test_an_order_no_longer_delivered_when_its_page_is_enriched_is_not_archived(
    mongo, settings, seeded, monkeypatch
):
    original = mongomock.collection.Collection.aggregate
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    corrected = []

    def flaky(self, pipeline, *args, **kwargs):
        if not corrected:
            page_ids = (pipeline[0]["$match"].get("_id") or {}).get("$in")
            if page_ids is None:
                raise AutoReconnect("connection reset")  # the streaming read: go on in pages
            corrected.append(page_ids[0])  # between the id query and the enrichment
            orders.update_one({"_id": page_ids[0]}, {"$set": {"status": "en cours"}})
        return original(self, pipeline, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "aggregate", flaky)
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    monkeypatch.setattr("order_archiver.mongodb.source.PAGE_SIZE", 40)
    run(mongo, settings)
    archived = {d["_id"] for d in archive_of(mongo, settings).find({}, {"_id": 1})}
    assert corrected
    assert corrected[0] not in archived
    assert archived == expected_archive_ids(seeded) - {corrected[0]}


def test_limit_runs_reach_an_order_delivered_behind_them(mongo, settings, seeded):
    """--limit runs continue after the last _id done; an order created before it and delivered
    later must still be reached by --limit runs alone: a run that gets to the end of the window
    starts the next one over."""
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    late = min(o["_id"] for o in seeded.orders if o["status"] != "livrée" and "_dirty" not in o)
    first = run(mongo, settings, limit=40)
    assert first.archived > 0
    # Behind the checkpoint, delivered now (the application stamps date_livraison).
    orders.update_one({"_id": late}, {"$set": {"status": "livrée", "date_livraison": NOW}})
    archive = archive_of(mongo, settings)
    for _ in range(20):
        if archive.find_one({"_id": late}):
            break
        run(mongo, settings, limit=200)
    assert archive.find_one({"_id": late}) is not None
    assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected_archive_ids(seeded) | {late}


def test_read_ahead_keeps_order_hands_over_errors_and_releases_its_producer():
    import threading

    from order_archiver.mongodb.source import read_ahead

    assert list(read_ahead(iter(range(50)), 3)) == list(range(50))

    def failing():
        yield 1
        raise OperationFailure("boom", 2)

    with pytest.raises(OperationFailure, match="boom"):
        list(read_ahead(failing(), 2))
    produced = []

    def endless():
        for n in range(10_000):
            produced.append(n)
            yield n

    reader = read_ahead(endless(), 2)
    assert next(reader) == 0
    reader.close()  # the consumer stops early: the producer stops too, a few items later
    assert len(produced) < 10
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_a_catch_up_before_the_orders_collection_exists_creates_nothing_in_the_source(mongo, settings):
    """watch may start before the application's first order: its catch-up builds the archive's
    indexes, never the source's (an index build creates the collection a typo names)."""
    archiver = BatchArchiver(
        mongo, settings, BatchOptions(run=True, require_source=False, archived_by="watch")
    )
    archiver.run()
    assert settings.orders_collection not in mongo[settings.mongodb_database].list_collection_names()
    assert settings.archive_collection in mongo[settings.archive_db_name].list_collection_names()


def test_a_correction_of_an_archived_order_replaces_its_document_once(mongo):
    """A delivered order corrected after it was archived (a refund, a fixed address) has its
    archive document replaced by the new version: same _id, one document, archived_at kept,
    revised_at set; written again, nothing changes. (An archive in its own database: the
    full pass reads every order and compares its fingerprint.)"""
    from datetime import timedelta

    from order_archiver.settings import Settings

    settings = Settings(simulation=True, log_dir="", archive_database="archives")
    dataset = seed_database(mongo[settings.mongodb_database], settings, 120, p_anomalies=0.0, seed=8)
    first = run(mongo, settings)
    archive = archive_of(mongo, settings)
    order = next(o for o in dataset.orders if o["status"] == "livrée")
    before = archive.find_one({"_id": order["_id"]})
    mongo[settings.mongodb_database]["Commande"].update_one(
        {"_id": order["_id"]}, {"$set": {"adresse_livraison": "12 rue corrigée", "remboursement": 4.5}}
    )
    later = NOW + timedelta(days=1)
    report = BatchArchiver(
        mongo,
        settings,
        BatchOptions(run=True, full=True),
        context=RunContext(clock=lambda: later),
        server_clock=lambda: later,
    ).run()
    after = archive.find_one({"_id": order["_id"]})
    assert (report.revised, report.archived, report.already_archived) == (1, 0, first.archived - 1)
    assert after["adresse_livraison"] == "12 rue corrigée"
    assert after["source"]["remboursement"] == 4.5
    assert after["archived_at"] == before["archived_at"]
    assert after["revised_at"] == later
    assert before["revised_at"] is None
    assert archive.count_documents({"_id": order["_id"]}) == 1
    again = BatchArchiver(
        mongo, settings, BatchOptions(run=True, full=True), context=RunContext(clock=lambda: later)
    ).run()
    assert (again.revised, again.archived) == (0, 0)


def test_the_purge_leaves_an_order_corrected_after_its_pass_read_it(mongo, settings):
    """The purge's delete compares the whole order with the archived version in its own filter:
    an order changed after the pass archived it (here: between the pass and the purge; the
    in-process database has no change stream to tell the pass) stays in the source."""
    dataset = seed_database(mongo[settings.mongodb_database], settings, 120, p_anomalies=0.0, seed=9)
    archiver = BatchArchiver(
        mongo, settings, BatchOptions(run=True, purge_source=True), context=RunContext(clock=lambda: NOW)
    )
    original_purge = archiver.purge
    order = next(o for o in dataset.orders if o["status"] == "livrée")
    orders = mongo[settings.mongodb_database]["Commande"]

    def correction_then_purge() -> None:
        orders.update_one({"_id": order["_id"]}, {"$set": {"remboursement": 4.5}})
        original_purge()

    archiver.purge = correction_then_purge  # type: ignore[method-assign]
    report = archiver.run()
    assert report.purge_kept == 1
    assert report.purged == report.archived - 1
    assert orders.find_one({"_id": order["_id"]})["remboursement"] == 4.5


def test_purge_after_keeps_recent_deliveries_in_the_source(mongo, seeded):
    """PURGE_AFTER (#25): every delivered order is archived, but only those delivered longer
    ago than PURGE_AFTER (on the server's clock) leave the source: the application still shows
    a client its recent orders. A dry run says what --run would move."""
    from order_archiver.settings import Duration

    settings = Settings(simulation=True, log_dir="", purge_after=Duration(days=3))
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    delivered = sorted(expected_archive_ids(seeded), key=str)
    recent, old = delivered[: len(delivered) // 2], delivered[len(delivered) // 2 :]
    orders.update_many({"_id": {"$in": recent}}, {"$set": {"date_livraison": NOW - timedelta(days=1)}})
    orders.update_many({"_id": {"$in": old}}, {"$set": {"date_livraison": NOW - timedelta(days=5)}})
    dry = run(mongo, settings, run=False, purge_source=True)
    assert dry.would_purge == len(old)
    report = run(mongo, settings, purge_source=True)
    assert report.archived == len(delivered)
    assert report.purged == len(old)
    remaining = {d["_id"] for d in orders.find({}, {"_id": 1})}
    assert set(recent) <= remaining
    assert not set(old) & remaining
    later = run(mongo, settings, purge_source=True)  # nothing more to move: the rest is recent
    assert later.purged == 0


def test_restore_walks_the_archive_across_id_types(mongo, settings, monkeypatch):
    """Dirty data has string _ids beside ObjectIds: a walk on {_id: {$gt: last}} compares within
    the last id's type and ends there. restore walks the archive as verify does (ids_after)."""
    from order_archiver.operations.restore import RestoreSelection, restore

    monkeypatch.setattr("order_archiver.operations.restore.CHUNK", 2)
    archive = mongo[settings.mongodb_database][settings.archive_collection]
    ids = ["a-1", "a-2", "a-3", ObjectId(), ObjectId()]  # strings sort before ObjectIds
    archive.insert_many(
        [
            {"_id": i, "numero_commande": f"CMD-{n}", "date_commande": NOW, "source": {"_id": i, "n": n}}
            for n, i in enumerate(ids)
        ]
    )
    report = restore(mongo, settings, RestoreSelection(date_from=NOW - timedelta(days=1)), run=True)
    assert report.selected == len(ids)
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    assert {d["_id"] for d in orders.find()} == set(ids)


def test_a_dry_run_counts_another_orders_number_as_a_rejection_as_the_run_does(mongo):
    """A new user's try: after a twin's rejection, the dry run said "would archive 1" and showed
    the twin as its sample; --run then rejected it (the archive's unique index). The dry run
    now asks the archive which numbers other orders hold (one read on that index a chunk), and
    two orders of one chunk sharing a number count the second."""
    from order_archiver.batch.job import BatchArchiver
    from order_archiver.batch.report import BatchOptions
    from order_archiver.settings import Settings
    from tests.helpers import expected_archive_ids, seed_database

    settings = Settings(simulation=True, log_dir="")
    database = mongo[settings.mongodb_database]
    dataset = seed_database(database, settings, 40, seed=8, p_anomalies=0.0)
    first, second, third = sorted(expected_archive_ids(dataset), key=str)[:3]
    orders = database[settings.orders_collection]
    numero = orders.find_one({"_id": first})["numero_commande"]
    orders.update_one({"_id": second}, {"$set": {"numero_commande": numero}})  # in the same pass
    database[settings.archive_collection].insert_one({"_id": "elsewhere", "numero_commande": "HELD-1"})
    orders.update_one({"_id": third}, {"$set": {"numero_commande": "HELD-1"}})  # held in the archive
    dry = BatchArchiver(mongo, settings, BatchOptions()).run()
    run = BatchArchiver(mongo, settings, BatchOptions(run=True)).run()
    assert (dry.would_archive, dry.rejected) == (run.archived, run.rejected)
    assert run.rejected == 2


def test_an_order_fixed_at_the_source_into_another_refusal_is_news(mongo, settings, seeded):
    """A new user's try: an order listed for its missing number, given at the source a number
    another archived order holds, was met again for the new reason and counted as known (exit
    0; ``-q`` printed nothing): whoever fixed it was told nothing. A new reason is news (exit
    3), once: the next run meets it again for the same reason, known."""
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    archived, broken = [o for o in seeded.orders if o["status"] == "livrée" and "_dirty" not in o][:2]
    orders.update_one({"_id": broken["_id"]}, {"$unset": {"numero_commande": ""}})
    first = run(mongo, settings)
    assert first.rejections.get("numero_commande missing", 0) >= 1  # it, and the seed's own
    assert first.rejected_new == first.rejected
    again = run(mongo, settings, full=True)
    assert again.rejected_new == 0  # the same reasons: known
    orders.update_one({"_id": broken["_id"]}, {"$set": {"numero_commande": archived["numero_commande"]}})
    fixed = run(mongo, settings, full=True)
    assert fixed.rejections.get("numero_commande already archived for another order") == 1
    assert fixed.rejected_new == 1
    assert run(mongo, settings, full=True).rejected_new == 0


def test_a_rejection_the_watcher_listed_first_is_news_to_the_next_batch_run(mongo, settings, seeded):
    """An SRE's batch beside a watcher never reported a new rejected order (README: "-q prints
    nothing unless there is news (a new rejected order...)"): the watcher listed it first, at its
    delivery, and batch only ever found it listed (rejected_new 0, exit 0, cron mailed nothing).
    Batch's news is now what was listed, by any process, since a batch run last met it: the
    dry run and the run say it once; the next run, and the watcher meeting it again, do not."""
    from order_archiver.mongodb.rejects import RejectStore
    from order_archiver.orders.rejection import Rejection

    orders = mongo[settings.mongodb_database][settings.orders_collection]
    broken = next(o for o in seeded.orders if o["status"] == "livrée" and "_dirty" not in o)
    orders.update_one({"_id": broken["_id"]}, {"$unset": {"numero_commande": ""}})
    rejects = mongo[settings.archive_db_name][settings.rejects_collection]
    watcher = RejectStore(rejects)
    watched = [Rejection(broken["_id"], "numero_commande missing")]
    assert watcher.record(watched, source="watch") == 1  # at the delivery
    dry = run(mongo, settings, run=False)
    assert dry.rejected_new == dry.rejected >= 2  # it, and the seed's own: all news to batch
    first = run(mongo, settings)
    assert first.rejected_new == first.rejected == dry.rejected  # exit 3, -q prints them
    assert watcher.record(watched, source="watch") == 0  # met again: known
    again = run(mongo, settings, full=True)
    assert again.rejected == first.rejected
    assert again.rejected_new == 0  # told once


def test_verify_repair_leaves_the_watchers_news_to_the_next_batch_run(mongo, settings, seeded):
    """verify --repair archives the missing orders by a batch pass: it met the watcher's news
    first, took it as a batch run would, and said nothing of it (its report has no word for
    rejected orders): the nightly batch then found it told. It lists as verify, and leaves it."""
    from order_archiver.mongodb.rejects import RejectStore
    from order_archiver.operations.verify import VerifyOptions, verify
    from order_archiver.orders.rejection import Rejection

    run(mongo, settings)
    archive = archive_of(mongo, settings)
    archive.delete_one({"_id": archive.find_one({}, {"_id": 1})["_id"]})  # missing: the repair runs
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    pending = next(o for o in seeded.orders if o["status"] != "livrée")
    orders.update_one(
        {"_id": pending["_id"]},
        {"$set": {"status": "livrée", "date_livraison": NOW}, "$unset": {"numero_commande": ""}},
    )
    rejects = mongo[settings.archive_db_name][settings.rejects_collection]
    listed = [Rejection(pending["_id"], "numero_commande missing")]
    assert RejectStore(rejects).record(listed, source="watch") == 1
    repaired = verify(mongo, settings, VerifyOptions(repair=True))
    assert repaired.repaired == 1
    assert run(mongo, settings, full=True).rejected_new == 1


def test_a_dry_run_says_new_an_order_rejected_for_another_reason_as_the_run_does(mongo, settings, seeded):
    """Review: a dry run's "would be new" read the rejects list by id alone: an order fixed at
    the source into another refusal (given a number another order's archive holds) was "already
    listed" to the dry run and new to the run (exit 3). The dry run's figure is the run's."""
    first = run(mongo, settings)
    assert first.rejected_new > 0
    rejects = mongo[settings.archive_db_name][settings.rejects_collection]
    entry = rejects.find_one({"reason": {"$regex": "numero_commande"}})
    assert entry is not None, [e["reason"] for e in rejects.find()]
    taken = archive_of(mongo, settings).find_one({}, {"numero_commande": 1})["numero_commande"]
    mongo[settings.mongodb_database]["Commande"].update_one(
        {"_id": entry["_id"]}, {"$set": {"numero_commande": taken}}
    )
    dry = run(mongo, settings, run=False)
    real = run(mongo, settings)
    assert real.rejections.get("numero_commande already archived for another order") == 1
    assert (dry.rejected_new, real.rejected_new) == (1, 1)
