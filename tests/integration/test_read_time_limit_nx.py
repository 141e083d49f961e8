"""A time limit the archiver did not ask for, on its long reads (the test server's
NX_DEFAULT_MAX_TIME_DOCS).

It stands for MongoDB 8.0's ``defaultMaxTimeMS`` cluster parameter (the manual's
"defaultMaxTimeMS": set by ``setClusterParameter: {defaultMaxTimeMS: {readOperations: MS}}``, it
applies to every ``aggregate`` and ``find`` sent without a ``maxTimeMS`` of its own; Atlas exposes
it) and for MongoDB rolling a cursor's leftover time over to each ``getMore`` of a non-tailable
cursor (``getmore_cmd.cpp``: ``setDeadlineAfterNowBy(cursor.getLeftoverMaxTimeMicros(),
MaxTimeMSExpired)``): the whole streaming read shares one time budget, and the ``getMore`` that
outlasts it fails with 50 MaxTimeMSExpired. Scaled down from milliseconds to documents returned:
N documents across a read and its getMores; the pages and the getMores' batches scaled down with
it (``PAGE_SIZE``), so that a page fits the limit as a page of 500 fits any sane one."""

from datetime import UTC, datetime

import pymongo
import pytest

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.cli.main import main
from order_archiver.context import RunContext
from order_archiver.mongodb import source
from order_archiver.operations import verify
from order_archiver.settings import Settings
from tests.helpers import expected_archive_ids, seed_database
from teststand.nx_server import running_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.test_server_only("a test server of its own, with its default time-limit knob"),
]
NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
ORDERS = 400
PAGE = 20  # a page's orders, and a getMore's batch (PAGE_SIZE scaled down)
BUDGET = 70  # documents a read without maxTimeMS returns in all: 3 pages' worth, a fraction of the window


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(source, "PAGE_SIZE", PAGE)


@pytest.fixture
def limited(tmp_path, monkeypatch, small_pages):
    """A server whose reads without maxTimeMS stop past BUDGET documents, seeded, the CLI's
    environment pointing at it."""
    with running_server({"NX_DEFAULT_MAX_TIME_DOCS": str(BUDGET)}, prefix="nx-max-time-") as server:
        for key, value in {"MONGODB_URI": server.uri, "MONGODB_DATABASE": "limited", "LOG_DIR": ""}.items():
            monkeypatch.setenv(key, value)
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            yield client, Settings(mongodb_uri=server.uri, mongodb_database="limited", log_dir="")


def archived(client, settings):
    archive = client[settings.mongodb_database][settings.archive_collection]
    return {d["_id"]: d for d in archive.find(max_time_ms=600_000)}  # a limit of its own: not the default


def run_batch(client, settings):
    return BatchArchiver(
        client, settings, BatchOptions(run=True, batch_size=25), context=RunContext(clock=lambda: NOW)
    ).run()


def test_a_backfill_under_a_default_time_limit_goes_on_in_pages(
    limited, nx_client, nx_settings, small_pages, caplog
):
    """The first run's one streaming aggregation outlasts the deployment's time limit: the read
    goes on in pages after the last order read (one warning naming the cause), and the archive
    is the one an unlimited server holds after the same run: nothing lost, nothing twice."""
    client, settings = limited
    dataset = seed_database(client["limited"], settings, ORDERS, seed=7, p_anomalies=0.1)
    seed_database(nx_client[nx_settings.mongodb_database], nx_settings, ORDERS, seed=7, p_anomalies=0.1)
    assert len(expected_archive_ids(dataset)) > 2 * BUDGET  # the whole window outlasts the budget

    unlimited = run_batch(nx_client, nx_settings)
    with caplog.at_level("WARNING", logger="order_archiver"):
        report = run_batch(client, settings)

    assert (report.archived, report.rejected) == (unlimited.archived, unlimited.rejected)
    documents = archived(client, settings)
    assert documents == archived(nx_client, nx_settings)
    assert set(documents) == expected_archive_ids(dataset)
    assert len({d["numero_commande"] for d in documents.values()}) == len(documents)  # none twice
    said = [r.getMessage() for r in caplog.records if "time limit" in r.getMessage()]
    assert len(said) == 1, said
    assert "MaxTimeMSExpired" in said[0]
    assert "defaultMaxTimeMS" in said[0]
    assert "in pages" in said[0]
    assert caplog.records[-1].levelname != "ERROR"


def test_verify_walks_under_a_default_time_limit(limited, monkeypatch, caplog, capsys):
    """verify's walks (the delivered orders, batch's reader; the archive's documents, a find
    through cuts) stream too: under the limit each goes on in pages and the archive reads as
    consistent, every order checked."""
    client, settings = limited
    monkeypatch.setattr(verify, "CHUNK", PAGE)  # its chunks (a lookup of their ids) scaled down too
    dataset = seed_database(client["limited"], settings, ORDERS, seed=7, p_anomalies=0.0)
    run_batch(client, settings)
    caplog.clear()
    assert main(["verify", "--json"]) == 0
    out = capsys.readouterr().out
    assert f'"checked": {len(expected_archive_ids(dataset))}' in out, out
    assert '"orphans": 0' in out, out
    assert '"missing": 0' in out, out
    said = [r.getMessage() for r in caplog.records if "time limit" in r.getMessage()]
    assert len(said) == 2, said  # each walk's stream, once


def test_a_page_that_itself_outlasts_the_limit_is_a_deployment_fault(tmp_path, monkeypatch, capsys):
    """A limit shorter than one page: the stream stops, then the first page too. One line naming
    the limit and what to change, exit 1 (docs/operating.md), nothing archived nor rejected, no
    traceback."""
    monkeypatch.setattr(source, "PAGE_SIZE", PAGE)
    with running_server({"NX_DEFAULT_MAX_TIME_DOCS": str(PAGE // 2)}, prefix="nx-max-time-") as server:
        for key, value in {"MONGODB_URI": server.uri, "MONGODB_DATABASE": "limited", "LOG_DIR": ""}.items():
            monkeypatch.setenv(key, value)
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            settings = Settings(mongodb_database="limited", log_dir="")
            seed_database(client["limited"], settings, 60, seed=7, p_anomalies=0.1)
            assert main(["batch", "--run"]) == 1
            database = client["limited"]
            assert database[settings.archive_collection].count_documents({}, maxTimeMS=60_000) == 0
            assert database[settings.rejects_collection].count_documents({}, maxTimeMS=60_000) == 0
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if "time limit" in line]
    assert lines, captured
    assert "Traceback" not in captured.out + captured.err
    assert any("a page" in line and "defaultMaxTimeMS" in line for line in lines), lines
