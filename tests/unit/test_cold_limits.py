"""#34's promise in the cold tier, as a user runs the commands (in-process ``main([...])`` on
mongomock and a file: folder): every step of the cold tier (the move, its settling, the rewrites
of ARCHIVE_PII_RETENTION and ``forget``, ARCHIVE_RETENTION's removals) stops at the next file
boundary on ``--max-runtime``, ``--stop-file`` or a signal, says why (``ended``), leaves every
file the old one or the new one (each reads back whole, no journal entry, no partial file) and
the next run finishes; the wait for the cold tier's lease (another run holds it) ends at the
run's limits and at a signal. (At the wire, S3: tests/e2e/test_cold_tier_e2e.py.)"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from order_archiver.cli import main as cli
from order_archiver.cold import files, tier
from order_archiver.cold.manifest import ColdManifest
from order_archiver.cold.rewrite import ColdRewrite
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdStore
from order_archiver.mongodb.connection import Clients
from order_archiver.mongodb.lease import Lease
from order_archiver.orders.erasing import Erasure
from order_archiver.settings import Settings
from tests.helpers import expected_archive_ids, seed_database

BASE = Settings(simulation=True, log_dir="")
AGES = (5, 45, 90, 135)  # days since delivery: the archive's band, then three cold months


class Kept(Clients):
    """The test's mongomock client, for each command: closing it would lose the database."""

    def close(self) -> None:
        pass


@pytest.fixture
def shell(mongo, monkeypatch, tmp_path):
    return a_shell(mongo, monkeypatch, tmp_path)


def a_shell(mongo: Any, monkeypatch: Any, tmp_path: Any) -> tuple[Any, ColdStore, list[Any]]:
    """A user's shell on one (mongomock) deployment: 160 orders delivered 5, 45, 90 and 135 days
    ago, archived; the cold folder set, ARCHIVE_COLD_AFTER=15d (nothing moved yet): the
    database (``checkpoints`` beside it), the store, the ids of the 5-day-old band."""
    monkeypatch.setattr(cli, "_open_clients", lambda *_args, **_kwargs: Kept(mongo))
    load = cli.load_settings  # as `batch --simulation` runs (mongomock has no change streams)
    monkeypatch.setattr(
        cli, "load_settings", lambda env_file, overrides: load(env_file, {**overrides, "simulation": True})
    )
    database = mongo[BASE.mongodb_database]
    dataset = seed_database(database, BASE, 160, seed=34, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset), key=str)
    now = datetime.now(UTC)
    for band, age in enumerate(AGES):
        database["Commande"].update_many(
            {"_id": {"$in": delivered[band :: len(AGES)]}},
            {"$set": {"date_livraison": now - timedelta(days=age)}},
        )
    assert cli.main(["batch", "--run", "-q"]) == 0
    (tmp_path / "cold").mkdir()
    monkeypatch.setenv("ARCHIVE_COLD_URL", f"file://{tmp_path}/cold")
    monkeypatch.setenv("ARCHIVE_COLD_AFTER", "15d")
    database.checkpoints = database[BASE.checkpoint_collection]
    return database, ColdStore(f"file://{tmp_path}/cold"), delivered[:: len(AGES)]


@pytest.fixture
def moved(shell):
    """``shell``'s older bands moved: three cold files (the database, the store)."""
    database, store, _recent = shell
    assert cli.main(["batch", "--run", "-q"]) == 0
    assert len(store.files()) == 3
    return database, store


