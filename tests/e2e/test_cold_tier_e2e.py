"""The cold tier (#35) as a user runs it, on the test server: `batch --run` moves the old
deliveries to Parquet files on a local S3 (moto's server mode on loopback: real HTTP, real
S3 API, no mock of our own calls) or a local folder; a kill -9 between publishing a file and
deleting its orders from the archive, then a second run: each order in exactly one place."""

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from order_archiver.cold import files
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdStore
from tests.conftest import ROOT, run_cli
from tests.helpers import archived_ids, expected_archive_ids, seed_database

pytestmark = pytest.mark.e2e

S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3(monkeypatch, empty_s3):
    """A local S3 (moto's server) on loopback; the AWS settings that point at it, for the CLI
    and for this process (the test reads the bucket with the product's own ColdStore)."""
    env = {**S3_KEYS, "AWS_ENDPOINT_URL": empty_s3.endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from pyarrow.fs import S3FileSystem

    S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir("orders")
    return env


def seed_old_and_recent(database, settings):
    """200 orders: half delivered 400 and 430 days ago (two months), half 20 hours ago."""
    dataset = seed_database(database, settings, 200, seed=35, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset), key=str)
    recent, old = delivered[::2], delivered[1::2]
    now = datetime.now(UTC)
    orders = database["Commande"]
    orders.update_many({"_id": {"$in": recent}}, {"$set": {"date_livraison": now - timedelta(hours=20)}})
    orders.update_many({"_id": {"$in": old[::2]}}, {"$set": {"date_livraison": now - timedelta(days=400)}})
    orders.update_many({"_id": {"$in": old[1::2]}}, {"$set": {"date_livraison": now - timedelta(days=430)}})
    return set(recent), set(old)


def archived_beside_a_cold_folder(database, settings, nx_env, tmp_path):
    """``seed_old_and_recent``'s orders archived, a cold folder set to take those delivered over
    365 days ago and nothing moved yet (archived at 500d first: an order already past
    ARCHIVE_COLD_AFTER is not archived, docs/operating.md): recent, old, the folder, the env."""
    recent, old = seed_old_and_recent(database, settings)
    folder = tmp_path / "cold"
    folder.mkdir()
    env = {**nx_env, "ARCHIVE_COLD_URL": f"file://{folder}", "ARCHIVE_COLD_AFTER": "365d"}
    archived = run_cli("batch", "--run", "-q", env={**env, "ARCHIVE_COLD_AFTER": "500d"}, cwd=tmp_path)
    assert archived.returncode == 0, archived.stderr
    return recent, old, folder, env


def archived_then_moved(database, settings, nx_env, tmp_path):
    """The same, then the old orders moved to the cold folder by a `batch --run`: recent, old, the env."""
    recent, old, _folder, env = archived_beside_a_cold_folder(database, settings, nx_env, tmp_path)
    moved = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert json.loads(moved.stdout)["cold"]["moved"] == len(old), moved.stderr
    return recent, old, env


def cold_ids(store: ColdStore) -> list:
    """Every order of every published cold file (a list: a duplicate would show)."""
    return [
        document_of(text)["_id"]
        for cold_file in store.files()
        for batch in files.batches(store, cold_file.path, ["document"])
        for text in batch["document"]
    ]


