"""#34's promise on every path that writes or deletes in bulk, not only the pass and the purge: with
--max-rate, --max-lag, --max-runtime and --stop-file, each chunk of ARCHIVE_RETENTION's deletes
(the undated orders a TTL index never expires), ARCHIVE_PII_RETENTION's erasure, the rejects
list's prune, the cold tier's move, a restore and the wait for index builds meets the run's
limits: a stop file put there between two chunks ends the run before the next one, exit 0, the
report says why, and the next run does the rest. (The lag at the wire: tests/integration/
test_max_lag_nx.py; the wait for a slow index build: tests/integration/test_index_builds_nx.py.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.cli.main import main
from order_archiver.context import RunContext
from order_archiver.mongodb import erasure, rejects
from order_archiver.mongodb.storage import ArchiveWriter
from order_archiver.operations import restore as restoring
from order_archiver.orders.erasing import BY_AGE
from order_archiver.settings import Duration, Settings
from tests.helpers import expected_archive_ids, seed_database

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
BASE = Settings(simulation=True, log_dir="")


def run(mongo: Any, settings: Settings, **options: Any) -> Any:
    options.setdefault("run", True)
    options.setdefault("batch_size", 50)
    archiver = BatchArchiver(
        mongo,
        settings,
        BatchOptions(**options),
        context=RunContext(clock=lambda: NOW),
        server_clock=lambda: NOW,
    )
    return archiver.run()


def archive_of(mongo: Any) -> Any:
    return mongo[BASE.archive_db_name][BASE.archive_collection]


@pytest.fixture
def old_archive(mongo):
    """200 orders archived, every delivered one 40 days ago."""
    dataset = seed_database(mongo[BASE.mongodb_database], BASE, 200, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset), key=str)
    orders = mongo[BASE.mongodb_database][BASE.orders_collection]
    orders.update_many({"_id": {"$in": delivered}}, {"$set": {"date_livraison": NOW - timedelta(days=40)}})
    assert run(mongo, BASE).archived == len(delivered) > 60
    return delivered


def touched_after_first(monkeypatch: Any, owner: Any, name: str, stop: Path) -> list[int]:
    """``owner.name`` (a method or a module's function), the stop file put there after its first
    call returns: between the first chunk and the second. The calls, counted."""
    original = getattr(owner, name)
    calls: list[int] = []

    def then_stop(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        calls.append(1)
        stop.touch()
        return result

    monkeypatch.setattr(owner, name, then_stop)
    return calls


def test_a_stop_file_ends_archive_pii_retentions_erasure_at_a_chunk_boundary(
    mongo, old_archive, monkeypatch, tmp_path
):
    """Before: the erasure walked the whole range (a year of deliveries on the first run with the
    setting: hours of updates on the archive) whatever the stop file said; it ends now before its
    next chunk, exit 0, and the next run erases the rest."""
    monkeypatch.setattr(erasure, "CHUNK", 20)
    stop = tmp_path / "stop"
    settings = BASE.with_overrides(archive_pii_retention=Duration(days=30))
    calls = touched_after_first(monkeypatch, ArchiveWriter, "erase", stop)
    stopped = run(mongo, settings, stop_file=str(stop))
    assert (stopped.ended, stopped.completed) == ("stop_file", False)
    assert len(calls) == 1  # no chunk after the stop file
    assert stopped.pii_erased == 20  # said, though the run ended
    assert archive_of(mongo).count_documents({"forgotten_by": BY_AGE}) == 20
    stop.unlink()
    monkeypatch.undo()
    after = run(mongo, settings, stop_file=str(stop))
    assert after.ended == "completed"
    assert archive_of(mongo).count_documents({"forgotten_by": BY_AGE}) == len(old_archive)


def test_a_purge_ended_by_the_stop_file_ends_the_run_there_no_retention_after_it(
    mongo, old_archive, tmp_path
):
    """Before: the purge ended at its chunk boundary, then the run went on to erase personal data
    past ARCHIVE_PII_RETENTION, every chunk of it, after the stop file had said stop."""
    stop = tmp_path / "stop"
    settings = BASE.with_overrides(archive_pii_retention=Duration(days=30))
    options = BatchOptions(run=True, batch_size=50, purge_source=True, stop_file=str(stop))
    stopping = BatchArchiver(mongo, settings, options, server_clock=lambda: NOW)
    source_purge = stopping.source_purge

    def purge_then_stop():
        stop.touch()  # the pass is done (nothing new): the purge's first chunk meets it
        return source_purge()

    stopping.source_purge = purge_then_stop  # type: ignore[method-assign]
    stopped = stopping.run()
    assert (stopped.ended, stopped.purged, stopped.pii_erased) == ("stop_file", 0, 0)
    assert archive_of(mongo).count_documents({"forgotten_by": BY_AGE}) == 0


def undated(count: int) -> list[dict[str, object]]:
    """Archived orders without a date_livraison, ordered long ago: ARCHIVE_RETENTION's to delete."""
    ordered = NOW - timedelta(days=400)
    return [
        {"_id": ObjectId(), "numero_commande": f"OLD-{n}", "date_commande": ordered, "date_livraison": None}
        for n in range(count)
    ]


def test_archive_retentions_undated_orders_go_a_chunk_at_a_time_and_a_stop_file_ends_them(
    mongo, old_archive, monkeypatch, tmp_path
):
    """Before: one delete_many over every undated order past ARCHIVE_RETENTION (a first run with
    the setting: the whole range in one command that no limit could pace, hold or stop). Now a
    chunk at a time (erasure.CHUNK: 500), each meeting the run's limits."""
    archive = archive_of(mongo)
    archive.insert_many(undated(1200))
    stop = tmp_path / "stop"
    deletes: list[dict[str, Any]] = []
    delete_many = type(archive).delete_many

    def recorded(self: Any, selection: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        result = delete_many(self, selection, *args, **kwargs)
        if self.name == BASE.archive_collection:
            deletes.append(selection)
            stop.touch()
        return result

    monkeypatch.setattr(type(archive), "delete_many", recorded)
    settings = BASE.with_overrides(archive_retention=Duration(days=365))
    stopped = run(mongo, settings, stop_file=str(stop))
    assert (stopped.ended, stopped.undated_expired) == ("stop_file", 500)
    assert len(deletes) == 1
    assert archive.count_documents({"date_livraison": None}) == 700
    stop.unlink()
    after = run(mongo, settings, stop_file=str(stop))
    assert after.undated_expired == 500  # one chunk again: the stop file came back after it
    stop.unlink()
    last = run(mongo, settings)
    assert (last.ended, last.undated_expired) == ("completed", 200)
    assert archive.count_documents({"date_livraison": None}) == 0


def test_a_stop_file_ends_the_rejects_lists_prune_at_a_chunk_boundary(
    mongo, old_archive, monkeypatch, tmp_path
):
    """The rejects list's prune deletes a chunk at a time too: a stop file ends it before the
    next chunk (a dirty source's list can hold many thousands)."""
    monkeypatch.setattr(rejects, "CHUNK", 10)
    listed = mongo[BASE.archive_db_name][BASE.rejects_collection]
    archived = [d["_id"] for d in archive_of(mongo).find({}, {"_id": 1}).limit(30)]
    # Orders listed as rejected, archived since (fixed at the source): each leaves the list.
    listed.insert_many([{"_id": i, "reason": "numero_commande missing"} for i in archived])
    stop = tmp_path / "stop"
    calls = touched_after_first(monkeypatch, rejects.RejectStore, "_delete", stop)
    stopped = run(mongo, BASE, stop_file=str(stop))
    assert stopped.ended == "stop_file"
    assert len(calls) == 1
    assert listed.count_documents({}) == 20
    stop.unlink()
    assert run(mongo, BASE).ended == "completed"
    assert listed.count_documents({}) == 0


def test_a_stop_file_ends_the_cold_tiers_move_after_the_file_in_hand_the_next_run_goes_on(
    mongo, old_archive, monkeypatch, tmp_path
):
    """A stop file that comes once a move's file is published ends the run after that file is
    finished (docs/operating.md: "the file in hand finished"): its orders deleted from the
    archive (exit 0, ended said), no journal entry left, the file counted; the next run moves
    the rest, each order in one place. Before, the run ended before the deletes, the file's
    orders in the archive and the file at once, the summary leaving it out (a new user's try)."""
    from order_archiver.cold import move as moving
    from order_archiver.cold.tier import move_to_cold
    from tests.unit.test_cold_tier import assert_one_place_each, local_store

    archive = archive_of(mongo)
    before = {d["_id"]: d for d in archive.find()}
    store = local_store(tmp_path)
    settings = BASE.with_overrides(archive_cold_url=store.url, archive_cold_after=Duration(days=30))
    stop = tmp_path / "stop"
    init = moving.ColdMove.__init__

    def stopping_once_published(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.after_publish = stop.touch  # the file out, the archive whole

    monkeypatch.setattr(moving.ColdMove, "__init__", stopping_once_published)
    archiver = BatchArchiver(mongo, settings, BatchOptions(run=True, stop_file=str(stop)))
    report = archiver.run()
    assert report.completed
    # As cmd_batch moves: the run's context (its limits), a limit ending the run there.
    with archiver.throttle.until_a_limit(report):
        move_to_cold(mongo, settings, archiver.context, moving=lambda cold: setattr(report, "cold", cold))
    assert report.ended == "stop_file"
    [published] = store.files()
    assert report.cold is not None
    assert report.cold.files == 1
    assert archive.count_documents({}) == len(before) - report.cold.moved  # the file in hand finished
    assert not mongo[BASE.archive_db_name][BASE.checkpoint_collection].count_documents({"kind": "cold-move"})
    stop.unlink()
    monkeypatch.setattr(moving.ColdMove, "__init__", init)
    after = move_to_cold(mongo, settings, RunContext())
    assert after is not None
    assert (after.recovered, after.settled) == (0, 0)
    assert_one_place_each(archive, store, before)
    assert published in store.files()


def test_a_restore_ends_at_a_chunk_boundary_on_its_stop_file_and_the_next_one_goes_on(
    mongo, old_archive, monkeypatch, tmp_path
):
    """restore writes into the source, a chunk at a time: a stop file ends it before its next
    chunk, exit 0, ``ended`` said (text and JSON), nothing claimed "not found" that it did not
    reach; the same restore again inserts the rest."""
    from order_archiver.batch.throttle import CommandLimits

    orders = mongo[BASE.mongodb_database][BASE.orders_collection]
    orders.delete_many({"_id": {"$in": old_archive}})  # purged: restore brings them back
    monkeypatch.setattr(restoring, "CHUNK", 20)
    stop = tmp_path / "stop"
    calls = touched_after_first(monkeypatch, restoring, "_insert", stop)
    selection = restoring.RestoreSelection(date_from=NOW - timedelta(days=3650))
    limits = CommandLimits(stop_file=str(stop))
    first = restoring.restore(mongo, BASE, selection, run=True, confirmed=True, limits=limits)
    assert len(calls) == 1
    assert (first.limits.ended, first.restored, first.not_found) == ("stop_file", 20, [])
    assert json.loads(json.dumps(first.as_dict(), default=str))["ended"] == "stop_file"
    assert any("restore ended on its stop file (--stop-file)" in line for line in first.lines())
    assert orders.count_documents({"_id": {"$in": old_archive}}) == 20
    stop.unlink()
    monkeypatch.undo()
    second = restoring.restore(mongo, BASE, selection, run=True, confirmed=True, limits=limits)
    assert second.limits.ended == "completed"
    assert orders.count_documents({"_id": {"$in": old_archive}}) == len(old_archive)


def test_verify_repair_is_a_batch_run_under_the_four_limits(mongo, old_archive, monkeypatch, tmp_path):
    """verify --repair archives what is missing through the batch path: a whole backfill when the
    archive was restored from an old backup. Before: it took none of the limits (not even
    BATCH_MAX_RATE/BATCH_MAX_LAG, which the watcher's catch-up honours). Now a stop file ends the
    repair at a chunk boundary; the report says why and what it archived, and is not checked
    again (the figures from before it); verify --repair again goes on."""
    from order_archiver.batch.throttle import CommandLimits
    from order_archiver.operations.verify import VerifyOptions, verify

    archive = archive_of(mongo)
    archive.delete_many({"_id": {"$in": old_archive}})  # lost (an archive restored from an old backup)
    stop = tmp_path / "stop"
    calls = touched_after_first(monkeypatch, BatchArchiver, "write_chunk", stop)
    options = VerifyOptions(repair=True, limits=CommandLimits(stop_file=str(stop)))
    monkeypatch.setattr(BatchOptions, "__init__", _small_chunks(BatchOptions.__init__))
    stopped = verify(mongo, BASE, options)
    assert len(calls) == 1
    assert stopped.ended == "stop_file"
    assert 0 < stopped.repaired < stopped.missing_before_repair
    assert "the repair ended on its stop file (--stop-file): not checked again" in stopped.lines()[0]
    assert json.loads(json.dumps(stopped.as_dict(), default=str))["ended"] == "stop_file"
    stop.unlink()
    monkeypatch.undo()
    after = verify(mongo, BASE, VerifyOptions(repair=True))
    assert (after.ended, after.missing, after.consistent) == ("completed", 0, True)


def _small_chunks(init: Any) -> Any:
    """BatchOptions with chunks of 20 (the repair's run takes BATCH_SIZE's default, 100)."""

    def with_small_chunks(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["batch_size"] = 20
        init(self, *args, **kwargs)

    return with_small_chunks


@pytest.mark.parametrize(
    "command",
    [
        ["restore", "--numero", "CMD-1"],
        ["verify", "--repair"],
        ["forget", "--client", "6553f1c2a9e4b1d2c3f4a5b6"],
    ],
)
def test_the_limits_that_cannot_work_are_refused_on_each_command(command, capsys, tmp_path, monkeypatch):
    """restore and verify --repair take batch's four flags, refused the same way before anything is read."""
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")  # never reached: refused before
    assert main([*command, "--stop-file", str(tmp_path / "nowhere" / "stop")]) == 2
    assert "the folder" in capsys.readouterr().err
    for flag, value in (("--max-rate", "0"), ("--max-lag", "0s"), ("--max-runtime", "0s")):
        with pytest.raises(SystemExit) as refused:
            main([*command, flag, value])
        assert refused.value.code == 2


def test_forget_ends_at_a_chunk_boundary_the_person_recorded_and_the_next_forget_erases_the_rest(
    mongo, old_archive, monkeypatch, tmp_path
):
    """A courier of years holds tens of thousands of archived orders: forget's updates of the
    archive meet the limits a chunk at a time. A stop file ends it before the next chunk (exit 0,
    ended said); the person is recorded already (no later write brings their data back) and
    forget again erases the rest."""
    from order_archiver.batch.throttle import CommandLimits
    from order_archiver.operations.forget import Person, forget_person

    archive = archive_of(mongo)
    couriers = archive.aggregate([{"$group": {"_id": "$livreur.id", "n": {"$sum": 1}}}, {"$sort": {"n": -1}}])
    busiest = next(c for c in couriers if c["_id"] is not None)
    assert busiest["n"] > 5
    monkeypatch.setattr(erasure, "CHUNK", 5)
    stop = tmp_path / "stop"
    calls = touched_after_first(monkeypatch, ArchiveWriter, "erase", stop)
    person = Person.of("livreur", str(busiest["_id"]))
    limits = CommandLimits(stop_file=str(stop))
    forgotten = mongo[BASE.archive_db_name][BASE.forgotten_collection]
    recorded = forgotten.count_documents({})
    first = forget_person(mongo, BASE, person, run=True, limits=limits)
    assert len(calls) == 1
    assert first.limits.ended == "stop_file"
    assert first.complete  # exit 0
    assert any("forget ended on its stop file (--stop-file)" in line for line in first.lines())
    named = {"livreur.id": busiest["_id"], "livreur.nom": {"$ne": None}}
    assert archive.count_documents(named) == busiest["n"] - 5
    assert forgotten.count_documents({}) == recorded + 1  # recorded before the erasure began
    stop.unlink()
    monkeypatch.undo()
    second = forget_person(mongo, BASE, person, run=True, limits=limits)
    assert second.limits.ended == "completed"
    assert archive.count_documents(named) == 0
