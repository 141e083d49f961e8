"""Orders near MongoDB's document size limit, at the wire, on every path: never a stopped run,
a lost order or a loop; a rejected order with a clear reason, or archived.

MongoDB holds no document over ``maxBsonObjectSize`` (16 MB) and reads no BSON object over
16 MB + 16 KiB (``BSONObjMaxInternalSize``): an insert's document over the first is refused
alone (2 BadValue, "object to insert too large"), a command holding an object over the second
is refused whole (10334 BSONObjectTooLarge), and so is a result or a change event over it. The
archive document holds the order twice (its fields and the source copy restore gives back), so
an order of 9 MB cannot be archived whole. Scaled down: the test server announces and enforces
a limit of 64 KiB (``NX_MAX_BSON_OBJECT_SIZE``, ``teststand/document_sizes.py``), and the large
orders here are tens of kilobytes:

- ``big``: its archive document past 80 KiB, the insert refused whole (10334);
- ``mid``: its archive document between 64 and 80 KiB, refused alone (2 BadValue);
- ``huge``: the order and its client past 80 KiB together, the enrichment's result refused (10334);
- ``fits``: its archive document under 64 KiB: archived, purged and restored like any other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import bson
import pymongo
import pytest
from bson import ObjectId

from order_archiver.orders.erasing import BY_AGE, BY_REQUEST, Erasure
from order_archiver.orders.pii import OrderFields
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import generate_dataset
from tests.conftest import run_cli
from tests.helpers import (
    ANCHOR,
    WatchProcess,
    archived_ids,
    assert_no_duplicates,
    deliver,
    expected_archive_ids,
    token_saved,
    wait_for,
)
from teststand.nx_server import NxServer

pytestmark = [pytest.mark.e2e, pytest.mark.test_server_only("the test server's maxBsonObjectSize knob")]

LIMIT = 64 * 1024
SIZES = {"big": 44_000, "mid": 34_000, "huge": 60_000, "fits": 25_000}
TOO_LARGE = {"big", "mid", "huge"}


def _settings():
    from order_archiver.settings import Settings

    return Settings(simulation=True)


def large_dataset(delivered: bool = True):
    """400 orders; four of them (delivered ones among the first by ``_id``, or pending ones to
    deliver live) padded to ``SIZES`` by their delivery address; ``huge``'s client, its own, by
    its address too. Returns the dataset and the four orders by name."""
    data = generate_dataset(400, seed=31, anchor=ANCHOR, p_anomalies=0.0)
    wanted = "livrée" if delivered else "en_preparation"
    candidates = sorted(
        (o for o in data.orders if (o["status"] == "livrée") == delivered and "_dirty" not in o),
        key=lambda o: o["_id"],
    )
    chosen = dict(zip(SIZES, candidates[3:37:9], strict=True))
    for name, order in chosen.items():
        order["adresse_livraison"] = "x" * SIZES[name]
        if not delivered:
            order["status"] = wanted
    client = {**data.clients[0], "_id": ObjectId(), "adresse": "y" * 24_000}
    data.clients.append(client)
    chosen["huge"]["client_id"] = client["_id"]
    return data, chosen


def environment(server: NxServer, db_name: str, tmp_path) -> dict[str, str]:
    return {
        "MONGODB_URI": server.uri,
        "MONGODB_DATABASE": db_name,
        "LOG_DIR": "",
        "RESUME_TOKEN_FILE": str(tmp_path / "token.json"),
        "WATCH_HEARTBEAT_S": "1",
    }


@pytest.fixture
def small_server(tmp_path):
    server = NxServer(tmp_path / "nx", env={"NX_MAX_BSON_OBJECT_SIZE": str(LIMIT)}).start()
    yield server
    server.stop()


def _rejected(database) -> dict[object, str]:
    return {d["_id"]: d["reason"] for d in database["archiver_rejects"].find({})}


def _assert_rejected_for_size(database, chosen) -> None:
    rejected = _rejected(database)
    assert set(rejected) == {chosen[name]["_id"] for name in TOO_LARGE}
    assert rejected[chosen["big"]["_id"]] == "archive document too large: code 10334 BSONObjectTooLarge"
    assert rejected[chosen["mid"]["_id"]] == (
        "archive write refused: code 2 BadValue (object to insert too large: over 16 MB)"
    )
    assert (
        rejected[chosen["huge"]["_id"]]
        == "enrichment over the server's limits: code 10334 BSONObjectTooLarge"
    )


def test_batch_rejects_the_orders_too_large_and_archives_purges_and_restores_the_rest(
    small_server, tmp_path, db_name
):
    data, chosen = large_dataset()
    env = environment(small_server, db_name, tmp_path)
    with pymongo.MongoClient(small_server.uri, tz_aware=True) as client:
        database = client[db_name]
        fill_database(database, data, _settings())
        expected = expected_archive_ids(data) - {chosen[name]["_id"] for name in TOO_LARGE}
        first = run_cli("batch", "--run", "--json", "--batch-size", "50", env=env, cwd=tmp_path)
        assert first.returncode == 3, first.stdout + first.stderr
        assert "Traceback" not in first.stderr
        assert json.loads(first.stdout)["rejected"] == 3
        assert archived_ids(database) == expected
        _assert_rejected_for_size(database, chosen)
        # The next run meets them again (the rejects list is read again): known, no loop.
        again = run_cli("batch", "--run", "--json", env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert json.loads(again.stdout)["mode"] == "incremental"
        assert archived_ids(database) == expected
        purged = run_cli("batch", "--run", "--purge-source", "--json", env=env, cwd=tmp_path)
        assert purged.returncode == 0, purged.stdout + purged.stderr
        left = {o["_id"] for o in database["Commande"].find({"status": "livrée"}, {"_id": 1})}
        assert left == {chosen[name]["_id"] for name in TOO_LARGE}  # never archived: kept
        fits = chosen["fits"]
        restored = run_cli("restore", "--numero", fits["numero_commande"], "--run", env=env, cwd=tmp_path)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        back = database["Commande"].find_one({"_id": fits["_id"]})
        assert back is not None
        assert back["adresse_livraison"] == "x" * SIZES["fits"]
        verify = run_cli("verify", env=env, cwd=tmp_path)
        assert "Traceback" not in verify.stderr, verify.stderr
        assert_no_duplicates(database["Commande_archive"])


@pytest.mark.parametrize("how", ["limit", "partition"])
def test_limit_and_partition_reject_them_alone(small_server, tmp_path, db_name, how):
    """``--limit`` (the streaming read and its ``$limit``) and ``--partition`` (paged reads)."""
    data, chosen = large_dataset()
    env = environment(small_server, db_name, tmp_path)
    with pymongo.MongoClient(small_server.uri, tz_aware=True) as client:
        database = client[db_name]
        fill_database(database, data, _settings())
        expected = expected_archive_ids(data) - {chosen[name]["_id"] for name in TOO_LARGE}
        runs = (
            [("--limit", "60"), ("--limit", "1000")]
            if how == "limit"
            else [("--partition", "0/2"), ("--partition", "1/2")]
        )
        for args in runs:
            run = run_cli("batch", "--run", "--json", "--batch-size", "20", *args, env=env, cwd=tmp_path)
            assert run.returncode in (0, 3), run.stdout + run.stderr
            assert "Traceback" not in run.stderr
        assert archived_ids(database) == expected
        _assert_rejected_for_size(database, chosen)


def test_watch_and_its_catch_up_reject_them_and_go_on(small_server, tmp_path, db_name):
    """Delivered before the watcher starts (its catch-up) and live (its stream, whose events
    carry the whole order when looked up: projected down, no event is past the limit)."""
    data, chosen = large_dataset(delivered=False)
    env = environment(small_server, db_name, tmp_path)
    with pymongo.MongoClient(small_server.uri, tz_aware=True) as client:
        database = client[db_name]
        fill_database(database, data, _settings())
        deliver(database["Commande"], [chosen["big"]["_id"]])  # before: the catch-up's
        watcher = WatchProcess(env, tmp_path)
        try:
            wait_for(lambda: token_saved(database, tmp_path, "file"), timeout=60, what="the catch-up")
            pending = [o["_id"] for o in data.orders if o["status"] != "livrée" and "_dirty" not in o][:30]
            live = [*pending, *(chosen[name]["_id"] for name in ("mid", "huge", "fits"))]
            deliver(database["Commande"], live)
            # A correction that makes an archived order large: an update whose changed fields
            # are as large as the order (an event over the limit unless projected down).
            fits = chosen["fits"]["_id"]
            wait_for(lambda: fits in archived_ids(database), timeout=60, what="fits archived")
            database["Commande"].update_one({"_id": fits}, {"$set": {"adresse_livraison": "z" * 44_000}})
            large = {chosen[name]["_id"] for name in TOO_LARGE} | {fits}
            expected = (expected_archive_ids(data) | set(live) | {chosen["big"]["_id"]}) - (large - {fits})
            wait_for(lambda: set(_rejected(database)) == large, timeout=60, what="the large orders listed")
            wait_for(lambda: archived_ids(database) == expected, timeout=60, what="the others archived")
            assert watcher.process.poll() is None  # still serving
            held = database["Commande_archive"].find_one({"_id": fits})
            assert held["adresse_livraison"] == "x" * SIZES["fits"]  # the version before, kept
        finally:
            assert watcher.stop() == 0
        assert "Traceback" not in watcher.output()
        assert_no_duplicates(database["Commande_archive"])


def test_restore_refuses_alone_an_order_whose_archive_document_cannot_take_its_mark(
    small_server, tmp_path, db_name
):
    """``restore`` marks each archive document ``restored_at`` before it puts the order back (the
    purge holds it for RESTORE_HOLD). An archive document within a few bytes of the limit
    cannot take the mark: MongoDB refuses the update (17419, "Resulting document after update is
    larger than 16777216"). That order is refused, named, the others restored: it was a failed
    run (exit 1) for the whole chunk, on every try."""
    data, chosen = large_dataset()
    env = environment(small_server, db_name, tmp_path)
    with pymongo.MongoClient(small_server.uri, tz_aware=True) as client:
        database = client[db_name]
        fill_database(database, data, _settings())
        archive, fits = database["Commande_archive"], chosen["fits"]
        assert run_cli("batch", "--run", env=env, cwd=tmp_path).returncode == 3
        # A correction that brings its archive document within bytes of the limit (the order
        # twice: half the gap on its address), archived as a revision.
        gap = LIMIT - 16 - len(bson.encode(archive.find_one({"_id": fits["_id"]})))
        near = "x" * (SIZES["fits"] + gap // 2)
        database["Commande"].update_one({"_id": fits["_id"]}, {"$set": {"adresse_livraison": near}})
        assert run_cli("batch", "--run", "--full", env=env, cwd=tmp_path).returncode == 0
        held = archive.find_one({"_id": fits["_id"]})
        assert held["adresse_livraison"] == near
        assert LIMIT - 21 < len(bson.encode(held)) <= LIMIT  # too near to take a date field
        purged = run_cli("batch", "--run", "--purge-source", "--json", env=env, cwd=tmp_path)
        assert purged.returncode == 0, purged.stdout + purged.stderr
        other = next(o for o in data.orders if o["status"] == "livrée" and o["_id"] in archived_ids(database))
        assert database["Commande"].find_one({"_id": other["_id"]}) is None
        restored = run_cli(
            "restore",
            "--numero",
            fits["numero_commande"],
            "--numero",
            other["numero_commande"],
            "--run",
            env=env,
            cwd=tmp_path,
        )
        assert restored.returncode == 3, restored.stdout + restored.stderr
        assert "Traceback" not in restored.stderr
        assert fits["numero_commande"] in restored.stdout + restored.stderr
        assert "17419" in restored.stdout + restored.stderr
        assert database["Commande"].find_one({"_id": other["_id"]}) is not None
        assert database["Commande"].find_one({"_id": fits["_id"]}) is None  # not back without its mark
        assert "restored_at" not in archive.find_one({"_id": fits["_id"]})


def test_two_orders_too_large_alone_in_a_write_are_each_rejected_not_the_deployment(
    small_server, tmp_path, db_name
):
    """A write whose every order is refused for its size (here a chunk of two, both refused
    alone: 2 BadValue) is the data: each rejected with its reason. It was taken for the
    deployment refusing every order ("fix the archive collection"): exit 1 on every run, at the
    same chunk, nothing after it archived."""
    data = generate_dataset(400, seed=31, anchor=ANCHOR, p_anomalies=0.0)
    delivered = sorted((o for o in data.orders if o["status"] == "livrée"), key=lambda o: o["_id"])
    pair = delivered[4:6]  # the third chunk of two
    for order in pair:
        order["adresse_livraison"] = "x" * SIZES["mid"]
    env = environment(small_server, db_name, tmp_path)
    with pymongo.MongoClient(small_server.uri, tz_aware=True) as client:
        database = client[db_name]
        fill_database(database, data, _settings())
        run = run_cli("batch", "--run", "--json", "--batch-size", "2", env=env, cwd=tmp_path)
        assert run.returncode == 3, run.stdout + run.stderr
        assert "the deployment refuses them" not in run.stderr
        assert set(_rejected(database)) == {o["_id"] for o in pair}
        assert archived_ids(database) == expected_archive_ids(data) - {o["_id"] for o in pair}


def _near_limit(database, env, tmp_path, order) -> None:
    """``order`` archived, then corrected at the source (its ``note``, declared not personal: kept
    once, in the source copy) so that its archive document is within bytes of the limit."""
    archive = database["Commande_archive"]
    assert run_cli("batch", "--run", env=env, cwd=tmp_path).returncode in (0, 3)
    gap = LIMIT - 10 - len(bson.encode(archive.find_one({"_id": order["_id"]})))
    note = order["note"] + "n" * gap
    database["Commande"].update_one({"_id": order["_id"]}, {"$set": {"note": note}})
    assert run_cli("batch", "--run", "--full", env=env, cwd=tmp_path).returncode == 0
    assert LIMIT - 16 < len(bson.encode(archive.find_one({"_id": order["_id"]}))) <= LIMIT


def _bare(order, client_id=None) -> None:
    """Almost nothing personal to clear (an empty address, no courier; a client without names,
    or none): its erasure adds more (``forgotten_at``, ``forgotten_by``) than it clears."""
    order.update(adresse_livraison="", note="n" * 25_000, livreur_id=None)
    order["client_id"] = client_id or ObjectId()  # none: dangling


def test_an_erasure_an_archive_document_cannot_take_with_its_marks_holds_without_them(
    small_server, tmp_path, db_name
):
    """ARCHIVE_PII_RETENTION and ``forget``: an archive document within bytes of the limit whose
    erasure adds more than it clears (the marks ``forgotten_at``, ``forgotten_by``) is refused
    the update: MongoDB's 17419 "Resulting document after update is larger than 16777216". It
    was left as it was, its personal data kept (here the client's phone), on every run: forget
    exit 3 each time, status "run forget again", which failed again. Now its personal values
    are cleared without the marks (each made null: an update that cannot make it larger), the
    order named; the erasure holds (verify, status), and every other document is erased."""
    data, chosen = large_dataset()
    old, person = chosen["fits"], {**data.clients[1], "_id": ObjectId(), "nom": "", "prenom": "", "email": ""}
    data.clients.append(person)
    _bare(old)
    when = datetime(2026, 1, 5, tzinfo=UTC)
    old.update(date_commande=when - timedelta(hours=1), date_livraison=when)
    mine = next(
        o
        for o in data.orders
        if o["status"] == "livrée" and o["_id"] not in {c["_id"] for c in chosen.values()}
    )
    _bare(mine, person["_id"])
    recent = datetime.now(UTC) - timedelta(days=1)  # within ARCHIVE_PII_RETENTION: forget's to erase
    mine.update(date_commande=recent - timedelta(hours=1), date_livraison=recent)
    env = environment(small_server, db_name, tmp_path) | {"ARCHIVE_NON_PERSONAL_FIELDS": "note"}
    by_age = Erasure(client=True, courier=True, by=BY_AGE, at=when, fields=OrderFields.parse(["note"]))
    by_request = Erasure(
        client=True, courier=False, by=BY_REQUEST, at=when, fields=OrderFields.parse(["note"])
    )
    with pymongo.MongoClient(small_server.uri, tz_aware=True) as client:
        database = client[db_name]
        fill_database(database, data, _settings())
        _near_limit(database, env, tmp_path, old)
        _near_limit(database, env, tmp_path, mine)
        archive = database["Commande_archive"]
        assert by_age.holds(archive.find_one({"_id": old["_id"]}))
        aged = env | {"ARCHIVE_PII_RETENTION": "30d"}
        runs = [run_cli("batch", "--run", "--json", env=aged, cwd=tmp_path) for _ in range(2)]
        assert [r.returncode for r in runs] == [0, 0], runs  # the next run meets it again: never a stop
        held = archive.find_one({"_id": old["_id"]})
        assert not by_age.holds(held), held  # its personal data gone
        named = (
            f"order {old['numero_commande']}: its archive document is too large to take the erasure's marks"
        )
        assert named in runs[0].stderr
        assert "forgotten_at" not in held  # the marks left out
        assert archive.count_documents({"forgotten_by": {"$exists": True}}) > 0  # the others erased
        assert by_request.holds(archive.find_one({"_id": mine["_id"]}))  # the client's phone
        forget = run_cli("forget", "--client", str(person["_id"]), "--run", env=env, cwd=tmp_path)
        assert forget.returncode == 0, forget.stdout + forget.stderr
        assert "erased without the erasure's marks" in forget.stdout
        assert mine["numero_commande"] in forget.stdout
        assert "Traceback" not in forget.stderr
        theirs = archive.find_one({"_id": mine["_id"]})
        assert not by_request.holds(theirs), theirs
        assert theirs["client"]["telephone"] is None
        verify = run_cli("verify", "--json", env=env, cwd=tmp_path)
        assert json.loads(verify.stdout)["unerased"] == 0, verify.stdout + verify.stderr
        status = run_cli("status", env=env, cwd=tmp_path)
        assert "still hold their personal data" not in status.stdout + status.stderr
        again = run_cli("forget", "--client", str(person["_id"]), env=env, cwd=tmp_path)
        assert "no personal data left to erase" in again.stdout, again.stdout


def test_an_order_whose_number_is_near_the_limit_is_rejected_and_listed_not_a_failed_run(
    small_server, tmp_path, db_name
):
    """An order that is little more than a ``numero_commande`` near 16 MB (the limit scaled down
    to 64 KiB): the rejects list's entry holds the number and some 300 bytes more (reason, run,
    dates), so an entry that held the whole number was over the limit (17420 on its upsert),
    and every run failed at that order. One bad document is a rejected order: the list keeps
    the number's first characters and says how long it was."""
    data, _chosen = large_dataset()
    env = environment(small_server, db_name, tmp_path)
    with pymongo.MongoClient(small_server.uri, tz_aware=True) as client:
        database = client[db_name]
        fill_database(database, data, _settings())
        odd = {
            "_id": ObjectId(),
            "numero_commande": "N" * (LIMIT - 120),
            "status": "livrée",
            "date_livraison": datetime.now(UTC) - timedelta(days=1),
        }
        database["Commande"].insert_one(odd)
        run = run_cli("batch", "--run", "--json", env=env, cwd=tmp_path)
        assert run.returncode == 3, run.stdout + run.stderr
        assert "Traceback" not in run.stderr
        entry = database["archiver_rejects"].find_one({"_id": odd["_id"]})
        assert entry is not None
        assert entry["numero_commande"].startswith("NNNN")
        assert len(entry["numero_commande"]) < 1_000
        listed = run_cli("rejects", env=env, cwd=tmp_path)
        assert listed.returncode in (0, 3), listed.stdout + listed.stderr
        assert str(odd["_id"]) in listed.stdout
        assert len(max(listed.stdout.splitlines(), key=len)) < 2_000


def test_an_order_whose_id_is_near_the_limit_is_rejected_and_listed_not_a_stopped_run(
    small_server, tmp_path, db_name
):
    """An order whose ``_id`` (a string: MongoDB takes any type but an array, and since 4.2 no
    index key limit holds it back) is near 16 MB, the limit scaled down to 64 KiB. The archive's
    read of its chunk by ``_id`` (``{_id: {$in: [...]}}``) was a command over
    ``maxBsonObjectSize``, which pymongo refuses before sending it (``DocumentTooLarge``: the
    size ``hello`` announces): every run failed at that chunk, nothing after it archived, and
    the rejects entry keyed by that ``_id`` was over the limit too (17420 on its upsert). One bad
    document is a rejected order: listed under a stand-in key (its size, a digest, its first
    characters), known on the next run, kept while the order is there, gone once it is not."""
    data = generate_dataset(400, seed=31, anchor=ANCHOR, p_anomalies=0.0)
    base = next(o for o in data.orders if o["status"] == "livrée" and "_dirty" not in o)
    odd = {**base, "_id": "I" * (LIMIT - 700), "numero_commande": "CMD-HUGE-ID"}
    env = environment(small_server, db_name, tmp_path)
    with pymongo.MongoClient(small_server.uri, tz_aware=True) as client:
        database = client[db_name]
        fill_database(database, data, _settings())
        database["Commande"].insert_one(odd)
        run = run_cli("batch", "--run", "--json", env=env, cwd=tmp_path)
        assert run.returncode == 3, run.stdout + run.stderr
        assert "Traceback" not in run.stderr
        assert (json.loads(run.stdout)["rejected"], json.loads(run.stdout)["rejected_new"]) == (1, 1)
        assert archived_ids(database) == expected_archive_ids(data)  # every other order archived
        (entry,) = database["archiver_rejects"].find({})
        assert entry["_id"].startswith("_id too large to list (64,851 bytes, sha256 ")
        assert entry["numero_commande"] == "CMD-HUGE-ID"
        assert entry["reason"] == "_id too large: 64,851 bytes as BSON (at most 1,024)"
        again = run_cli("batch", "--run", "--full", "--json", env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr  # known: no news, no loop
        assert json.loads(again.stdout)["rejected"] == 1
        listed = run_cli("rejects", env=env, cwd=tmp_path)
        assert listed.returncode in (0, 3), listed.stdout + listed.stderr
        assert "_id too large to list" in listed.stdout
        assert "CMD-HUGE-ID" in listed.stdout
        assert len(max(listed.stdout.splitlines(), key=len)) < 2_000
        status = run_cli("status", env=env, cwd=tmp_path)
        assert "rejected orders (invalid, not archived until fixed at the source): 1" in status.stdout
        database["Commande"].delete_one({"numero_commande": "CMD-HUGE-ID"})  # fixed: deleted at the source
        tidy = run_cli("batch", "--run", env=env, cwd=tmp_path)
        assert tidy.returncode == 0, tidy.stdout + tidy.stderr
        assert database["archiver_rejects"].count_documents({}) == 0


def test_a_watchers_catch_up_over_orders_whose_ids_are_too_large_goes_on(small_server, tmp_path, db_name):
    """The catch-up's mark (how far it got, saved with the watcher's token) held the last order's
    _id of a chunk: an order whose _id is near the limit (a rejected order, its _id too large)
    made the token record over it (17419 on its save): the watcher exited 1 at its first
    heartbeat, and again at every start, from the mark before (a review, at this scale). A mark
    never holds such an _id: the watcher catches up, the orders rejected, the others archived.
    (Stands for MongoDB's 16 MB limit on a document, the token's checkpoint document here.)"""
    data = generate_dataset(60, seed=31, anchor=ANCHOR, p_anomalies=0.0)
    env = environment(small_server, db_name, tmp_path) | {"BATCH_SIZE": "1"}
    with pymongo.MongoClient(small_server.uri, tz_aware=True) as client:
        database = client[db_name]
        fill_database(database, data, _settings())
        huge = [
            {"_id": "I" * (LIMIT - 300) + f"{k:03}", "status": "livrée", "numero_commande": f"HUGE{k}"}
            for k in range(40)  # strings sort before every ObjectId: the catch-up's first chunks
        ]
        for order in huge:
            database["Commande"].insert_one(order)
        # --max-rate: the catch-up's reach is on those ids for several heartbeats (each saves it).
        watcher = WatchProcess(env, tmp_path, "--token-store", "mongo", "--max-rate", "20")
        try:
            wait_for(
                lambda: "catch-up done" in watcher.output() or watcher.process.poll() is not None,
                timeout=120,
                what="the catch-up's end",
            )
            assert watcher.process.poll() is None, watcher.output()
        finally:
            watcher.stop()
        assert archived_ids(database) == expected_archive_ids(data)
        assert database["archiver_rejects"].count_documents({}) == len(huge)
