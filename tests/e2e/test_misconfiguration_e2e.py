"""A new user's mistakes, through the command line as a subprocess: each is one line on
stderr, a documented exit code, no traceback, no secret, and nothing written or deleted."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import PLAIN_PASSWORD, PLAIN_USER, run_cli
from tests.helpers import run_in_process, seed_database

pytestmark = pytest.mark.e2e

SECRET = "S3cretPW-typo-9"


def one_line_error(result, code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, result.stderr
    assert lines[-1].startswith("error: "), result.stderr
    return lines[-1]


def snapshot(database) -> dict[str, int]:
    return {name: database[name].count_documents({}) for name in database.list_collection_names()}


@pytest.mark.parametrize(
    ("variable", "value", "clash"),
    [
        ("ARCHIVE_COLLECTION", "Commande", "ORDERS_COLLECTION"),
        ("ARCHIVE_COLLECTION", "Menu", "MENU_COLLECTION"),
        ("CHECKPOINT_COLLECTION", "Client", "CLIENTS_COLLECTION"),
        ("REJECTS_COLLECTION", "Commande_archive", "ARCHIVE_COLLECTION"),
        ("ORDERS_COLLECTION", "Livreur", "COURIERS_COLLECTION"),
    ],
)
def test_a_collection_in_two_roles_is_refused_before_anything_runs(
    nx_client, nx_env, nx_settings, db_name, tmp_path, variable, value, clash
):
    database = nx_client[db_name]
    seed_database(database, nx_settings, 200, seed=3)
    before = snapshot(database)
    for args in (("batch", "--run", "--purge-source"), ("watch",), ("verify", "--repair"), ("status",)):
        result = run_cli(*args, env={**nx_env, variable: value}, cwd=tmp_path, timeout=60)
        line = one_line_error(result, 2)
        assert variable in line
        assert clash in line
        assert f"{db_name}.{value}" in line
    assert snapshot(database) == before  # nothing archived, nothing purged, nothing created


def test_the_same_name_in_another_database_is_fine_and_a_case_variant_of_the_database_is_not(
    nx_client, nx_env, nx_settings, db_name, tmp_path
):
    seed_database(nx_client[db_name], nx_settings, 50, seed=3)
    other = {**nx_env, "ARCHIVE_DATABASE": f"{db_name}_archive", "ARCHIVE_COLLECTION": "Commande"}
    result = run_cli("batch", "--json", "-q", env=other, cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # seed 3, 50 orders: no invalid delivered order
    assert json.loads(result.stdout)["would_archive"] > 0
    upper = {**other, "ARCHIVE_DATABASE": db_name.upper()}
    line = one_line_error(run_cli("batch", env=upper, cwd=tmp_path), 2)
    assert "ARCHIVE_COLLECTION and ORDERS_COLLECTION" in line


def _status(env: dict[str, str], cwd) -> str:
    result = run_cli("status", "-q", env=env, cwd=cwd)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout + result.stderr


def test_a_mistyped_database_is_unhealthy_at_every_status_and_no_command_creates_a_collection(
    nx_client, nx_env, db_name, tmp_path
):
    """MongoDB creates a collection only by a write into it: a count, distinct or aggregate on
    a collection that does not exist reads nothing and creates nothing (mongodb/mongo
    jstests/core/query/count/count11.js), nor does an update or delete that is no upsert
    (write_ops_exec.cpp). status and doctor only read; batch --run and verify refuse the
    missing orders collection (exit 2) before any write, and so does forget (its record of the
    person in the typo's database would hold nowhere it is needed). The test server created the
    collections its reads named: status's second run found an empty Commande, healthy."""
    database = nx_client[db_name]  # a database name nothing holds: a typo
    for _ in range(3):
        assert "check MONGODB_DATABASE" in _status(nx_env, tmp_path)
        assert database.list_collection_names() == []
    assert run_cli("doctor", env=nx_env, cwd=tmp_path).returncode == 3
    assert database.list_collection_names() == []
    client_id = database.Client.insert_one({"nom": "Martin"}).inserted_id  # others, not the orders
    # forget: the person recorded forgotten in the typo's database held nowhere it is needed.
    for args in (
        ("batch", "--run", "--purge-source"),
        ("verify", "--repair"),
        ("forget", "--client", str(client_id), "--run"),
    ):
        line = one_line_error(run_cli(*args, env=nx_env, cwd=tmp_path), 2)
        assert f"collection {db_name}.Commande does not exist" in line
        assert database.list_collection_names() == ["Client"]
    for _ in range(2):
        assert f"{db_name}.Commande does not exist" in _status(nx_env, tmp_path)
    assert run_cli("doctor", env=nx_env, cwd=tmp_path).returncode == 3
    assert database.list_collection_names() == ["Client"]


@pytest.mark.parametrize(
    "uri",
    [
        f"mongodb:/archiver:{SECRET}@localhost/",
        f"MONGODB://archiver:{SECRET}@localhost/",
        f"archiver:{SECRET}@localhost/",
        f"mongodb//archiver:{SECRET}@localhost",
        f"mongodb:///archiver:{SECRET}@localhost",
        f"http://archiver:{SECRET}@localhost",
        f"mongodb://archiver:{SECRET}@localhost:notaport/",
        f"mongodb://archiver:{SECRET}@",
        f"mongodb://archiver:{SECRET}@localhost/?authMechanism=NOPE",
        f"mongodb://archiver:{SECRET}@localhost/?tls=maybe",
        f"mongodb://archiver:{SECRET}@localhost/?connectTimeoutMS=soon",
        f"mongodb://archiver:S3c@{SECRET}@localhost/",
        f"mongodb://archiver:{SECRET.replace('-', '%2D')}@localhost:x/",
    ],
)
def test_a_malformed_uri_never_prints_its_password(tmp_path, uri):
    for args in (("batch",),):
        result = run_cli(*args, env={"MONGODB_URI": uri, "LOG_LEVEL": "DEBUG"}, cwd=tmp_path)
        line = one_line_error(result, 2)
        assert "MONGODB_URI" in line
        for secret in (SECRET, "S3cretPW", SECRET.replace("-", "%2D")):
            assert secret not in result.stdout + result.stderr
    for log in tmp_path.glob("logs/*"):
        assert "S3cretPW" not in log.read_text()


def test_every_subcommand_keeps_a_malformed_uris_password(tmp_path):
    uri = f"mongodb:/archiver:{SECRET}@localhost/"
    for args in (("watch",), ("status",), ("verify",), ("rejects",), ("simulate", "--count", "1")):
        result = run_cli(*args, env={"MONGODB_URI": uri}, cwd=tmp_path)
        assert "MONGODB_URI" in one_line_error(result, 2)
        assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("--metrics-file", "/nonexistent/x.prom"), "--metrics-file /nonexistent/x.prom: the folder"),
        (("--metrics-file", "."), "is a folder"),
        (("--export-samples", "/nonexistent/s.json"), "--export-samples /nonexistent/s.json: the folder"),
        (("--export-samples", "same.json", "--metrics-file", "same.json"), "both name same.json"),
        (("--metrics-file", ".env"), "both name .env"),
    ],
)
def test_output_files_are_checked_before_anything_is_read_or_written(
    nx_client, nx_env, nx_settings, db_name, tmp_path, args, what
):
    database = nx_client[db_name]
    seed_database(database, nx_settings, 150, seed=5)
    (tmp_path / ".env").write_text("")
    before = snapshot(database)
    result = run_cli("batch", "--run", "--purge-source", *args, env=nx_env, cwd=tmp_path)
    assert what in one_line_error(result, 2)
    assert snapshot(database) == before


