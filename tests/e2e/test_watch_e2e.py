"""`main.py watch` as a service runs it: a subprocess on nx-27017, killed, restarted, signalled."""

from __future__ import annotations

import json
import re
import signal
import threading
from pathlib import Path

import pymongo
import pytest
from bson import ObjectId, json_util

from tests.conftest import run_cli
from tests.helpers import (
    WatchProcess,
    archived_ids,
    assert_no_duplicates,
    build_unique_index,
    deliver,
    expected_archive_ids,
    pending_ids,
    seed_database,
    token_saved,
    wait_for,
)
from teststand.nx_server import NxServer

pytestmark = pytest.mark.e2e
STORES = ["file", "mongo"]


@pytest.fixture
def env(nx_env, tmp_path):
    # A short lease: a watcher restarted after a kill -9 (mongo store) waits for its dead
    # predecessor's lease to expire, 3 s here instead of the 15 s default.
    return {
        **nx_env,
        "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
        "WATCH_HEARTBEAT_S": "1",
        "WATCH_LEASE_TTL_S": "3",
        "WATCH_LEASE_RENEW_S": "1",
    }


@pytest.fixture
def watchers():
    started: list[WatchProcess] = []

    def start(env: dict[str, str], cwd: Path, *args: str, unique_index: bool = True) -> WatchProcess:
        started.append(WatchProcess(env, cwd, *args, unique_index=unique_index))
        return started[-1]

    yield start
    for watcher in started:
        if watcher.process.poll() is None:
            watcher.stop(signal.SIGKILL)


def test_catch_up_then_live_with_exact_contents(nx_client, nx_settings, db_name, env, tmp_path, watchers):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 400, seed=41, p_anomalies=0.05)
    expected = expected_archive_ids(dataset)
    watcher = watchers(env, tmp_path)
    wait_for(lambda: archived_ids(database) == expected, what="catch-up")
    wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")

    orders = database["Commande"]
    to_deliver = pending_ids(dataset, 20)
    deliver(orders, to_deliver[:15])
    inserted = orders.insert_one(
        {
            **{k: v for k, v in dataset.orders[0].items() if k not in ("_id", "_dirty")},
            "numero_commande": "NEW-1",
        }
    ).inserted_id
    orders.update_one({"_id": inserted}, {"$set": {"status": "livrée"}})
    replaced_id = to_deliver[15]
    replacement = {k: v for k, v in orders.find_one({"_id": replaced_id}).items() if k != "_id"}
    orders.replace_one({"_id": replaced_id}, {**replacement, "status": "livrée"})
    not_delivered = to_deliver[16]
    orders.update_one({"_id": not_delivered}, {"$set": {"status": "en_preparation"}})
    # A sentinel after it: once the sentinel is archived, the stream has handled every event
    # before it, the non-delivery update included (no sleep, then "nothing happened").
    sentinel = to_deliver[17]
    deliver(orders, [sentinel])
    expected |= set(to_deliver[:16]) | {inserted, sentinel}
    wait_for(lambda: archived_ids(database) == expected, what="live deliveries and the sentinel")
    assert not_delivered not in archived_ids(database)  # a non-delivery update is never archived

    document = database["Commande_archive"].find_one({"_id": to_deliver[0]})
    assert document["archived_by"] == "watch"
    assert document["status"] == "livrée"
    assert document["client"]["nom"]
    assert document["items"][0]["nom"]
    assert document["montant_total"] > 0
    assert watcher.stop() == 0
    assert "stopped:" in watcher.output()
    saved = json.loads((tmp_path / "token.json").read_text())
    assert saved["namespace"] == f"{db_name}.Commande"
    assert saved["token"]["_data"]
    assert_no_duplicates(database["Commande_archive"])


