"""What a watcher tells of MongoDB out of reach: its metrics (what MONITORING.md's rules read),
its log lines, and on a restart where it resumes from. At the wire, against a test server of the
test's own, absent at the watcher's start or stopped under a running one: a server that is not
listening is refused at once (ECONNREFUSED), and the driver's server selection then waits
MONGODB_TIMEOUT_MS (serverSelectionTimeoutMS) for one to answer (the Server Selection spec)."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pymongo
import pytest

from tests.e2e.test_liveness_e2e import free_port, healthz
from tests.helpers import WatchProcess, seed_database, token_saved, wait_for
from teststand.nx_server import NxServer

pytestmark = pytest.mark.e2e

FAILED = "change stream interrupted"


def scrape(port: int) -> dict[str, float]:
    """The watcher's series, by name and labels as exposed (``x{kind="y"}``); none when not served."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        if line.startswith("order_archiver_"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def env_for(uri: str, db_name: str, tmp_path: Path, timeout_ms: int) -> dict[str, str]:
    return {
        "MONGODB_URI": uri,
        "MONGODB_DATABASE": db_name,
        "LOG_DIR": "",
        "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
        "MONGODB_TIMEOUT_MS": str(timeout_ms),
        "WATCH_HEARTBEAT_S": "1",
    }


@pytest.mark.test_server_only("a test server of its own, started only after the watcher")
def test_a_watcher_that_never_reached_mongodb_says_so_in_its_metrics(db_name, tmp_path):
    """Nothing listens on MONGODB_URI's port: the watcher retries forever (a service), /healthz
    200 (liveness is the loop's: docs/deployment.md), and its metrics make MONITORING.md's rules
    fire: not leader (OrderArchiverNoLeader), not connected (OrderArchiverMongoDBUnreachable), each
    failed try counted by kind (OrderArchiverErrors), the series there at 0 before the first.
    It said leader 1, and no error series at all. The server up: connected, leader."""
    server_port = free_port()
    env = env_for(f"mongodb://127.0.0.1:{server_port}/?replicaSet=rs0", db_name, tmp_path, 1000)
    port = free_port()
    watcher = WatchProcess(env, tmp_path, "--metrics-port", str(port), unique_index=False)
    server = None
    try:
        wait_for(lambda: scrape(port), what="the metrics served", on_timeout=watcher.output)
        first = scrape(port)
        kind = 'order_archiver_errors_total{kind="ServerSelectionTimeoutError"}'
        assert kind in first, first  # there from the start, 0 until the first failure ends
        wait_for(
            lambda: watcher.output().count("cannot reach MongoDB") >= 2,
            what="two failed tries said (the sentinel)",
            on_timeout=watcher.output,
        )
        assert f"127.0.0.1:{server_port}: connection refused" in watcher.output()
        assert (
            "then up to 1s for a server to answer (MONGODB_TIMEOUT_MS)" in watcher.output()
        )  # the true wait
        seen = scrape(port)
        assert seen["order_archiver_watch_leader"] == 0.0, seen
        assert seen["order_archiver_mongodb_connected"] == 0.0, seen
        assert seen[kind] >= 2.0, seen
        assert healthz(port) == 200  # the loop turns: a MongoDB outage is no restart's to fix
        server = NxServer(tmp_path / "nx", port=server_port).start()
        wait_for(
            lambda: (
                scrape(port).get("order_archiver_mongodb_connected") == 1.0
                and scrape(port).get("order_archiver_watch_leader") == 1.0
            ),
            what="connected and leading once the server is up",
            on_timeout=watcher.output,
        )
    finally:
        code = watcher.stop()
        if server is not None:
            server.stop()
    assert code == 0, watcher.output()
    assert "Traceback" not in watcher.output()