def test_an_unusable_log_folder_or_samples_file_is_exit_2(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = run_cli("batch", "--simulation", env={"LOG_DIR": "afile/logs"}, cwd=tmp_path)
    assert "LOG_DIR afile/logs: cannot create the log folder" in one_line_error(result, 2)
    result = run_cli(
        "--simulation", "--samples-file", "/nonexistent/s.json", cwd=tmp_path, script="simulate.py"
    )
    assert "--samples-file /nonexistent/s.json: the folder" in one_line_error(result, 2)


@pytest.mark.test_server_only(
    "the test server's replies to a wrong replica set name, TLS and its PLAIN account"
)
def test_connection_failures_name_the_host_and_the_cause(nx_server, tmp_path, monkeypatch, capsys):
    host = nx_server.uri.removeprefix("mongodb://").rstrip("/")
    cases = [
        ("mongodb://127.0.0.1:9/", "127.0.0.1:9: connection refused"),
        ("mongodb://no-such-host.invalid:27017/", "no-such-host.invalid:27017: host name not found (DNS)"),
        (
            f"mongodb+srv://archiver:{SECRET}@no-such-cluster.invalid/",
            "the SRV record of MONGODB_URI's host cannot be resolved",
        ),
        (f"{nx_server.uri}?tls=true", f"{host}: TLS handshake failed"),
        (
            nx_server.uri.replace("mongodb://", f"mongodb://{PLAIN_USER}:Wrong-{SECRET}@")
            + "?authMechanism=PLAIN",
            f"authentication failed: user '{PLAIN_USER}' (authSource admin) was refused",
        ),
    ]
    for uri, expected in cases:
        env = {"MONGODB_URI": uri, "MONGODB_TIMEOUT_MS": "500"}
        result = run_in_process("batch", env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
        line = one_line_error(result, 1)
        assert expected in line, line
        assert "unexpected" not in line
        assert "server selection timed out" not in line
        assert SECRET not in result.stdout + result.stderr
    assert PLAIN_PASSWORD  # the account exists: only the wrong password was refused


@pytest.fixture(scope="module")
def other_replica_set():
    """A test server answering ``hello`` as the primary of replica set ``rsOther``."""
    from teststand.nx_server import running_server

    with running_server({"NX_REPLICA_SET": "rsOther"}, prefix="nx-rs-other-") as started:
        yield started


@pytest.mark.test_server_only("test servers answering as a standalone and as replica set rsOther")
@pytest.mark.parametrize("command", [("batch", "--run"), ("watch",)])
def test_a_replica_set_name_no_server_has_is_a_setting_to_fix(
    standalone_server, other_replica_set, command, tmp_path, monkeypatch, capsys
):
    """replicaSet= naming a set that no host is in: the driver drops each host from its topology
    (SDAM: a member of another set, a standalone) and waits out the selection timeout; it was
    exit 1, "answered, but not as members", as if a server were down and not naming the set the
    server is in. A name that matches no member is configuration: exit 2, naming both names."""
    standalone = standalone_server.uri.removeprefix("mongodb://").rstrip("/")
    member = other_replica_set.uri.removeprefix("mongodb://").rstrip("/")
    cases = [
        (
            {"MONGODB_URI": f"{other_replica_set.uri}?replicaSet=rs0"},
            f"MONGODB_URI: replicaSet=rs0 matches no server that answered ({member} is a member "
            "of replica set 'rsOther'): set replicaSet=rsOther",
        ),
        (
            {"MONGODB_URI": f"{standalone_server.uri}?replicaSet=rs0"},
            f"MONGODB_URI: replicaSet=rs0 matches no server that answered ({standalone} is in no "
            "replica set (a standalone or a mongos)): remove replicaSet=",
        ),
        (
            {
                "MONGODB_URI": standalone_server.uri,
                "ARCHIVE_MONGODB_URI": other_replica_set.uri.replace(
                    "mongodb://", f"mongodb://archiver:{SECRET}@"
                )
                + "?replicaSet=rs0",
            },
            "ARCHIVE_MONGODB_URI: replicaSet=rs0 matches no server that answered",
        ),
    ]
    for env, expected in cases:
        if "ARCHIVE_MONGODB_URI" in env and command == ("watch",):
            continue  # the watcher's archive side is opened as batch's
        env = {**env, "MONGODB_TIMEOUT_MS": "2000"}
        result = run_in_process(*command, env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
        line = one_line_error(result, 2)
        assert expected in line, line
        assert SECRET not in result.stdout + result.stderr


@pytest.mark.test_server_only("a test server answering as replica set rsOther")
def test_a_seed_of_another_set_beside_one_that_refuses_is_a_server_down_not_a_wrong_name(
    other_replica_set, tmp_path, monkeypatch, capsys
):
    """A review: with replicaSet=rs0 and two seeds, one refusing (the set's member, down) and one
    answering as another set's member (a stale seed), the run said "replicaSet=rs0 matches no
    server", exit 2: a CronJob stops on a configuration error, where the set is only down (1)."""
    member = other_replica_set.uri.removeprefix("mongodb://").rstrip("/")
    env = {"MONGODB_URI": f"mongodb://127.0.0.1:9,{member}/?replicaSet=rs0", "MONGODB_TIMEOUT_MS": "2000"}
    result = run_in_process("batch", "--run", env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    line = one_line_error(result, 1)
    assert "127.0.0.1:9: connection refused" in line, line
    assert f"{member} is a member of replica set 'rsOther'" in line, line  # the clue, if mistyped


@pytest.mark.parametrize("command", [("doctor",), ("batch", "--run"), ("status",)])
def test_a_refused_connection_fails_a_one_shot_command_within_seconds(tmp_path, monkeypatch, capsys, command):
    """With the default timeouts (5 s), three tries took 17 s though the first already knew
    that nothing listens there; now a certain cause (refused, DNS, TLS) is said at once."""
    started = time.monotonic()
    result = run_in_process(
        *command,
        env={"MONGODB_URI": "mongodb://127.0.0.1:9/"},
        cwd=tmp_path,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    took = time.monotonic() - started
    assert "127.0.0.1:9: connection refused" in one_line_error(result, 1)
    assert took < 3, f"{command}: {took:.1f} s"


@pytest.mark.test_server_only("the test server's PLAIN account")
def test_an_auth_source_is_reported_as_the_user_typed_it(nx_server, tmp_path, monkeypatch, capsys):
    uri = nx_server.uri.replace("mongodb://", f"mongodb://{PLAIN_USER}:Wrong-{SECRET}@")
    for typed in ("authSource=amdin", "authsource=amdin", "AUTHSOURCE=amdin"):
        env = {"MONGODB_URI": f"{uri}?authMechanism=PLAIN&{typed}", "MONGODB_TIMEOUT_MS": "500"}
        result = run_in_process("status", env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
        assert f"user '{PLAIN_USER}' (authSource amdin) was refused" in one_line_error(result, 1), typed
