"""watch's /healthz during a long catch-up whose reads are slow but alive, and one that hangs.

The MongoDB behaviour it stands for: a query's results come back in batches, the first with the
``find``/``aggregate`` reply and each next one with a ``getMore`` (the manual's "Iterate a Cursor",
"Cursor Batches"); on a collection without the index a query needs (``{status, _id}`` here), or a
large collection on a slow server, each batch takes the server long to fill, and a catch-up's
chunk (BATCH_SIZE orders) takes several such batches. Scaled down: the test server answers each
batch of the orders' reads ``SLOW_S`` late (``NX_SLOW_READS_FILE``), WATCH_LIVENESS_S is a few
seconds, and one chunk takes several batches: longer than WATCH_LIVENESS_S, each batch well
within it. A read that is alive (batches keep coming) keeps /healthz green and the catch-up
finishes; a read hung (no batch for longer than WATCH_LIVENESS_S) still fails it; a reader
waiting for a MongoDB away (its retries, each wait saying how long) is alive."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pymongo
import pytest

from order_archiver.settings import Settings
from tests.conftest import run_cli
from tests.e2e.test_liveness_e2e import free_port, healthz
from tests.helpers import WatchProcess, expected_archive_ids, seed_database, wait_for
from teststand.fault_proxy import FaultProxy
from teststand.nx_server import NxServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.test_server_only("reads answered late: the test server's NX_SLOW_READS_FILE"),
]

LIVENESS_S = 5  # WATCH_LIVENESS_S
SLOW_S = 2.0  # each batch of the orders' reads: well within LIVENESS_S
BATCH_SIZE = 2000  # one chunk: 4 batches of the catch-up's read (500 orders each), ~8 s
ORDERS = 3600

CATCH_UP_DONE = re.compile(r"catch-up done: scanned \d+, archived (\d+)")


def start(
    server: NxServer,
    db_name: str,
    tmp_path: Path,
    slow_file: Path,
    archived_before: int = 0,
    orders: int = ORDERS,
    batch_size: int = BATCH_SIZE,
    uri: str | None = None,
) -> tuple[WatchProcess, int, set]:
    """A watcher's first start on ``orders`` orders (``archived_before`` of them archived by a
    batch first: the catch-up then reads in pages, skipping them, as after a lost token)."""
    settings = Settings(mongodb_uri=server.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(server.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        dataset = seed_database(client[db_name], settings, orders, seed=17, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    assert len(expected) - archived_before > batch_size  # the first chunk is whole: several batches
    env = {
        "MONGODB_URI": uri or server.uri,
        "MONGODB_DATABASE": db_name,
        "LOG_DIR": "",
        "MONGODB_TIMEOUT_MS": "2000",
        "MONGODB_WRITE_TIMEOUT_MS": "2000",
        "WATCH_LIVENESS_S": str(LIVENESS_S),
        "BATCH_SIZE": str(batch_size),
    }
    if archived_before:
        batch = run_cli("batch", "--run", "--limit", str(archived_before), env=env, cwd=tmp_path)
        assert batch.returncode == 0, batch.stdout + batch.stderr
    port = free_port()
    watcher = WatchProcess(env, tmp_path, "--metrics-port", str(port))
    slow_file.write_text(f"Commande={SLOW_S}\n")  # after the seeding and the unique index
    return watcher, port, expected


@pytest.mark.parametrize(
    ("archived_before", "orders", "batch_size"),
    [(0, ORDERS, BATCH_SIZE), (100, 1200, 600)],
    ids=["first-start", "archive-holding-some"],
)
def test_a_slow_catch_up_whose_batches_keep_coming_keeps_healthz_green(
    slow_server, slow_file, db_name, tmp_path, archived_before, orders, batch_size
):
    """One aggregation read in batches of 500 (an empty archive: 4 batches a chunk), or pages of
    500 ids skipping the archived ones (each page a find, the archive asked, an aggregation, each
    in batches: a chunk of 600 takes two pages)."""
    watcher, port, expected = start(
        slow_server, db_name, tmp_path, slow_file, archived_before, orders, batch_size
    )
    statuses: list[int] = []
    try:
        wait_for(lambda: healthz(port) == 200, what="/healthz")
        started = time.monotonic()
        while not CATCH_UP_DONE.search(watcher.output()):  # the sentinel: the catch-up's last line
            assert watcher.process.poll() is None, watcher.output()
            assert time.monotonic() - started < 180, watcher.output()
            statuses.append(healthz(port))
            time.sleep(0.1)
        took = time.monotonic() - started
        statuses.append(healthz(port))
    finally:
        slow_file.write_text("")
        watcher.stop()
    done = CATCH_UP_DONE.search(watcher.output())
    assert done is not None
    assert int(done.group(1)) == len(expected) - archived_before
    # The reads were slow: the catch-up took several windows, each of its chunks more than one.
    assert took > 2 * LIVENESS_S
    late = [s for s in statuses if s != 200]
    assert late == [], (
        f"/healthz answered {late[:3]} during a catch-up that was reading ({len(statuses)} looks)"
    )


def test_a_catch_up_read_that_hangs_still_fails_healthz(slow_server, slow_file, db_name, tmp_path):
    """A guard on the above: liveness follows the replies, it does not make a hung read green."""
    watcher, port, expected = start(slow_server, db_name, tmp_path, slow_file)
    try:
        wait_for(lambda: "catching up" in watcher.output(), timeout=60, what="the catch-up's start")
        slow_file.write_text("Commande=600\n")  # the next batch never comes
        wait_for(lambda: healthz(port) == 503, timeout=4 * LIVENESS_S, what="/healthz failing a hung read")
        assert not CATCH_UP_DONE.search(watcher.output())  # it was the catch-up's read
        slow_file.write_text("")  # the batch comes: the read goes on, the catch-up ends
        wait_for(
            lambda: CATCH_UP_DONE.search(watcher.output()) is not None, timeout=120, what="catch-up done"
        )
        wait_for(lambda: healthz(port) == 200, timeout=30, what="/healthz alive again")
    finally:
        slow_file.write_text("")
        watcher.stop()
    done = CATCH_UP_DONE.search(watcher.output())
    assert done is not None
    assert int(done.group(1)) == len(expected)


def test_a_catch_up_reader_waiting_for_mongodb_away_keeps_healthz_green(
    slow_server, slow_file, db_name, tmp_path
):
    """MongoDB away in the middle of a catch-up's read (every connection cut, new ones refused for
    longer than WATCH_LIVENESS_S): the reader waits and reads again, each wait saying by when it is
    back (its backoff, bounded by MONGODB_TIMEOUT_MS a try). /healthz is this process's, never
    MongoDB's (docs/commands.md): it stays green, and the catch-up finishes once MongoDB is back."""
    with FaultProxy(slow_server.port) as proxy:
        # MongoDB away at the first reply over 100 kB, the reader's first batch (500 enriched
        # orders; every other reply is small): a cut once its pass was planned met the
        # commands before the read (each Commande read SLOW_S late too), retried through the
        # outage, and the read then never failed (a flake: three failures seen under load).
        proxy.away_after_cut_s = 3 * LIVENESS_S
        proxy.cut_after_reply_bytes = 100_000
        watcher, port, _ = start(slow_server, db_name, tmp_path, slow_file, uri=proxy.uri)
        statuses: list[int] = []
        try:
            wait_for(lambda: healthz(port) == 200, what="/healthz")
            wait_for(lambda: proxy.cuts > 0, timeout=60, what="the cut of the catch-up's read")
            wait_for(
                lambda: "reading orders failed" in watcher.output(),
                what="the reader's first wait",
                on_timeout=watcher.output,
            )
            slow_file.write_text("")  # the rest of the read at full speed: the outage is the point
            started = time.monotonic()
            while not CATCH_UP_DONE.search(watcher.output()):
                assert watcher.process.poll() is None, watcher.output()
                assert time.monotonic() - started < 180, watcher.output()
                statuses.append(healthz(port))
                time.sleep(0.1)
        finally:
            slow_file.write_text("")
            watcher.stop()
    late = [s for s in statuses if s != 200]
    assert late == [], (
        f"/healthz answered {late[:3]} while the catch-up waited for MongoDB ({len(statuses)} looks)"
    )
