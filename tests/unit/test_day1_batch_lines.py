"""A new user's first day (2026-12-07): what batch says of its pass and of the indexes it
built, on mongomock, the command line in-process."""

from __future__ import annotations

import json
import logging
import re

import pytest

from order_archiver.cli import main as cli
from order_archiver.mongodb.connection import Clients
from order_archiver.settings import Settings
from tests.helpers import seed_database

SETTINGS = Settings(simulation=True, log_dir="")


class Kept(Clients):
    """The test's mongomock client, for each command: closing it would lose the database."""

    def close(self) -> None:
        pass


@pytest.fixture
def deployment(mongo, monkeypatch):
    """Every command of ``cli.main`` on the test's mongomock deployment, 60 orders in it."""
    monkeypatch.setattr(cli, "_open_clients", lambda *_args, **_kwargs: Kept(mongo))
    load = cli.load_settings
    monkeypatch.setattr(
        cli, "load_settings", lambda env_file, overrides: load(env_file, {**overrides, "simulation": True})
    )
    seed_database(mongo[SETTINGS.mongodb_database], SETTINGS, 60, seed=12, p_anomalies=0.0)
    return mongo


def said(caplog, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


def test_a_windowed_run_after_a_first_run_says_why_its_pass_is_full(deployment, caplog, capsys):
    """Item 6: `batch --date-from 30d` said "full pass (first run: no high-water mark yet)"
    while status showed the high-water mark of the runs without a window. A window has its own
    checkpoint (``checkpoint_key``): its first run is full, and says so of its window."""
    caplog.set_level(logging.INFO, logger="order_archiver")
    assert cli.main(["batch", "--run", "-q"]) == 0
    caplog.clear()
    assert cli.main(["batch", "--run", "-q", "--date-from", "30d"]) == 0
    (line,) = said(caplog, "full pass")
    assert "first run: no high-water mark yet" not in line, line
    assert line.startswith("full pass (first run of this window (--date-from 20"), line
    assert line.endswith(
        "): it keeps its own high-water mark, none yet (the runs without it keep theirs))"
    ), line
    caplog.clear()
    assert cli.main(["batch", "--run", "-q", "--date-from", "30d"]) == 0  # the same window again
    assert said(caplog, "incremental pass"), [r.getMessage() for r in caplog.records]
    caplog.clear()
    capsys.readouterr()
    deployment[SETTINGS.mongodb_database][SETTINGS.checkpoint_collection].delete_many({})
    assert cli.main(["batch", "--run", "-q", "--json"]) == 0  # no checkpoint at all: a first run
    assert json.loads(capsys.readouterr().out)["pass_reason"] == "first run: no high-water mark yet"


def test_a_first_run_names_what_gives_it_a_checkpoint_of_its_own():
    """Item 6 again, of each flag that gives a run its own checkpoint (``checkpoint_key``,
    ``batch_checkpoint_key``): a window's bounds, a share."""
    from datetime import UTC, datetime

    from order_archiver.batch.plan import own_checkpoint
    from order_archiver.batch.report import BatchOptions
    from order_archiver.orders.partition import Partition

    day, moment = datetime(2026, 11, 7, tzinfo=UTC), datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    assert own_checkpoint(BatchOptions()) == ""
    assert own_checkpoint(BatchOptions(date_from=day)) == "this window (--date-from 2026-11-07)"
    assert own_checkpoint(BatchOptions(date_from=day, date_to=moment, partition=Partition(1, 4))) == (
        "this window and share (--date-from 2026-11-07 --date-to 2026-12-01T08:30:00+00:00 --partition 1/4)"
    )
    assert own_checkpoint(BatchOptions(partition=Partition(0, 2))) == "this share (--partition 0/2)"


def summary_of(capsys, start: str) -> str:
    out = capsys.readouterr().out
    return next((line for line in out.splitlines() if line.startswith(start)), out)


def test_a_run_says_the_indexes_it_built(deployment, capsys):
    """Item 8: the dry run said "14 indexes missing, which batch --run builds"; the --run's
    summary then said nothing of building them (doctor confirmed them ready)."""
    assert cli.main(["batch"]) == 0
    dry = summary_of(capsys, "dry run: ")
    missing = int(re.search(r"; (\d+) indexes missing, which batch --run builds", dry).group(1))  # type: ignore[union-attr]
    assert missing > 1, dry
    assert cli.main(["batch", "--run", "-v"]) == 0
    out = capsys.readouterr().out
    summary = next(line for line in out.splitlines() if line.startswith("batch done: "))
    assert f"; built {missing} missing indexes (-v lists them)" in summary, summary
    listed = [line for line in out.splitlines() if line.startswith("index built: ")]
    assert len(listed) == missing, out
    assert f"index built: {SETTINGS.archive_collection}.numero_commande_1" in listed
    assert cli.main(["batch", "--run", "-v", "--json"]) == 0  # all there now: nothing built, nothing said
    report = json.loads(capsys.readouterr().out)
    assert (report["indexes_built"], report["indexes"]) == ([], [])
    indexes = deployment[SETTINGS.mongodb_database][SETTINGS.archive_collection]
    indexes.drop_index("numero_commande_1")
    assert cli.main(["batch", "--run", "-q", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["indexes_built"] == [
        {
            "database": SETTINGS.mongodb_database,
            "collection": SETTINGS.archive_collection,
            "index": "numero_commande_1",
        }
    ]
