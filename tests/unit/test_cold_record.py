"""The cold tier's record in the archive (cold/record.py): the one-place guarantee must not rest
on each process's settings. A new user's try broke it by configuration alone: (a) a longer
ARCHIVE_COLD_AFTER archived moved orders again, (b) a shell without the cold settings did too,
(c) a wrong ARCHIVE_COLD_URL made `forget` say "erased" while the cold files kept the person.
The command line as a user runs it, in-process, on mongomock and a local folder."""

from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from order_archiver.cli import main as cli
from order_archiver.cold.record import (
    RECORD_ID,
    ColdRecord,
    RecordedBoundary,
    check_place,
    normalized_url,
    raise_boundary,
    read_record,
)
from order_archiver.context import RunContext
from order_archiver.errors import ConfigError
from order_archiver.mongodb.connection import Clients
from order_archiver.orders.finishing import Finisher
from order_archiver.settings import Settings
from tests.helpers import expected_archive_ids, seed_database

BASE = Settings(simulation=True, log_dir="")


class Kept(Clients):
    """The test's mongomock client, for each command: closing it would lose the database."""

    def close(self) -> None:
        pass


@pytest.fixture
def user(mongo, monkeypatch, tmp_path):
    """A user's shell: every command on the same (mongomock) deployment,
    deliveries 5, 20 and 40 days ago; ``user.cold(after)`` sets the cold settings."""
    monkeypatch.setattr(cli, "_open_clients", lambda *_args, **_kwargs: Kept(mongo))
    # As `batch --simulation` runs (mongomock has no change streams): every command, here.
    load = cli.load_settings
    monkeypatch.setattr(
        cli, "load_settings", lambda env_file, overrides: load(env_file, {**overrides, "simulation": True})
    )
    database = mongo[BASE.mongodb_database]
    dataset = seed_database(database, BASE, 120, seed=35, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset), key=str)
    now = datetime.now(UTC)
    for band, age in enumerate((5, 20, 40)):
        ids = delivered[band::3]
        database["Commande"].update_many(
            {"_id": {"$in": ids}}, {"$set": {"date_livraison": now - timedelta(days=age)}}
        )
    cold_dir = tmp_path / "cold"
    cold_dir.mkdir()

    class User:
        url = f"file://{cold_dir}"
        archive = database[BASE.archive_collection]
        checkpoints = database[BASE.checkpoint_collection]
        bands: ClassVar[dict[int, list[object]]] = {
            age: delivered[band::3] for band, age in enumerate((5, 20, 40))
        }

        @staticmethod
        def cold(after: str | None, url: str | None = None) -> None:
            for name, value in (("ARCHIVE_COLD_AFTER", after), ("ARCHIVE_COLD_URL", url or User.url)):
                if after is None:
                    monkeypatch.delenv(name, raising=False)
                else:
                    monkeypatch.setenv(name, value)

    return User


def moved(user, capsys) -> int:
    """Everything archived, then ARCHIVE_COLD_AFTER=15d: the 20- and 40-day-old deliveries moved."""
    assert cli.main(["batch", "--run", "-q"]) == 0
    user.cold("15d")
    assert cli.main(["batch", "--run", "-q"]) == 0
    capsys.readouterr()
    in_cold = len(user.bands[20]) + len(user.bands[40])
    assert user.archive.count_documents({}) == len(user.bands[5])
    return in_cold


def test_a_move_records_the_cold_tier_and_its_boundary_before_it_deletes(user, capsys):
    in_cold = moved(user, capsys)
    assert in_cold
    record = read_record(user.checkpoints, RunContext())
    assert record is not None
    assert normalized_url(record.url) == normalized_url(user.url)
    # The 15-day boundary: after the 20-day-old deliveries, before the 5-day-old ones.
    assert (
        datetime.now(UTC) - timedelta(days=16) < record.moved_before < datetime.now(UTC) - timedelta(days=14)
    )


def test_a_longer_cold_after_does_not_archive_moved_orders_again(user, capsys):
    """(a) ARCHIVE_COLD_AFTER=25d after a move at 15d: `batch --run --full` archived again the
    20-day-old orders already in cold files; verify then said NOT consistent."""
    moved(user, capsys)
    user.cold("25d")
    assert cli.main(["batch", "--run", "--full", "--json"]) == 0
    report = capsys.readouterr().out
    assert user.archive.count_documents({}) == len(user.bands[5])
    assert f'"past_cold_after": {len(user.bands[20]) + len(user.bands[40])}' in report
    assert cli.main(["verify", "-q"]) == 0, capsys.readouterr()