def test_a_watcher_started_before_any_batch_waits_for_the_unique_index(
    nx_client, nx_settings, db_name, env, tmp_path, watchers
):
    """compose.yaml starts the watcher before any batch --run, whose user alone may build the
    archive's unique index on numero_commande. Archiving without it, two delivered orders sharing
    a number were both archived, and no batch --run could build it after that (MongoDB refuses
    a unique index over duplicates: 11000), while status said healthy. The watcher archives
    nothing until the index is ready, and status says why; then one is archived, the other rejected."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 60, seed=43, p_anomalies=0)
    orders = database["Commande"]
    first = next(o for o in dataset.orders if o["status"] == "livrée")
    twin = orders.insert_one({k: v for k, v in first.items() if k not in ("_id", "_dirty")}).inserted_id
    watcher = watchers(env, tmp_path, unique_index=False)
    waiting = "nothing is archived until the archive's unique index numero_commande_1"
    wait_for(lambda: waiting in watcher.output(), what="the watcher's wait", on_timeout=watcher.output)
    assert database["Commande_archive"].count_documents({}) == 0, "archived without the unique index"
    status = run_cli("status", env=env, cwd=tmp_path)  # before the first batch --run: expected
    assert "numero_commande_1 on Commande_archive: missing (the next batch --run builds it); until it is "
    "ready, nothing is archived" in status.stdout, status.stdout + status.stderr

    batch = run_cli("batch", "--run", env=env, cwd=tmp_path)
    assert batch.returncode == 3, batch.stdout + batch.stderr  # the twin: another order's numero
    wait_for(lambda: "is ready: archiving" in watcher.output(), timeout=60, what="the watcher's start")
    sentinel = pending_ids(dataset, 1)
    deliver(orders, sentinel)
    wait_for(lambda: set(sentinel) <= archived_ids(database), what="a delivery after the wait")
    archived = archived_ids(database)
    assert first["_id"] in archived
    assert twin not in archived
    assert_no_duplicates(database["Commande_archive"])
    assert watcher.stop() == 0


def test_a_unique_index_dropped_under_a_running_watcher_stops_its_writes(
    nx_client, nx_settings, db_name, env, tmp_path, watchers
):
    """A new user's try: numero_commande_1 dropped while the watcher ran, two delivered orders
    sharing a number were both archived. The watcher looks at it again before a write once its
    last look is UNIQUE_INDEX_POLL_S old: the write is not made, the watcher waits, and the
    events are replayed from the saved token once batch --run has built it again."""
    import time

    from order_archiver.mongodb.indexes import UNIQUE_INDEX_POLL_S

    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 60, seed=44, p_anomalies=0)
    expected = expected_archive_ids(dataset)
    watcher = watchers(env, tmp_path)
    wait_for(lambda: archived_ids(database) == expected, what="catch-up")
    database["Commande_archive"].drop_index("numero_commande_1")
    time.sleep(UNIQUE_INDEX_POLL_S + 0.5)  # past the watcher's last look (a window, not a sentinel)
    orders = database["Commande"]
    first, second = pending_ids(dataset, 2)
    numero = orders.find_one({"_id": first})["numero_commande"]
    orders.update_one({"_id": second}, {"$set": {"numero_commande": numero}})
    deliver(orders, [first, second])
    missing = "numero_commande_1 is missing: nothing is archived until it is ready again"
    wait_for(lambda: missing in watcher.output(), what="the watcher's look", on_timeout=watcher.output)
    assert archived_ids(database) == expected, "archived without the unique index"

    batch = run_cli("batch", "--run", env=env, cwd=tmp_path)
    assert batch.returncode in (0, 3), batch.stdout + batch.stderr
    sentinel = pending_ids(dataset, 3)[2:]
    deliver(orders, sentinel)
    wait_for(lambda: set(sentinel) <= archived_ids(database), timeout=60, what="a delivery after it")
    assert len({first, second} & archived_ids(database)) == 1
    assert_no_duplicates(database["Commande_archive"])
    assert watcher.stop() == 0


def burst(orders, ids, chunk=50, hold_after: int | None = None, resume: threading.Event | None = None):
    """Deliver ``ids`` from another thread and connection, ``chunk`` orders per update_many;
    with ``hold_after``, deliver that many, then wait for ``resume`` before the rest."""
    host, port = orders.database.client.address

    def run() -> None:
        with pymongo.MongoClient(f"mongodb://{host}:{port}/", tz_aware=True) as client:
            target = client[orders.database.name][orders.name]
            for start in range(0, len(ids), chunk):
                if start == hold_after and resume is not None:
                    resume.wait(60)
                target.update_many(
                    {"_id": {"$in": ids[start : start + chunk]}}, {"$set": {"status": "livrée"}}
                )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("store", STORES)
def test_kill_9_mid_burst_then_restart_loses_and_duplicates_nothing(
    nx_client, nx_settings, db_name, env, tmp_path, watchers, store
):
    """The kill is timed by the data, not the clock: the burst delivers 600 orders and holds;
    the watcher is killed once 200 of them are archived (its stream still holds the rest);
    only then are the other 600 delivered, with no watcher running."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 3000, seed=42, p_delivered=0.3, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    args = ("--token-store", store)
    watcher = watchers(env, tmp_path, *args)
    wait_for(lambda: archived_ids(database) == expected, what="catch-up")
    pending = pending_ids(dataset)
    first, second = pending[:1200], pending[1200:1500]
    killed = threading.Event()
    sender = burst(database["Commande"], first, hold_after=600, resume=killed)
    wait_for(lambda: len(archived_ids(database)) >= len(expected) + 200, what="the burst to start")
    watcher.stop(signal.SIGKILL)
    at_kill = len(archived_ids(database))
    killed.set()
    sender.join(timeout=60)
    assert at_kill <= len(expected) + 600  # the half delivered after the kill cannot be archived yet
    deliver(database["Commande"], second)  # delivered while no watcher runs
    restarted = watchers(env, tmp_path, *args)
    expected |= set(first) | set(second)
    wait_for(lambda: archived_ids(database) == expected, timeout=60, what="recovery")
    assert restarted.stop() == 0
    assert "catching up" not in restarted.output()  # resumed from its token, no rescan
    assert_no_duplicates(database["Commande_archive"])


