"""status, verify, metrics: the operator's commands, run as an operator runs them."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from tests.conftest import run_cli
from tests.helpers import (
    WatchProcess,
    expected_archive_ids,
    pending_ids,
    seed_database,
    token_saved,
    wait_for,
)

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def archived(nx_client, nx_settings, db_name, nx_env, tmp_path):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 400, seed=61, p_anomalies=0.0)
    result = run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return database, dataset


def test_status_healthy_then_backlog_then_stale_watcher(archived, nx_env, tmp_path):
    database, _ = archived
    result = run_cli("status", "--json", env=nx_env, cwd=tmp_path)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout
    assert report["healthy"]
    assert report["backlog"] == 0
    assert report["archive_size"] == database["Commande_archive"].count_documents({})
    assert sum(report["orders_by_status"].values()) < 400  # the last 24h only: bounded
    everything = json.loads(
        run_cli("status", "--json", "--lookback", "400d", env=nx_env, cwd=tmp_path).stdout
    )
    assert sum(everything["orders_by_status"].values()) == 400
    assert report["newest_archived_at"]

    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    database["Commande"].insert_one(
        {
            "numero_commande": "LATE-1",
            "status": "livrée",
            "date_commande": an_hour_ago,
            "date_livraison": an_hour_ago,
        }
    )
    result = run_cli("status", env=nx_env, cwd=tmp_path)
    assert result.returncode == 3
    assert "UNHEALTHY" in result.stdout
    assert "1 delivered order not archived" in result.stdout
    assert run_cli("status", "--max-backlog-age", "2h", env=nx_env, cwd=tmp_path).returncode == 0

    database["archiver_checkpoints"].insert_one(
        {
            "_id": "watch:eu-1",
            "kind": "watch",
            "namespace": "x",
            "saved_at": datetime.now(UTC) - timedelta(minutes=10),
        }
    )
    result = run_cli("status", "--json", "--max-backlog-age", "2h", env=nx_env, cwd=tmp_path)
    report = json.loads(result.stdout)
    assert result.returncode == 3
    assert report["watchers"][0]["name"] == "eu-1"
    assert report["watchers"][0]["heartbeat_age_s"] > 500
    assert any("watcher eu-1" in problem for problem in report["problems"])


def test_verify_consistent_then_finds_missing_and_corrupt_then_repairs(archived, nx_env, tmp_path):
    database, dataset = archived
    result = run_cli("verify", env=nx_env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "consistent" in result.stdout

    archive = database["Commande_archive"]
    # A dish's price raised after archiving: the archive keeps what the order was archived with
    # (docs/commands.md, verify), so this is no disagreement (it was exit 3, "montant_total").
    priced = next(
        d for d in archive.find({}, {"items": 1}) if d["items"] and d["items"][0]["prix"] is not None
    )
    dish = priced["items"][0]
    database["Menu"].update_one({"_id": dish["menu_id"]}, {"$set": {"prix": dish["prix"] + 1}})
    result = run_cli("verify", env=nx_env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    deleted, corrupted = sorted(expected_archive_ids(dataset))[:2]
    archive.delete_one({"_id": deleted})
    archive.update_one({"_id": corrupted}, {"$set": {"montant_total": 9999.0}})
    result = run_cli("verify", "--json", env=nx_env, cwd=tmp_path)
    report = json.loads(result.stdout)
    assert result.returncode == 3
    assert report["missing"] == 1
    assert report["missing_examples"] == [str(deleted)]
    assert report["mismatched"] == 1
    assert report["mismatched_examples"][0]["fields"] == ["montant_total"]

    database["Commande"].delete_one({"_id": sorted(expected_archive_ids(dataset))[5]})  # as a purge would
    repaired = run_cli("verify", "--repair", "--json", env=nx_env, cwd=tmp_path)
    report = json.loads(repaired.stdout)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert report["repaired"] == 1
    assert (report["rewritten"], report["mismatched"]) == (1, 0)  # from its source order
    assert report["orphans"] == 1
    assert archive.find_one({"_id": deleted}) is not None
    fixed = archive.find_one({"_id": corrupted})
    assert fixed["montant_total"] == round(sum(i["sous_total"] or 0 for i in fixed["items"]), 2)
    after = run_cli("verify", "--json", env=nx_env, cwd=tmp_path)
    assert after.returncode == 0, after.stdout
    assert (json.loads(after.stdout)["missing"], json.loads(after.stdout)["mismatched"]) == (0, 0)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_watch_metrics_endpoint_moves_with_deliveries(nx_client, nx_settings, db_name, nx_env, tmp_path):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 300, seed=62, p_anomalies=0.0)
    port = free_port()
    env = {**nx_env, "RESUME_TOKEN_FILE": str(tmp_path / "token.json")}
    watcher = WatchProcess(env, tmp_path, "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    try:
        wait_for(lambda: token_saved(database, tmp_path, "file"), what="the watcher past its catch-up")
        before = scrape(port)
        assert before['order_archiver_orders_archived_total{mode="catch-up"}'] == len(
            expected_archive_ids(dataset)
        )
        deliveries = pending_ids(dataset, 5)
        for order_id in deliveries:
            database["Commande"].update_one({"_id": order_id}, {"$set": {"status": "livrée"}})
        wait_for(
            lambda: scrape(port).get('order_archiver_orders_archived_total{mode="watch"}', 0) == 5,
            what="metrics to count the deliveries",
        )
        after = scrape(port)
        assert after["order_archiver_events_total"] >= 5
        assert after["order_archiver_archive_latency_seconds_count"] >= 5
        assert after["order_archiver_seconds_since_last_event"] < 60
        assert after["order_archiver_token_age_seconds"] < 60
    finally:
        assert watcher.stop() == 0


def test_batch_metrics_file(archived, nx_env, tmp_path):
    database, _ = archived
    database["Commande"].insert_one(
        {
            "_id": ObjectId(),
            "numero_commande": "X-1",
            "status": "livrée",
            "date_commande": datetime.now(UTC),
            "date_livraison": datetime.now(UTC),
        }
    )
    path = tmp_path / "order_archiver.prom"
    result = run_cli("batch", "--run", "-q", "--metrics-file", str(path), env=nx_env, cwd=tmp_path)
    assert result.returncode == 0
    text = path.read_text()
    assert "order_archiver_batch_last_archived 1.0" in text
    assert "order_archiver_batch_last_success 1.0" in text
    stamp = next(
        line for line in text.splitlines() if line.startswith("order_archiver_batch_last_run_timestamp")
    )
    assert abs(float(stamp.split()[1]) - time.time()) < 120
