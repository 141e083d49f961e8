"""What a new user meets in the first hour, through the command line as a subprocess: silent
zeros, counts, `verify --repair`, stopped watchers, and output a person can read."""

from __future__ import annotations

import json
import re
import signal
import time
import unicodedata

import pytest

from tests.conftest import run_cli
from tests.helpers import (
    WatchProcess,
    archived_ids,
    deliver,
    expected_archive_ids,
    pending_ids,
    seed_database,
    token_saved,
    wait_for,
)

pytestmark = pytest.mark.e2e

ISO_WITH_OFFSET = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")


@pytest.fixture
def seeded(nx_client, nx_settings, db_name):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 300, seed=12, p_anomalies=0.0)
    return database, dataset


def test_a_wrong_collection_or_database_is_named_not_read_as_zero(seeded, nx_env, db_name, tmp_path):
    for command in (("batch", "--run"), ("batch",), ("verify",)):
        result = run_cli(*command, env={**nx_env, "ORDERS_COLLECTION": "Comande"}, cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert f"collection {db_name}.Comande does not exist: check ORDERS_COLLECTION" in line
        assert "Commande" in line.split("this database has:")[1]  # the likely intended name
    # A name derived from the test's database: dropped with it on a TEST_MONGODB_URI server
    # (nx-27017 creates a database on any access, even a listing; MongoDB does not).
    typo = f"{db_name}_typo"
    result = run_cli("batch", env={**nx_env, "MONGODB_DATABASE": typo}, cwd=tmp_path)
    assert result.returncode == 2
    assert f"database {typo} has no collections: check MONGODB_DATABASE" in result.stderr
    status = run_cli("status", "--json", env={**nx_env, "ORDERS_COLLECTION": "Comande"}, cwd=tmp_path)
    assert status.returncode == 3
    assert any("does not exist" in p for p in json.loads(status.stdout)["problems"])


def test_a_wrong_delivered_status_says_which_statuses_exist(seeded, nx_env, tmp_path):
    result = run_cli("batch", "--run", "--json", env={**nx_env, "DELIVERED_STATUS": "livree"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["delivered"] == 0
    assert report["archived"] == 0
    hint = "no order has status 'livree': check DELIVERED_STATUS (the statuses present are: "
    assert hint in result.stderr
    assert "livrée" in result.stderr
    assert report["warnings"]
    assert hint in report["warnings"][0]
    plain = run_cli("batch", env=nx_env, cwd=tmp_path)  # the right status: no such warning
    assert "check DELIVERED_STATUS" not in plain.stderr


def test_a_status_stored_decomposed_is_delivered_for_batch_and_watch(seeded, nx_env, tmp_path):
    database, dataset = seeded
    orders = database["Commande"]
    nfd = unicodedata.normalize("NFD", "livrée")
    assert nfd != "livrée"
    first, second = pending_ids(dataset, 2)
    orders.update_one({"_id": first}, {"$set": {"status": nfd}})
    result = run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = database["Commande_archive"].find_one({"_id": first})
    assert document is not None
    assert document["status"] == "livrée"

    env = {**nx_env, "RESUME_TOKEN_FILE": str(tmp_path / "token.json"), "WATCH_HEARTBEAT_S": "1"}
    watcher = WatchProcess(env, tmp_path)
    try:
        wait_for(lambda: token_saved(database, tmp_path, "file"), what="the watcher to start")
        orders.update_one({"_id": second}, {"$set": {"status": nfd}})
        wait_for(lambda: second in archived_ids(database), what="the decomposed delivery", timeout=30)
    finally:
        assert watcher.stop() == 0


def test_counts_add_up_after_a_purge(nx_client, nx_settings, nx_env, db_name, tmp_path):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 300, seed=13, p_anomalies=0.1)
    first = run_cli("batch", "--run", "--purge-source", "--json", env=nx_env, cwd=tmp_path)
    report = json.loads(first.stdout)
    assert report["purged"] == len(expected_archive_ids(dataset)) == report["archived"]
    deliver(database["Commande"], pending_ids(dataset, 5))
    second = run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path)
    report = json.loads(second.stdout)
    delivered_in_source = database["Commande"].count_documents({"status": "livrée"})
    assert report["delivered"] == delivered_in_source  # not the archive's documents
    assert report["archived"] == 5
    assert report["already_archived"] == 0
    assert report["archived"] + report["already_archived"] + report["rejected"] == report["delivered"]
    assert report["completed"] is True
    assert report["mode"] == "incremental"
    third = json.loads(run_cli("batch", "--json", env=nx_env, cwd=tmp_path).stdout)
    assert third["already_archived"] == 5
    assert third["would_archive"] == 0


def test_verify_repair_reports_the_state_after_the_repair(seeded, nx_env, tmp_path):
    database, dataset = seeded
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode == 0
    gone = sorted(expected_archive_ids(dataset))[:3]
    database["Commande_archive"].delete_many({"_id": {"$in": gone}})
    result = run_cli("verify", "--repair", env=nx_env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "repair: 3 missing orders found, 3 archived; checked again after the repair:" in result.stdout
    assert "missing from the archive: 0" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "consistent"


def test_a_cleanly_stopped_watcher_is_not_a_failure_and_a_dead_one_can_be_retired(seeded, nx_env, tmp_path):
    database, _ = seeded
    env = {**nx_env, "WATCH_HEARTBEAT_S": "1", "WATCH_LEASE_TTL_S": "2", "WATCH_LEASE_RENEW_S": "1"}
    probe = ("status", "--json", "--max-heartbeat-age", "1s")

    def started(name: str) -> WatchProcess:
        watcher = WatchProcess(env, tmp_path, "--token-store", "mongo", "--name", name)
        wait_for(lambda: token_saved(database, tmp_path, "mongo", name), what=f"watcher {name}")
        return watcher

    assert started("calm").stop(signal.SIGTERM) == 0
    dead = started("dead")
    dead.stop(signal.SIGKILL)
    time.sleep(2.2)  # both tokens older than --max-heartbeat-age; the dead one's lease (2 s) expired
    result = run_cli(*probe, env=env, cwd=tmp_path)
    report = json.loads(result.stdout)
    assert result.returncode == 3
    assert [p for p in report["problems"] if "watcher" in p] == [p for p in report["problems"] if "dead" in p]
    calm = next(w for w in report["watchers"] if w["name"] == "calm")
    assert ISO_WITH_OFFSET.fullmatch(calm["stopped_at"])
    assert "stopped cleanly at" in run_cli("status", env=env, cwd=tmp_path).stdout

    running = started("busy")
    try:
        refused = run_cli("retire-watcher", "busy", env=env, cwd=tmp_path)
        assert refused.returncode == 2
        assert "watcher busy is running" in refused.stderr
    finally:
        assert running.stop(signal.SIGTERM) == 0
    retired = run_cli("retire-watcher", "dead", env=env, cwd=tmp_path)
    assert retired.returncode == 0, retired.stderr
    assert "watcher dead retired" in retired.stdout
    twice = run_cli("retire-watcher", "dead", env=env, cwd=tmp_path)  # said "retired" again
    assert twice.returncode == 0, twice.stderr
    assert (
        twice.stdout.strip()
        == "watcher dead was already retired (no resume token, its lease ended): nothing to do"
    )
    healthy = run_cli(*probe, env=env, cwd=tmp_path)
    assert healthy.returncode == 0, healthy.stdout
    assert database["archiver_checkpoints"].find_one({"_id": "watch:dead"}) is None
    missing = run_cli("retire-watcher", "nobody", env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "no watcher named nobody" in missing.stderr


def test_output_a_person_can_read(seeded, nx_env, tmp_path):
    database, dataset = seeded
    dry = run_cli("batch", "--samples", "2", env=nx_env, cwd=tmp_path)
    samples = [json.loads(line) for line in dry.stdout.splitlines() if line.startswith("{")]
    assert len(samples) == 2
    assert all(s["client"]["email"] == "***" for s in samples if s["client"])
    assert "@" not in dry.stdout  # no e-mail address on a terminal by default
    shown = run_cli("batch", "--samples", "1", "--show-pii", env=nx_env, cwd=tmp_path)
    assert "@" in shown.stdout

    env = {
        **nx_env,
        "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
        "WATCH_HEARTBEAT_S": "1",
        "WATCH_LOG_INTERVAL_S": "1",
    }
    watcher = WatchProcess(env, tmp_path, "-v")
    try:
        wait_for(lambda: token_saved(database, tmp_path, "file"), what="the watcher to start")
        wait_for(lambda: "idle (last event" in watcher.output(), what="an idle progress line")
        order_id = pending_ids(dataset, 1)[0]
        numero = database["Commande"].find_one({"_id": order_id})["numero_commande"]
        database["Commande"].update_one({"_id": order_id}, {"$set": {"status": "livrée"}})
        wait_for(lambda: f"archived order {numero} ({order_id})" in watcher.output(), what="a -v line")
        wait_for(lambda: "1 new event, last archived" in watcher.output(), what="a progress line")
    finally:
        code = watcher.stop()
        assert code == 0, watcher.output()[-3000:]  # a one-off exit 1 on SIGTERM under load
    output = watcher.output()
    progress = [line for line in output.splitlines() if " watch: " in line]
    assert progress
    assert not any("events=" in line or "lag_s=" in line for line in progress)
    assert all(ISO_WITH_OFFSET.match(line) for line in output.splitlines() if " INFO " in line)

    assert run_cli("--help", script="simulate.py").stdout.startswith("usage: simulate.py ")
    assert "examples:" in run_cli("watch", "--help").stdout
