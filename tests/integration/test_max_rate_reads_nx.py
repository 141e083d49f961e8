"""At the wire, ``--max-rate N`` on the orders a run reads, not only on those it writes (#34
item 1, a new user's try: `batch --run --full --max-rate 200` over an archived history read it
at 927 orders/s and said "held to --max-rate 200"). A full pass skips the orders the archive
holds by asking it, a page at a time, which of the page's ``_id``s it holds: the ``_id``s asked
are the orders read. Their rate is R within 10 %, a dry run's too (it reads the primary as
``--run`` does)."""

from __future__ import annotations

import time

import pymongo
import pytest
from pymongo import monitoring

from order_archiver.batch.job import BatchArchiver
from order_archiver.batch.report import BatchOptions
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import generate_dataset

pytestmark = pytest.mark.integration

RATE = 200
ORDERS = 1500  # pages of 200 (a second's worth) at R: 7.5 s


class AskedIds(monitoring.CommandListener):
    """When each question to the archive "which of these ``_id``s do you hold" was answered, and
    how many ``_id``s it asked about."""

    def __init__(self, archive: str) -> None:
        self.archive = archive
        self.pending: dict[int, int] = {}
        self.answered: list[tuple[float, int]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == self.archive:
            ids = ((event.command.get("filter") or {}).get("_id") or {}).get("$in")
            if isinstance(ids, list):
                self.pending[event.request_id] = len(ids)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        asked = self.pending.pop(event.request_id, None)
        if asked is not None:
            self.answered.append((time.monotonic(), asked))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.pending.pop(event.request_id, None)


@pytest.mark.parametrize("run", [True, False], ids=["full-run", "dry-run"])
def test_a_full_sweep_of_an_archived_history_reads_at_the_rate(nx_server, nx_client, nx_settings, run):
    dataset = generate_dataset(ORDERS, seed=7, p_delivered=1.0, p_anomalies=0.0)
    fill_database(nx_client[nx_settings.mongodb_database], dataset, nx_settings)
    first = BatchArchiver(nx_client, nx_settings, BatchOptions(run=True, samples=0)).run()
    assert first.archived == ORDERS
    asked = AskedIds(nx_settings.archive_collection)
    with pymongo.MongoClient(nx_server.uri, tz_aware=True, event_listeners=[asked]) as client:
        options = BatchOptions(run=run, full=True, samples=0, batch_size=100, max_rate=RATE)
        report = BatchArchiver(client, nx_settings, options).run()
    assert report.scanned == report.already_archived == ORDERS
    assert sum(n for _, n in asked.answered) == ORDERS  # every order read was asked about
    # From the first page's answer to the one before the last: the pages in between, over that
    # time. (A page is paid for half before its read, a chunk's worth, half after; the last one,
    # short, only before it: over the whole run, 1,500 in 7.5 s.)
    (first_at, _), (last_at, _) = asked.answered[0], asked.answered[-2]
    later = sum(n for _, n in asked.answered[1:-1])
    assert later <= 1.1 * RATE * (last_at - first_at), (later, last_at - first_at)  # before: ~5 times R
    assert later >= 0.9 * RATE * (last_at - first_at), (later, last_at - first_at)
    assert report.orders_per_second <= 1.1 * RATE
    assert len(asked.answered) > 3, asked.answered  # pages of a second's worth (before: of 500)