def test_batch_moves_the_old_deliveries_to_s3_and_find_shows_where_they_are(
    nx_client, nx_settings, nx_env, db_name, tmp_path, s3
):
    database = nx_client[db_name]
    recent, old = seed_old_and_recent(database, nx_settings)
    env = {**nx_env, **s3, "ARCHIVE_COLD_URL": "s3://orders/livraison", "ARCHIVE_COLD_AFTER": "365d"}

    first = run_cli("batch", "--run", "--json", "-q", env={**env, "ARCHIVE_COLD_AFTER": "500d"}, cwd=tmp_path)
    assert json.loads(first.stdout)["cold"]["moved"] == 0, first.stderr  # nothing that old
    dry = run_cli("batch", "--json", "-q", env=env, cwd=tmp_path)
    assert json.loads(dry.stdout)["cold"]["would_move"] == len(old), dry.stderr
    assert archived_ids(database) == recent | old  # a dry run moves nothing

    result = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cold"]["moved"] == len(old)
    assert report["cold"]["files"] == 2
    assert archived_ids(database) == recent
    store = ColdStore("s3://orders/livraison")
    moved = cold_ids(store)
    assert sorted(moved, key=str) == sorted(old, key=str)
    assert all("/year=" in f.path and "/month=" in f.path for f in store.files())

    order = database["Commande_archive"].find_one() or {}
    one_old = next(iter(old))
    numero = database["Commande"].find_one({"_id": one_old})["numero_commande"]
    found = run_cli("find", "--numero", numero, "--json", env=env, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    [entry] = json.loads(found.stdout)["orders"]
    assert [p["where"] for p in entry["places"]] == ["source", "cold"]
    assert entry["places"][1]["file"].startswith("s3://orders/livraison/year=")
    assert order  # the recent ones stay in the archive

    again = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cold"]["moved"] == 0
    assert len(store.files()) == 2


def test_aws_endpoint_url_s3_alone_names_the_s3_store(
    nx_client, nx_settings, nx_env, db_name, tmp_path, s3, monkeypatch
):
    """AWS_ENDPOINT_URL_S3 (the AWS SDKs' endpoint for S3 alone, before AWS_ENDPOINT_URL) is
    honoured: Arrow's S3 (the AWS SDK for C++ under ``FileSystem.from_uri``) reads it; without
    it the run would ask AWS itself, which a test machine cannot reach (exit 2)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the fixture's, inherited by the CLI otherwise
    database = nx_client[db_name]
    _recent, old = seed_old_and_recent(database, nx_settings)
    env = {
        **nx_env,
        **S3_KEYS,
        "AWS_ENDPOINT_URL_S3": s3["AWS_ENDPOINT_URL"],
        "ARCHIVE_COLD_URL": "s3://orders/by-s3-endpoint",
        "ARCHIVE_COLD_AFTER": "365d",
    }
    first = run_cli("batch", "--run", "-q", env={**env, "ARCHIVE_COLD_AFTER": "500d"}, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    result = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cold"]["moved"] == len(old)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3["AWS_ENDPOINT_URL"])  # this process reads it too
    store = ColdStore("s3://orders/by-s3-endpoint")
    assert sorted(cold_ids(store), key=str) == sorted(old, key=str)
    missing = run_cli("batch", env={**env, "ARCHIVE_COLD_URL": "s3://no-such-bucket/x"}, cwd=tmp_path)
    assert missing.returncode == 2, missing.stderr
    assert "the bucket 'no-such-bucket' does not exist" in missing.stderr  # asked of that endpoint


def test_a_bucket_that_does_not_exist_is_named_before_anything_is_written(
    nx_client, nx_settings, nx_env, db_name, tmp_path, s3
):
    database = nx_client[db_name]
    seed_old_and_recent(database, nx_settings)
    env = {**nx_env, **s3, "ARCHIVE_COLD_URL": "s3://no-such-bucket/x", "ARCHIVE_COLD_AFTER": "365d"}
    for mode in (["--run"], []):  # a dry run too: what --run would do is stop here
        result = run_cli("batch", *mode, env=env, cwd=tmp_path)
        assert result.returncode == 2, (mode, result.stderr)
        assert result.stderr.strip().splitlines() == [
            "error: ARCHIVE_COLD_URL s3://no-such-bucket/x: the bucket 'no-such-bucket' does not exist; create it first"
        ]
    assert archived_ids(database) == set()  # nothing written


# The product's own move, killed with SIGKILL at the exact point between publishing a file and
# deleting its orders from the archive (ColdMove.after_publish): no finally, no flush, no exit.
KILLED_AFTER_PUBLISH = """
import os, signal, sys
sys.path.insert(0, sys.argv.pop(1))
from order_archiver.cold import move
opened = move.ColdMove.__init__
def killed_after_publish(self, *args, **kwargs):
    opened(self, *args, **kwargs)
    self.after_publish = lambda: os.kill(os.getpid(), signal.SIGKILL)
move.ColdMove.__init__ = killed_after_publish
from order_archiver.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_between_publishing_and_deleting_then_a_rerun_leaves_each_order_in_one_place(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    database = nx_client[db_name]
    recent, old, folder, env = archived_beside_a_cold_folder(database, nx_settings, nx_env, tmp_path)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "ARCHIVE_"))}
    lease = {"WATCH_LEASE_TTL_S": "2", "WATCH_LEASE_RENEW_S": "1"}  # the move's lease outlives it 2 s
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_PUBLISH, str(ROOT), "batch", "--run", "-q"],
        env={**base, **env, **lease},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = ColdStore(f"file://{folder}")
    [published] = store.files()  # the first month's file is out ...
    in_file = set(cold_ids(store))
    assert in_file <= old
    assert in_file <= archived_ids(database)  # ... and its orders are still in the archive too
    assert database["archiver_checkpoints"].count_documents({"kind": "cold-move", "state": "published"}) == 1
    # status said "healthy" meanwhile (a new user's try): it names the file, as a move in
    # progress while the killed run's lease lives, then as a problem (exit 3).
    url = store.url_of(published.path)
    for _ in range(30):  # each status takes about a second; the lease expires 2 s after the kill
        status = run_cli("status", "--json", env=env, cwd=tmp_path)
        said = json.loads(status.stdout)
        assert said["cold_unsettled"] == [url], status.stdout + status.stderr
        if not said["cold_move_running"]:
            break
        assert status.returncode == 0
        assert url in said["cold_moving"]
    assert status.returncode == 3, status.stdout + status.stderr
    assert any(url in p and "batch --run" in p for p in said["problems"]), said["problems"]

    rerun = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["cold"]["recovered"] == 1
    assert json.loads(rerun.stdout)["cold"]["settled"] == len(in_file)
    assert run_cli("status", env=env, cwd=tmp_path).returncode == 0
    moved = cold_ids(store)
    assert len(moved) == len(set(moved)), "an order in two cold files"
    assert set(moved) == old
    assert archived_ids(database) == recent
    assert not set(moved) & archived_ids(database)
    assert database["archiver_checkpoints"].count_documents({"kind": "cold-move"}) == 0
    assert published in store.files()

    # verify: consistent; then a file removed by hand: its orders are in no place (exit 3).
    checked = run_cli("verify", "--json", env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["cold"]["missing"] == 0
    gone = store.files()[-1]
    rows = files.footer(store, gone.path).rows
    os.remove(gone.path)
    lost = run_cli("verify", "--json", env=env, cwd=tmp_path)
    assert lost.returncode == 3, lost.stdout + lost.stderr
    cold = json.loads(lost.stdout)["cold"]
    assert (cold["missing"], cold["missing_files"]) == (rows, [store.url_of(gone.path)])


def test_purge_source_deletes_the_orders_moved_before_it_reached_them_and_restore_holds_one(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """A cold tier set on a history never purged, on the test server: `--purge-source` deletes
    the source copy of each order whose only place is a checked cold file; one restored from
    the cold tier since stays (RESTORE_HOLD, 30 days by default); verify is consistent."""
    database = nx_client[db_name]
    recent, old, env = archived_then_moved(database, nx_settings, nx_env, tmp_path)
    orders = database["Commande"]
    assert orders.count_documents({"_id": {"$in": list(old)}}) == len(old)  # never purged

    one = sorted(old, key=str)[0]
    numero = orders.find_one({"_id": one})["numero_commande"]
    orders.delete_one({"_id": one})
    restored = run_cli("restore", "--numero", numero, "--run", env=env, cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    purged = run_cli("batch", "--run", "--purge-source", "--json", "-q", env=env, cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    report = json.loads(purged.stdout)
    assert report["purge_held"] == 1
    assert {d["_id"] for d in orders.find({"_id": {"$in": list(old | recent)}}, {"_id": 1})} == {one}
    checked = run_cli("verify", "--json", env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_purge_source_removes_the_cold_restore_marks_older_than_a_year_at_the_wire(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """On the test server (the delete's filter, an anchored ``_id`` prefix and a date range, is the
    server's to match): two orders restored from the cold tier, one of them 400 days ago (its mark
    set back, as time passing would); `--purge-source` under RESTORE_HOLD 30d removes that mark
    (older than ``purge.MARKS_KEPT``) and purges its order, and keeps the other's mark and order
    (held)."""
    from order_archiver.cold.holding import MARK, ColdRestoreMarks

    database = nx_client[db_name]
    _recent, old, env = archived_then_moved(database, nx_settings, nx_env, tmp_path)
    orders = database["Commande"]
    long_ago, lately = sorted(old, key=str)[:2]
    numeros = [orders.find_one({"_id": i})["numero_commande"] for i in (long_ago, lately)]
    orders.delete_many({"_id": {"$in": [long_ago, lately]}})
    selection = [arg for numero in numeros for arg in ("--numero", numero)]
    restored = run_cli("restore", *selection, "--run", env=env, cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    checkpoints = database[nx_settings.checkpoint_collection]
    key = ColdRestoreMarks.key
    assert {d["_id"] for d in checkpoints.find({"kind": MARK})} == {key(long_ago), key(lately)}
    checkpoints.update_one(
        {"_id": key(long_ago)}, {"$set": {"restored_at": datetime.now(UTC) - timedelta(days=400)}}
    )

    purged = run_cli("batch", "--run", "--purge-source", "--json", "-q", env=env, cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout)["purge_held"] == 1
    assert {d["_id"] for d in checkpoints.find({"kind": MARK})} == {key(lately)}
    assert {d["_id"] for d in orders.find({"_id": {"$in": [long_ago, lately]}}, {"_id": 1})} == {lately}


def test_status_and_the_purge_agree_on_restored_cold_orders_and_a_correction_held_in_the_source_alone(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """A new user's try, at the wire: restored 2 archived and 2 cold orders, `status` left out the
    archived ones only ("up to N ... left out: 2 restored within it") where the purge kept 4 (its
    marks, in the checkpoints collection, were never read by status); then two cold orders
    corrected in the source and purged with RESTORE_HOLD=0d: kept, but said "a full pass or watch
    archives the new one", which no pass does for an order older than ARCHIVE_COLD_AFTER, while
    verify said consistent and status healthy. Now status's figures are the purge's, the purge
    says the change is held in the source alone (`purge_kept_cold`), status (exit 3) and verify
    (exit 3) count it."""
    database = nx_client[db_name]
    recent, old, env = archived_then_moved(database, nx_settings, nx_env, tmp_path)
    orders = database["Commande"]
    from_cold, from_archive = sorted(old, key=str)[:2], sorted(recent, key=str)[:2]
    picked = from_cold + from_archive
    numeros = [orders.find_one({"_id": i})["numero_commande"] for i in picked]
    orders.delete_many({"_id": {"$in": picked}})
    selection = [arg for numero in numeros for arg in ("--numero", numero)]
    restored = run_cli("restore", *selection, "--run", "--json", env=env, cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert json.loads(restored.stdout)["from_cold"] == 2

    status = run_cli("status", "--json", env=env, cwd=tmp_path)
    dry = run_cli("batch", "--purge-source", "--json", "-q", env=env, cwd=tmp_path)
    purged = run_cli("batch", "--run", "--purge-source", "--json", "-q", env=env, cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    said, report = json.loads(status.stdout), json.loads(purged.stdout)
    assert said["purge_held"] == report["purge_held"] == 4
    assert said["purge_movable"] == json.loads(dry.stdout)["would_purge"] == report["purged"]

    orders.update_many({"_id": {"$in": from_cold}}, {"$set": {"adresse_livraison": "2 rue corrigée"}})
    no_hold = {**env, "RESTORE_HOLD": "0d"}
    purged = run_cli("batch", "--run", "--purge-source", "--json", env=no_hold, cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    report = json.loads(purged.stdout)
    assert (report["purge_kept"], report["purge_kept_cold"], report["purge_held"]) == (2, 2, 0)
    assert "no pass archives again" in purged.stderr
    assert "a full pass or watch" not in purged.stderr
    assert {d["_id"] for d in orders.find({"_id": {"$in": picked}}, {"_id": 1})} == set(from_cold)
    status = run_cli("status", "--json", env=no_hold, cwd=tmp_path)
    assert status.returncode == 3, status.stdout + status.stderr
    assert json.loads(status.stdout)["cold_corrected"] == 2
    checked = run_cli("verify", "--json", env=no_hold, cwd=tmp_path)
    assert checked.returncode == 3, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["cold_corrected"] == 2


# The product's own move, killed with SIGKILL while it drops a corrected order's older copy from
# the file it just published: the order is corrected in the archive between the publication and
# the delete (ColdMove.after_publish), and the rewrite's publication (the second) is the kill.
KILLED_DROPPING_A_COPY = """
import os, signal, sys
from datetime import datetime, timezone
sys.path.insert(0, sys.argv.pop(1))
from order_archiver.cold import move, store
opened = move.ColdMove.__init__
def corrected_meanwhile(self, *args, **kwargs):
    opened(self, *args, **kwargs)
    def correct_the_oldest():
        oldest = self.archive.find_one({}, sort=[("date_livraison", 1)])
        stamp = datetime.now(timezone.utc)
        self.archive.update_one({"_id": oldest["_id"]}, {"$set": {"revised_at": stamp, "montant_total": 1.0}})
        print(oldest["_id"], flush=True)
    self.after_publish = correct_the_oldest
move.ColdMove.__init__ = corrected_meanwhile
published = store.ColdStore.publish
calls = []
def killed_at_the_rewrite(self, partial, final):
    calls.append(final)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    published(self, partial, final)
store.ColdStore.publish = killed_at_the_rewrite
from order_archiver.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_while_dropping_a_corrected_orders_older_copy_then_a_rerun_leaves_it_in_one_place(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    database = nx_client[db_name]
    recent, old, folder, env = archived_beside_a_cold_folder(database, nx_settings, nx_env, tmp_path)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "ARCHIVE_"))}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_DROPPING_A_COPY, str(ROOT), "batch", "--run", "-q"],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = ColdStore(f"file://{folder}")
    corrected = next(i for i in old if str(i) == killed.stdout.split()[0])
    assert corrected in cold_ids(store)  # the older copy, beside the archive's newer one
    assert corrected in archived_ids(database)

    rerun = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    moved = cold_ids(store)
    assert len(moved) == len(set(moved)), "an order in two cold files"
    assert set(moved) == old
    assert archived_ids(database) == recent
    [copy] = [
        document_of(text)
        for cold_file in store.files()
        for batch in files.batches(store, cold_file.path, ["document"])
        for text in batch["document"]
        if document_of(text)["_id"] == corrected
    ]
    assert copy["montant_total"] == 1.0  # its newer version
    assert database["archiver_checkpoints"].count_documents({"kind": "cold-move"}) == 0
    checked = run_cli("verify", "--json", env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_quickstarts_watcher_from_a_shell_without_the_cold_settings_is_refused_after_a_move(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """A new user's try: after a move, QUICKSTART's `watch --token-store mongo` run from a shell
    without the cold settings caught up on every delivered order, the moved ones included (a
    full pass), and the next batch put them into a second cold file ("in two cold files: 181");
    verify and status, without the settings too, said consistent and healthy. The archive now
    records its cold tier: the watcher, verify and status are refused before they write."""
    database = nx_client[db_name]
    recent, old = seed_old_and_recent(database, nx_settings)
    (tmp_path / "cold").mkdir()
    cold = {"ARCHIVE_COLD_URL": f"file://{tmp_path}/cold", "ARCHIVE_COLD_AFTER": "365d"}
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode == 0  # before the cold tier
    moved = run_cli("batch", "--run", "--json", "-q", env={**nx_env, **cold}, cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["cold"]["moved"] == len(old)
    assert archived_ids(database) == recent

    watch = run_cli("watch", "--token-store", "mongo", env=nx_env, cwd=tmp_path, timeout=60)
    assert watch.returncode == 2, watch.stderr
    [line] = watch.stderr.strip().splitlines()
    assert "ARCHIVE_COLD_URL is not set" in line
    assert f"file://{tmp_path}/cold" in line
    assert archived_ids(database) == recent  # no catch-up ran
    for command in (["verify"], ["status"], ["batch", "--run", "--full"]):
        refused = run_cli(*command, env=nx_env, cwd=tmp_path)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        assert "ARCHIVE_COLD_URL" in refused.stderr
    assert archived_ids(database) == recent
    again = run_cli("batch", "--run", "--json", "-q", env={**nx_env, **cold}, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(cold_ids(ColdStore(cold["ARCHIVE_COLD_URL"])), key=str) == sorted(old, key=str)
    checked = run_cli("verify", env={**nx_env, **cold}, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# The product's own CLI, with a real SIGTERM to itself (or the stop file put there) once its first
# rewrite of a cold file has returned (``ColdRewrite._replace``: the new file published, the old
# one removed): the CLI's handler sets the run's stop, as `kill` or Kubernetes does.
ENDED_AFTER_THE_FIRST_REWRITE = """
import os, pathlib, signal, sys
sys.path.insert(0, sys.argv.pop(1))
how = sys.argv.pop(1)
from order_archiver.cold import rewrite
replace = rewrite.ColdRewrite._replace
done = []
def then_ended(self, *args, **kwargs):
    result = replace(self, *args, **kwargs)
    done.append(1)
    if len(done) == 1:
        if how == "signal":
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            pathlib.Path(how).touch()
    return result
rewrite.ColdRewrite._replace = then_ended
from order_archiver.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("end", ["signal", "stop_file"])
def test_archive_pii_retentions_rewrites_on_s3_end_between_two_files_and_the_next_run_finishes(
    nx_client, nx_settings, nx_env, db_name, tmp_path, s3, end
):
    """#34 at the wire (moto's S3, the test server): ARCHIVE_PII_RETENTION rewrites the two cold
    files, a SIGTERM (or the stop file) after the first: the run ends before the second, says
    why (``ended``; a signal exits 1 as an interrupted pass, the stop file 0), every object in
    the bucket reads back whole (no partial one, no journal entry open), each order in one place;
    the next run rewrites the other. Before: both were rewritten and the run said "completed"."""
    database = nx_client[db_name]
    recent, old = seed_old_and_recent(database, nx_settings)
    env = {**nx_env, **s3, "ARCHIVE_COLD_URL": "s3://orders/limits", "ARCHIVE_COLD_AFTER": "365d"}
    archived = run_cli("batch", "--run", "-q", env={**env, "ARCHIVE_COLD_AFTER": "500d"}, cwd=tmp_path)
    assert archived.returncode == 0, archived.stderr
    moved = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert json.loads(moved.stdout)["cold"]["files"] == 2, moved.stderr
    store = ColdStore("s3://orders/limits")

    stop = tmp_path / "stop"
    how = "signal" if end == "signal" else str(stop)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "ARCHIVE_"))}
    erasing = {**env, "ARCHIVE_PII_RETENTION": "380d"}  # both months (400 and 430 days ago)
    command = ["batch", "--run", "--json", "-q", "--stop-file", str(stop)]
    ended = subprocess.run(
        [sys.executable, "-c", ENDED_AFTER_THE_FIRST_REWRITE, str(ROOT), how, *command],
        env={**base, **erasing},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ended.returncode == (1 if end == "signal" else 0), ended.stderr
    report = json.loads(ended.stdout)
    assert (report["ended"], report["cold"]["pii_rewritten"]) == (end, 1)
    assert len(store.files()) == 2
    assert all(files.is_complete(store, f.path) for f in store.files())
    assert not [i for i in store.fs.get_file_info(_everything(store)) if i.path.endswith(".partial")]
    assert database["archiver_checkpoints"].count_documents({"kind": "cold-move"}) == 0
    moved_ids = cold_ids(store)
    assert sorted(moved_ids, key=str) == sorted(old, key=str)  # each in one place
    assert archived_ids(database) == recent

    stop.unlink(missing_ok=True)
    rerun = run_cli("batch", "--run", "--json", "-q", env=erasing, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads(rerun.stdout)
    assert (again["ended"], again["cold"]["pii_rewritten"]) == ("completed", 1)
    checked = run_cli("verify", "--json", env=erasing, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _everything(store: ColdStore):
    """Every object under the cold tier's prefix, partial ones included."""
    from pyarrow.fs import FileSelector

    return FileSelector(store.root, recursive=True)


def test_the_cold_orders_past_archive_pii_retention_are_counted_before_the_run_erases_them(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """A user's try: with ARCHIVE_PII_RETENTION set over a cold tier, status, doctor and the dry
    run said no archived order past it held personal data; batch --run then erased that of every
    cold order (docs/commands.md: "A dry run counts what the run would erase"). Each now counts
    the cold orders past it beside the archive's, and the dry run's figure is the run's."""
    _recent, old, env = archived_then_moved(nx_client[db_name], nx_settings, nx_env, tmp_path)
    env = {**env, "ARCHIVE_PII_RETENTION": "15d"}

    status = run_cli("status", "--json", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    said = json.loads(status.stdout)
    assert said["pii_retention_pending"] == 0  # the archive's figure, as it was
    assert said["cold_pii_retention_pending"] == len(old)
    text = run_cli("status", env=env, cwd=tmp_path).stdout
    assert f"cold tier: {len(old)} orders past it still hold it" in text, text

    doctor = run_cli("doctor", env=env, cwd=tmp_path)
    line = next(line for line in doctor.stdout.splitlines() if "ARCHIVE_PII_RETENTION" in line)
    assert f"{len(old)} cold orders past it still hold personal data" in line, doctor.stdout

    dry = run_cli("batch", "--json", "-q", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["would_erase_pii"] == 0  # the archive's
    assert planned["cold"]["would_erase_pii"] == len(old)
    assert (
        f"would erase the personal data of {len(old)} cold orders"
        in run_cli("batch", env=env, cwd=tmp_path).stdout
    )

    ran = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["cold"]["pii_erased"] == planned["cold"]["would_erase_pii"]

    after = json.loads(run_cli("status", "--json", env=env, cwd=tmp_path).stdout)
    assert after["cold_pii_retention_pending"] == 0
    again = json.loads(run_cli("batch", "--json", "-q", env=env, cwd=tmp_path).stdout)
    assert again["cold"]["would_erase_pii"] == 0


def test_status_and_doctor_with_the_cold_tiers_s3_down_report_everything_else(
    nx_client, nx_settings, nx_env, db_name, tmp_path, s3
):
    """A new user's try: with the cold tier's S3 unreachable, `status` exited 1 with one line
    ("error: cold tier (ARCHIVE_COLD_URL): ... did not answer after retries (... aft)"): no
    backlog, no watchers. Now both health reports go on: status says every line it can, the cold
    tier's says it could not be read and why, exit 3; doctor fails its "cold tier" check, naming
    the place once, and goes on with the others (exit 3). S3 down: AWS_ENDPOINT_URL at a
    loopback port nothing listens on (the SDK's "could not connect", after its retries)."""
    from tests.unit.test_cold_messages import balanced, closed_port

    database = nx_client[db_name]
    seed_old_and_recent(database, nx_settings)
    env = {**nx_env, **s3, "ARCHIVE_COLD_URL": "s3://orders/livraison", "ARCHIVE_COLD_AFTER": "365d"}
    moved = run_cli("batch", "--run", "-q", env=env, cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    port = closed_port()
    down = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}

    status = run_cli("status", env=down, cwd=tmp_path)
    assert status.returncode == 3, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    for head in ("backlog (delivered, not archived", "archive: ", "batch: "):
        assert any(line.startswith(head) for line in lines), status.stdout
    [cold] = [line for line in lines if line.startswith("cold tier")]
    assert cold.startswith(
        "cold tier: could not be read, its files and orders not counted: ARCHIVE_COLD_URL "
        f"s3://orders/livraison: nothing answers at 127.0.0.1:{port} (the connection was refused)"
    ), cold
    assert f"Failed to connect to 127.0.0.1:{port} after" in cold
    assert balanced(cold)
    assert lines[-1].startswith("UNHEALTHY: cold tier s3://orders/livraison could not be read")

    doctor = run_cli("doctor", env=down, cwd=tmp_path)
    assert doctor.returncode == 3, doctor.stdout + doctor.stderr
    checks = doctor.stdout.splitlines()
    [cold] = [line for line in checks if line.startswith("FAIL cold tier:")]
    assert cold.startswith(
        f"FAIL cold tier: ARCHIVE_COLD_URL s3://orders/livraison: nothing answers at 127.0.0.1:{port} "
        "(the connection was refused)"
    ), cold
    assert cold.count("cold tier") == 1
    assert balanced(cold)
    after = checks[checks.index(cold) + 1 :]
    assert any(line.startswith("ok   write concern") for line in after), doctor.stdout  # it went on
    assert checks[-1].startswith("NOT READY: ")
    assert "cold tier" in checks[-1]
    assert "error:" not in doctor.stderr


def test_batch_run_says_a_published_cold_file_is_gone(nx_client, nx_settings, nx_env, db_name, tmp_path):
    """A new user's try: a published cold file removed by hand (its orders in no place), and
    `batch --run` said nothing, while `status` and `verify` did. Each run now checks a few files
    of the list of published files in turn (cold/spot_check.py: at most SPOT_FILES, whatever
    the tier holds); this tier's two files are checked at every run. Said in the cold tier's
    line, in --json (`cold.gone_files`, `cold.gone_orders`) and in the log under -q."""
    database = nx_client[db_name]
    _recent, _old, env = archived_then_moved(database, nx_settings, nx_env, tmp_path)
    store = ColdStore(env["ARCHIVE_COLD_URL"])
    published = store.files()
    assert len(published) == 2
    calm = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert calm.returncode == 0, calm.stderr
    assert json.loads(calm.stdout)["cold"]["gone_files"] == []
    gone = published[0]
    rows = files.footer(store, gone.path).rows
    os.remove(gone.path)

    said = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert said.returncode == 0, said.stdout + said.stderr  # archived as asked: the tier's loss is news
    cold = json.loads(said.stdout)["cold"]
    assert (cold["gone_files"], cold["gone_orders"]) == ([store.url_of(gone.path)], rows)
    assert f"1 published file gone, {rows} orders in no place (verify names them)" in said.stderr
    text = run_cli("batch", "--run", env=env, cwd=tmp_path)
    assert (
        f"cold tier: 0 orders moved into 0 files; 1 published file gone, {rows} orders in no place "
        f"(verify names them): {store.url_of(gone.path)}"
    ) in text.stdout


def test_the_aws_settings_of_a_settings_file_reach_the_cold_tiers_s3(
    nx_client, nx_settings, nx_env, db_name, tmp_path, empty_s3, monkeypatch
):
    """A new user's try: AWS_ENDPOINT_URL and the keys in .env, beside the archiver's own
    settings, were "not a setting, ignored": the SDK reads its settings from the environment
    alone, and the run went to AWS itself. A settings file's AWS variables are the SDK's where
    the environment lacks them (the environment wins); a simulation takes none of them."""
    from pyarrow.fs import S3FileSystem

    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    S3FileSystem(
        endpoint_override=empty_s3.endpoint,
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        allow_bucket_creation=True,
    ).create_dir("orders")
    database = nx_client[db_name]
    _recent, old = seed_old_and_recent(database, nx_settings)
    aws = {**S3_KEYS, "AWS_ENDPOINT_URL": empty_s3.endpoint}
    (tmp_path / ".env").write_text("".join(f"{name}={value}\n" for name, value in aws.items()))
    env = {**nx_env, "ARCHIVE_COLD_URL": "s3://orders/livraison", "ARCHIVE_COLD_AFTER": "365d"}
    first = run_cli("batch", "--run", "-q", env={**env, "ARCHIVE_COLD_AFTER": "500d"}, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    moved = run_cli("batch", "--run", "--json", env=env, cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["cold"]["moved"] == len(old)
    assert "is not a setting" not in moved.stderr
    assert "testing" not in moved.stderr  # no key said


@pytest.mark.parametrize("versioned", [True, False])
def test_doctor_and_forget_say_a_versioned_bucket_keeps_what_the_erasure_replaced(
    nx_client, nx_settings, nx_env, db_name, tmp_path, s3, versioned
):
    """A new user's try: with versioning on, after forget --client X --run, 13 rows of that
    client's data were still readable in noncurrent object versions; doctor ("ok cold tier"),
    forget and verify said nothing. S3 keeps a version of every object overwritten or deleted in
    a versioned bucket (put-bucket-versioning Enabled) until a lifecycle rule expires it; pyarrow
    cannot ask GetBucketVersioning, but HeadObject's VersionId says what the bucket did with a
    file. doctor and forget now say it; an unversioned bucket is said to keep none."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"])
    if versioned:
        client.put_bucket_versioning(Bucket="orders", VersioningConfiguration={"Status": "Enabled"})
    database = nx_client[db_name]
    _recent, old = seed_old_and_recent(database, nx_settings)
    env = {**nx_env, **s3, "ARCHIVE_COLD_URL": "s3://orders/livraison", "ARCHIVE_COLD_AFTER": "365d"}
    first = run_cli("batch", "--run", "-q", env={**env, "ARCHIVE_COLD_AFTER": "500d"}, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    moved = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert json.loads(moved.stdout)["cold"]["moved"] == len(old), moved.stderr

    doctor = run_cli("doctor", env=env, cwd=tmp_path)
    line = next(x for x in doctor.stdout.splitlines() if "cold tier versions" in x)
    if versioned:
        assert line.startswith("warn"), line
        assert "the bucket keeps object versions" in line
        assert "noncurrent versions until a lifecycle rule expires them" in line
    else:
        assert line.startswith("ok"), line
        assert "no version id" in line

    store = ColdStore("s3://orders/livraison")
    person, other = sorted(
        {
            str(d["client"]["id"])
            for cold_file in store.files()
            for batch in files.batches(store, cold_file.path, ["document"])
            for d in map(document_of, batch["document"])
            if d.get("client") and d["client"].get("email")
        }
    )[:2]
    forget = run_cli("forget", "--client", person, "--run", env=env, cwd=tmp_path)
    assert forget.returncode == 0, forget.stderr
    as_json = run_cli("forget", "--client", other, "--run", "--json", env=env, cwd=tmp_path)
    # What S3 kept: the replaced files' versions, the client's data in them.
    noncurrent = [
        v for v in client.list_object_versions(Bucket="orders").get("Versions", []) if not v["IsLatest"]
    ]
    if versioned:
        assert noncurrent  # the physics the lines below stand for
        assert "the bucket keeps object versions" in forget.stdout
        assert json.loads(as_json.stdout)["cold"]["versions_kept"] is True
    else:
        assert noncurrent == []
        assert "object versions" not in forget.stdout
        assert json.loads(as_json.stdout)["cold"]["versions_kept"] is False


# The product's own CLI, its move ended once its first file is published (``ColdMove.after_publish``:
# the file out, not one of its orders deleted from the archive yet): the stop file put there, the
# --max-runtime deadline passed there (``RunLimits._left_s``: none left from then on), or a real
# SIGTERM to itself (the CLI's handler sets the run's stop, as `kill` or Kubernetes does).
ENDED_ONCE_PUBLISHED = """
import os, pathlib, signal, sys
sys.path.insert(0, sys.argv.pop(1))
how = sys.argv.pop(1)
from order_archiver.batch import limits
from order_archiver.cold import move
opened = move.ColdMove.__init__
def end_the_run():
    if how == "signal":
        os.kill(os.getpid(), signal.SIGTERM)
    elif how == "max_runtime":
        limits.RunLimits._left_s = lambda self: 0.0
    else:
        pathlib.Path(how).touch()
def ended_once_published(self, *args, **kwargs):
    opened(self, *args, **kwargs)
    self.after_publish = end_the_run
move.ColdMove.__init__ = ended_once_published
from order_archiver.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _ended_once_published(env, tmp_path, end):
    stop = tmp_path / "stop"
    how = str(stop) if end == "stop_file" else end
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "ARCHIVE_"))}
    command = ["batch", "--run", "--json", "-q", "--stop-file", str(stop), "--max-runtime", "1h"]
    ended = subprocess.run(
        [sys.executable, "-c", ENDED_ONCE_PUBLISHED, str(ROOT), how, *command],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    stop.unlink(missing_ok=True)
    return ended


@pytest.mark.parametrize("end", ["stop_file", "max_runtime"])
def test_a_move_ended_by_its_limits_finishes_the_file_in_hand_at_the_wire(
    nx_client, nx_settings, nx_env, db_name, tmp_path, end
):
    """A new user's try (the test server, the CLI): `batch --run` with --stop-file or
    --max-runtime ending its move once a file was published left that file's orders in the
    archive too (verify: "also in the archive: N ... NOT consistent", status "healthy") and its
    summary left the file out. docs/operating.md: those limits end a step "the file in hand
    finished: published and checked, the old one removed; exit 0", each order in one place. Now
    the file in hand is finished (its orders deleted from the archive, counted) before the run
    ends; verify and status agree; the next run moves the other month. (The stop tests before
    asserted the journal entry left: docs/operating.md said so too, against its own promise.)"""
    database = nx_client[db_name]
    recent, old, folder, env = archived_beside_a_cold_folder(database, nx_settings, nx_env, tmp_path)
    ended = _ended_once_published(env, tmp_path, end)
    assert ended.returncode == 0, ended.stderr
    report = json.loads(ended.stdout)
    store = ColdStore(f"file://{folder}")
    [published] = store.files()  # the run ended after its first file ...
    in_file = set(cold_ids(store))
    assert in_file < old
    assert report["ended"] == end
    assert (report["cold"]["files"], report["cold"]["moved"]) == (1, len(in_file))  # ... counted
    assert not in_file & archived_ids(database)  # ... finished: its orders left the archive
    assert archived_ids(database) == recent | (old - in_file)
    assert database["archiver_checkpoints"].count_documents({"kind": "cold-move"}) == 0

    checked = run_cli("verify", "--json", env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    status = run_cli("status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr

    rerun = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    cold = json.loads(rerun.stdout)["cold"]
    assert (cold["files"], cold["moved"], cold["recovered"]) == (1, len(old - in_file), 0)
    moved = cold_ids(store)
    assert sorted(moved, key=str) == sorted(old, key=str)
    assert published in store.files()


def test_a_signal_once_a_moves_file_is_published_is_said_by_status_until_the_next_run_at_the_wire(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """A SIGTERM once a move's file is published (the test server, the CLI): the deletes of a
    file of up to a gigabyte do not wait (the command line gives a stop 8 s), so the run ends
    before them (exit 1, as an interrupted pass), its journal entry left, the file's orders in
    the archive and that file. Before, `status` said "healthy" meanwhile and the error said
    "each file whole": status now says it (unhealthy, exit 3, naming the file and the next
    run), the error says what is left, and the next run settles it, saying so truly ("N orders
    of an interrupted move left the archive", not "moved into 0 files")."""
    database = nx_client[db_name]
    recent, old, folder, env = archived_beside_a_cold_folder(database, nx_settings, nx_env, tmp_path)
    ended = _ended_once_published(env, tmp_path, "signal")
    assert ended.returncode == 1, ended.stderr
    assert json.loads(ended.stdout)["ended"] == "signal"
    store = ColdStore(f"file://{folder}")
    [published] = store.files()
    in_file = set(cold_ids(store))
    assert in_file <= archived_ids(database)  # in both places, for now
    assert "still in the archive too" in ended.stderr, ended.stderr
    assert "each file whole" not in ended.stderr

    status = run_cli("status", "--json", env=env, cwd=tmp_path)
    assert status.returncode == 3, status.stdout + status.stderr
    said = json.loads(status.stdout)
    assert said["healthy"] is False
    [problem] = [p for p in said["problems"] if "interrupted" in p]
    assert store.url_of(published.path) in problem, problem
    assert "batch --run" in problem, problem
    checked = run_cli("verify", "--json", env=env, cwd=tmp_path)  # not consistent, and why
    assert checked.returncode == 3, checked.stdout + checked.stderr
    cold = json.loads(checked.stdout)["cold"]
    assert (cold["also_in_archive"], cold["unsettled"]) == (len(in_file), [store.url_of(published.path)])

    rerun = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    cold = json.loads(rerun.stdout)["cold"]
    assert (cold["recovered"], cold["settled"], cold["files"]) == (1, len(in_file), 1)
    assert cold["moved"] == len(old)
    assert sorted(cold_ids(store), key=str) == sorted(old, key=str)
    assert archived_ids(database) == recent
    assert run_cli("status", env=env, cwd=tmp_path).returncode == 0


def test_cold_settings_set_before_the_first_archive_say_where_the_old_orders_are_and_the_way_out(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """A new user's try (the test server, the CLI): the cold settings set before the first
    archive, `batch --run` said "N past ARCHIVE_COLD_AFTER (not archived: the cold tier's)"
    though the cold tier held none of them: they are in the source alone, and no later run
    archives them (docs/operating.md). The summary now says so, `status` counts them, and
    docs/operating.md's way out (the record deleted while the tier holds no file, one full run
    without the cold settings, then the usual run) puts each in one cold file."""
    database = nx_client[db_name]
    recent, old = seed_old_and_recent(database, nx_settings)
    folder = tmp_path / "cold"
    folder.mkdir()
    env = {**nx_env, "ARCHIVE_COLD_URL": f"file://{folder}", "ARCHIVE_COLD_AFTER": "365d"}
    first = run_cli("batch", "--run", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (
        f"{len(old)} past ARCHIVE_COLD_AFTER (not archived: older than the archive takes; the cold "
        "tier holds no file, so they are in the source alone"
    ) in first.stdout, first.stdout
    assert "the cold tier's)" not in first.stdout
    assert archived_ids(database) == recent

    status = run_cli("status", "--json", env=env, cwd=tmp_path)
    said = json.loads(status.stdout)
    assert said["cold_source_alone"] == len(old), status.stdout + status.stderr
    assert f"{len(old)} delivered orders past ARCHIVE_COLD_AFTER in the source alone" in (
        run_cli("status", env=env, cwd=tmp_path).stdout
    )

    # docs/operating.md's way out, as a user types it.
    assert database["archiver_checkpoints"].delete_one({"_id": "cold-tier"}).deleted_count == 1
    plain = {k: v for k, v in env.items() if not k.startswith("ARCHIVE_COLD_")}
    archived = run_cli("batch", "--run", "--full", "--json", "-q", env=plain, cwd=tmp_path)
    assert archived.returncode == 0, archived.stderr
    assert archived_ids(database) == recent | old
    moved = run_cli("batch", "--run", "--json", "-q", env=env, cwd=tmp_path)
    assert json.loads(moved.stdout)["cold"]["moved"] == len(old), moved.stderr
    assert sorted(cold_ids(ColdStore(env["ARCHIVE_COLD_URL"])), key=str) == sorted(old, key=str)
    assert archived_ids(database) == recent
    assert json.loads(run_cli("status", "--json", env=env, cwd=tmp_path).stdout)["cold_source_alone"] == 0
    checked = run_cli("verify", env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