@pytest.mark.parametrize("command", [["batch", "--run", "--full"], ["batch"], ["verify"], ["status"]])
def test_a_process_without_the_cold_settings_is_refused_before_it_writes(user, capsys, command):
    """(b) A shell without the cold settings (QUICKSTART's watch) archived the moved orders
    again; verify and status, blind to the cold tier, said consistent and healthy."""
    moved(user, capsys)
    user.cold(None)
    archived = sorted(d["_id"] for d in user.archive.find({}, {"_id": 1}))
    assert cli.main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert "ARCHIVE_COLD_URL is not set" in error[0]
    assert user.url in error[0]
    assert "since" in error[0]
    assert sorted(d["_id"] for d in user.archive.find({}, {"_id": 1})) == archived


def test_forget_and_find_with_a_wrong_cold_url_are_refused(user, capsys, tmp_path):
    """(c) A wrong ARCHIVE_COLD_URL: forget said "erased", exit 0, and the cold files kept the
    person's e-mail and name; find said "not found anywhere"."""
    moved(user, capsys)
    (tmp_path / "nocold").mkdir()
    user.cold("15d", url=f"file://{tmp_path}/nocold")
    old = user.archive.database["Commande"].find_one({"_id": user.bands[40][0]})
    forgotten = user.archive.database["archiver_forgotten"]
    remembered = list(forgotten.find())
    assert cli.main(["forget", "--client", str(old["client_id"]), "--run"]) == 2
    error = capsys.readouterr().err
    assert "ARCHIVE_COLD_URL" in error
    assert "is not this archive's cold tier" in error
    assert list(forgotten.find()) == remembered  # nothing remembered as forgotten
    assert cli.main(["find", "--id", str(old["_id"])]) == 2
    assert user.url in capsys.readouterr().err
    # The same place, spelt with a trailing slash and the scheme's capitals, is the place.
    user.cold("15d", url=f"FILE://{user.url.removeprefix('file://')}/")
    assert cli.main(["find", "--id", str(old["_id"])]) == 0
    assert "cold" in capsys.readouterr().out


def test_doctor_says_the_record_against_the_settings_and_refuses_nothing(user, capsys):
    from order_archiver.operations.doctor import DoctorReport, cold_record_check

    moved(user, capsys)
    client = user.archive.database.client
    without = DoctorReport()
    cold_record_check(without, client, BASE, RunContext())
    [check] = without.checks
    assert (check.name, check.outcome) == ("cold tier record", "fail")
    assert "ARCHIVE_COLD_URL is not set" in check.detail
    right = DoctorReport()
    cold_record_check(right, client, BASE.with_overrides(archive_cold_url=user.url + "/"), RunContext())
    assert [c.outcome for c in right.checks] == ["pass"]


def test_the_finisher_takes_the_later_of_cold_after_and_the_recorded_boundary():
    now = datetime(2026, 12, 7, tzinfo=UTC)
    order = {"date_livraison": now - timedelta(days=20)}
    longer = Finisher("batch", None, cold_after=timedelta(days=25))
    assert not longer.in_cold_tier(order, now)
    recorded = Finisher(
        "batch", None, cold_after=timedelta(days=25), cold_boundary=lambda: now - timedelta(days=15)
    )
    assert recorded.in_cold_tier(order, now)
    unset = Finisher("batch", None, cold_boundary=lambda: now - timedelta(days=15))
    assert unset.in_cold_tier(order, now)
    assert not unset.in_cold_tier({"date_livraison": now - timedelta(days=10)}, now)
    # Never moved (a move takes date_livraison alone): archived.
    assert not unset.in_cold_tier({"date_commande": now - timedelta(days=90)}, now)


def test_the_boundary_is_raised_never_lowered_and_a_watcher_reads_it_again(mongo):
    checkpoints = mongo["db"]["checkpoints"]
    context = RunContext()
    now = datetime(2026, 12, 7, tzinfo=UTC)
    ticks = [0.0]
    boundary = RecordedBoundary(lambda: read_record(checkpoints, context), None, 60, lambda: ticks[0])
    raise_boundary(checkpoints, "file:///cold", now - timedelta(days=15), now, context)
    assert boundary() is None  # read at the start, not again before a minute
    ticks[0] = 61
    assert boundary() == now - timedelta(days=15)
    raise_boundary(checkpoints, "file:///cold", now - timedelta(days=25), now + timedelta(days=1), context)
    record = read_record(checkpoints, context)
    assert record is not None
    assert (record.moved_before, record.since) == (now - timedelta(days=15), now)
    assert checkpoints.count_documents({"_id": RECORD_ID}) == 1