def test_a_second_watcher_on_one_token_file_refuses_and_the_first_keeps_archiving(
    nx_client, nx_settings, db_name, env, tmp_path, watchers
):
    """#32 item 2: the file store has no lease; the token file's lock lets one watcher run. The
    second exits 2 with one line naming the first one's pid; a kill -9 of the first releases
    the lock, so a restart (systemd's Restart=on-failure) takes over at once."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=44, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    first = watchers(env, tmp_path)
    wait_for(lambda: archived_ids(database) == expected, what="the first watcher's catch-up")
    second = watchers(env, tmp_path)
    second.process.wait(timeout=60)  # on its own: it exits at once
    assert second.stop() == 2
    last_line = second.output().strip().splitlines()[-1]
    assert last_line.startswith("error: resume token file ")
    assert f"is in use by watch (pid {first.process.pid} on " in last_line
    assert "Traceback" not in second.output()

    orders = database["Commande"]
    sentinels = pending_ids(dataset, 3)
    deliver(orders, sentinels[:1])  # the first one goes on: a delivery after the refusal
    wait_for(lambda: sentinels[0] in archived_ids(database), what="a delivery archived by the first watcher")
    assert first.process.poll() is None

    first.stop(signal.SIGKILL)
    restarted = watchers(env, tmp_path)
    deliver(orders, sentinels[1:])
    wait_for(lambda: set(sentinels) <= archived_ids(database), what="deliveries archived after a restart")
    assert restarted.stop() == 0
    assert "is in use" not in restarted.output()
    assert_no_duplicates(database["Commande_archive"])


@pytest.fixture(scope="module")
def short_history_server(tmp_path_factory):
    """A server whose change history keeps only its newest 30 changes (a capped oplog)."""
    server = NxServer(
        tmp_path_factory.mktemp("short-history"), env={"NX_RESUME_RETENTION_ROWS": "30"}
    ).start()
    yield server
    server.stop()


@pytest.mark.test_server_only("a server of its own with 30 rows of history (a real one: a small oplog)")
@pytest.mark.parametrize("store", STORES)
def test_history_lost_falls_back_to_catch_up(
    short_history_server, nx_settings, db_name, tmp_path, watchers, store
):
    env = {
        "MONGODB_URI": short_history_server.uri,
        "MONGODB_DATABASE": db_name,
        "LOG_DIR": "",
        "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
    }
    with pymongo.MongoClient(short_history_server.uri, tz_aware=True) as client:
        database = client[db_name]
        dataset = seed_database(database, nx_settings, 500, seed=43, p_anomalies=0.0)
        expected = expected_archive_ids(dataset)
        watcher = watchers(env, tmp_path, "--token-store", store)
        wait_for(lambda: archived_ids(database) == expected, what="catch-up")
        wait_for(lambda: token_saved(database, tmp_path, store), what="the start token")
        assert watcher.stop() == 0
        pending = pending_ids(dataset, 150)
        deliver(database["Commande"], pending)  # five times the history, no watcher running
        expected |= set(pending)
        restarted = watchers(env, tmp_path, "--token-store", store)
        wait_for(
            lambda: archived_ids(database) == expected,
            what="catch-up after history loss",
            on_timeout=restarted.output,
        )
        assert restarted.stop() == 0
        output = restarted.output()
        assert "cannot be used" in output
        assert "286" in output
        assert "catching up" in output
        assert_no_duplicates(database["Commande_archive"])


@pytest.mark.test_server_only("a server of its own with 30 rows of history (a real one: a small oplog)")
def test_a_stream_left_behind_by_its_history_during_a_catch_up_catches_up_again(
    short_history_server, nx_settings, db_name, tmp_path, watchers
):
    """MongoDB's oplog drops its oldest entries whoever still needs them: the stream a watcher
    opens before its catch-up stays unread while the catch-up runs (a first start on years of
    orders, paced by --max-rate), and if more changes are written meanwhile than the oplog
    holds, its next getMore fails with CappedPositionLost (136). That is a lost position, as
    ChangeStreamHistoryLost (286) is: the watcher catches up again from a new start, nothing
    lost; it stopped instead (exit 1, "fatal"). Here: 30 rows of history, a catch-up paced at
    40 orders/s, 150 deliveries written while it runs."""
    env = {
        "MONGODB_URI": short_history_server.uri,
        "MONGODB_DATABASE": db_name,
        "LOG_DIR": "",
        "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
    }
    with pymongo.MongoClient(short_history_server.uri, tz_aware=True) as client:
        database = client[db_name]
        dataset = seed_database(database, nx_settings, 500, seed=46, p_anomalies=0.0)
        expected = expected_archive_ids(dataset)
        watcher = watchers(env, tmp_path, "--max-rate", "40")
        wait_for(
            lambda: len(archived_ids(database)) >= 40,
            what="the catch-up under way",
            on_timeout=watcher.output,
        )
        assert not token_saved(database, tmp_path, "file")  # still catching up: its stream unread
        pending = pending_ids(dataset, 150)
        deliver(database["Commande"], pending)  # five times the history, while the stream waits
        expected |= set(pending)
        wait_for(
            lambda: archived_ids(database) == expected,
            timeout=90,
            what="every delivery archived after the stream lost its place",
            on_timeout=watcher.output,
        )
        assert watcher.process.poll() is None, watcher.output()
        assert watcher.stop() == 0
        output = watcher.output()
        assert "cannot resume (136)" in output
        assert output.count("catching up") >= 2
        assert_no_duplicates(database["Commande_archive"])


@pytest.mark.parametrize("store", STORES)
def test_corrupt_token_falls_back_to_catch_up(
    nx_client, nx_settings, db_name, env, tmp_path, watchers, store
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 300, seed=44, p_anomalies=0.0)
    record = {"namespace": f"{db_name}.Commande", "token": {"_data": "corrupted!"}, "invalidated": False}
    if store == "file":
        (tmp_path / "token.json").write_text(json.dumps(record))
    else:
        database["archiver_checkpoints"].insert_one({"_id": "watch:default", "kind": "watch", **record})
    watcher = watchers(env, tmp_path, "--token-store", store)
    wait_for(lambda: archived_ids(database) == expected_archive_ids(dataset), what="catch-up")
    assert watcher.stop() == 0
    output = watcher.output()
    assert "cannot be used" in output
    assert "260" in output


def test_from_now_skips_the_catch_up(nx_client, nx_settings, db_name, env, tmp_path, watchers):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=45)
    watcher = watchers(env, tmp_path, "--from-now")
    wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")
    later = pending_ids(dataset, 3)
    deliver(database["Commande"], later)
    wait_for(lambda: archived_ids(database) == set(later), what="live deliveries")
    assert watcher.stop() == 0


def test_batch_and_watch_at_the_same_time_never_duplicate(
    nx_client, nx_settings, db_name, env, tmp_path, watchers
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 2000, seed=46, p_delivered=0.5, p_anomalies=0.0)
    pending = pending_ids(dataset, 600)
    watcher = watchers(env, tmp_path)
    sender = burst(database["Commande"], pending, chunk=20)
    batch = run_cli("batch", "--run", "--batch-size", "50", env=env, cwd=tmp_path)
    assert batch.returncode == 0, batch.stderr
    sender.join(timeout=60)
    expected = expected_archive_ids(dataset) | set(pending)
    wait_for(lambda: archived_ids(database) == expected, timeout=60, what="both writers")
    assert watcher.stop() == 0
    assert_no_duplicates(database["Commande_archive"])
    assert database["Commande_archive"].count_documents({}) == len(expected)


def test_invalidate_then_collection_comes_back(nx_client, nx_settings, db_name, env, tmp_path, watchers):
    database = nx_client[db_name]
    seed_database(database, nx_settings, 100, seed=47)
    watcher = watchers(env, tmp_path)
    wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")
    database.drop_collection("Commande")
    wait_for(lambda: "dropped or renamed" in watcher.output(), what="the invalidate seen")
    new_id = ObjectId()
    database["Commande"].insert_one(
        {"_id": new_id, "numero_commande": "AFTER-DROP", "status": "livrée", "date_commande": time_now()}
    )
    wait_for(lambda: new_id in archived_ids(database), what="an order in the re-created collection")
    assert watcher.stop() == 0


def time_now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_unreachable_server_keeps_retrying_then_stops_cleanly(tmp_path, watchers):
    env = {
        "MONGODB_URI": "mongodb://archiver:Pa55-word@127.0.0.1:9/",
        "MONGODB_TIMEOUT_MS": "200",
        "LOG_DIR": "",
    }
    watcher = watchers(env, tmp_path, unique_index=False)  # no server to build it on
    wait_for(lambda: "retrying" in watcher.output(), what="a retry")
    assert watcher.stop() == 0
    output = watcher.output()
    assert "Traceback" not in output
    assert "Pa55-word" not in output


def test_catch_up_stopped_midway_then_restart_misses_nothing(
    nx_client, nx_settings, db_name, env, tmp_path, watchers
):
    """A catch-up interrupted by a stop leaves a batch checkpoint; orders delivered before the
    restart with smaller _ids than that checkpoint must still be archived."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 3000, seed=48, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    watcher = watchers({**env, "BATCH_SIZE": "20"}, tmp_path)
    wait_for(lambda: len(archived_ids(database)) >= 200, what="the catch-up to start")
    assert watcher.stop() == 0
    assert len(archived_ids(database)) < len(expected), "the catch-up finished before the stop"
    early = sorted(pending_ids(dataset))[:50]  # the smallest _ids: below any checkpoint
    deliver(database["Commande"], early)
    restarted = watchers(env, tmp_path)
    wait_for(
        lambda: archived_ids(database) == expected | set(early), timeout=60, what="the restarted catch-up"
    )
    assert restarted.stop() == 0


