"""#34 item 2 at the wire: `batch --max-lag D` on the test server answering as a replica set whose
secondary lags (``NX_SECONDARY_LAG_FILE``, ``teststand/replica_status.py``).

The MongoDB behaviour it stands for (the manual's "replSetGetStatus"): on a replica set member,
``replSetGetStatus`` lists each member's ``state`` and ``optimeDate`` (the last operation it
applied); a secondary that cannot keep up (a slow disk, a long index build, a network
partition) falls behind the primary by seconds to hours, and comes back when it catches up; a
standalone answers 76 NoReplicationEnabled. The lag is scaled down to seconds; a run's wait
is the same code whatever its length."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.errors import ArchiverError
from order_archiver.settings import Settings
from tests.conftest import NxServer
from tests.helpers import expected_archive_ids, seed_database, wait_for
from teststand.nx_server import running_server
from teststand.replica_status import SECONDARY_HOST

pytestmark = [
    pytest.mark.integration,
    pytest.mark.test_server_only(
        "a replica set whose secondary lags: the test server's NX_SECONDARY_LAG_FILE"
    ),
]


@pytest.fixture(scope="module")
def lag_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lag") / "secondary_lag_s"


@pytest.fixture(scope="module")
def lagging_set(lag_file: Path) -> Iterator[NxServer]:
    """A one-primary, one-secondary replica set; the secondary as far behind as ``lag_file`` says."""
    lag_file.write_text("0")
    with running_server(
        {"NX_REPLICA_SET": "rs0", "NX_SECONDARY_LAG_FILE": str(lag_file)}, prefix="nx-lag-"
    ) as server:
        yield server


def test_a_run_waits_while_the_secondary_lags_and_goes_on_when_it_caught_up(lagging_set, lag_file, db_name):
    settings = Settings(mongodb_uri=lagging_set.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(lagging_set.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        dataset = seed_database(client[db_name], settings, 200, seed=7, p_anomalies=0.0)
        archive = client[db_name][settings.archive_collection]
        lag_file.write_text("30")  # 30 s behind, --max-lag 5s: no chunk may be written
        options = BatchOptions(run=True, batch_size=50, max_lag=timedelta(seconds=5))
        run = BatchArchiver(client, settings, options)
        worker = threading.Thread(target=run.run)
        worker.start()
        time.sleep(3.0)
        written_while_lagging = archive.count_documents({})
        lag_file.write_text("1")  # caught up (within the limit)
        worker.join(timeout=60)
        assert not worker.is_alive()
    report = run.report
    assert written_while_lagging == 0
    assert report.archived == len(expected_archive_ids(dataset))
    assert list(report.lag_waited_for) == [SECONDARY_HOST]
    assert report.lag_waited_s >= 2.0
    assert f"for lagging secondaries ({SECONDARY_HOST} " in report.summary_line()
    assert report.warnings == []


def test_the_purge_waits_too(lagging_set, lag_file, db_name):
    """The purge's deletes are held as the archive's writes are: a lag that appears after the
    pass holds the deletes."""
    settings = Settings(mongodb_uri=lagging_set.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(lagging_set.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        seed_database(client[db_name], settings, 100, seed=8, p_anomalies=0.0)
        lag_file.write_text("0")
        BatchArchiver(client, settings, BatchOptions(run=True, batch_size=50)).run()
        lag_file.write_text("30")
        options = BatchOptions(run=True, batch_size=50, max_lag=timedelta(seconds=5), purge_source=True)
        run = BatchArchiver(client, settings, options)
        worker = threading.Thread(target=run.run)
        worker.start()
        time.sleep(3.0)
        orders = client[db_name][settings.orders_collection]
        delivered_left = orders.count_documents({"status": settings.delivered_status})
        lag_file.write_text("0")
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert delivered_left > 0  # nothing deleted while the secondary lagged
        assert run.report.purged == delivered_left
        assert orders.count_documents({"status": settings.delivered_status}) == 0
    assert run.report.lag_waited_s >= 2.0


def test_a_standalone_is_one_warning_at_the_wire(standalone_server, db_name):
    """A standalone answers replSetGetStatus 76 NoReplicationEnabled: one warning, the run goes on."""
    settings = Settings(mongodb_uri=standalone_server.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(standalone_server.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        seed_database(client[db_name], settings, 100, seed=9, p_anomalies=0.0)
        options = BatchOptions(run=True, batch_size=20, max_lag=timedelta(seconds=5))
        report = BatchArchiver(client, settings, options).run()
    assert report.archived > 0
    assert [w for w in report.warnings if "--max-lag" in w] == [
        "--max-lag is not applied to the source deployment: a standalone server has no secondaries"
    ]


@pytest.fixture(scope="module")
def delayed_member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NxServer]:
    """A replica set whose secondary is a delayed member (``secondaryDelaySecs`` 3600: the
    manual's "Delayed Replica Set Members", a rolling backup an hour behind by design), 3,610 s
    behind its primary."""
    lag = tmp_path_factory.mktemp("delayed") / "secondary_lag_s"
    lag.write_text("3610")
    env = {"NX_REPLICA_SET": "rs0", "NX_SECONDARY_LAG_FILE": str(lag), "NX_SECONDARY_DELAY_S": "3600"}
    with running_server(env, prefix="nx-delayed-") as server:
        yield server


def test_a_delayed_member_counts_its_lag_less_its_delay(delayed_member, db_name):
    """10 s behind its delay: under --max-lag 60s the run never waits (a delayed backup member
    would otherwise hold every run for ever)."""
    settings = Settings(mongodb_uri=delayed_member.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(delayed_member.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        seed_database(client[db_name], settings, 60, seed=10, p_anomalies=0.0)
        report = BatchArchiver(
            client, settings, BatchOptions(run=True, batch_size=20, max_lag=timedelta(seconds=60))
        ).run()
        held = BatchArchiver(
            client, settings, BatchOptions(run=True, batch_size=20, max_lag=timedelta(seconds=5))
        )
        held.step.hold.__self__.limit_s = 2.0  # type: ignore[union-attr]  # 10 s over 5 s: bounded
        seed_database(client[db_name], settings, 20, seed=12, p_anomalies=0.0)
        with pytest.raises(ArchiverError, match=f"{SECONDARY_HOST} has been more than 5s behind"):
            held.run()
    assert report.archived > 0
    assert (report.lag_waited_s, report.warnings) == (0.0, [])


def test_the_time_limit_ends_a_wait_for_a_lagging_secondary(
    lagging_set, lag_file, db_name, monkeypatch, capsys
):
    """#34: `--max-runtime` ends a run held by a lagging secondary at its deadline, as at a chunk
    boundary (exit 0, `ended: max_runtime`, nothing written while it lagged); before, the hold
    went on to its hour (HOLD_LIMIT_S) and ended the run with an error."""
    from order_archiver.cli.main import main

    settings = Settings(mongodb_uri=lagging_set.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(lagging_set.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        seed_database(client[db_name], settings, 200, seed=13, p_anomalies=0.0)
        archive = client[db_name][settings.archive_collection]
        lag_file.write_text("30")
        for name, value in {
            "MONGODB_URI": lagging_set.uri,
            "MONGODB_DATABASE": db_name,
            "LOG_DIR": "",
        }.items():
            monkeypatch.setenv(name, value)
        outcome: list[int] = []
        flags = ["--batch-size", "50", "--max-lag", "5s", "--max-runtime", "2s"]
        run = threading.Thread(
            target=lambda: outcome.append(main(["batch", "--run", "--json", *flags])), daemon=True
        )
        started = time.monotonic()
        run.start()
        run.join(timeout=30)
        took = time.monotonic() - started
        lag_file.write_text("0")
        assert not run.is_alive(), "the run went on waiting past its --max-runtime"
        assert archive.count_documents({}) == 0
    report = json.loads(capsys.readouterr().out)
    assert outcome == [0]
    assert (report["ended"], report["completed"], report["archived"]) == ("max_runtime", False, 0)
    assert report["lag_waited_for"].keys() == {SECONDARY_HOST}
    assert took < 15


def test_a_stop_file_ends_a_wait_for_a_lagging_secondary_mid_run(lagging_set, lag_file, db_name, tmp_path):
    """The secondary falls behind after the first chunks were written; an operator's stop file
    then ends the held run as at the chunk boundary before the chunk held: its checkpoint saved
    (the next run goes on from there), `ended: stop_file`, no error."""
    settings = Settings(mongodb_uri=lagging_set.uri, mongodb_database=db_name, log_dir="")
    stop_file = tmp_path / "stop"
    with pymongo.MongoClient(lagging_set.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        dataset = seed_database(client[db_name], settings, 400, seed=14, p_anomalies=0.0)
        archive = client[db_name][settings.archive_collection]
        lag_file.write_text("0")
        # --max-rate 50 a second, chunks of 50: a chunk a second, time for the lag to come mid-run.
        options = BatchOptions(
            run=True, batch_size=50, max_lag=timedelta(seconds=5), max_rate=50, stop_file=str(stop_file)
        )
        run = BatchArchiver(client, settings, options)
        worker = threading.Thread(target=run.run, daemon=True)
        worker.start()
        wait_for(lambda: archive.count_documents({}) > 0, what="a first chunk written")
        lag_file.write_text("30")
        wait_for(lambda: run.report.lag_waited_s > 0, what="the run held by the lag")
        stop_file.touch()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the run went on waiting after its stop file appeared"
        written = archive.count_documents({})
        lag_file.write_text("0")
        stop_file.unlink()
        expected = expected_archive_ids(dataset)
        assert (run.report.ended, run.report.completed) == ("stop_file", False)
        assert 0 < run.report.archived == written < len(expected)
        after = BatchArchiver(client, settings, BatchOptions(run=True, batch_size=50)).run()
        assert after.resumed_from is not None  # the checkpoint the stopped run saved
        assert after.archived == len(expected) - written
        assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected


def held_while_lagging(lag_file: Path, work: Callable[[], object], written: Callable[[], int]) -> int:
    """``work`` on a thread while the secondary is 30 s behind (``--max-lag 5s``): what
    ``written`` counts after 3 s; then the secondary caught up and ``work`` done."""
    lag_file.write_text("30")
    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(3.0)
    while_lagging = written()
    lag_file.write_text("0")
    worker.join(timeout=60)
    assert not worker.is_alive()
    return while_lagging


def test_a_restore_into_the_source_waits_while_its_secondary_lags(lagging_set, lag_file, db_name):
    """restore writes into the source, whose secondaries serve the application's reads: millions
    of orders put back while they lag is the harm #34 is about. Before: restore had no --max-lag
    and inserted every chunk at once, however far behind the secondary was."""
    from order_archiver.batch.throttle import CommandLimits
    from order_archiver.operations.restore import RestoreSelection, restore

    settings = Settings(mongodb_uri=lagging_set.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(lagging_set.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        lag_file.write_text("0")
        seed_database(client[db_name], settings, 100, seed=12, p_anomalies=0.0)
        BatchArchiver(client, settings, BatchOptions(run=True, batch_size=50)).run()
        orders = client[db_name][settings.orders_collection]
        delivered = {"status": settings.delivered_status}
        archived = orders.count_documents(delivered)
        orders.delete_many(delivered)  # purged: restore puts them back
        limits = CommandLimits(max_lag=timedelta(seconds=5))
        selection = RestoreSelection(date_from=datetime(2000, 1, 1, tzinfo=UTC))
        done: list[Any] = []

        def work() -> None:
            done.append(restore(client, settings, selection, run=True, confirmed=True, limits=limits))

        restored_while_lagging = held_while_lagging(lag_file, work, lambda: orders.count_documents(delivered))
        assert restored_while_lagging == 0
        assert orders.count_documents(delivered) == archived
    report = done[0]
    assert (report.restored, report.limits.ended) == (archived, "completed")
    assert list(report.limits.lag_waited_for) == [SECONDARY_HOST]
    assert report.limits.lag_waited_s >= 2.0
    assert any(f"for lagging secondaries ({SECONDARY_HOST} " in line for line in report.lines())


def test_archive_pii_retentions_erasure_waits_too(lagging_set, lag_file, db_name):
    """ARCHIVE_PII_RETENTION's updates (a year of deliveries on the first run with the setting)
    are held as the archive's writes are. Before: erased at once, whatever the lag."""
    from order_archiver.orders.erasing import BY_AGE
    from order_archiver.settings import Duration

    settings = Settings(mongodb_uri=lagging_set.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(lagging_set.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        lag_file.write_text("0")
        seed_database(client[db_name], settings, 100, seed=13, p_anomalies=0.0)
        BatchArchiver(client, settings, BatchOptions(run=True, batch_size=50)).run()
        archive = client[db_name][settings.archive_collection]
        aged = settings.with_overrides(archive_pii_retention=Duration(seconds=1))
        options = BatchOptions(run=True, batch_size=50, max_lag=timedelta(seconds=5))
        run = BatchArchiver(client, aged, options)
        erased = {"forgotten_by": BY_AGE}
        erased_while_lagging = held_while_lagging(lag_file, run.run, lambda: archive.count_documents(erased))
        assert erased_while_lagging == 0
        assert archive.count_documents(erased) == archive.count_documents({}) > 0
    assert run.report.pii_erased > 0
    assert run.report.lag_waited_s >= 2.0
