"""The command line as a user runs it: subprocesses, environment variables, signals."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_cli
from tests.helpers import assert_no_duplicates, expected_archive_ids, seed_database, wait_for

pytestmark = pytest.mark.e2e


def test_simulation_run_in_a_fresh_folder(tmp_path):
    result = run_cli("batch", "--run", "--simulation", "--count", "400", cwd=tmp_path)
    assert result.returncode in (0, 3), result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("batch done: scanned ")
    assert "Traceback" not in result.stderr
    assert (tmp_path / "logs" / "order-archiver.log").is_file()


def test_simulate_writes_samples_then_batch_uses_them(tmp_path):
    result = run_cli("--count", "300", "--seed", "8", "--simulation", cwd=tmp_path, script="simulate.py")
    assert result.returncode == 0, result.stderr
    samples = json.loads((tmp_path / "samples.json").read_text())
    assert len(samples["Commande"]) == 300
    assert samples["Commande"][0]["_id"]["$oid"]
    result = run_cli("batch", "--simulation", "--json", "-q", cwd=tmp_path)
    report = json.loads(result.stdout)
    delivered = sum(1 for o in samples["Commande"] if o["status"] == "livrée")
    assert report["would_archive"] + report["rejected"] == delivered


def test_simulate_fills_nx_reproducibly(nx_client, nx_env, db_name, tmp_path):
    def orders():
        return list(nx_client[db_name]["Commande"].find({}, {"_id": 0}).sort("numero_commande"))

    args = ("--count", "1000", "--seed", "42", "--p-delivered", "0.4", "--reset")
    first = run_cli(*args, env=nx_env, cwd=tmp_path, script="simulate.py")
    assert first.returncode == 0, first.stderr
    assert "1000 orders" in first.stdout
    database = nx_client[db_name]
    counts = {
        name: database[name].count_documents({})
        for name in ("Commande", "Client", "Livreur", "Restaurants", "Menu")
    }
    assert counts["Commande"] == 1000
    assert all(counts.values())
    snapshot = orders()
    delivered = sum(1 for o in snapshot if o["status"] == "livrée")
    assert 0.35 < delivered / 1000 < 0.45
    again = run_cli(*args, env=nx_env, cwd=tmp_path, script="simulate.py")
    assert again.returncode == 0, again.stderr
    assert orders() == snapshot
    more = run_cli("--count", "10", "--seed", "1", env=nx_env, cwd=tmp_path, script="simulate.py")
    assert more.returncode == 0
    assert database["Commande"].find_one({"numero_commande": "CMD-001010"}) is not None


def test_batch_against_nx_then_rerun(nx_client, nx_env, nx_settings, db_name, tmp_path):
    dataset = seed_database(nx_client[db_name], nx_settings, 700, p_anomalies=0.1, seed=21)
    first = run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path)
    report = json.loads(first.stdout)
    assert first.returncode == (3 if report["rejected"] else 0)
    archive = nx_client[db_name]["Commande_archive"]
    assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected_archive_ids(dataset)
    second = run_cli("batch", "--run", env=nx_env, cwd=tmp_path)
    assert "archived 0," in second.stdout
    assert_no_duplicates(archive)


def _kill_when_archive_has(nx_client, db_name, process, minimum, sig):
    archive = nx_client[db_name]["Commande_archive"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if archive.count_documents({}) >= minimum:
            process.send_signal(sig)
            break
        time.sleep(0.02)
    return archive.count_documents({})


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_run_killed_midway_then_rerun_is_complete_without_duplicates(
    nx_client, nx_env, nx_settings, db_name, tmp_path, sig
):
    dataset = seed_database(nx_client[db_name], nx_settings, 3000, p_anomalies=0.05, seed=33)
    expected = expected_archive_ids(dataset)
    as_json = ["--json"] if sig == signal.SIGTERM else []
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "batch", "--run", "--batch-size", "25", *as_json],
        env={**os.environ, **nx_env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with process:
        _kill_when_archive_has(nx_client, db_name, process, 300, sig)
        stdout, stderr = process.communicate(timeout=60)
    archived_before = nx_client[db_name]["Commande_archive"].count_documents({})
    assert 0 < archived_before < len(expected), "the run was not interrupted mid-way"
    if sig == signal.SIGTERM:
        assert process.returncode == 1, stderr
        assert "interrupted" in stderr
        report = json.loads(stdout)  # the counts so far, before the error line
        assert report["completed"] is False
        assert "interrupted" in report["error"]
        assert report["archived"] == archived_before
    rerun = run_cli("batch", "--run", "--batch-size", "200", env=nx_env, cwd=tmp_path)
    assert rerun.returncode in (0, 3), rerun.stderr
    assert "resuming an interrupted run" in rerun.stderr
    archive = nx_client[db_name]["Commande_archive"]
    assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected
    assert_no_duplicates(archive)
    (state,) = nx_client[db_name]["archiver_checkpoints"].find({"kind": "batch"})
    assert state["pass"] is None  # the pass is complete: nothing left to resume
    assert state["high_water"] is not None  # the next run reads from there


def test_a_run_killed_after_a_checkpoint_lists_every_rejection_that_checkpoint_passed(
    nx_client, nx_env, nx_settings, db_name, tmp_path
):
    """The run's checkpoint (saved every few seconds within a pass) passed orders whose
    rejections were still held to be listed together: killed -9 then, the rerun resumed after
    them and never met them again (a new user's backfill: 3 of 67 invalid orders never listed,
    status healthy). The rejections a checkpoint passes are listed before it is saved."""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 3000, p_anomalies=0.05, seed=34)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "batch", "--run", "--batch-size", "25", "--max-rate", "400"],
        env={**os.environ, **nx_env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = database["archiver_checkpoints"]
    with process:
        # The sentinel: a second checkpoint within the pass (the first follows the first chunk;
        # the next, seconds later, passes hundreds of orders), then kill -9.
        def reach() -> object:
            found = checkpoints.find_one({"kind": "batch", "pass.last_id": {"$ne": None}})
            return None if found is None else found["pass"]["last_id"]

        wait_for(lambda: reach() is not None, timeout=60, what="a checkpoint within the pass")
        first = reach()
        wait_for(lambda: reach() != first, timeout=60, what="a second checkpoint within the pass")
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    rerun = run_cli("batch", "--run", env=nx_env, cwd=tmp_path)
    assert rerun.returncode in (0, 3), rerun.stderr
    assert "resuming an interrupted run" in rerun.stderr
    # A full dry run meets every invalid order again: none of them is news to the list.
    dry = json.loads(run_cli("batch", "--full", "--json", env=nx_env, cwd=tmp_path).stdout)
    assert dry["rejected"] > 0
    assert dry["rejected_new"] == 0, dry
    assert database[nx_settings.rejects_collection].count_documents({}) == dry["rejected"]


def test_demo_auto_runs_end_to_end_on_its_own_server(tmp_path):
    result = run_cli(
        "--auto", "--orders", "600", "--deliveries", "3", cwd=tmp_path, script="demo.py", timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "starting a local nx-27017" in out
    assert "batch done: scanned" in out
    assert len(re.findall(r"delivered -> archived in \d+ ms", out)) == 3
    assert "healthy" in out
    assert "\nconsistent" in out
    assert "local server stopped" in out
    assert "Traceback" not in result.stderr


def test_demo_on_the_users_server_drops_the_database_it_made_and_nothing_else(nx_server, nx_client, db_name):
    """With MONGODB_URI (a user's server) the demo left its database behind. It drops it at its
    end now: the database it made, and nothing else on the server."""
    theirs = f"{db_name}_theirs"
    nx_client[theirs]["Commande"].insert_one({"numero_commande": "CMD-1"})  # the user's own data
    result = run_cli(
        *("--auto", "--orders", "200", "--deliveries", "1", "--database", db_name),
        env={"MONGODB_URI": nx_server.uri},
        script="demo.py",
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\nconsistent" in result.stdout
    assert f"database {db_name} dropped: the demo made it." in result.stdout
    assert "local server" not in result.stdout  # it used the user's server
    names = nx_client.list_database_names()
    assert db_name not in names
    assert theirs in names
    assert nx_client[theirs]["Commande"].count_documents({}) == 1
    nx_client.drop_database(theirs)


def test_demo_refuses_a_database_it_did_not_make_and_drops_nothing(nx_server, nx_client, db_name):
    nx_client[db_name]["Commande"].insert_one({"numero_commande": "CMD-1"})  # someone's database
    result = run_cli(
        "--auto", "--database", db_name, env={"MONGODB_URI": nx_server.uri}, script="demo.py", timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: database {db_name} exists on this server and was not made by the demo, which never "
        "writes to nor drops a database it did not create: name another with --database (one left by "
        "an earlier demo.py without its mark: drop it yourself)"
    ]
    assert nx_client[db_name].list_collection_names() == ["Commande"]
    assert nx_client[db_name]["Commande"].count_documents({}) == 1


def test_a_reader_that_closes_stdout_early_gets_no_error_and_the_run_keeps_its_exit_code(tmp_path):
    """`main.py rejects --all | head -1` printed "error: unexpected BrokenPipeError" and exit 1.
    The same dry run read whole, then read one line: the same exit code, nothing on stderr."""
    command = [
        sys.executable,
        str(ROOT / "main.py"),
        "batch",
        "--simulation",
        "--samples",
        "300",
        "--json",
        "-q",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "ARCHIVE_"))}
    whole = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert len(whole.stdout) > 1 << 17  # past a pipe's buffer: the writer meets the closed end
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.read(10) == whole.stdout[:10]
    process.stdout.close()  # as `head -c 10` does
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == whole.returncode
    assert b"BrokenPipe" not in stderr
    assert b"error" not in stderr
