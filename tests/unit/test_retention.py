"""ARCHIVE_RETENTION and ARCHIVE_PII_RETENTION (#25 item 4) on mongomock: what a run archives,
erases and reports; the erasure's mark; the status lines. The TTL index's commands are shown
at the wire (tests/integration/test_mongodb_refusals.py) and end to end (tests/e2e)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.context import RunContext
from order_archiver.mongodb.erasure import erase_personal_data
from order_archiver.mongodb.retention import past_pii_retention
from order_archiver.operations.status import collect_status
from order_archiver.orders.enrichment import source_hash
from order_archiver.orders.erasing import BY_AGE, Erasure
from order_archiver.orders.finishing import Finisher
from order_archiver.settings import Duration, Settings
from tests.helpers import expected_archive_ids, seed_database

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
BASE = Settings(simulation=True, log_dir="")


def run(mongo: Any, settings: Settings, **options: Any) -> Any:
    options.setdefault("run", True)
    archiver = BatchArchiver(
        mongo,
        settings,
        BatchOptions(**options),
        context=RunContext(clock=lambda: NOW),
        server_clock=lambda: NOW,
    )
    return archiver.run()


@pytest.fixture
def aged(mongo):
    """Delivered orders: half delivered a day ago, half 40 days ago."""
    dataset = seed_database(mongo[BASE.mongodb_database], BASE, 200, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset), key=str)
    recent, old = delivered[::2], delivered[1::2]
    orders = mongo[BASE.mongodb_database][BASE.orders_collection]
    orders.update_many({"_id": {"$in": recent}}, {"$set": {"date_livraison": NOW - timedelta(days=1)}})
    orders.update_many({"_id": {"$in": old}}, {"$set": {"date_livraison": NOW - timedelta(days=40)}})
    return recent, old


def archive_of(mongo: Any) -> Any:
    return mongo[BASE.archive_db_name][BASE.archive_collection]


def test_orders_delivered_before_archive_retention_are_not_archived(mongo, aged):
    recent, old = aged
    settings = BASE.with_overrides(archive_retention=Duration(days=30))
    dry = run(mongo, settings, run=False)
    assert (dry.would_archive, dry.past_retention, dry.retention["action"]) == (
        len(recent),
        len(old),
        "create",
    )
    assert "would create the archive's TTL index" in dry.summary_line()
    report = run(mongo, settings)
    assert (report.archived, report.past_retention) == (len(recent), len(old))
    assert (
        report.archived + report.already_archived + report.rejected + report.past_retention
        == report.delivered
    )
    assert {d["_id"] for d in archive_of(mongo).find({}, {"_id": 1})} == set(recent)
    assert f"{len(old)} past ARCHIVE_RETENTION (not archived)" in report.summary_line()
    assert "created the archive's TTL index" in report.summary_line()


def test_a_delivery_stamp_that_is_no_date_never_expires():
    finisher = Finisher("batch", None, expire_after=timedelta(days=30))
    old = NOW - timedelta(days=400)
    assert finisher.expired({"date_livraison": old}, NOW)
    assert not finisher.expired({"date_livraison": NOW - timedelta(days=29)}, NOW)
    for stamp in (None, "2020-01-01T00:00:00Z", 1577836800):
        assert not finisher.expired({"date_livraison": stamp}, NOW), stamp
    assert not Finisher("batch", None).expired({"date_livraison": old}, NOW)  # unset: nothing expires


def test_pii_retention_erases_the_old_deliveries_personal_data_once(mongo, aged):
    recent, old = aged
    run(mongo, BASE)
    settings = BASE.with_overrides(archive_pii_retention=Duration(days=30))
    archive = archive_of(mongo)
    before = {d["_id"]: d for d in archive.find()}
    dry = run(mongo, settings, run=False)
    assert dry.would_erase_pii == len(old)
    assert {d["_id"]: d for d in archive.find()} == before  # a dry run writes nothing

    report = run(mongo, settings)
    assert report.pii_erased == len(old)
    assert f"erased the personal data of {len(old)} archived" in report.summary_line()
    for document in archive.find({"_id": {"$in": old}}):
        assert document["client"]["id"] == before[document["_id"]]["client"]["id"]  # the key stays
        assert all(document["client"][k] is None for k in ("nom", "prenom", "email", "telephone"))
        assert document["adresse_livraison"] is None
        assert document["source"]["adresse_livraison"] is None
        assert document["forgotten_by"] == BY_AGE
        assert document["forgotten_at"] is not None
        if document["livreur"] is not None:  # the courier's name too
            assert (document["livreur"]["nom"], document["livreur"]["prenom"]) == (None, None)
        kept = ("montant_total", "items", "date_livraison", "restaurant")
        assert {k: document[k] for k in kept} == {k: before[document["_id"]][k] for k in kept}
        # No digest of the erased values: the fingerprint is the erased copy's.
        assert (
            document["source_hash"]
            == source_hash(document["source"])
            != before[document["_id"]]["source_hash"]
        )
    for document in archive.find({"_id": {"$in": recent}}):
        assert document == before[document["_id"]]

    again = run(mongo, settings, full=True)
    assert (again.pii_erased, again.archived) == (0, 0)  # nothing left, nothing re-archived


def test_a_document_replaced_during_the_erasure_is_not_marked_and_is_erased_next_time(mongo, aged):
    """A correction archived between the erasure's read and its update brings the personal data
    back: the update requires the version it read (``source_hash``), so the replaced document is
    neither overwritten nor marked, stays in the range, and the next erasure erases it."""
    run(mongo, BASE)
    archive = archive_of(mongo)
    victim = archive.find_one({"date_livraison": {"$lt": NOW - timedelta(days=30)}})
    corrected = {**victim, "source_hash": "a-correction", "montant_total": 1.0}

    class Replacing:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def bulk_write(self, *args: Any, **kwargs: Any) -> Any:
            self.inner.replace_one({"_id": victim["_id"]}, corrected)  # the correction lands first
            return self.inner.bulk_write(*args, **kwargs)

    selection = past_pii_retention(NOW - timedelta(days=30))
    erasure = Erasure(client=True, courier=True, by=BY_AGE, at=NOW)
    erase_personal_data(Replacing(archive), selection, erasure, context=RunContext())
    replaced = archive.find_one({"_id": victim["_id"]})
    assert replaced == corrected  # not overwritten with the erased old version, not marked
    assert archive.count_documents(selection) == 1
    erase_personal_data(archive, selection, erasure, context=RunContext())
    erased = archive.find_one({"_id": victim["_id"]})
    assert erased["forgotten_by"] == BY_AGE
    assert erased["montant_total"] == 1.0
    assert not erasure.holds(erased)


def test_status_shows_both_retentions(mongo, aged):
    _, old = aged
    run(mongo, BASE)
    settings = BASE.with_overrides(
        archive_retention=Duration(days=3650), archive_pii_retention=Duration(days=30)
    )
    report = collect_status(mongo, settings, now=NOW)
    assert report.as_dict()["retention"] == {
        "setting": "3650d",
        "index_seconds": None,
        "action": "create",
        "problem": None,
        "at_once": None,  # counted by batch, not by a status probe
    }
    assert report.pii_retention_pending == len(old)
    lines = report.lines()
    assert "archive retention: ARCHIVE_RETENTION 3650d, no TTL index archive_retention yet" in "\n".join(
        lines
    )
    assert f"{len(old)} archived orders past it still hold it" in "\n".join(lines)
    run(mongo, settings)
    after = collect_status(mongo, settings, now=NOW)
    assert (after.as_dict()["retention"]["action"], after.pii_retention_pending) == ("keep", 0)
    assert "archive retention: 3650d after delivery" in "\n".join(after.lines())


def test_a_ttl_index_build_that_fails_is_a_warning_not_a_failed_run(mongo, aged, monkeypatch):
    """A build the server refuses (here a user without createIndex on the archive: 13) does not
    stop the archiving: the run says so, and the next run tries again. (A build that takes long
    is no failure at all: it is pending, tests/integration/test_index_builds_nx.py.)"""
    import mongomock
    from pymongo.errors import OperationFailure

    recent, _ = aged
    original = mongomock.collection.Collection.create_indexes

    def create_indexes(self: Any, indexes: Any, *args: Any, **kwargs: Any) -> Any:
        if any(ix.document["name"] == "archive_retention" for ix in indexes):
            raise OperationFailure("not authorized", code=13, details={"codeName": "Unauthorized"})
        return original(self, indexes, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "create_indexes", create_indexes)
    report = run(mongo, BASE.with_overrides(archive_retention=Duration(days=30)))
    assert report.completed
    assert report.archived == len(recent)
    assert report.retention["action"] == "create"
    assert any(
        "TTL index archive_retention was not created" in w and "tries again" in w for w in report.warnings
    )


@pytest.mark.parametrize("retention", [None, Duration(days=30)])
def test_a_user_who_may_not_list_the_archives_indexes_still_archives(mongo, aged, monkeypatch, retention):
    """A least-privilege role from before ARCHIVE_RETENTION has no ``listIndexes``: MongoDB
    answers 13 Unauthorized. Unset, nothing to manage and nothing said; set, a warning (the
    retention is not applied) and the run archives all the same."""
    import mongomock
    from pymongo.errors import OperationFailure

    recent, old = aged
    if retention is None:
        recent = recent + old  # nothing is past a retention that is not set

    def refused(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise OperationFailure(
            'not authorized on livraison to execute command { listIndexes: "Commande_archive" }',
            code=13,
            details={"ok": 0, "code": 13, "codeName": "Unauthorized"},
        )

    monkeypatch.setattr(mongomock.collection.Collection, "list_indexes", refused)
    report = run(mongo, BASE.with_overrides(archive_retention=retention))
    assert report.completed
    assert report.archived == len(recent)
    warned = [w for w in report.warnings if "archive's indexes cannot be read" in w]
    if retention is None:
        assert report.retention["action"] == "none"
        assert not warned
    else:
        assert report.retention["action"] == "unknown"
        assert len(warned) == 1


def test_status_says_why_the_retention_is_not_applied(mongo, aged, monkeypatch):
    import mongomock
    from pymongo.errors import OperationFailure

    def refused(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise OperationFailure(
            "not authorized", code=13, details={"ok": 0, "code": 13, "codeName": "Unauthorized"}
        )

    monkeypatch.setattr(mongomock.collection.Collection, "list_indexes", refused)
    report = collect_status(mongo, BASE.with_overrides(archive_retention=Duration(days=30)), now=NOW)
    assert report.as_dict()["retention"]["action"] == "unknown"
    line = next(line for line in report.lines() if line.startswith("archive retention:"))
    assert "not applied: the archive's indexes cannot be read" in line