def saved_record(database, tmp_path: Path, store: str) -> dict | None:
    """The watcher's saved token record, as its store keeps it."""
    if store == "file":
        path = tmp_path / "token.json"
        return json_util.loads(path.read_text("utf-8")) if path.exists() else None
    return database["archiver_checkpoints"].find_one({"_id": "watch:default"})


def catch_up_summary(output: str) -> re.Match[str]:
    found = re.search(r"catch-up done: scanned (\d+), archived (\d+), already archived (\d+)", output)
    assert found is not None, output
    return found


@pytest.mark.parametrize(
    ("store", "sig"),
    [
        ("file", signal.SIGTERM),
        ("file", signal.SIGKILL),
        ("mongo", signal.SIGKILL),
        ("mongo", signal.SIGTERM),
    ],
)
def test_a_catch_up_stopped_midway_goes_on_from_where_it_had_got_to(
    nx_client, nx_settings, db_name, env, tmp_path, watchers, store, sig
):
    """A first start on a long history that is restarted mid-catch-up (a Kubernetes pod
    rescheduled: SIGTERM, or killed outright) costs one pass, not one per restart: the second
    catch-up goes on after the last _id the first had archived through (its mark, saved with
    its stream's start token, after the writes it covers) and reads only the orders past it.
    Nothing is lost for it: orders below the mark delivered after the stream's start (here,
    before the restart) are the stream's, which replays every change since that start
    (MongoDB's resumeAfter: the events after the token, in order)."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 3000, seed=51, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    args = ("--token-store", store)
    watcher = watchers({**env, "BATCH_SIZE": "20"}, tmp_path, *args)

    def marked() -> dict | None:  # the sentinel: a reach saved with the catching_up token
        record = saved_record(database, tmp_path, store)
        if record is None or not record.get("catching_up") or "catch_up" not in record:
            return None
        return record if record["catch_up"]["through_id"] is not None else None

    wait_for(lambda: len(archived_ids(database)) >= len(expected) // 3, what="a third of the catch-up")
    wait_for(marked, what="the catch-up's reach saved", on_timeout=watcher.output)
    code = watcher.stop(sig)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), watcher.output()
    assert "Traceback" not in watcher.output()
    record = marked()
    assert record is not None
    through = record["catch_up"]["through_id"]
    assert len(archived_ids(database)) < len(expected), "the catch-up finished before the stop"
    early = sorted(pending_ids(dataset))[:30]  # below the mark: the stream's to replay
    assert all(order_id < through for order_id in early)
    deliver(database["Commande"], early)
    past_the_mark = database["Commande"].count_documents({"status": "livrée", "_id": {"$gt": through}})
    delivered = database["Commande"].count_documents({"status": "livrée"})

    restarted = watchers(env, tmp_path, *args)
    wait_for(
        lambda: archived_ids(database) == expected | set(early),
        timeout=90,
        what="the restarted catch-up",
        on_timeout=restarted.output,
    )
    wait_for(lambda: "catch-up done" in restarted.output(), what="the catch-up's summary")
    assert restarted.stop() == 0
    output = restarted.output()
    assert f"going on after _id {through}" in output, output
    summary = catch_up_summary(output)
    # Only the orders past the mark were read again, not the whole history.
    assert int(summary.group(1)) == past_the_mark < delivered, output
    if sig == signal.SIGTERM:  # a clean stop saves its reach after its last chunk: nothing redone
        assert int(summary.group(3)) == 0, output
    assert_no_duplicates(database["Commande_archive"])
    assert "Traceback" not in output


def test_from_now_still_catches_up_after_a_corrupt_token(
    nx_client, nx_settings, db_name, env, tmp_path, watchers
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=49)
    (tmp_path / "token.json").write_text("{ truncated by a full disk")
    watcher = watchers(env, tmp_path, "--from-now")
    wait_for(lambda: archived_ids(database) == expected_archive_ids(dataset), what="catch-up")
    assert watcher.stop() == 0
    assert "not readable" in watcher.output()


def test_a_stop_file_stops_the_watcher_as_sigterm_does(nx_client, nx_settings, nx_env, db_name, tmp_path):
    """#34 item 3: `watch --stop-file PATH` stops once the file exists, as on SIGTERM: the
    micro-batch in hand archived, its token saved, exit 0 (and status shows a clean stop)."""
    from tests.helpers import (
        WatchProcess,
        archived_ids,
        expected_archive_ids,
        seed_database,
        token_saved,
        wait_for,
    )

    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 60, seed=12, p_anomalies=0.0)
    env = {**nx_env, "RESUME_TOKEN_FILE": str(tmp_path / "token.json"), "WATCH_HEARTBEAT_S": "1"}
    stop = tmp_path / "stop"
    watcher = WatchProcess(env, tmp_path, "--stop-file", str(stop))
    wait_for(
        lambda: archived_ids(database) == expected_archive_ids(dataset),
        timeout=60,
        what="catch-up",
        on_timeout=watcher.output,
    )
    wait_for(
        lambda: token_saved(database, tmp_path, "file"), what="the start token", on_timeout=watcher.output
    )
    stop.touch()
    code = watcher.process.wait(timeout=30)  # the sentinel: the process ends by itself
    output = watcher.output()
    watcher.stop()
    assert code == 0, output
    assert f"stop file {stop} found: stopping as on SIGTERM" in output
    assert "stopped_at" in (tmp_path / "token.json").read_text()  # a clean stop, as status shows it


def unreachable(folder: Path, how: str) -> str:
    """``folder`` made a place no stop file can be looked for in any more, as ``stat(2)`` answers
    there (the tests may run as root, whom a folder's ``chmod 000`` does not stop): replaced by a
    file (ENOTDIR, "Not a directory") or by a symbolic link to itself (ELOOP, "Too many levels of
    symbolic links"). The reason the watcher names."""
    if folder.exists():
        folder.rename(folder.with_name(folder.name + ".moved"))
    if how == "file":
        folder.write_text("not a folder")
        return "Not a directory"
    folder.symlink_to(folder.name)
    return "Too many levels of symbolic links"


@pytest.mark.parametrize("how", ["file", "loop"])
def test_a_stop_file_that_cannot_be_looked_for_any_more_stops_the_watcher_in_one_line(
    nx_client, nx_settings, nx_env, db_name, tmp_path, how
):
    """`watch --stop-file` looked for its file on a thread of its own, with ``Path.exists``: a
    folder replaced by a file or a loop answered "not there" for ever after (a watcher no stop
    file could stop any more), and any other error (ESTALE on NFS, EACCES) ended the thread with a
    traceback on the output while the watcher went on without its stop file. As batch's run
    (docs/commands.md): it stops, the micro-batch in hand finished and its token saved after its
    last write, then one line naming the file and the error, exit 1; not a clean stop (status
    says none)."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 60, seed=13, p_anomalies=0.0)
    env = {**nx_env, "RESUME_TOKEN_FILE": str(tmp_path / "token.json"), "WATCH_HEARTBEAT_S": "1"}
    stops = tmp_path / "stops"
    stops.mkdir()
    stop = stops / "stop"
    watcher = WatchProcess(env, tmp_path, "--stop-file", str(stop))
    wait_for(
        lambda: archived_ids(database) == expected_archive_ids(dataset),
        timeout=60,
        what="catch-up",
        on_timeout=watcher.output,
    )
    wait_for(
        lambda: token_saved(database, tmp_path, "file"), what="the start token", on_timeout=watcher.output
    )
    reason = unreachable(stops, how)
    try:
        code = watcher.process.wait(timeout=30)  # the sentinel: the process ends by itself
    except Exception:
        watcher.stop(signal.SIGKILL)
        raise AssertionError(f"the watcher went on without its stop file\n{watcher.output()}") from None
    output = watcher.output()
    watcher.stop()
    assert code == 1, output
    assert "Traceback" not in output
    said = [line for line in output.splitlines() if str(stop) in line]
    assert said == [
        f"error: --stop-file {stop}: cannot be looked for ({reason}): the watcher stops, as if it were there "
        "(its token saved after its last write); fix its folder (a stale NFS mount: remount it) or give a "
        "--stop-file on a local disk, then run again"
    ], output
    assert output.strip().splitlines()[-1] == said[0]
    saved = json.loads((tmp_path / "token.json").read_text())
    assert saved["token"]["_data"]
    assert not saved.get("catching_up")
    assert "stopped_at" not in saved  # a failure, not a clean stop: status flags its heartbeat


@pytest.mark.parametrize("how", ["file", "loop"])
def test_a_stop_file_that_cannot_be_looked_for_at_the_start_is_refused_before_anything(nx_env, tmp_path, how):
    """At the start, exit 2 in one line before anything is written (no token file, no stream).
    It said "the folder .../stops does not exist" of a folder replaced by a file or a loop."""
    stops = tmp_path / "stops"
    reason = unreachable(stops, how)
    stop = stops / "stop"
    env = {**nx_env, "RESUME_TOKEN_FILE": str(tmp_path / "token.json")}
    run = run_cli("watch", "--stop-file", str(stop), env=env, cwd=tmp_path, timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip().splitlines() == [
        f"error: --stop-file {stop}: cannot be looked for ({reason}): refused before anything is written; "
        "fix its folder (a stale NFS mount: remount it) or give a --stop-file on a local disk, then run again"
    ]
    assert not (tmp_path / "token.json").exists()


@pytest.mark.test_server_only("a standalone server of its own (the suite's servers are replica sets)")
def test_on_a_standalone_watch_says_it_needs_change_streams_and_exits_1(tmp_path):
    """A standalone mongod refuses every change stream (40573, "The $changeStream stage is only
    supported on replica sets": src/mongo/db/pipeline/document_source_change_stream.cpp). The
    test server served them as a standalone, so this watcher ran there as on a replica set;
    docs/commands.md (watch): "a standalone server has no change streams, and watch says so
    and exits 1". doctor --for watch says it too."""
    server = NxServer(tmp_path / "standalone", replica_set="").start()
    try:
        env = {
            "MONGODB_URI": server.uri,
            "MONGODB_DATABASE": "standalone",
            "LOG_DIR": "",
            "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
        }
        # Before any batch --run: the archive's unique index is not there, which a watcher waits
        # for; on a standalone it said only that, every ten minutes, and never ran.
        first = run_cli("watch", env=env, cwd=tmp_path, timeout=30)
        build_unique_index(env, tmp_path)  # as the first batch --run: the watcher goes on to its stream
        watch = run_cli("watch", env=env, cwd=tmp_path, timeout=30)
        doctor = run_cli("doctor", "--for", "watch", env=env, cwd=tmp_path, timeout=30)
    finally:
        server.stop()
    for run in (first, watch):
        output = run.stdout + run.stderr
        assert run.returncode == 1, output
        assert "Traceback" not in output
        said = [line for line in output.splitlines() if "no change streams" in line]
        assert output.strip().splitlines() == said, output  # its one line (it said "watching ..." first)
        assert "watch needs a replica set, a sharded cluster or Atlas" in said[0]
    assert "FAIL change streams: not available (a standalone server): watch cannot run" in doctor.stdout
    assert "Traceback" not in doctor.stdout + doctor.stderr


def test_a_delivery_past_archive_cold_after_is_said_and_counted_not_dropped_silently(
    nx_client, nx_settings, db_name, env, tmp_path, watchers
):
    """A new user's try: `watch -v` with a cold tier set took a delivery stamped before
    ARCHIVE_COLD_AFTER (the archive takes no order that old: docs/operating.md) and said nothing
    ("stopped: 2 events, 1 order archived"). Each such delivery is now a warning line naming the
    order and why, and counted in the stopped line. A sentinel delivered after it: once it is
    archived, the stream has handled the old one (no sleep-then-assert)."""
    from datetime import UTC, datetime, timedelta

    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=47)
    (tmp_path / "cold").mkdir()
    cold = {"ARCHIVE_COLD_URL": f"file://{tmp_path / 'cold'}", "ARCHIVE_COLD_AFTER": "365d"}
    watcher = watchers({**env, **cold}, tmp_path, "--from-now", "-v")
    wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")
    old, sentinel = pending_ids(dataset, 2)
    orders = database["Commande"]
    deliver(orders, [old], when=datetime.now(UTC) - timedelta(days=400))
    deliver(orders, [sentinel])
    wait_for(lambda: sentinel in archived_ids(database), what="the sentinel")
    assert watcher.stop() == 0
    assert old not in archived_ids(database)
    output = watcher.output()
    numero = orders.find_one({"_id": old})["numero_commande"]
    [line] = [line for line in output.splitlines() if numero in line and "not archived" in line]
    assert "WARNING" in line, line
    assert "ARCHIVE_COLD_AFTER" in line, line
    assert "1 past ARCHIVE_COLD_AFTER (not archived, left in the source)" in output, output