def test_a_watchers_catch_up_skips_what_a_move_took_after_it_started(user, capsys):
    """(b) again, closer: a watcher started without the cold settings before any move (nothing
    to refuse then) learns the record while it runs; its catch-up (a full pass, after an
    invalidate) archives no moved order again."""
    from order_archiver.watch.archiving import catch_up
    from order_archiver.watch.stats import WatchStats

    moved(user, capsys)
    ticks = [0.0]
    finisher = BASE.finisher("watch")
    boundary = RecordedBoundary(
        lambda: read_record(user.checkpoints, RunContext()), None, 60, lambda: ticks[0]
    )
    ticks[0] = 61

    class Events:
        def __init__(self) -> None:
            self.finisher = Finisher(finisher.archived_by, finisher.pii, cold_boundary=boundary)
            self.stats = WatchStats()
            self.metrics = Counts()

    class Counts:
        def add(self, *_args: object, **_kwargs: object) -> None:
            pass

        def rejections_listed(self, *_args: object, **_kwargs: object) -> None:
            pass

    catch_up(user.archive.database.client, None, BASE, RunContext(), Events())  # type: ignore[arg-type]
    assert user.archive.count_documents({}) == len(user.bands[5])


def test_check_place_compares_the_place_not_the_spelling():
    now = datetime(2026, 12, 7, tzinfo=UTC)
    recorded = ColdRecord("s3://bucket/orders", now, now)
    check_place(recorded, "S3://bucket/orders/")
    check_place(None, None)
    with pytest.raises(ConfigError, match="ARCHIVE_COLD_URL s3://bucket/other is not"):
        check_place(recorded, "s3://bucket/other")
    with pytest.raises(ConfigError, match="ARCHIVE_COLD_URL is not set"):
        check_place(recorded, None)
    # A path's case is the place on Linux (a record written by hand, without a scheme): kept.
    with pytest.raises(ConfigError, match="is not"):
        check_place(ColdRecord("/srv/archive/cold", now, now), "/SRV/ARCHIVE/COLD")


def test_the_purges_cold_witness_looks_up_to_the_recorded_boundary(mongo, tmp_path):
    """The review: with ARCHIVE_COLD_AFTER lengthened after a move, the purge looked for cold
    copies only before now - ARCHIVE_COLD_AFTER, so the orders moved in between kept their
    source copy forever (safe, but against "whatever ARCHIVE_COLD_AFTER says")."""
    from order_archiver.cold.tier import cold_holding
    from order_archiver.settings import Duration

    now = datetime(2026, 12, 7, tzinfo=UTC)
    (tmp_path / "cold").mkdir()
    settings = Settings(
        simulation=True,
        log_dir="",
        archive_cold_url=f"file://{tmp_path}/cold",
        archive_cold_after=Duration(days=25),
        cold_moved_before=now - timedelta(days=15),
    )
    database = mongo[settings.mongodb_database]
    holding = cold_holding(
        settings, database["Commande"], database["archiver_checkpoints"], RunContext(), lambda: now
    )
    assert holding is not None
    assert holding.cutoff == now - timedelta(days=15)


