"""Nothing lost, nothing duplicated, under injected faults: connections cut, a proxy down, a
server restarted. The CLI runs as a subprocess, through teststand/fault_proxy.py."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pymongo
import pytest
from bson import json_util

from order_archiver.settings import ENV_VARS
from tests.conftest import ROOT, run_cli
from tests.helpers import (
    WatchProcess,
    archived_ids,
    assert_no_duplicates,
    expected_archive_ids,
    pending_ids,
    seed_database,
    token_saved,
    wait_for,
)
from teststand.fault_proxy import FaultProxy
from teststand.nx_server import NxServer

pytestmark = pytest.mark.e2e


class Cutter:
    """Cuts every connection through the proxy every ``period`` seconds, in a thread."""

    def __init__(self, proxy: FaultProxy, period: float) -> None:
        self.proxy = proxy
        self.period = period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            self.proxy.cut_all()

    def __enter__(self) -> Cutter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def watch_env(uri: str, db_name: str, tmp_path: Path, *, timeout_ms: int) -> dict[str, str]:
    """A watcher with a file token store on ``uri`` (the proxy, or a server of the test's own)."""
    return {
        "MONGODB_URI": uri,
        "MONGODB_DATABASE": db_name,
        "LOG_DIR": "",
        "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
        "MONGODB_TIMEOUT_MS": str(timeout_ms),
        "WATCH_HEARTBEAT_S": "1",
    }


@pytest.mark.test_server_only("a TCP proxy in front of the test server")
def test_batch_with_connections_cut_mid_reply(nx_server, nx_client, nx_settings, db_name, tmp_path):
    """Every connection dies after 600 kB of replies (a getMore of 500 enriched orders is
    about 420 kB): the stream breaks mid-reply several times, the run goes on in pages, and
    completes in one go. Cut by the bytes, not the clock: the same cuts on a fast or a slow
    machine, and no waiting for a timer."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 5000, seed=71, p_delivered=0.5, p_anomalies=0.01)
    expected = expected_archive_ids(dataset)
    with FaultProxy(nx_server.port) as proxy:
        proxy.cut_after_reply_bytes = 600_000
        env = {
            "MONGODB_URI": proxy.uri,
            "MONGODB_DATABASE": db_name,
            "LOG_DIR": "",
            "MONGODB_TIMEOUT_MS": "2000",
        }
        result = run_cli(
            "batch", "--run", "--purge-source", "--batch-size", "200", env=env, cwd=tmp_path, timeout=300
        )
        cuts = proxy.cuts
    assert "Traceback" not in result.stderr
    assert result.returncode == 3, result.stderr  # done; the seed's invalid orders are new: exit 3
    # How the cuts fall on the pool's connections varies a little from run to run: at
    # least two, each mid-reply, and the run says it went on through them: one read failure or
    # more (a cut meeting a command pymongo retries itself, a read's first batch or a write, is
    # not the run's to count; it failed 2 of 6 runs on "1 read failure").
    assert cuts >= 2, "the faults were not injected"
    assert re.search(r"went on through [1-9]\d* read failures?", result.stdout), result.stdout
    archive = database["Commande_archive"]
    archived = {d["_id"] for d in archive.find({}, {"_id": 1})}
    assert archived == expected
    assert_no_duplicates(archive)
    remaining = {d["_id"] for d in database["Commande"].find({}, {"_id": 1})}
    purged = {o["_id"] for o in dataset.orders} - remaining
    assert purged <= archived  # nothing deleted that was not archived
    assert purged == archived  # and everything archived was purged


@pytest.mark.test_server_only("a TCP proxy in front of the test server")
def test_watch_burst_with_cuts_and_the_proxy_down_for_four_seconds(
    nx_server, nx_client, nx_settings, db_name, tmp_path
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 2500, seed=72, p_delivered=0.1, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    burst = pending_ids(dataset, 2000)
    with FaultProxy(nx_server.port) as proxy:
        watcher = WatchProcess(watch_env(proxy.uri, db_name, tmp_path, timeout_ms=2000), tmp_path)
        try:
            wait_for(lambda: archived_ids(database) == expected, timeout=60, what="catch-up")
            wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")
            orders = database["Commande"]  # deliveries go straight to the server, not the proxy

            def deliver() -> None:
                for start in range(0, len(burst), 100):
                    orders.update_many(
                        {"_id": {"$in": burst[start : start + 100]}}, {"$set": {"status": "livrée"}}
                    )
                    time.sleep(0.1)

            sender = threading.Thread(target=deliver, daemon=True)
            sender.start()
            with Cutter(proxy, period=0.7):
                time.sleep(2.5)
            # Down longer than the server selection timeout (2 s): the watcher's own reconnects.
            proxy.refuse_for(4)
            time.sleep(4)
            sender.join(60)
            expected |= set(burst)
            wait_for(
                lambda: archived_ids(database) == expected,
                timeout=120,
                what="recovery",
                on_timeout=watcher.output,
            )
        finally:
            code = watcher.stop()
        assert proxy.cuts >= 3
    assert code == 0
    # pymongo's own resume and retryable reads/writes may absorb every cut: what matters is
    # the archive, exact and without duplicates.
    assert "Traceback" not in watcher.output()
    assert_no_duplicates(database["Commande_archive"])


@pytest.mark.test_server_only("stops and restarts a server of its own")
def test_server_restarted_during_watch(nx_settings, db_name, tmp_path):
    server = NxServer(tmp_path / "nx").start()
    try:
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            database = client[db_name]
            dataset = seed_database(database, nx_settings, 500, seed=73, p_anomalies=0.0)
            expected = expected_archive_ids(dataset)
        watcher = WatchProcess(watch_env(server.uri, db_name, tmp_path, timeout_ms=1000), tmp_path)
        try:
            with pymongo.MongoClient(server.uri, tz_aware=True) as client:
                wait_for(lambda: archived_ids(client[db_name]) == expected, what="catch-up")
            wait_for(lambda: token_saved(client[db_name], tmp_path, "file"), what="the start token")
            server.stop()
            time.sleep(1.5)  # down past the 1 s selection timeout: the watcher must reconnect
            server = NxServer(tmp_path / "nx", port=server.port).start()
            with pymongo.MongoClient(server.uri, tz_aware=True) as client:
                database = client[db_name]
                later = pending_ids(dataset, 50)
                for order_id in later:
                    database["Commande"].update_one({"_id": order_id}, {"$set": {"status": "livrée"}})
                expected |= set(later)
                wait_for(
                    lambda: archived_ids(database) == expected,
                    timeout=90,
                    what="resume after restart",
                    on_timeout=watcher.output,
                )
                assert_no_duplicates(database["Commande_archive"])
        finally:
            code = watcher.stop()
        assert code == 0
        output = watcher.output()
        assert "reconnecting" in output
        assert output.count("catching up") == 1  # resumed from its token, not a second catch-up
    finally:
        server.stop()


def ha_env(nx_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        **nx_env,
        "WATCH_LEASE_TTL_S": "3",
        "WATCH_LEASE_RENEW_S": "1",
        "WATCH_HEARTBEAT_S": "1",
        "LOG_DIR": "",
    }


HA_ARGS = ("--token-store", "mongo", "--name", "ha")


def test_standby_takes_over_when_the_leader_is_killed_mid_burst(
    nx_client, nx_settings, db_name, nx_env, tmp_path
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 3000, seed=74, p_delivered=0.3, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    env = ha_env(nx_env, tmp_path)
    leader = WatchProcess(env, tmp_path, *HA_ARGS)
    standby = None
    try:
        wait_for(lambda: archived_ids(database) == expected, what="catch-up")
        wait_for(lambda: token_saved(database, tmp_path, "mongo", "ha"), what="the leader's token")
        standby = WatchProcess(env, tmp_path, *HA_ARGS)
        wait_for(lambda: "standby" in standby.output(), what="the standby to wait")
        burst = pending_ids(dataset, 1200)
        orders = database["Commande"]

        def deliver() -> None:
            for start in range(0, len(burst), 50):
                orders.update_many(
                    {"_id": {"$in": burst[start : start + 50]}}, {"$set": {"status": "livrée"}}
                )
                time.sleep(0.05)

        sender = threading.Thread(target=deliver, daemon=True)
        sender.start()
        wait_for(lambda: len(archived_ids(database)) >= len(expected) + 200, what="the burst to start")
        leader.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: "leader of lease:ha (term 2" in standby.output(), timeout=30, what="the takeover")
        takeover_s = time.monotonic() - killed_at
        sender.join(60)
        expected |= set(burst)
        wait_for(
            lambda: archived_ids(database) == expected,
            timeout=90,
            what="the burst",
            on_timeout=standby.output,
        )
        assert takeover_s < 3 + 2 + 1  # within the lease time (3 s), a renewal period and some slack
        assert database["archiver_checkpoints"].find_one({"_id": "watch:ha"})["term"] == 2
    finally:
        if standby is not None:
            assert standby.stop() == 0
        leader.stop(signal.SIGKILL)
    assert_no_duplicates(database["Commande_archive"])


def test_a_paused_old_leader_cannot_overwrite_the_new_leaders_checkpoint(
    nx_client, nx_settings, db_name, nx_env, tmp_path
):
    """And its metrics say it stands by: an SRE's old leader, fenced out, kept exporting the age
    of its own last token save (31 s, 111 s, 353 s), and OrderArchiverTokenStale paged on a
    healthy pair; no metric said which process led (``order_archiver_watch_leader``)."""
    from tests.e2e.test_operability_e2e import free_port, scrape

    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 800, seed=75, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    env = ha_env(nx_env, tmp_path)
    old_port, new_port = free_port(), free_port()
    old = WatchProcess(env, tmp_path, *HA_ARGS, "--metrics-port", str(old_port))
    new = None
    try:
        wait_for(lambda: archived_ids(database) == expected, what="catch-up")
        wait_for(lambda: token_saved(database, tmp_path, "mongo", "ha"), what="the leader's token")
        new = WatchProcess(env, tmp_path, *HA_ARGS, "--metrics-port", str(new_port))
        wait_for(lambda: "standby" in new.output(), what="the standby to wait")
        assert scrape(old_port)["order_archiver_watch_leader"] == 1
        assert scrape(new_port)["order_archiver_watch_leader"] == 0
        assert math.isnan(scrape(new_port)["order_archiver_token_age_seconds"])
        old.process.send_signal(signal.SIGSTOP)  # a GC pause, a frozen VM
        wait_for(lambda: "leader of lease:ha (term 2" in new.output(), timeout=30, what="the takeover")
        first = pending_ids(dataset, 30)
        for order_id in first[:20]:
            database["Commande"].update_one({"_id": order_id}, {"$set": {"status": "livrée"}})
        expected |= set(first[:20])
        wait_for(lambda: archived_ids(database) == expected, what="the new leader's deliveries")
        wait_for(
            lambda: database["archiver_checkpoints"].find_one({"_id": "watch:ha"})["term"] == 2,
            what="the new leader's checkpoint",
        )
        old.process.send_signal(signal.SIGCONT)  # it wakes up, believing it leads
        wait_for(
            lambda: "back to standby" in old.output() or "taken over" in old.output(),
            timeout=20,
            what="the old leader to step down",
            on_timeout=old.output,
        )
        for order_id in first[20:]:
            database["Commande"].update_one({"_id": order_id}, {"$set": {"status": "livrée"}})
        expected |= set(first[20:])
        wait_for(lambda: archived_ids(database) == expected, what="later deliveries")
        # The old leader's renewals and heartbeats, if any, land while the new one renews
        # twice more: wait for that (a positive sign that time passed with both running).
        renewed = database["archiver_checkpoints"].find_one({"_id": "lease:ha"})["expires_at"]
        wait_for(
            lambda: (
                database["archiver_checkpoints"].find_one({"_id": "lease:ha"})["expires_at"]
                >= renewed + timedelta(seconds=2)
            ),
            what="two renewals of the new leader",
        )
        checkpoint = database["archiver_checkpoints"].find_one({"_id": "watch:ha"})
        assert checkpoint["term"] == 2
        stood_down, leading = scrape(old_port), scrape(new_port)
        assert stood_down["order_archiver_watch_leader"] == 0
        assert math.isnan(stood_down["order_archiver_token_age_seconds"])  # no stale-token page
        assert leading["order_archiver_watch_leader"] == 1
        assert leading["order_archiver_token_age_seconds"] < 60
        lease = database["archiver_checkpoints"].find_one({"_id": "lease:ha"})
        assert lease["term"] == 2
        assert lease["owner"] in new.output()
    finally:
        old.process.send_signal(signal.SIGCONT)
        assert old.stop() == 0
        if new is not None:
            assert new.stop() == 0
    assert_no_duplicates(database["Commande_archive"])


STOP_BOUND_S = 10.0  # the bound; the product's grace is main.STOP_GRACE_S


@pytest.mark.test_server_only("a TCP proxy in front of the test server")
@pytest.mark.parametrize("store", ["file", "mongo"])
def test_a_stop_is_on_time_when_the_server_hangs(nx_server, nx_client, nx_settings, db_name, tmp_path, store):
    """A server that accepts connections and answers nothing holds the watcher's getMore (and,
    with the MongoDB token store, the lease release): SIGTERM still ends it within 10 s, with
    exit 1 and one line; restarted on a healthy server it loses and doubles nothing."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 300, seed=73, p_delivered=0.3, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    env = {  # the default timeouts (5 s): what a user runs with
        **watch_env("", db_name, tmp_path, timeout_ms=5000),
        "WATCH_LEASE_TTL_S": "3",
        "WATCH_LEASE_RENEW_S": "1",
    }
    with FaultProxy(nx_server.port) as proxy:
        env["MONGODB_URI"] = proxy.uri
        watcher = WatchProcess(env, tmp_path, "--token-store", store)
        try:
            wait_for(lambda: archived_ids(database) == expected, timeout=60, what="catch-up")
            wait_for(lambda: token_saved(database, tmp_path, store), what="the start token")
            proxy.holding = True
            later = pending_ids(dataset, 30)
            database["Commande"].update_many({"_id": {"$in": later}}, {"$set": {"status": "livrée"}})
            wait_for(lambda: proxy.held > 0, what="a getMore the proxy holds")
            started = time.monotonic()
            code = watcher.stop(signal.SIGTERM, timeout=STOP_BOUND_S + 5)
            took = time.monotonic() - started
        finally:
            proxy.holding = False
            if watcher.process.poll() is None:
                watcher.process.kill()
    output = watcher.output()
    assert took < STOP_BOUND_S, f"the stop took {took:.1f} s"
    # Either pymongo gave the held operation up in time and the stop was clean (0), or the
    # watchdog ended the work in hand (1, said in one line).
    assert code == 0 or (code == 1 and "the server does not answer" in output), output
    assert "Traceback" not in output
    again = WatchProcess({**env, "MONGODB_URI": nx_server.uri}, tmp_path, "--token-store", store)
    try:
        expected |= set(later)
        wait_for(lambda: archived_ids(database) == expected, timeout=60, what="taken up after the restart")
    finally:
        assert again.stop() == 0
    assert_no_duplicates(database["Commande_archive"])


