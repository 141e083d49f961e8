"""An erasure a forget left unfinished, in the archive (the record's ``archive_pending`` mark) or
in the cold tier (``cold_pending``), stays named by status and finished by the next batch --run
however many persons were forgotten after it, on the test server: before, both looked at the 100
most recent records only (a ``$natural`` reverse read), and a platform forgets thousands of
persons a year; an erasure ended midway through the archive's orders was marked nowhere."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from bson import ObjectId

from order_archiver.cold import files
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdStore
from order_archiver.mongodb.forgotten import LATEST_CHECKED, still_holding
from order_archiver.orders.erasing import CLIENT, COURIER
from tests.conftest import ROOT, run_cli
from tests.e2e.test_cold_tier_e2e import ENDED_AFTER_THE_FIRST_REWRITE, archived_beside_a_cold_folder
from tests.helpers import seed_database

pytestmark = pytest.mark.e2e

FORGOTTEN = "archiver_forgotten"  # FORGOTTEN_COLLECTION's default
PARTIAL_INDEX = "cold_pending_1"
ARCHIVE_INDEX = "archive_pending_1"

# forget --run with the archive's erasure scaled down to chunks of 2 orders (erasure.CHUNK: 500),
# the stop file touched once the first chunk is written: the next chunk boundary ends the forget
# (#34's --stop-file, exit 0, "ended": "stop_file") midway through the person's archived orders.
ENDED_AFTER_THE_FIRST_CHUNK = """
import pathlib, sys
sys.path.insert(0, sys.argv.pop(1))
stop = pathlib.Path(sys.argv.pop(1))
from order_archiver.mongodb import erasure, storage
erasure.CHUNK = 2
erase = storage.ArchiveWriter.erase
def then_stopped(self, *args, **kwargs):
    result = erase(self, *args, **kwargs)
    stop.touch()
    return result
storage.ArchiveWriter.erase = then_stopped
from order_archiver.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def a_courier_in_both_files(store: ColdStore) -> str:
    seen: dict[str, set[str]] = {}
    for cold_file in store.files():
        for batch in files.batches(store, cold_file.path, ["document"]):
            for text in batch["document"]:
                courier = document_of(text).get("livreur") or {}
                if courier.get("id") is not None:
                    seen.setdefault(str(courier["id"]), set()).add(cold_file.path)
    courier = max(seen, key=lambda c: len(seen[c]))
    assert len(seen[courier]) == 2
    return courier


def forgotten_after(database, count: int) -> None:
    """``count`` persons forgotten, each as forget --run leaves one whose erasure it finished
    (no mark of an unfinished one: ``ForgottenPersons.record``, then its marks cleared)."""
    now = datetime.now(UTC)
    database[FORGOTTEN].insert_many(
        [
            {"_id": f"client:{p}", "kind": CLIENT, "id": p, "forgotten_at": now}
            for p in (ObjectId() for _ in range(count))
        ]
    )


