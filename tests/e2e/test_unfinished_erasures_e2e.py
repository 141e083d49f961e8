"""An erasure a forget left unfinished in the cold tier (the record's ``cold_pending`` mark) stays
named by status and finished by the next batch --run however many persons were forgotten after
it, on the test server: before, both looked at the 100 most recent records only (a ``$natural``
reverse read), and a platform forgets thousands of persons a year."""

import json
import os
import subprocess
import sys

import pytest
from bson import ObjectId

from order_archiver.cold import files
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdStore
from order_archiver.mongodb.forgotten import LATEST_CHECKED, ForgottenPersons
from order_archiver.orders.erasing import CLIENT
from tests.conftest import ROOT, run_cli
from tests.e2e.test_cold_tier_e2e import ENDED_AFTER_THE_FIRST_REWRITE, archived_beside_a_cold_folder

pytestmark = pytest.mark.e2e

FORGOTTEN = "archiver_forgotten"  # FORGOTTEN_COLLECTION's default
PARTIAL_INDEX = "cold_pending_1"


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

    record = ForgottenPersons(database[FORGOTTEN])
    for _ in range(LATEST_CHECKED + 20):
        record.record(CLIENT, ObjectId())

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