@pytest.mark.test_server_only("a TCP proxy in front of the test server")
def test_a_batch_stop_is_on_time_when_the_server_hangs(nx_server, nx_client, nx_settings, db_name, tmp_path):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 3000, seed=74, p_delivered=0.6, p_anomalies=0.0)
    with FaultProxy(nx_server.port) as proxy:
        proxy.latency = 0.02  # slow enough to be caught mid-run
        env = {
            "MONGODB_URI": proxy.uri,
            "MONGODB_DATABASE": db_name,
            "LOG_DIR": "",
        }
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "batch", "--run", "--batch-size", "50", "-v"],
            env={**{k: v for k, v in os.environ.items() if k not in ENV_VARS}, **env},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_for(lambda: database["Commande_archive"].count_documents({}) > 0, what="the run under way")
            proxy.holding = True
            wait_for(lambda: proxy.held > 0, what="a request the proxy holds")
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=STOP_BOUND_S + 5)
            took = time.monotonic() - started
        finally:
            proxy.holding = False
            if process.poll() is None:
                process.kill()
    assert took < STOP_BOUND_S, f"the stop took {took:.1f} s"
    assert process.returncode == 1, output
    assert "the server does not answer" in output
    assert "Traceback" not in output
    rerun = run_cli("batch", "--run", env={**env, "MONGODB_URI": nx_server.uri}, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert archived_ids(database) == expected_archive_ids(dataset)
    assert_no_duplicates(database["Commande_archive"])


@pytest.mark.test_server_only("a TCP proxy in front of the test server")
def test_an_idle_watcher_stopped_while_the_server_does_not_answer_stops_cleanly(
    nx_server, nx_client, nx_settings, db_name, tmp_path
):
    """A new operator's SIGTERM while MongoDB was down: the only line was "error: stopped 8 s
    after the signal with the work in hand unfinished", exit 1, no summary, though the watcher
    held nothing (its getMore waiting on a server that answers nothing: MongoDB's awaitData
    getMore, held for good by the proxy). Nothing in hand: a clean stop, its stopped line, exit 0,
    recorded (status: stopped cleanly)."""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 40, seed=75, p_delivered=0.5, p_anomalies=0.0)
    env = watch_env("", db_name, tmp_path, timeout_ms=5000)
    with FaultProxy(nx_server.port) as proxy:
        env["MONGODB_URI"] = proxy.uri
        watcher = WatchProcess(env, tmp_path, "--token-store", "file")
        try:
            wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")
            proxy.holding = True
            wait_for(lambda: proxy.held > 0, what="a getMore the proxy holds")
            code = watcher.stop(signal.SIGTERM, timeout=STOP_BOUND_S + 5)
        finally:
            proxy.holding = False
            if watcher.process.poll() is None:
                watcher.process.kill()
    output = watcher.output()
    assert code == 0, output
    assert "the work in hand unfinished" not in output
    assert "stopped: " in output.splitlines()[-1]
    assert "Traceback" not in output
    record = json_util.loads((tmp_path / "token.json").read_text("utf-8"))
    assert "stopped_at" in record