def forget_ended_midway(kind: str, person: str, env: dict[str, str], tmp_path) -> dict:
    """forget --run of ``person``, ended by the stop file after its first chunk of archived orders."""
    stop = tmp_path / "stop"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "ARCHIVE_"))}
    command = ["forget", f"--{kind}", person, "--run", "--json", "--stop-file", str(stop)]
    ended = subprocess.run(
        [sys.executable, "-c", ENDED_AFTER_THE_FIRST_CHUNK, str(ROOT), str(stop), *command],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ended.returncode == 0, ended.stderr
    stop.unlink()
    return json.loads(ended.stdout)


def status(env: dict[str, str], tmp_path) -> tuple[int, dict]:
    result = run_cli("status", "--json", env=env, cwd=tmp_path)
    return result.returncode, json.loads(result.stdout)


def test_an_unfinished_erasure_is_named_and_finished_however_many_persons_were_forgotten_after_it(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """A forget a stop file ended after its first cold file (the courier's data still in the
    other), then LATEST_CHECKED + 20 persons forgotten after them (one record each, as forget
    --run writes it; their erasures finished). status names the unfinished one (exit 3) and
    batch --run finishes it, on the record's partial index ``{cold_pending: 1}`` (only the
    marked persons in it: MongoDB's partialFilterExpression), which batch --run builds; an
    upgrade's record without that index is read all the same (the index's line says what that
    costs) until the next batch --run builds it."""
    database = nx_client[db_name]
    _recent, _old, folder, env = archived_beside_a_cold_folder(database, nx_settings, nx_env, tmp_path)
    moved = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert json.loads(moved.stdout)["cold"]["files"] == 2, moved.stderr
    store = ColdStore(f"file://{folder}")
    courier = a_courier_in_both_files(store)

    stop = tmp_path / "stop"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "ARCHIVE_"))}
    command = ["forget", "--courier", courier, "--run", "--json", "--stop-file", str(stop)]
    ended = subprocess.run(
        [sys.executable, "-c", ENDED_AFTER_THE_FIRST_REWRITE, str(ROOT), str(stop), *command],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ended.returncode == 0, ended.stderr
    first = json.loads(ended.stdout)
    assert (first["ended"], first["cold"]["complete"]) == ("stop_file", False)
    stop.unlink()

    forgotten_after(database, LATEST_CHECKED + 20)

    code, said = status(env, tmp_path)
    assert code == 3, said
    assert said["forgotten_unfinished"] == [f"livreur:{courier}"]
    assert any(f"forget --courier {courier} --run" in p for p in said["problems"]), said["problems"]

    # The partial index batch --run built, as MongoDB lists it.
    built = {index["name"]: index for index in database[FORGOTTEN].list_indexes()}
    assert built[PARTIAL_INDEX]["partialFilterExpression"] == {"cold_pending": True}
    # A record an earlier version wrote has no such index: read all the same, the index named.
    database[FORGOTTEN].drop_index(PARTIAL_INDEX)
    code, said = status(env, tmp_path)
    assert code == 3, said
    assert said["forgotten_unfinished"] == [f"livreur:{courier}"]
    assert [(i["collection"], i["index"], i["state"]) for i in said["indexes"]] == [
        (FORGOTTEN, PARTIAL_INDEX, "missing")
    ]

    run = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["cold"]["forgotten_finished"] == 1
    assert {"database": db_name, "collection": FORGOTTEN, "index": PARTIAL_INDEX} in report["indexes_built"]
    code, said = status(env, tmp_path)
    assert (code, said["forgotten_unfinished"], said["indexes"]) == (0, [], []), said
    dry = run_cli("forget", "--courier", courier, "--json", env=env, cwd=tmp_path)
    assert json.loads(dry.stdout)["cold"]["erased"] == 0, dry.stdout + dry.stderr


def test_a_forget_ended_midway_through_the_archive_is_named_and_finished_without_a_cold_tier(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """No cold tier: a forget the stop file ended after its first chunk of the client's archived
    orders (scaled to 2 a chunk), then LATEST_CHECKED + 20 persons forgotten after them: status's
    spot check of the latest no longer reaches them, yet it exits 3 naming them (the record's
    ``archive_pending``, read on its partial index, as MongoDB's partialFilterExpression keeps
    the marked persons alone); batch --run erases the rest through forget's walk and clears the
    mark; status healthy, verify consistent. Before: nothing marked it; status said healthy."""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 300, seed=23, p_anomalies=0.0)
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode in (0, 3)
    archive = database["Commande_archive"]
    counts: dict[ObjectId, int] = {}
    for document in archive.find({"client": {"$type": "object"}}, {"client.id": 1}):
        counts[document["client"]["id"]] = counts.get(document["client"]["id"], 0) + 1
    client_id = max(counts, key=lambda c: counts[c])
    assert counts[client_id] >= 3  # more than one chunk of 2

    first = forget_ended_midway("client", str(client_id), nx_env, tmp_path)
    assert (first["ended"], first["erased"]) == ("stop_file", counts[client_id]), first
    left = archive.count_documents(still_holding(CLIENT, client_id))
    assert 0 < left < counts[client_id]  # midway: the first chunk erased, the rest not
    forgotten_after(database, LATEST_CHECKED + 20)

    code, said = status(nx_env, tmp_path)
    assert code == 3, said
    assert said["forgotten_unfinished"] == [f"client:{client_id}"]
    assert any(f"forget --client {client_id} --run" in p for p in said["problems"]), said["problems"]

    run = run_cli("batch", "--run", "--json", "-q", env=nx_env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["forgotten_finished"] == 1
    built = {index["name"]: index for index in database[FORGOTTEN].list_indexes()}
    assert built[ARCHIVE_INDEX]["partialFilterExpression"] == {"archive_pending": True}
    assert archive.count_documents(still_holding(CLIENT, client_id)) == 0
    code, said = status(nx_env, tmp_path)
    assert (code, said["forgotten_unfinished"], said["indexes"]) == (0, [], []), said
    checked = run_cli("verify", "--json", env=nx_env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_batch_run_erases_the_archives_orders_before_it_clears_a_cold_tiers_unfinished_erasure(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """With a cold tier: a forget the stop file ended midway through the courier's archived
    orders (the cold tier's files not begun: ``cold_pending`` kept). batch --run finishes it:
    the archive's orders erased as well as the cold files rewritten before the marks go. Before:
    it rewrote the cold files and cleared the mark, the archive's orders still holding the data."""
    database = nx_client[db_name]
    _recent, _old, folder, env = archived_beside_a_cold_folder(database, nx_settings, nx_env, tmp_path)
    moved = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert json.loads(moved.stdout)["cold"]["files"] == 2, moved.stderr
    store = ColdStore(f"file://{folder}")
    in_cold: set[str] = set()
    for cold_file in store.files():
        for batch in files.batches(store, cold_file.path, ["document"]):
            for text in batch["document"]:
                courier = document_of(text).get("livreur") or {}
                if courier.get("id") is not None:
                    in_cold.add(str(courier["id"]))
    archive = database["Commande_archive"]
    counts: dict[ObjectId, int] = {}
    for document in archive.find({"livreur": {"$type": "object"}}, {"livreur.id": 1}):
        courier_id = document["livreur"].get("id")
        if str(courier_id) in in_cold:
            counts[courier_id] = counts.get(courier_id, 0) + 1
    courier_id = max(counts, key=lambda c: counts[c])
    assert counts[courier_id] >= 3  # more than one chunk of 2

    first = forget_ended_midway("courier", str(courier_id), env, tmp_path)
    assert first["ended"] == "stop_file", first
    assert 0 < archive.count_documents(still_holding(COURIER, courier_id)) < counts[courier_id]
    code, said = status(env, tmp_path)
    assert (code, said["forgotten_unfinished"]) == (3, [f"livreur:{courier_id}"]), said

    run = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["cold"]["forgotten_finished"] == 1
    assert archive.count_documents(still_holding(COURIER, courier_id)) == 0
    marks = database[FORGOTTEN].find_one({"_id": f"livreur:{courier_id}"})
    assert marks is not None
    assert not {"archive_pending", "cold_pending"} & set(marks), marks
    code, said = status(env, tmp_path)
    assert (code, said["forgotten_unfinished"]) == (0, []), said
    dry = run_cli("forget", "--courier", str(courier_id), "--json", env=env, cwd=tmp_path)
    report = json.loads(dry.stdout)
    assert (report["erased"], report["cold"]["erased"]) == (0, 0), dry.stdout + dry.stderr


def test_forget_again_finishes_an_erasure_it_left_unfinished_in_the_archive_and_clears_the_mark(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """A forget ended midway through the client's archived orders leaves the record saying so
    (``archive_pending``) whatever else happens; forget --run again erases the rest and only
    then clears it: status healthy. Before: the record said nothing of the unfinished walk."""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 300, seed=23, p_anomalies=0.0)
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode in (0, 3)
    archive = database["Commande_archive"]
    counts: dict[ObjectId, int] = {}
    for document in archive.find({"client": {"$type": "object"}}, {"client.id": 1}):
        counts[document["client"]["id"]] = counts.get(document["client"]["id"], 0) + 1
    client_id = max(counts, key=lambda c: counts[c])
    assert counts[client_id] >= 3  # more than one chunk of 2

    assert forget_ended_midway("client", str(client_id), nx_env, tmp_path)["ended"] == "stop_file"
    key = {"_id": f"client:{client_id}"}
    assert database[FORGOTTEN].find_one(key, {"archive_pending": 1}) == {**key, "archive_pending": True}

    again = run_cli("forget", "--client", str(client_id), "--run", "--json", env=nx_env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["ended"] == "completed"
    assert archive.count_documents(still_holding(CLIENT, client_id)) == 0
    assert database[FORGOTTEN].find_one(key, {"archive_pending": 1}) == key
    code, said = status(nx_env, tmp_path)
    assert (code, said["forgotten_unfinished"]) == (0, []), said
