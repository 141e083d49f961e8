"""An election in the middle of each command that writes (``NX_FAULT_ELECTION``,
teststand/election.py): nothing lost, nothing doubled, and the command either finishes or
fails with one line (exit 1) that a re-run completes.

What the knob stands for (MongoDB's manual, "Replica Set Elections" and "Retryable Writes";
replSetStepDown, "Behavior"): the primary steps down while a write is in flight, kills it
(11602 ``InterruptedDueToReplStateChange``, ``RetryableWriteError`` when the write was
retryable), refuses writes (10107 ``NotWritablePrimary``) and says in ``hello`` that it is no
writable primary until a primary is elected, typically within 12 seconds; pymongo retries a
retryable write once, after its server selection finds the new primary (within
``MONGODB_TIMEOUT_MS``, 5 s by default: a 12 s election outlasts it), and never retries an
update_many or delete_many (``NotPrimaryError``). Scaled down in time, the same physics: an
election of ``ELECTION_S`` = 3 s against a server selection of ``MONGODB_TIMEOUT_MS`` = 1 s (12 s
against 5 s), so that the election still outlasts pymongo's one retry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest
from pymongo import monitoring

from order_archiver.settings import Settings
from tests.conftest import run_cli
from tests.helpers import (
    WatchProcess,
    assert_no_duplicates,
    deliver,
    expected_archive_ids,
    pending_ids,
    seed_database,
    token_saved,
    wait_for,
)
from teststand.election import STEPPED_DOWN
from teststand.nx_server import NxServer, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.test_server_only("the test server's election knob")]

# "should not typically exceed 12 seconds" (manual, Replica Set Elections) against pymongo's
# server selection of 5 s: scaled to 3 s against 1 s (SELECTION_MS), the election still longer.
ELECTION_S = 3
SELECTION_MS = "1000"
WRITES = ("insert", "update", "delete", "findAndModify")
# The fields a run stamps with its own clock: the rest of an archive document is the order's.
STAMPS = ("archived_at", "revised_at")
# A run's own random id, and a change stream's position on one server (each server its own log).
RUN_IDS = ("first_run", "counted_by", "stream_token")


class WriteCounter(monitoring.CommandListener):
    """The write commands a client sent, per collection: where a knob's N falls."""

    def __init__(self) -> None:
        self.writes: dict[str, int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in WRITES:
            collection = str(event.command[event.command_name])
            self.writes[collection] = self.writes.get(collection, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def seed(uri: str, db_name: str, count: int, seed_value: int) -> tuple[Any, dict[str, int]]:
    """The dataset in ``db_name`` at ``uri``; the write commands that seeding sent per collection."""
    counter = WriteCounter()
    settings = Settings(mongodb_uri=uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(uri, tz_aware=True, event_listeners=[counter]) as client:
        dataset = seed_database(client[db_name], settings, count, seed=seed_value, p_anomalies=0.05)
    return dataset, counter.writes


def archive_of(uri: str, db_name: str) -> dict[Any, dict[str, Any]]:
    """The archive by ``_id``, without the run's own time stamps."""
    with pymongo.MongoClient(uri, tz_aware=True) as client:
        archive = client[db_name]["Commande_archive"]
        assert_no_duplicates(archive)
        return {d["_id"]: {k: v for k, v in d.items() if k not in STAMPS} for d in archive.find()}


def source_ids(uri: str, db_name: str) -> set[Any]:
    with pymongo.MongoClient(uri, tz_aware=True) as client:
        return {d["_id"] for d in client[db_name]["Commande"].find({}, {"_id": 1})}


@contextmanager
def electing(collection: str, after: int, seconds: float = ELECTION_S) -> Iterator[NxServer]:
    with running_server(
        {"NX_FAULT_ELECTION": f"{collection}:{after}:{seconds}"}, prefix="nx-election-"
    ) as server:
        yield server


def stepped_down(server: NxServer) -> bool:
    """The server's election took place (its output says so: ``election.STEPPED_DOWN``)."""
    return STEPPED_DOWN in (server.data_dir / "server.log").read_text()


def env_for(server: NxServer, db_name: str) -> dict[str, str]:
    return {
        "MONGODB_URI": server.uri,
        "MONGODB_DATABASE": db_name,
        "LOG_DIR": "logs",
        "MONGODB_TIMEOUT_MS": SELECTION_MS,
    }


def one_line_or_done(result: Any) -> bool:
    """Done (0 or 3: rejected orders), or failed with one named line (exit 1), never a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode in (0, 3):
        return True
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr
    return False


def run_until_done(env: dict[str, str], cwd: Any, *args: str) -> list[Any]:
    """The command, then (if it failed with its one line) the re-run its line asks for."""
    first = run_cli(*args, env=env, cwd=cwd, timeout=240)
    results = [first]
    if not one_line_or_done(first):
        again = run_cli(*args, env=env, cwd=cwd, timeout=240)
        assert one_line_or_done(again), again.stderr
        results.append(again)
    return results


@pytest.mark.parametrize(
    ("collection", "after"),
    [
        ("Commande_archive", 3),  # the 4th chunk's archive upserts in flight
        ("Commande", 2),  # the 3rd chunk's purge deletes in flight (counted past the seeding)
    ],
)
def test_batch_run_with_purge_across_an_election(nx_server, db_name, tmp_path, collection, after):
    """batch --run --purge-source with an election in the middle of its archive writes, then of
    its purge's deletes: the archive is the one a run without the election makes, no order the
    archive lacks is purged, the report counts each order once."""
    args = ("batch", "--run", "--purge-source", "--batch-size", "50", "--json")
    baseline, seeded = seed(nx_server.uri, db_name, 600, 41)
    calm = run_cli(*args, env=env_for(nx_server, db_name), cwd=tmp_path)
    assert calm.returncode in (0, 3), calm.stderr
    expected = archive_of(nx_server.uri, db_name)
    assert set(expected) == expected_archive_ids(baseline)

    with electing(collection, seeded.get(collection, 0) + after) as server:
        seed(server.uri, db_name, 600, 41)
        results = run_until_done(env_for(server, db_name), tmp_path, *args)
        archive = archive_of(server.uri, db_name)
        remaining = source_ids(server.uri, db_name)
        assert stepped_down(server)
    assert set(archive) == set(expected)
    assert archive == expected  # each order's document as a calm run makes it
    purged = {o["_id"] for o in baseline.orders} - remaining
    assert purged == set(expected)  # every archived order purged, none the archive lacks
    reports = [json.loads(r.stdout) for r in results if r.stdout.strip()]
    assert sum(r["archived"] for r in reports) == len(expected)
    assert sum(r["purged"] for r in reports) == len(expected)
    # No order said kept in the source as changed since archived: none was (the purge's count
    # after a retried delete read back, not the last try's answer alone).
    assert not any("left in the source: changed since archived" in r.stderr for r in results)


@pytest.mark.parametrize("collection", ["Commande_archive", "archiver_checkpoints"])
def test_watch_across_an_election(db_name, tmp_path, collection):
    """watch (token in mongo) while deliveries arrive, an election in the middle of its archive
    writes, then of its token saves: every delivered order archived once, the watcher still
    running, a SIGTERM ends it with 0 and a saved token."""
    with electing(collection, 4) as server:
        dataset, _ = seed(server.uri, db_name, 300, 43)
        env = {**env_for(server, db_name), "WATCH_HEARTBEAT_S": "1"}
        with pymongo.MongoClient(server.uri, tz_aware=True) as client:
            database = client[db_name]
            watcher = WatchProcess(env, tmp_path, "--token-store", "mongo")
            try:
                wait_for(
                    lambda: token_saved(database, tmp_path, "mongo"),
                    timeout=60,
                    what="the catch-up",
                    on_timeout=watcher.output,
                )
                later = pending_ids(dataset, 40)
                for start in range(0, len(later), 5):  # bursts: several micro-batches, several writes
                    deliver(database["Commande"], later[start : start + 5])
                    time.sleep(0.3)
                expected = expected_archive_ids(dataset) | set(later)
                wait_for(
                    lambda: set(archive_of(server.uri, db_name)) == expected,
                    timeout=ELECTION_S * 6,
                    what="every delivered order archived",
                    on_timeout=watcher.output,
                )
                assert watcher.process.poll() is None, watcher.output()
            finally:
                code = watcher.stop()
            assert code == 0, watcher.output()
            assert "Traceback" not in watcher.output()
            assert token_saved(database, tmp_path, "mongo")
            assert stepped_down(server)
        archive = archive_of(server.uri, db_name)
    assert set(archive) == expected


# --- the other commands that write: the same state, then the command with and without an election


def snapshot(uri: str, db_name: str) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Every collection of the database: its documents and its indexes (but ``_id_``)."""
    with pymongo.MongoClient(uri, tz_aware=True) as client:
        database = client[db_name]
        return {
            name: (
                list(database[name].find()),
                [dict(ix) for ix in database[name].list_indexes() if ix["name"] != "_id_"],
            )
            for name in database.list_collection_names()
        }


def load(uri: str, db_name: str, state: dict[str, Any]) -> dict[str, int]:
    """``state`` into the database; the write commands that loading sent per collection."""
    counter = WriteCounter()
    with pymongo.MongoClient(uri, tz_aware=True, event_listeners=[counter]) as client:
        database = client[db_name]
        for name, (documents, indexes) in state.items():
            for index in indexes:
                options = {k: v for k, v in index.items() if k not in ("key", "v", "ns")}
                database[name].create_index(list(index["key"].items()), **options)
            if documents:
                database[name].insert_many(documents)
    return counter.writes


def without_clock(value: Any) -> Any:
    """``value`` without the dates in it (the archiver's own records: when it ran, up to when)."""
    if isinstance(value, dict):
        return {
            k: without_clock(v) for k, v in value.items() if not isinstance(v, datetime) and k not in RUN_IDS
        }
    if isinstance(value, list):
        return [without_clock(v) for v in value if not isinstance(v, datetime)]
    return value


def without_stamps(name: str, documents: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Documents by ``_id``, without the fields a run stamps with its clock: ``*_at`` fields of
    orders and archive documents (at any depth); every date of the archiver's own records."""
    if name.startswith("archiver_"):
        return {d["_id"]: without_clock(d) for d in documents}
    return {d["_id"]: without_at(d) for d in documents}


def without_at(value: Any) -> Any:
    """``value`` without its ``*_at`` fields, at any depth (an erasure stamps ``forgotten_at``)."""
    if isinstance(value, dict):
        return {k: without_at(v) for k, v in value.items() if not k.endswith("_at")}
    if isinstance(value, list):
        return [without_at(v) for v in value]
    return value


def compared(
    nx_server: NxServer,
    db_name: str,
    tmp_path: Any,
    args: tuple[str, ...],
    elect: tuple[str, int],
    extra_env: dict[str, str] | None = None,
) -> tuple[list[Any], Any]:
    """The database as it is now in ``db_name`` on ``nx_server``, copied to a server whose
    ``elect`` collection's (k+1)-th write after the copy is in flight at a stepdown; ``args`` run
    on both (on the electing one until done, as its one line asks). The collections compared
    (documents without their time stamps), and the JSON reports: (the electing runs', the calm one's)."""
    state = snapshot(nx_server.uri, db_name)
    calm = run_cli(*args, env={**env_for(nx_server, db_name), **(extra_env or {})}, cwd=tmp_path, timeout=240)
    assert calm.returncode in (0, 3), calm.stdout + calm.stderr
    expected = {
        name: without_stamps(name, docs) for name, (docs, _) in snapshot(nx_server.uri, db_name).items()
    }
    collection, after = elect
    with running_server(prefix="nx-count-") as counting:  # how many writes loading takes
        loaded = load(counting.uri, db_name, state)
    with electing(collection, loaded.get(collection, 0) + after) as server:
        load(server.uri, db_name, state)
        results = run_until_done({**env_for(server, db_name), **(extra_env or {})}, tmp_path, *args)
        found = {
            name: without_stamps(name, docs) for name, (docs, _) in snapshot(server.uri, db_name).items()
        }
        assert stepped_down(server), [r.stderr for r in results]
    for name in sorted(set(found) | set(expected)):  # one collection at a time: a readable diff
        assert found.get(name) == expected.get(name), (name, differences(found.get(name), expected.get(name)))
    return results, calm


def differences(found: dict[Any, Any] | None, expected: dict[Any, Any] | None) -> list[Any]:
    """What differs: the ids on one side only, and per document the fields that differ."""
    found, expected = found or {}, expected or {}
    lines: list[Any] = [("only found", i) for i in set(found) - set(expected)]
    lines += [("only expected", i) for i in set(expected) - set(found)]
    for i in set(found) & set(expected):
        fields = set(found[i]) | set(expected[i])
        lines += [
            (i, k, found[i].get(k), expected[i].get(k))
            for k in fields
            if found[i].get(k) != expected[i].get(k)
        ]
    return lines[:10]


def reports(results: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.stdout) for r in results if r.stdout.strip()]


def prepared(
    nx_server: NxServer, db_name: str, tmp_path: Any, count: int, seed_value: int, *args: str
) -> Any:
    """A seeded database, and ``args`` (a first run) run on it."""
    dataset, _ = seed(nx_server.uri, db_name, count, seed_value)
    if args:
        first = run_cli(*args, env=env_for(nx_server, db_name), cwd=tmp_path, timeout=240)
        assert first.returncode in (0, 3), first.stderr
    return dataset


@pytest.mark.parametrize(
    ("collection", "after", "chunk"),
    [
        ("archiver_checkpoints", 1, "50"),
        ("archiver_rejects", 0, "1000"),
    ],  # one chunk: every reject in one write
)
def test_the_checkpoint_saves_and_the_rejects_list_across_an_election(
    nx_server, db_name, tmp_path, collection, after, chunk
):
    """batch --run: the election in the middle of a checkpoint save, or of the rejected orders'
    list being written (an upsert that counts how often each was seen: ``$inc``)."""
    prepared(nx_server, db_name, tmp_path, 400, 45, "batch", "--run")
    seen_again = {"_id": {"$exists": True}}
    with pymongo.MongoClient(nx_server.uri) as client:  # every order back to the pass (not archived)
        client[db_name]["Commande_archive"].delete_many(seen_again)
        client[db_name]["archiver_checkpoints"].delete_many(seen_again)
    args = ("batch", "--run", "--batch-size", chunk, "--json")
    results, calm = compared(nx_server, db_name, tmp_path, args, (collection, after))
    assert sum(r["archived"] for r in reports(results)) == json.loads(calm.stdout)["archived"]


def test_undated_retention_deletes_across_an_election(nx_server, db_name, tmp_path):
    """ARCHIVE_RETENTION's deletes of archived orders without date_livraison (delete_many: pymongo
    never retries it) in the middle of an election: the same archive, the same count."""
    prepared(nx_server, db_name, tmp_path, 300, 47, "batch", "--run")
    with pymongo.MongoClient(nx_server.uri, tz_aware=True) as client:
        archive = client[db_name]["Commande_archive"]
        old = [d["_id"] for d in archive.find({}, {"_id": 1}).limit(120)]
        ordered = datetime.now(UTC) - timedelta(days=400)
        archive.update_many(
            {"_id": {"$in": old}}, {"$set": {"date_commande": ordered}, "$unset": {"date_livraison": ""}}
        )
    args = ("batch", "--run", "--json")
    results, calm = compared(
        nx_server, db_name, tmp_path, args, ("Commande_archive", 0), {"ARCHIVE_RETENTION": "60d"}
    )
    assert json.loads(calm.stdout)["undated_expired"] == 120
    assert sum(r["undated_expired"] for r in reports(results)) == 120


def test_the_rejects_lists_prune_across_an_election(nx_server, db_name, tmp_path):
    """The rejected orders fixed at the source, archived by the next run, leave the list (a
    delete_many, which pymongo never retries) in the middle of an election: the same list, and
    the log says how many left it, each once."""
    prepared(nx_server, db_name, tmp_path, 400, 45, "batch", "--run")
    with pymongo.MongoClient(nx_server.uri) as client:
        database = client[db_name]
        rejected = [d["_id"] for d in database["archiver_rejects"].find()]
        assert len(rejected) >= 2
        for number, order_id in enumerate(rejected):  # fixed at the source
            database["Commande"].update_one({"_id": order_id}, {"$set": {"numero_commande": f"FIX-{number}"}})
    results, calm = compared(
        nx_server, db_name, tmp_path, ("batch", "--run", "--json"), ("archiver_rejects", 0)
    )
    said = f"{len(rejected)} rejected orders left the list"
    assert said in calm.stderr
    assert said in results[-1].stderr, results[-1].stderr


@pytest.mark.parametrize(
    ("collection", "after"),
    [("Commande", 0), ("Commande_archive", 0)],  # the orders put back; the archive's restore marks
)
def test_restore_run_across_an_election(nx_server, db_name, tmp_path, collection, after):
    """restore --run of every purged order (inserts into the source, then marks on the archive)
    with an election in the middle of its first write there: the source and the archive as a
    calm restore leaves them (each order back once, as it was), the same counts."""
    prepared(nx_server, db_name, tmp_path, 300, 49, "batch", "--run", "--purge-source")
    args = ("restore", "--date-from", "2000-01-01", "--run", "--yes", "--json")
    results, calm = compared(nx_server, db_name, tmp_path, args, (collection, after))
    expected = json.loads(calm.stdout)
    assert [json.loads(r.stdout).get("restored") for r in results][-1] is not None
    restored = sum(int(json.loads(r.stdout).get("restored") or 0) for r in results)
    assert restored == expected["restored"], [r.stdout for r in results]


@pytest.mark.parametrize("collection", ["Commande_archive", "archiver_forgotten"])
def test_forget_run_across_an_election(nx_server, db_name, tmp_path, collection):
    """forget --client --run (the client's archived orders erased, the person recorded) with an
    election in the middle of its first write: the archive and the record as a calm run leaves
    them, the same count erased."""
    dataset = prepared(nx_server, db_name, tmp_path, 400, 51, "batch", "--run")
    counts: dict[Any, int] = {}
    for order in dataset.orders:
        if order["_id"] in expected_archive_ids(dataset) and order.get("client_id"):
            counts[order["client_id"]] = counts.get(order["client_id"], 0) + 1
    client_id = max(counts, key=lambda k: counts[k])
    args = ("forget", "--client", str(client_id), "--run", "--json")
    results, calm = compared(nx_server, db_name, tmp_path, args, (collection, 0))
    erased = json.loads(calm.stdout)["erased"]
    assert erased == counts[client_id]
    assert sum(json.loads(r.stdout)["erased"] for r in results if r.stdout.strip()) == erased


def test_an_election_longer_than_the_retries_fails_with_one_line_and_a_rerun_completes(
    nx_server, db_name, tmp_path
):
    """An election that outlasts every retry (40 s here, with a 1 s server selection: the retries
    give up after about 20 s): batch --run --purge-source exits 1 with one line, no traceback;
    once a primary is elected, the same command completes, and the archive and the source are
    what one calm run makes."""
    args = ("batch", "--run", "--purge-source", "--batch-size", "50", "--json")
    baseline, _ = seed(nx_server.uri, db_name, 400, 53)
    calm = run_cli(*args, env=env_for(nx_server, db_name), cwd=tmp_path)
    assert calm.returncode in (0, 3), calm.stderr
    expected = archive_of(nx_server.uri, db_name)
    env_timeout = {"MONGODB_TIMEOUT_MS": "1000"}
    with electing("Commande_archive", 2, seconds=40) as server:
        seed(server.uri, db_name, 400, 53)
        env = {**env_for(server, db_name), **env_timeout}
        failed = run_cli(*args, env=env, cwd=tmp_path, timeout=240)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "Traceback" not in failed.stderr
        line = failed.stderr.strip().splitlines()[-1]
        assert line.startswith("error: "), failed.stderr
        # named: no primary (not "unreachable": the server answers, as a secondary)
        assert line.startswith("error: no primary: the replica set is electing one"), line
        assert "run the command again" in line
        with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=60000) as client:
            client[db_name]["probe"].insert_one({})  # a primary again (server selection waits for it)
        again = run_cli(*args, env=env, cwd=tmp_path, timeout=240)
        assert again.returncode in (0, 3), again.stderr
        archive = archive_of(server.uri, db_name)
        remaining = source_ids(server.uri, db_name)
    assert archive == expected
    assert {o["_id"] for o in baseline.orders} - remaining == set(expected)


def test_pii_retention_erasure_across_an_election(nx_server, db_name, tmp_path):
    """ARCHIVE_PII_RETENTION's erasure of old deliveries' personal data (updates on the archive)
    in the middle of an election: the same archive, the same count erased."""
    prepared(nx_server, db_name, tmp_path, 300, 55, "batch", "--run")
    with pymongo.MongoClient(nx_server.uri, tz_aware=True) as client:
        archive = client[db_name]["Commande_archive"]
        old = [d["_id"] for d in archive.find({}, {"_id": 1}).limit(150)]
        archive.update_many(
            {"_id": {"$in": old}}, {"$set": {"date_livraison": datetime.now(UTC) - timedelta(days=90)}}
        )
    args = ("batch", "--run", "--json")
    results, calm = compared(
        nx_server, db_name, tmp_path, args, ("Commande_archive", 0), {"ARCHIVE_PII_RETENTION": "30d"}
    )
    erased = json.loads(calm.stdout)["pii_erased"]
    assert erased == 150
    assert sum(r["pii_erased"] for r in reports(results)) == erased
