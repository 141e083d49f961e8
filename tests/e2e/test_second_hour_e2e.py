"""A newcomer's second hour: the shipped files and the defaults, tried the way the README and
QUICKSTART say, on the test server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers import WatchProcess, deliver, run_in_process, wait_for

pytestmark = pytest.mark.e2e


def shipped_env_file(folder: Path, uri: str) -> Path:
    """``.env.example`` copied as QUICKSTART says, only ``MONGODB_URI`` changed."""
    text = (ROOT / ".env.example").read_text()
    text, changed = re.subn(r"(?m)^MONGODB_URI=.*$", f"MONGODB_URI={uri}", text)
    assert changed == 1
    path = folder / ".env"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_shipped_env_file_with_only_the_uri_set_runs_every_command(
    nx_server, db_name, tmp_path, monkeypatch, capsys
):
    """Its empty optional lines (``ARCHIVE_MONGODB_URI=``, ``ARCHIVE_DATABASE=``, the TLS
    files) mean "not set": no command stops on them with exit 2."""
    shipped_env_file(tmp_path, nx_server.uri)
    env = {"MONGODB_DATABASE": db_name}  # one database per test; everything else from .env
    expected = [
        (("simulate", "--count", "120", "--seed", "3", "--p-anomalies", "0"), 0),
        (("doctor",), 0),
        (("batch",), 0),
        (("batch", "--run"), 0),
        (("status",), 0),
        (("verify",), 0),
        (("rejects",), 0),
    ]
    for args, code in expected:
        result = run_in_process(*args, env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
        assert result.returncode == code, f"{args}: {result.stderr}"
        assert "error" not in result.stderr.lower(), f"{args}: {result.stderr}"
    watcher = WatchProcess({**env, "LOG_DIR": ""}, tmp_path)
    try:
        wait_for(lambda: "watching" in watcher.output(), what="the watcher started")
    finally:
        assert watcher.stop() == 0, watcher.output()


def test_a_misspelt_setting_in_the_env_file_is_named_with_the_one_it_resembles(
    nx_server, db_name, tmp_path, monkeypatch, capsys
):
    path = shipped_env_file(tmp_path, nx_server.uri)
    shipped = path.read_text()
    path.write_text(shipped + "MY_APP_TOKEN=x\n")
    env = {"MONGODB_DATABASE": db_name}
    run_in_process(
        "simulate",
        "--count",
        "50",
        "--p-anomalies",
        "0",
        env=env,
        cwd=tmp_path,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    result = run_in_process("batch", env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert ".env: MY_APP_TOKEN is not a setting, ignored" in output  # another tool's: a warning
    assert "MY_APP_TOKEN is not a setting, ignored;" not in output  # nothing close: no guess
    # A name close to a setting's is a typo: the run would go on without it (a batch size, a
    # collection, a limit). Refused before anything is read or written, one line, exit 2.
    for line, meant in (("BATCH_SIZ=500", "BATCH_SIZE"), ("ORDERS_COLECTION=Commande", "ORDERS_COLLECTION")):
        path.write_text(shipped + line + "\n")
        result = run_in_process(
            "batch", "--run", env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
        )
        assert result.returncode == 2, result.stdout + result.stderr
        name = line.partition("=")[0]
        assert result.stderr.strip().endswith(
            f".env: {name} is not a setting; did you mean {meant}? (fix its name)"
        )
        assert "Traceback" not in result.stderr


def test_quiet_prints_nothing_unless_there_is_news(nx_env, tmp_path, monkeypatch, capsys):
    """Under cron every byte printed is a mail: ``-q`` prints only a new rejected order (or an
    error, on stderr). The exit code says the same."""

    def run(*args: str):
        return run_in_process(*args, env=nx_env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)

    run("simulate", "--count", "300", "--seed", "5", "--p-anomalies", "0.3")  # some invalid
    first = run("batch", "--run", "-q")
    assert first.returncode == 3  # new invalid orders: news
    assert "rejected orders by reason" in first.stdout
    again = run("batch", "--run", "-q")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    loud = run("batch", "--run")
    assert loud.stdout.startswith("batch done") or "batch done" in loud.stdout


def test_simulate_after_a_purge_numbers_past_the_archived_orders(
    nx_env, nx_client, db_name, tmp_path, monkeypatch, capsys
):
    """After ``batch --run --purge-source`` the source no longer holds the archived numbers; new
    orders must not reuse them ("already archived for another order", verify exit 3 forever)."""

    def run(*args: str):
        return run_in_process(*args, env=nx_env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)

    assert run("simulate", "--count", "150", "--seed", "6", "--p-anomalies", "0").returncode == 0
    database = nx_client[db_name]
    deliver(database["Commande"], [d["_id"] for d in database["Commande"].find({}, {"_id": 1})])
    assert run("batch", "--run", "--purge-source").returncode == 0
    assert database["Commande"].count_documents({}) == 0  # every number left the source
    assert run("simulate", "--count", "150", "--seed", "7", "--p-anomalies", "0").returncode == 0
    archived = {d["numero_commande"] for d in database["Commande_archive"].find({}, {"numero_commande": 1})}
    source = {d["numero_commande"] for d in database["Commande"].find({}, {"numero_commande": 1})}
    assert archived
    assert archived.isdisjoint(source)
    # --full: generated orders arrive delivered with past stamps (a backfill, QUICKSTART)
    assert run("batch", "--run", "--full").returncode == 0  # nothing "already archived for another order"
    assert run("verify").returncode == 0


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        # ORDERS_COLLECTION=Commandes, a collection that exists but holds no order: every listed
        # rejection would look deleted and leave the list; back on the right name they came back
        # as new, their history reset. Nothing is pruned from an empty source.
        ({"ORDERS_COLLECTION": "Commandes"}, "holds no order: the list of rejected orders is left as it is"),
        # DELIVERED_STATUS=delivered (the French data says "livrée"): no order is delivered, so
        # every listed rejection looked "no longer delivered" and left the list; back on the right
        # status, only a --full found them again, as new (a new user's try).
        ({"DELIVERED_STATUS": "delivered"}, "check DELIVERED_STATUS"),
    ],
    ids=["an empty orders collection", "a status no order has"],
)
def test_a_source_with_nothing_delivered_never_empties_the_rejects_list(
    setting, said, nx_env, nx_client, db_name, tmp_path, monkeypatch, capsys
):
    """A wrong setting that makes every listed rejected order look deleted or no longer
    delivered leaves the list as it is (the run's warning says why), so that back on the right
    setting they are known, not new."""

    def run(*args: str, **extra: str):
        env = {**nx_env, **extra}
        return run_in_process(*args, env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)

    run("simulate", "--count", "300", "--seed", "5", "--p-anomalies", "0.3")
    assert run("batch", "--run").returncode == 3
    rejects = nx_client[db_name]["archiver_rejects"]
    listed = sorted(d["_id"] for d in rejects.find({}, {"_id": 1}))
    assert listed
    nx_client[db_name].create_collection("Commandes")
    wrong = run("batch", "--run", "--full", **setting)
    assert wrong.returncode == 0, wrong.stderr
    assert said in wrong.stderr
    assert sorted(d["_id"] for d in rejects.find({}, {"_id": 1})) == listed
    assert run("batch", "--run").returncode == 0  # back on the right setting: known, not new


def test_the_purge_is_said_in_a_dry_run_and_moves_every_archived_order_in_an_incremental_run(
    nx_env, nx_client, nx_settings, db_name, tmp_path, monkeypatch, capsys
):
    from tests.helpers import pending_ids, seed_database

    def run(*args: str):
        return run_in_process(*args, env=nx_env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)

    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 300, seed=8, p_anomalies=0.0)
    assert run("batch", "--run").returncode == 0  # archived, not purged (nobody asked)
    archived = database["Commande_archive"].count_documents({})
    later = pending_ids(dataset, 20)
    deliver(database["Commande"], later)
    before = database["Commande"].count_documents({})
    dry = run("batch", "--purge-source", "--json")
    report = json.loads(dry.stdout)
    assert (report["mode"], report["would_archive"], report["would_purge"]) == (
        "incremental",
        20,
        archived + 20,
    )
    assert database["Commande"].count_documents({}) == before  # a dry run deletes nothing
    text = run("batch", "--purge-source")
    assert f"would purge {archived + 20} from the source" in text.stdout
    done = json.loads(run("batch", "--run", "--purge-source", "--json").stdout)
    # An incremental run read 20 deliveries, and purged every archived order, not only those.
    assert (done["mode"], done["archived"], done["purged"]) == ("incremental", 20, archived + 20)
    assert database["Commande"].count_documents({"status": "livrée"}) == 0


def test_reset_never_drops_documents_simulate_did_not_write(
    nx_env, nx_client, db_name, tmp_path, monkeypatch, capsys
):
    """``simulate --reset`` dropped the five source collections without a word, a real client
    included. It drops only collections made of documents it wrote, else exit 2, nothing dropped."""

    def run(*args: str):
        return run_in_process(
            *args, env=nx_env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys, script="simulate.py"
        )

    assert run("--count", "50", "--seed", "1").returncode == 0
    assert run("--count", "50", "--seed", "2", "--reset").returncode == 0  # its own data: dropped, refilled
    database = nx_client[db_name]
    assert database["Commande"].count_documents({}) == 50
    database["Client"].insert_one({"nom": "Réel", "prenom": "Client", "email": "vrai@example.fr"})
    refused = run("--count", "50", "--seed", "3", "--reset")
    assert refused.returncode == 2
    assert f"--reset: {db_name}.Client holds documents simulate did not generate" in refused.stderr
    assert database["Client"].find_one({"email": "vrai@example.fr"}) is not None
    assert database["Commande"].count_documents({}) == 50  # nothing dropped, nothing added
    # #31 item 8: plain simulate mixed generated orders into real ones; now refused, nothing written.
    plain = run("--count", "50", "--seed", "4")
    assert plain.returncode == 2
    assert f"simulate: {db_name}.Client holds documents simulate did not generate" in plain.stderr
    assert "nothing was written" in plain.stderr
    assert database["Commande"].count_documents({}) == 50
    # The marker's value, not its presence: a document marked false is not simulate's.
    database["Client"].delete_many({"email": "vrai@example.fr"})
    database["Client"].update_one({}, {"$set": {"_generated_by_simulate": False}})
    assert run("--count", "50", "--seed", "5", "--reset").returncode == 2
    assert database["Commande"].count_documents({}) == 50