@pytest.mark.test_server_only("stops and restarts a server of its own")
def test_a_running_watcher_says_why_and_when_it_reconnects(nx_settings, db_name, tmp_path):
    """The server stopped under a running watcher: each failure names the host and the reason, as
    the start does, and the next try comes when the line says (the backoff, then at most
    MONGODB_TIMEOUT_MS for the server selection: here 1 s); it said only the exception's type, and
    the next try came ~30 s later (reads retried silently, each waiting its server selection).
    Not connected meanwhile, each failure counted; the server back: one "reconnected" line with
    how long it was away, connected again."""
    server = NxServer(tmp_path / "nx").start()
    port = free_port()
    watcher = None
    try:
        with pymongo.MongoClient(server.uri) as client:
            seed_database(client[db_name], nx_settings, 20, seed=94, p_anomalies=0.0)
        env = env_for(server.uri, db_name, tmp_path, 1000)
        watcher = WatchProcess(env, tmp_path, "--metrics-port", str(port))
        with pymongo.MongoClient(server.uri) as client:
            wait_for(lambda: token_saved(client[db_name], tmp_path, "file"), what="the start token")
        server.stop()
        wait_for(
            lambda: watcher.output().count(FAILED) >= 4,
            timeout=60,
            what="4 failures said",
            on_timeout=watcher.output,
        )
        seen = scrape(port)
        lines = [line for line in watcher.output().splitlines() if FAILED in line]
        assert all(f"127.0.0.1:{server.port}: connection refused" in line for line in lines), lines
        times = [datetime.fromisoformat(line.split()[0]) for line in lines]
        delays = [float(re.search(r"reconnecting in (\d+\.\d)s", line).group(1)) for line in lines]  # type: ignore[union-attr]
        for said, now, then in zip(delays, times, times[1:], strict=False):
            # the line's wait (0.05 s of rounding), the selection's 1 s, and 1.5 s for the machine
            assert (then - now).total_seconds() <= said + 0.05 + 1.0 + 1.5, lines
        assert seen["order_archiver_mongodb_connected"] == 0.0, seen
        assert seen['order_archiver_errors_total{kind="ServerSelectionTimeoutError"}'] >= 3.0, seen
        server = NxServer(tmp_path / "nx", port=server.port).start()
        wait_for(
            lambda: "reconnected: the change stream is back after" in watcher.output(),
            timeout=60,
            what="the reconnected line",
            on_timeout=watcher.output,
        )
        assert scrape(port)["order_archiver_mongodb_connected"] == 1.0
        assert watcher.output().count("reconnected:") == 1
    finally:
        code = watcher.stop() if watcher is not None else 0
        server.stop()
    assert code == 0


def test_a_restart_says_where_it_resumes_from(nx_client, nx_settings, nx_env, db_name, tmp_path):
    """After kill -9 the restart said only "watching ..."; now it says the token's age and that
    its watcher did not stop cleanly; after SIGTERM, that it did."""
    seed_database(nx_client[db_name], nx_settings, 20, seed=95, p_anomalies=0.0)
    env = {
        **nx_env,
        "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
        "LOG_DIR": "",
        "WATCH_HEARTBEAT_S": "1",
    }
    said = re.compile(
        r"resuming from the resume token saved (\d+)s ago; its watcher (did not stop|stopped) cleanly"
    )

    token = tmp_path / "token.json"

    def saved_since(before: int) -> bool:
        return token.exists() and token.stat().st_mtime_ns != before and token_saved(None, tmp_path, "file")

    def run_until_saved_then(sig: int) -> str:
        """A watcher that saved a token of its own (its stream's), then stopped by ``sig``."""
        before = token.stat().st_mtime_ns if token.exists() else 0
        watcher = WatchProcess(env, tmp_path)
        try:
            wait_for(lambda: "watching" in watcher.output() and saved_since(before), what="a token saved")
        finally:
            watcher.stop(sig)
        return watcher.output()

    first = run_until_saved_then(signal.SIGKILL)
    assert not said.search(first)  # a first start resumes from nothing
    time.sleep(1.1)  # the token's age, in whole seconds, at least 1
    after_kill = run_until_saved_then(signal.SIGTERM)
    found = said.search(after_kill)
    assert found, after_kill
    assert found.group(2) == "did not stop", after_kill
    assert int(found.group(1)) >= 1
    after_term = run_until_saved_then(signal.SIGTERM)
    found = said.search(after_term)
    assert found, after_term
    assert found.group(2) == "stopped", after_term
