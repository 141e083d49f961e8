"""At the wire, watch's threads that meet a fault the wire cannot make (anything but a
PyMongoError): the run learns of it, stops, and fails through the one runner in one line, exit 1.
In process (``main([...])``): the fault is put into one thread's body, and the evidence is what
a user sees, the exit code and the output (never ``threading.excepthook``)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from bson.errors import InvalidBSON

from order_archiver.cli.main import main
from tests.helpers import build_unique_index, renewals_fail_in_their_thread, seed_database

pytestmark = pytest.mark.integration


def test_a_lease_renewal_that_meets_no_servers_answer_stops_the_watcher_in_one_line(
    nx_client, nx_settings, nx_env, db_name, tmp_path, monkeypatch, capsys
):
    """The renewal thread caught PyMongoError alone. Anything else out of a renewal (a reply the
    driver cannot decode: a lease document holding a date past year 9999 is bson's InvalidBSON,
    no PyMongoError; a bug) ended the thread with a traceback; the lease lapsed by this process's
    clock, the watcher went back to standby, took its own lease again without a renewer, lapsed
    again, for ever, and never exited. Now the thread hands the fault to the run: the watcher
    stops (the micro-batch in hand finished, its token saved), its lease released, exit 1, one
    line. (Stands for MongoDB's findAndModify answering a document the client cannot decode.)"""
    seed_database(nx_client[db_name], nx_settings, 20, seed=93, p_anomalies=0.0)
    env = {**nx_env, "WATCH_LEASE_TTL_S": "3", "WATCH_LEASE_RENEW_S": "1", "WATCH_HEARTBEAT_S": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    build_unique_index(env, tmp_path)
    renewals_fail_in_their_thread(monkeypatch, InvalidBSON("year 10000 is out of range"))
    # The safety net of the test, not the product's: a watcher that went on is stopped by its
    # stop file (exit 0) once the fault, a second after its lease was taken, is long past.
    stop = tmp_path / "stop"
    safety = threading.Timer(20, stop.touch)
    safety.start()
    capsys.readouterr()
    try:
        code = main(["watch", "--token-store", "mongo", "--name", "eu-1", "--stop-file", str(stop)])
    finally:
        safety.cancel()
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: watch --name eu-1: the renewal of its lease failed: unexpected InvalidBSON: "
        "year 10000 is out of range"
    ], err
    assert err.strip().splitlines()[-1] == errors[0]
    assert "back to standby" not in out + err  # no lapse and take-over of its own lease
    checkpoints = nx_client[db_name]["archiver_checkpoints"]
    # Released on the way out (a standby takes over at once): its expiry put in the past.
    assert checkpoints.find_one({"_id": "lease:eu-1"})["expires_at"] < datetime.now(UTC)
    token = checkpoints.find_one({"_id": "watch:eu-1"})
    assert token["token"]["_data"]
    assert "stopped_at" not in token  # a failure, not a clean stop: status flags its heartbeat


def test_a_stop_file_there_at_the_start_stops_the_watcher_before_it_writes_anything(
    nx_client, nx_settings, nx_env, db_name, tmp_path, monkeypatch, capsys
):
    """The warning said "--stop-file PATH exists already: this run writes nothing", and the
    watcher's thread first looked a second later: by then it had connected, saved its start
    token and archived its catch-up (24 orders here). As batch (pt-archiver's sentinel): a
    watcher whose stop file is there does not start; exit 0, nothing written, no token."""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 40, seed=94, p_anomalies=0.0)
    env = {**nx_env, "RESUME_TOKEN_FILE": str(tmp_path / "token.json")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    build_unique_index(env, tmp_path)
    stop = tmp_path / "stop"
    stop.touch()
    capsys.readouterr()
    code = main(["watch", "--stop-file", str(stop)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert f"--stop-file {stop} exists already: this run writes nothing" in err
    assert database["Commande_archive"].count_documents({}) == 0
    assert not (tmp_path / "token.json").exists()
    assert "watching" not in err  # it never started