def batch(capsys: Any, *flags: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli.main(["batch", "--run", "--json", "-q", *flags])
    out = capsys.readouterr().out
    return code, json.loads(out)


def after_first(monkeypatch: Any, owner: Any, name: str, then: Any) -> list[int]:
    """``owner.name``, ``then()`` once its first call has returned (a file done): the calls."""
    original = getattr(owner, name)
    calls: list[int] = []

    def and_then(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            then()
        return result

    monkeypatch.setattr(owner, name, and_then)
    return calls


def sigterm() -> None:
    """A real SIGTERM to this process: the CLI's handler sets the run's stop (as a kill does)."""
    signal.raise_signal(signal.SIGTERM)


def assert_each_file_whole(database: Any, store: ColdStore) -> None:
    """Every file the old one or the new one: each reads back as its footer says, none partial
    left, no journal entry open (nothing for the next run to undo), the list of files right."""
    for cold_file in store.files():
        assert files.is_complete(store, cold_file.path), cold_file.path
    left = [name for _, _, names in os.walk(store.url.removeprefix("file://")) for name in names]
    assert not [name for name in left if name.endswith(".partial")], left
    assert database.checkpoints.count_documents({"kind": "cold-move"}) == 0
    listed = sorted(e["path"] for e in database.checkpoints.find({"kind": "cold-file"}))
    assert listed == [f.path for f in store.files()]


def holding_pii(store: ColdStore, cutoff_days: int) -> int:
    """The cold orders delivered more than ``cutoff_days`` ago that still hold a client's data."""
    erasure = Erasure(client=True, courier=True, by="age", at=datetime.now(UTC))
    cutoff = datetime.now(UTC) - timedelta(days=cutoff_days)
    return sum(
        1
        for cold_file in store.files()
        for batch_ in files.batches(store, cold_file.path, ["document"])
        for text in batch_["document"]
        if (d := document_of(text)) and d["date_livraison"].replace(tzinfo=UTC) < cutoff and erasure.holds(d)
    )


def test_a_stop_file_ends_archive_pii_retentions_cold_rewrites_between_two_files(
    moved, monkeypatch, capsys, tmp_path
):
    """Before: ARCHIVE_PII_RETENTION's rewrites of the cold files met no limit: a stop file put
    there after the first rewrite let every file be rewritten, the run said "completed"."""
    database, store = moved
    stop = tmp_path / "stop"
    monkeypatch.setenv("ARCHIVE_PII_RETENTION", "30d")
    calls = after_first(monkeypatch, ColdRewrite, "_replace", stop.touch)
    code, first = batch(capsys, "--stop-file", str(stop))
    assert code == 0
    assert (first["ended"], first["cold"]["pii_rewritten"], len(calls)) == ("stop_file", 1, 1)
    assert_each_file_whole(database, store)
    assert holding_pii(store, 30) > 0  # the other two files keep theirs until the next run
    stop.unlink()
    code, second = batch(capsys)
    assert (code, second["ended"], second["cold"]["pii_rewritten"]) == (0, "completed", 2)
    assert holding_pii(store, 30) == 0
    assert_each_file_whole(database, store)


def test_a_stop_file_ends_archive_retentions_cold_removals_between_two_files(
    moved, monkeypatch, capsys, tmp_path
):
    """ARCHIVE_RETENTION=60d: the months of 90 and 135 days ago go, a file at a time; a stop file
    put there after the first ends the run before the second (before: both went)."""
    database, store = moved
    stop = tmp_path / "stop"
    monkeypatch.setenv("ARCHIVE_RETENTION", "60d")
    after_first(monkeypatch, ColdManifest, "remove", stop.touch)
    code, first = batch(capsys, "--stop-file", str(stop))
    assert (code, first["ended"], first["cold"]["expired_files"]) == (0, "stop_file", 1)
    assert len(store.files()) == 2
    assert_each_file_whole(database, store)
    stop.unlink()
    code, second = batch(capsys)
    assert (code, second["ended"], second["cold"]["expired_files"]) == (0, "completed", 1)
    assert len(store.files()) == 1


def test_a_signal_ends_the_cold_tiers_rewrites_between_two_files_and_says_so(moved, monkeypatch, capsys):
    """SIGTERM during ARCHIVE_PII_RETENTION's rewrites: the file in hand finished, no other begun,
    the report says ``signal`` (exit 1, as an interrupted pass). Before: every file was
    rewritten and the run said "completed", exit 0."""
    database, store = moved
    monkeypatch.setenv("ARCHIVE_PII_RETENTION", "30d")
    after_first(monkeypatch, ColdRewrite, "_replace", sigterm)
    code, first = batch(capsys)
    assert code == 1
    assert (first["ended"], first["cold"]["pii_rewritten"]) == ("signal", 1)
    assert_each_file_whole(database, store)


def test_a_signal_ends_the_move_between_two_files_and_the_next_run_moves_the_rest(shell, monkeypatch, capsys):
    """The move of three months: SIGTERM once the first file is out and its orders deleted; the
    run ends before the second file (exit 1, ended ``signal``, the counts so far). Before: the
    move stopped at the next month too, but said "completed", exit 0."""
    from order_archiver.cold.move import ColdMove

    database, store, recent = shell
    moved_out = ColdMove._moved_out
    after_first(monkeypatch, ColdMove, "_moved_out", sigterm)
    code, first = batch(capsys)
    assert code == 1
    assert (first["ended"], first["cold"]["files"]) == ("signal", 1)
    assert len(store.files()) == 1
    assert_each_file_whole(database, store)
    monkeypatch.setattr(ColdMove, "_moved_out", moved_out)
    code, second = batch(capsys)
    assert (code, second["ended"], second["cold"]["files"]) == (0, "completed", 2)
    assert {d["_id"] for d in database[BASE.archive_collection].find({}, {"_id": 1})} == set(recent)
    assert_each_file_whole(database, store)


def a_courier_in_several_files(store: ColdStore) -> str:
    """A courier whose cold orders lie in more than one file."""
    seen: dict[str, set[str]] = {}
    for cold_file in store.files():
        for batch_ in files.batches(store, cold_file.path, ["document"]):
            for text in batch_["document"]:
                courier = document_of(text).get("livreur") or {}
                if courier.get("id") is not None:
                    seen.setdefault(str(courier["id"]), set()).add(cold_file.path)
    return max(seen, key=lambda c: len(seen[c]))


def forget(capsys: Any, courier: str, *flags: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli.main(["forget", "--courier", courier, "--run", "--json", *flags])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("end", ["stop_file", "signal"])
def test_forgets_cold_rewrites_end_between_two_files_and_forget_again_does_the_rest(
    moved, monkeypatch, capsys, tmp_path, end
):
    """A courier of years: their orders in every cold file. A stop file (or SIGTERM) after the
    first file rewritten ends forget there (exit 0, ``ended`` said, the person recorded); forget
    again rewrites the rest. Before: every file was rewritten whatever came."""
    database, store = moved
    courier = a_courier_in_several_files(store)
    stop = tmp_path / "stop"
    capsys.readouterr()
    assert cli.main(["forget", "--courier", courier, "--json"]) == 0  # a dry run: what --run rewrites
    holding = json.loads(capsys.readouterr().out)["cold"]["to_rewrite"]
    assert holding > 1
    then = stop.touch if end == "stop_file" else sigterm
    after_first(monkeypatch, ColdRewrite, "_replace", then)
    code, first = forget(capsys, courier, "--stop-file", str(stop))
    assert (code, first["ended"], first["cold"]["rewritten"]) == (0, end, 1)
    assert_each_file_whole(database, store)
    stop.unlink(missing_ok=True)
    code, second = forget(capsys, courier)
    assert (code, second["ended"]) == (0, "completed")
    assert second["cold"]["rewritten"] == holding - 1
    code, third = forget(capsys, courier)
    assert (third["cold"]["erased"], third["cold"]["rewritten"]) == (0, 0)


def held_by_another_run(database: Any) -> Lease:
    """The cold tier's lease, held by another machine's run."""
    other = Lease(database.checkpoints, tier.MOVE_LEASE, ttl_s=60, renew_s=20, owner="another-machine")
    assert other.try_acquire()
    return other


@pytest.mark.parametrize("end", ["stop_file", "signal"])
def test_the_wait_for_the_cold_tiers_lease_ends_at_the_stop_file_and_at_a_signal(
    moved, monkeypatch, capsys, tmp_path, end
):
    """Another batch run holds the move's lease: this run waits up to the lease's life (here
    20 s), renewing nothing. A stop file put there (or SIGTERM) during that wait ends it within a
    second, and the run says why (before: it waited it out, said "another batch run is moving
    orders to it" and "completed")."""
    database, store = moved
    monkeypatch.setenv("WATCH_LEASE_TTL_S", "20")
    monkeypatch.setenv("WATCH_LEASE_RENEW_S", "5")
    stop = tmp_path / "stop"
    other = held_by_another_run(database)
    tries = after_first(monkeypatch, Lease, "try_acquire", stop.touch if end == "stop_file" else sigterm)
    try:
        started = time.monotonic()
        code, report = batch(capsys, "--stop-file", str(stop))
        waited = time.monotonic() - started
    finally:
        other.release()
    assert tries
    assert report["ended"] == end
    assert code == (0 if end == "stop_file" else 1)
    assert waited < 8, waited
    assert not (report.get("cold") or {}).get("skipped")  # not "left to it": ended
    assert_each_file_whole(database, store)


def test_forgets_wait_for_the_cold_tiers_lease_ends_at_max_runtime(moved, monkeypatch, capsys):
    """forget waits up to 10 minutes for a move in progress: ``--max-runtime`` ends that wait at
    its deadline (exit 0, ended ``max_runtime``, the archive erased, the person recorded); forget
    again erases the cold files. Before: it waited the whole FORGET_WAITS_S, then exit 1."""
    database, store = moved
    monkeypatch.setattr(tier, "FORGET_WAITS_S", 30.0)
    courier = a_courier_in_several_files(store)
    other = held_by_another_run(database)
    try:
        started = time.monotonic()
        code, report = forget(capsys, courier, "--max-runtime", "3s")
        waited = time.monotonic() - started
    finally:
        other.release()
    assert (code, report["ended"]) == (0, "max_runtime")
    assert waited < 15, waited
    assert "cold" not in report  # ended before it read a cold file: no count of zero
    assert report["erased"] > 0  # the archive's copies erased before the wait
    named = {"livreur.id": ObjectId(courier), "livreur.nom": {"$ne": None}}
    assert database[BASE.archive_collection].count_documents(named) == 0
    code, again = forget(capsys, courier)
    assert (code, again["ended"]) == (0, "completed")
    assert again["cold"]["rewritten"] == again["cold"]["to_rewrite"] > 1


def test_max_rate_paces_forgets_cold_rewrites_by_the_orders_each_file_holds(moved, capsys):
    """A rewrite writes every order of its file again: ``--max-rate 40`` holds forget's cold
    rewrites (three files of about 26 orders: some 2 s at 40 a second). Before: only the
    archive's few updates were paced (waited 0.1 s)."""
    import re

    _database, store = moved
    courier = a_courier_in_several_files(store)
    rows = sum(files.footer(store, f.path).rows for f in store.files())
    capsys.readouterr()
    assert cli.main(["forget", "--courier", courier, "--run", "--max-rate", "40"]) == 0
    out = capsys.readouterr().out
    held = re.search(r"held to --max-rate 40 \(waited ([0-9.]+)s\)", out)
    assert held is not None, out
    assert float(held.group(1)) >= 0.5 * rows / 40, out


def a_signal_at_the_first_row_group(monkeypatch: Any) -> None:
    """Row groups of 5 rows (a month's file holds some 26), SIGTERM once the first is written:
    a signal in the middle of a file."""
    monkeypatch.setattr(files, "ROW_GROUP_ROWS", 5)
    after_first(monkeypatch, files.ColdFileWriter, "_flush", sigterm)


def test_a_signal_in_the_middle_of_a_moves_file_abandons_it_the_archive_keeping_its_orders(
    shell, monkeypatch, capsys
):
    """A month's file is up to a gigabyte, longer to write than the few seconds the command line
    gives a stop: a signal abandons the file in hand (its partial removed, its journal entry
    gone), the archive keeping every order, ended ``signal``. Before: the file was written to its
    end, published and its orders deleted, and the run said "completed", exit 0."""
    database, store, _recent = shell
    archived = database[BASE.archive_collection].count_documents({})
    a_signal_at_the_first_row_group(monkeypatch)
    code, first = batch(capsys)
    assert (code, first["ended"], first["cold"]["files"], first["cold"]["moved"]) == (1, "signal", 0, 0)
    assert store.files() == []
    assert database[BASE.archive_collection].count_documents({}) == archived
    assert_each_file_whole(database, store)


def test_a_signal_in_the_middle_of_a_rewrite_abandons_it_the_old_file_kept(moved, monkeypatch, capsys):
    """ARCHIVE_PII_RETENTION's rewrite of a file, SIGTERM in the middle of it: the new file is
    abandoned, the old one stays as it was (the next run rewrites it), ended ``signal``."""
    database, store = moved
    before = [f.path for f in store.files()]
    monkeypatch.setenv("ARCHIVE_PII_RETENTION", "30d")
    a_signal_at_the_first_row_group(monkeypatch)
    code, first = batch(capsys)
    assert (code, first["ended"], first["cold"]["pii_rewritten"]) == (1, "signal", 0)
    assert [f.path for f in store.files()] == before
    assert_each_file_whole(database, store)


def test_a_signal_during_the_move_is_no_run_done(shell, monkeypatch, capsys):
    """The text of a run a signal ended in the cold tier's move: "stopped before the end", not
    "batch done" above the error line (``completed`` false in ``--json``, as ``ended`` says)."""
    from order_archiver.cold.move import ColdMove

    after_first(monkeypatch, ColdMove, "_moved_out", sigterm)
    capsys.readouterr()
    assert cli.main(["batch", "--run"]) == 1
    said = capsys.readouterr()
    assert "batch stopped before the end, counts so far" in said.out, said.out
    assert "batch done" not in said.out
    assert "interrupted: the cold tier stopped between two files" in said.err


def test_a_dry_run_ended_by_a_limit_reads_no_cold_file_as_the_run_moves_nothing(
    moved, monkeypatch, capsys, tmp_path
):
    """A dry run ends at --max-runtime or --stop-file as --run does; --run then leaves the cold
    tier alone (no move, no ARCHIVE_PII_RETENTION rewrite). The dry run still counted the cold
    orders past ARCHIVE_PII_RETENTION: every due row of every cold file read (years of files
    when the retention is first set), past the limit it said it had ended at."""
    _, store = moved
    stop = tmp_path / "stop"
    stop.touch()
    monkeypatch.setenv("ARCHIVE_PII_RETENTION", "30d")
    opened: list[str] = []
    real_open = files._open
    monkeypatch.setattr(files, "_open", lambda s, path: opened.append(path) or real_open(s, path))
    capsys.readouterr()
    code = cli.main(["batch", "--json", "-q", "--stop-file", str(stop)])
    report = json.loads(capsys.readouterr().out)
    assert (code, report["ended"]) == (0, "stop_file")
    assert opened == []
    assert report["cold"] is None  # as --run's: the cold tier's step not reached
    stop.unlink()
    code = cli.main(["batch", "--json", "-q"])
    assert json.loads(capsys.readouterr().out)["cold"]["would_erase_pii"] == holding_pii(store, 30)


@pytest.mark.parametrize("end", ["stop_file", "signal"])
def test_forget_ended_in_the_archive_reads_no_cold_file_after_its_end(
    moved, monkeypatch, capsys, tmp_path, end
):
    """A stop file (or SIGTERM) while forget erases the archive: the cold tier's erasure is the
    next forget's. forget still counted the person's cold orders, a read of every cold file after
    the end it said (after a signal, past the command line's few seconds of grace on a large
    tier: "stopped 8 s after the signal", exit 1). The count meets the end, file by file."""
    from order_archiver.cold import erasure as cold_erasure
    from order_archiver.operations import forget as forget_module

    _, store = moved
    courier = a_courier_in_several_files(store)
    stop = tmp_path / "stop"
    ended = {"at": False}
    real_erased, real_holding = forget_module._erased, cold_erasure._holding

    def erased_then_ended(*args: Any, **kwargs: Any) -> Any:
        stop.touch() if end == "stop_file" else sigterm()
        ended["at"] = True
        return real_erased(*args, **kwargs)

    read_after: list[str] = []

    def holding(store_: Any, cold_file: Any, *args: Any) -> Any:
        if ended["at"]:
            read_after.append(cold_file.path)
        return real_holding(store_, cold_file, *args)

    monkeypatch.setattr(forget_module, "_erased", erased_then_ended)
    monkeypatch.setattr(cold_erasure, "_holding", holding)
    code, report = forget(capsys, courier, "--stop-file", str(stop))
    assert (code, report["ended"]) == (0, end)
    assert read_after == []


def test_a_storage_fault_in_the_look_for_gone_files_does_not_keep_the_erasure_from_running(
    moved, monkeypatch, capsys
):
    """The look for published files that are gone (a few existence checks a run) ran before
    ARCHIVE_PII_RETENTION's erasure: S3 failing those checks (503s past every retry) ended the
    run before the erasure, night after night while it lasted. The erasure comes first now;
    the look's fault still fails the run (exit 1), named."""
    from order_archiver.cold import spot_check
    from order_archiver.errors import TransientError

    _database, store = moved
    monkeypatch.setenv("ARCHIVE_PII_RETENTION", "30d")
    assert holding_pii(store, 30) > 0

    def unanswered(*_args: Any, **_kwargs: Any) -> Any:
        raise TransientError("cold tier (ARCHIVE_COLD_URL): the storage did not answer after retries")

    monkeypatch.setattr(spot_check, "spot_check", unanswered)
    monkeypatch.setattr("order_archiver.cold.tier.spot_check", unanswered)
    capsys.readouterr()
    code = cli.main(["batch", "--run", "-q"])
    assert code == 1, capsys.readouterr()
    assert holding_pii(store, 30) == 0


def status(capsys: Any) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli.main(["status", "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("end", ["stop_file", "signal"])
def test_a_forget_ended_before_its_last_cold_file_is_status_problem_until_forget_again_finishes(
    moved, monkeypatch, capsys, tmp_path, end
):
    """A new user's try: SIGINT to forget --courier --run after its first cold file; status then
    said "0 archived orders of theirs still holding their personal data", healthy (exit 0), while
    cold files still held 58 of their orders. The record now says the erasure is unfinished until
    the last file is rewritten: status names the person (exit 3) without opening a cold file, and
    forget again finishes it and clears the mark."""
    from order_archiver.cold import erasure as cold_erasure

    _, store = moved
    courier = a_courier_in_several_files(store)
    stop = tmp_path / "stop"
    assert status(capsys)[0] == 0
    after_first(monkeypatch, ColdRewrite, "_replace", stop.touch if end == "stop_file" else sigterm)
    code, first = forget(capsys, courier, "--stop-file", str(stop))
    assert (code, first["ended"], first["cold"]["rewritten"]) == (0, end, 1)
    opened: list[str] = []
    real_holding = cold_erasure._holding
    monkeypatch.setattr(
        cold_erasure, "_holding", lambda s, f, *a: opened.append(f.path) or real_holding(s, f, *a)
    )
    code, unfinished = status(capsys)
    assert code == 3
    assert unfinished["forgotten_unfinished"] == [f"livreur:{courier}"]
    assert any(f"forget --courier {courier} --run" in p for p in unfinished["problems"])
    assert opened == []
    stop.unlink(missing_ok=True)
    code, second = forget(capsys, courier)
    assert (code, second["ended"], second["cold"]["complete"]) == (0, "completed", True)
    code, done = status(capsys)
    assert (code, done["forgotten_unfinished"], done["problems"]) == (0, [], [])


def test_a_stopped_forget_says_its_cold_counts_are_partial_and_what_is_left(
    moved, monkeypatch, capsys, tmp_path
):
    """A new user's try: the dry run said "135 in the cold tier", the run --max-runtime 1s said
    "103 in the cold tier" and "103 of their orders in 23 files", as totals. A run a stop file
    ends after its first cold file says "at least", the files read of those listed and those left
    (text), ``complete`` false and the files listed and read (``--json``)."""
    _, store = moved
    courier = a_courier_in_several_files(store)
    stop = tmp_path / "stop"
    capsys.readouterr()
    assert cli.main(["forget", "--courier", courier, "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)["cold"]
    assert (dry["complete"], dry["files_listed"], dry["files_read"]) == (True, 3, 3)
    after_first(monkeypatch, ColdRewrite, "_replace", stop.touch)
    code = cli.main(["forget", "--courier", courier, "--run", "--stop-file", str(stop)])
    text = capsys.readouterr().out
    assert code == 0
    first, cold = (
        text.splitlines()[0],
        next(line for line in text.splitlines() if line.startswith("cold tier")),
    )
    read = int(cold.split("stopped after ")[1].split(" ")[0])
    assert read < 3, cold
    assert "of 3 files read" in cold
    assert f"{3 - read} file" in cold
    assert "not read: forget again erases the rest" in cold
    assert "at least" in first
    assert "in the cold tier" in first
    stop.unlink()
    # The same stop again, in --json: the figures say they are partial.
    calls = after_first(monkeypatch, ColdRewrite, "_replace", stop.touch)
    code, report = forget(capsys, courier, "--stop-file", str(stop))
    assert len(calls) == 1
    assert report["ended"] == "stop_file"
    assert report["cold"]["complete"] is False
    assert report["cold"]["files_listed"] == 3
    assert report["cold"]["rewritten"] < report["cold"]["to_rewrite"]  # the file in hand is the next run's


def doctor_cold_line(database: Any, store: ColdStore) -> str:
    """doctor's ``cold tier`` line (its other checks need a server: mongomock answers none)."""
    from order_archiver.context import RunContext
    from order_archiver.operations.doctor import DoctorReport, cold_tier_check
    from order_archiver.settings import Duration

    settings = BASE.with_overrides(
        archive_cold_url=store.url, archive_cold_after=Duration(days=15), archive_retention=Duration(days=60)
    )
    report = DoctorReport()
    cold_tier_check(report, settings, RunContext(), database.client)
    return next(check.detail for check in report.checks if check.name == "cold tier")


def test_archive_retentions_cold_removals_are_previewed_by_the_dry_run_status_and_doctor(
    moved, monkeypatch, capsys
):
    """A new user's try: the dry run, status and doctor said nothing of the cold orders past
    ARCHIVE_RETENTION; then --run printed "51 orders past ARCHIVE_RETENTION removed (2 files)".
    ARCHIVE_RETENTION=60d: the months of 90 and 135 days ago are wholly past it (two files). Each
    says so beforehand, the dry run's figure being the run's."""
    database, store = moved
    monkeypatch.setenv("ARCHIVE_RETENTION", "60d")
    capsys.readouterr()
    assert cli.main(["batch", "--json", "-q"]) == 0
    dry = json.loads(capsys.readouterr().out)["cold"]
    assert dry.get("would_expire_files") == 2
    assert cli.main(["batch"]) == 0
    dry_text = capsys.readouterr().out
    probe = status(capsys)[1]
    assert cli.main(["status"]) in (0, 3)
    status_text = capsys.readouterr().out
    doctor_text = doctor_cold_line(database, store)
    files_before = len(store.files())
    run = batch(capsys)[1]
    removed = run["cold"]["expired_orders"]
    assert (run["cold"]["expired_files"], files_before - len(store.files())) == (2, 2)
    assert (dry["would_expire_files"], dry["would_expire_orders"]) == (2, removed)
    assert f"would remove {removed} cold orders past ARCHIVE_RETENTION (2 files" in dry_text
    assert (probe["cold"]["expired"]["files"], probe["cold"]["expired"]["orders"]) == (2, removed)
    assert f"{removed} orders in 2 files past ARCHIVE_RETENTION 60d" in status_text
    assert f"{removed} cold orders in 2 files past ARCHIVE_RETENTION 60d" in doctor_text


def test_the_next_batch_run_finishes_an_erasure_a_forget_left_unfinished_in_the_cold_tier(
    moved, monkeypatch, capsys, tmp_path
):
    """A forget a stop file ended after its first cold file: the courier's data stays in the
    other files until someone runs forget again. The next batch --run (the cold tier's writer,
    scheduled) finishes it from the record's mark: every file rewritten, the mark cleared,
    status healthy, a dry run of forget finds nothing left to erase."""
    _, store = moved
    courier = a_courier_in_several_files(store)
    stop = tmp_path / "stop"
    rewrites = after_first(monkeypatch, ColdRewrite, "_replace", stop.touch)
    code, first = forget(capsys, courier, "--stop-file", str(stop))
    assert (code, first["ended"], first["cold"]["complete"]) == (0, "stop_file", False)
    stop.unlink()
    assert status(capsys)[0] == 3
    rewrites.clear()
    code, run = batch(capsys)
    assert (code, run["ended"], run["cold"]["forgotten_finished"]) == (0, "completed", 1)
    assert run["cold"]["forgotten_rewritten"] == len(rewrites) >= 1
    code, after = status(capsys)
    assert (code, after["forgotten_unfinished"]) == (0, [])
    capsys.readouterr()
    assert cli.main(["forget", "--courier", courier, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cold"]["erased"] == 0