def test_verify_finds_a_forgotten_persons_personal_data_left_in_a_cold_file(user, capsys):
    """(c)'s aftermath: a forget that never reached the cold files (run with another
    ARCHIVE_COLD_URL, before it was refused) left the person's e-mail and name there, and verify
    said consistent: its erasure check read the archive only. It reads the cold files' orders too."""
    import json

    from order_archiver.mongodb.forgotten import ForgottenPersons

    moved(user, capsys)
    database = user.archive.database
    archived_clients = {(d.get("client") or {}).get("id") for d in user.archive.find()}
    old = next(  # a client whose orders are all in the cold tier: the archive's check sees nothing
        o
        for o in database["Commande"].find({"_id": {"$in": user.bands[40]}})
        if o.get("client_id") is not None and o["client_id"] not in archived_clients
    )
    ForgottenPersons(database["archiver_forgotten"]).record("client", old["client_id"])
    assert cli.main(["verify", "--json"]) != 0
    report = json.loads(capsys.readouterr().out)
    assert report["unerased"] == 0  # (the archive holds none of their orders)
    assert report["cold"]["unerased"] >= 1
    assert str(old["_id"]) in " ".join(report["cold"]["examples"])
    assert cli.main(["forget", "--client", str(old["client_id"]), "--run", "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["verify", "--json"]) == 0, capsys.readouterr().out
    assert json.loads(capsys.readouterr().out)["cold"]["unerased"] == 0


def test_a_watcher_started_before_the_first_move_learns_it_and_archives_no_moved_order_again(user, capsys):
    """(b), the watcher's events: one started from a shell without the cold settings before any
    move (no record: nothing to refuse) reads the record again while it runs; a correction of
    an order moved meanwhile is not archived again (within a minute: the window docs/operating.md
    states)."""
    from order_archiver.cold.record import REFRESH_S
    from order_archiver.watch.watcher import Watcher, WatchOptions

    assert cli.main(["batch", "--run", "-q"]) == 0
    watcher = Watcher(user.archive.database.client, BASE, WatchOptions())
    user.cold("15d")
    assert cli.main(["batch", "--run", "-q"]) == 0  # the first move
    orders, old_id = user.archive.database["Commande"], user.bands[40][0]
    orders.update_one({"_id": old_id}, {"$set": {"adresse_livraison": "1 rue Neuve"}})  # a correction
    event = {
        "operationType": "update",
        "documentKey": {"_id": old_id},
        "fullDocument": orders.find_one({"_id": old_id}),
    }
    boundary = watcher.events.finisher.cold_boundary
    assert isinstance(boundary, RecordedBoundary)
    boundary.read_at -= REFRESH_S  # a minute later
    watcher.events.archive([event])  # type: ignore[list-item]
    assert user.archive.count_documents({"_id": old_id}) == 0
    assert watcher.stats.skipped == 1


def test_verify_says_the_same_figures_in_its_text_and_its_json(user, capsys):
    """A new user's try: the text said "checked 3 delivered orders: 1 archivable, 2 invalid;
    1 past ARCHIVE_COLD_AFTER", --json said ``"checked": 1``. ``checked`` is what was compared
    with the archive (commands.md: invalid orders are counted apart, as are those past
    ARCHIVE_COLD_AFTER, not expected there); the first line counts the delivered orders read
    (``delivered`` in --json) and splits them by the JSON's own names, adding up."""
    import json

    in_cold = moved(user, capsys)
    recent = user.bands[5]
    invalid = recent[:2]  # no numero_commande: never archivable (the contract)
    orders = user.archive.database["Commande"]
    orders.update_many({"_id": {"$in": invalid}}, {"$unset": {"numero_commande": ""}})
    checked = len(recent) - len(invalid)
    delivered = checked + len(invalid) + in_cold

    cli.main(["verify"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        f"{delivered} delivered orders: {checked} checked against the archive, 2 invalid (never "
        f"archived); {in_cold} past ARCHIVE_COLD_AFTER, not expected (older than the archive takes: "
        "in the cold tier or the source)"
    )
    cli.main(["verify", "--json"])
    report = json.loads(capsys.readouterr().out)
    said = (report["delivered"], report["checked"], report["invalid"], report["past_cold_after"])
    assert said == (delivered, checked, 2, in_cold)
    assert report["past_retention"] == 0


def test_a_watcher_without_the_cold_settings_is_warned_when_a_move_records_the_cold_tier(mongo, caplog):
    """A new user's try: a watcher started before the first move, without ARCHIVE_COLD_URL,
    learned of the cold tier at INFO only; its next start was refused (exit 2: the settings
    must name the tier), which under systemd is a restart loop. It is now a warning naming
    ARCHIVE_COLD_URL; a watcher that has the setting is told at INFO, as before."""
    import logging

    checkpoints = mongo["db"]["checkpoints"]
    context = RunContext()
    now = datetime(2026, 12, 7, tzinfo=UTC)
    ticks = [0.0]
    unset = RecordedBoundary(lambda: read_record(checkpoints, context), None, 60, lambda: ticks[0])
    configured = RecordedBoundary(
        lambda: read_record(checkpoints, context), None, 60, lambda: ticks[0], cold_url="file:///cold"
    )
    raise_boundary(checkpoints, "file:///cold", now - timedelta(days=15), now, context)
    ticks[0] = 61
    with caplog.at_level(logging.INFO):
        assert unset() == now - timedelta(days=15)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "ARCHIVE_COLD_URL" in warned[0].getMessage()
    assert "refused" in warned[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert configured() == now - timedelta(days=15)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
