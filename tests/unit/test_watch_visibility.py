"""What a watcher tells of MongoDB out of reach and of where it resumes, the pure parts: its
metrics before and after a failure, the reconnect lines, the restart's line and the store's
record of a clean stop. At the wire: tests/e2e/test_watch_visibility_e2e.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from pymongo import errors as pymongo_errors

from order_archiver.mongodb.tokens import FileTokenStore, ResumeState
from order_archiver.reporting.metrics import WatchMetrics
from order_archiver.settings import Settings
from order_archiver.watch.opening import resuming_said
from order_archiver.watch.reconnects import Reconnects


def exposed(metrics: WatchMetrics) -> dict[str, float]:
    lines = generate_latest(metrics.registry).decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("order_archiver_")
    }


SELECTION = 'order_archiver_errors_total{kind="ServerSelectionTimeoutError"}'


def test_before_it_reaches_mongodb_a_watcher_neither_leads_nor_is_connected_and_its_errors_are_at_zero():
    """Served from the process's start (cli): it said leader 1 and no error series at all, so
    that no rule of MONITORING.md could fire while the watcher never reached MongoDB."""
    metrics = WatchMetrics()
    seen = exposed(metrics)
    assert seen["order_archiver_watch_leader"] == 0.0
    assert seen["order_archiver_mongodb_connected"] == 0.0
    assert seen[SELECTION] == 0.0  # there at 0: increase() sees the first failure
    assert seen['order_archiver_errors_total{kind="AutoReconnect"}'] == 0.0
    metrics.lost(pymongo_errors.ServerSelectionTimeoutError("refused"))
    metrics.lost(pymongo_errors.ServerSelectionTimeoutError("refused"))
    assert exposed(metrics)[SELECTION] == 2.0
    metrics.reached()
    metrics.led_by(lambda: True)
    seen = exposed(metrics)
    assert seen["order_archiver_mongodb_connected"] == 1.0
    assert seen["order_archiver_watch_leader"] == 1.0
    metrics.lost(pymongo_errors.AutoReconnect("db1:27017: connection closed"))
    seen = exposed(metrics)
    assert seen["order_archiver_mongodb_connected"] == 0.0
    assert seen['order_archiver_errors_total{kind="AutoReconnect"}'] == 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_lost_connection_names_its_host_and_the_true_wait_and_the_return_says_how_long(caplog):
    metrics, clock = WatchMetrics(lambda: True), Clock()
    metrics.reached()
    reconnects = Reconnects([], Settings(mongodb_timeout_ms=2000), metrics, clock=clock)
    with caplog.at_level(logging.INFO, logger="order_archiver"):
        reconnects.failed(pymongo_errors.AutoReconnect("db1:27017: connection closed"), 0.4)
        clock.now += 7.5
        reconnects.failed(pymongo_errors.AutoReconnect("db1:27017: connection closed"), 0.9)
        assert exposed(metrics)["order_archiver_mongodb_connected"] == 0.0
        clock.now += 5.0
        reconnects.back()
        reconnects.back()  # said once
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == (
        "change stream interrupted (AutoReconnect): connection to MongoDB lost: db1:27017: connection "
        "closed; reconnecting in 0.4s, then up to 2s for a server to answer (MONGODB_TIMEOUT_MS)"
    )
    assert lines[2:] == ["reconnected: the change stream is back after 12.5s away (2 failed tries)"]
    assert exposed(metrics)["order_archiver_mongodb_connected"] == 1.0


NOW = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)


def test_the_restart_line_says_the_tokens_age_and_how_its_watcher_ended():
    token = {"_data": "82"}
    killed = ResumeState("token", token, saved_at=NOW - timedelta(seconds=42))
    assert resuming_said(killed, NOW).startswith(
        "resuming from the resume token saved 42s ago; its watcher did not stop cleanly"
    )
    stopped = ResumeState("token", token, saved_at=NOW - timedelta(seconds=3), stopped_at=NOW)
    assert (
        resuming_said(stopped, NOW)
        == "resuming from the resume token saved 3s ago; its watcher stopped cleanly"
    )
    mid = ResumeState("token", token, catching_up=True, saved_at=NOW - timedelta(seconds=9))
    assert "; it was catching up" in resuming_said(mid, NOW)
    assert "of unknown age" in resuming_said(ResumeState("token", token), NOW)


def test_the_file_store_keeps_when_a_token_was_saved_and_whether_its_watcher_stopped_cleanly(tmp_path):
    store = FileTokenStore(tmp_path / "token.json", "livraison.Commande")
    store.save({"_data": "82"})
    saved = store.load()
    assert saved.saved_at is not None
    assert abs((datetime.now(UTC) - saved.saved_at).total_seconds()) < 60
    assert saved.stopped_at is None
    store.mark_stopped()
    assert store.load().stopped_at is not None
    store.save({"_data": "83"})  # the next run's first save: not stopped any more
    assert store.load().stopped_at is None