@pytest.mark.test_server_only("the test server's own database, seeded")
def test_a_watcher_stopped_during_its_catch_up_counts_the_orders_it_archived(
    nx_client, nx_settings, db_name, tmp_path, nx_server
):
    """A new operator's SIGTERM 2 s into a first start's catch-up: "stopped: 0 events ...;
    catch-up: 0 orders: 0 archived", while the archive held hundreds it had written. The
    stopped catch-up's chunks written are the summary's (paced by --max-rate, as batch is)."""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 800, seed=76, p_delivered=0.9, p_anomalies=0.0)
    env = {**watch_env(nx_server.uri, db_name, tmp_path, timeout_ms=5000), "BATCH_SIZE": "50"}
    watcher = WatchProcess(env, tmp_path, "--token-store", "file", "--max-rate", "100")
    try:
        wait_for(lambda: database["Commande_archive"].count_documents({}) >= 100, what="chunks written")
        code = watcher.stop(signal.SIGTERM)
    finally:
        if watcher.process.poll() is None:
            watcher.process.kill()
    output = watcher.output()
    archived = database["Commande_archive"].count_documents({"archived_by": "watch"})
    assert code == 0, output
    assert "catch-up done" not in output  # stopped mid-way (else the test proves nothing)
    [stopped] = [line for line in output.splitlines() if "stopped: " in line]
    said = re.search(r"catch-up: (\d+) orders?: (\d+) archived", stopped)
    assert said, stopped
    assert int(said.group(2)) == archived > 0, stopped


@pytest.mark.test_server_only("the test server's own database, seeded")
def test_status_says_a_stop_file_left_behind_keeps_the_watcher_down_while_deliveries_wait(
    nx_client, nx_settings, db_name, tmp_path, nx_server
):
    """A new operator's leftover stop file: the next start said "stop file ... found: not
    starting" (exit 0), and status said "stopped cleanly" and healthy while deliveries waited.
    Status now says the stop file is there and, with a backlog, is unhealthy (exit 3)."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 60, seed=77, p_delivered=0.5, p_anomalies=0.0)
    env = watch_env(nx_server.uri, db_name, tmp_path, timeout_ms=5000)
    stop_file = tmp_path / "stop"
    watcher = WatchProcess(env, tmp_path, "--token-store", "file", "--stop-file", str(stop_file))
    try:
        wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")
        stop_file.touch()
        watcher.process.wait(timeout=20)  # stopped by its stop file, not by a signal
        assert watcher.stop() == 0, watcher.output()
    finally:
        if watcher.process.poll() is None:
            watcher.process.kill()
    later = pending_ids(dataset, 5)
    delivered = {"status": "livrée", "date_livraison": datetime.now(UTC)}
    database["Commande"].update_many({"_id": {"$in": later}}, {"$set": delivered})
    status = run_cli("status", env=env, cwd=tmp_path)
    assert status.returncode == 3, status.stdout + status.stderr
    assert f"its stop file {stop_file} is there" in status.stdout
    stop_file.unlink()
    again = run_cli("status", env=env, cwd=tmp_path)
    assert "stop file" not in again.stdout
