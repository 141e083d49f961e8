"""Every command behind ``mongos``, at the wire: the test server answering as a sharded cluster's
router (``NX_MONGOS=1``, ``teststand/mongos.py``), a collection sharded (``NX_SHARDED_COLLECTIONS``).

The MongoDB behaviour the knob stands for (``src/mongo/s/commands/``, the manual, the SDAM
specification): ``hello`` answers ``msg: "isdbgrid"`` and no replica-set field (pymongo's topology
is Sharded); ``replSetGetStatus`` answers ``{ok: 0, errmsg: "replSetGetStatus is not supported
through mongos", info: "mongos"}`` with no code (a router does not report its shards' members);
``config.collections`` lists the sharded collections; before 5.1 an aggregate whose ``$lookup``
reads a sharded collection fails with 28769 "<ns> cannot be sharded".

The promise: each command works there, or refuses in one named line (exit 2) what cannot work,
before anything is written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pymongo
import pytest

from order_archiver.settings import ENV_VARS, Settings
from tests.conftest import ROOT, run_cli
from tests.helpers import (
    archived_ids,
    deliver,
    expected_archive_ids,
    pending_ids,
    run_in_process,
    seed_database,
    wait_for,
)
from teststand.nx_server import NxServer, running_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.test_server_only("the test server answering as mongos: NX_MONGOS"),
]


@pytest.fixture(scope="module")
def router() -> Iterator[NxServer]:
    """A sharded cluster of today (8.0) whose orders are sharded (on ``client_id``): allowed."""
    with running_server(
        {"NX_MONGOS": "1", "NX_SHARDED_COLLECTIONS": "Commande:client_id"}, prefix="nx-mongos-"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def router_5_0() -> Iterator[NxServer]:
    """A 5.0 cluster whose Menu is sharded: its ``$lookup`` cannot read it (28769)."""
    with running_server(
        {"NX_MONGOS": "1", "NX_MONGODB_VERSION": "5.0", "NX_SHARDED_COLLECTIONS": "Menu"},
        prefix="nx-mongos-50-",
    ) as server:
        yield server


def _env(server: NxServer, db_name: str, **extra: str) -> dict[str, str]:
    return {"MONGODB_URI": server.uri, "MONGODB_DATABASE": db_name, "LOG_DIR": "logs", **extra}


def _seeded(server: NxServer, db_name: str, count: int = 120):
    settings = Settings(mongodb_uri=server.uri, mongodb_database=db_name, log_dir="")
    client: pymongo.MongoClient = pymongo.MongoClient(
        server.uri, tz_aware=True, serverSelectionTimeoutMS=5000
    )
    dataset = seed_database(client[db_name], settings, count, seed=11, p_anomalies=0.0)
    return client, dataset


def _ok(result: subprocess.CompletedProcess[str], *codes: int) -> None:
    assert result.returncode in (codes or (0,)), (
        result.returncode,
        result.stdout[-2000:],
        result.stderr[-3000:],
    )
    assert "Traceback" not in result.stderr + result.stdout


def test_batch_in_every_mode_works_behind_mongos(router, db_name, tmp_path):
    client, dataset = _seeded(router, db_name)
    env = _env(router, db_name)
    archive = client[db_name]["Commande_archive"]
    with client:
        _ok(run_cli("batch", "-q", env=env, cwd=tmp_path))
        assert archive.count_documents({}) == 0  # a dry run
        for share in ("0/2", "1/2"):
            _ok(run_cli("batch", "--run", "--partition", share, "-q", env=env, cwd=tmp_path))
        assert archived_ids(client[db_name]) == expected_archive_ids(dataset)
        _ok(run_cli("batch", "--run", "-q", env=env, cwd=tmp_path))  # incremental
        _ok(run_cli("batch", "--run", "--full", "-q", env=env, cwd=tmp_path))
        purge = run_cli("batch", "--run", "--purge-source", "--json", env=env, cwd=tmp_path)
        _ok(purge)
        assert (
            client[db_name]["Commande"].count_documents({"_id": {"$in": list(expected_archive_ids(dataset))}})
            == 0
        )


def test_max_lag_behind_mongos_warns_once_and_archives(router, db_name, tmp_path):
    """mongos does not report its shards' members: the limit cannot be watched, said once."""
    client, dataset = _seeded(router, db_name)
    with client:
        result = run_cli(
            "batch", "--run", "--max-lag", "5s", "--json", env=_env(router, db_name), cwd=tmp_path
        )
        _ok(result)
        report = json.loads(result.stdout)
        assert report["archived"] == len(expected_archive_ids(dataset))
        lag_warnings = [w for w in report["warnings"] if "--max-lag" in w]
        assert len(lag_warnings) == 1
        assert "sharded cluster" in lag_warnings[0]


def test_operations_work_behind_mongos(router, db_name, tmp_path):
    client, _ = _seeded(router, db_name)
    env = _env(router, db_name)
    with client:
        _ok(run_cli("batch", "--run", "-q", env=env, cwd=tmp_path))
        status = run_cli("status", "--json", env=env, cwd=tmp_path)
        _ok(status, 0, 3)
        verify = run_cli("verify", "--json", env=env, cwd=tmp_path)
        _ok(verify)
        _ok(run_cli("rejects", "--json", env=env, cwd=tmp_path))
        archived = client[db_name]["Commande_archive"].find_one({})
        assert archived is not None
        numero = archived["numero_commande"]
        _ok(run_cli("find", "--numero", numero, "--json", env=env, cwd=tmp_path))
        _ok(run_cli("restore", "--numero", numero, env=env, cwd=tmp_path))
        _ok(run_cli("restore", "--numero", numero, "--run", env=env, cwd=tmp_path))
        client_id = str(archived["client"]["id"]) if archived.get("client") else str(archived["client_id"])
        _ok(run_cli("forget", "--client", client_id, env=env, cwd=tmp_path))
        _ok(run_cli("forget", "--client", client_id, "--run", env=env, cwd=tmp_path))


def test_a_replica_set_uri_at_a_router_is_named(router, db_name, tmp_path):
    """``replicaSet=`` in a URI that reaches a mongos: the driver drops it from the set's
    topology (SDAM); one line naming the fix, exit 2, not a selection timeout."""
    uri = router.uri + "?replicaSet=rs0&serverSelectionTimeoutMS=2000"
    result = run_cli("batch", env={**_env(router, db_name), "MONGODB_URI": uri}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "is in no replica set (a standalone or a mongos)): remove replicaSet=" in result.stderr


def test_doctor_says_sharded_cluster(router, db_name, tmp_path):
    client, _ = _seeded(router, db_name, 20)
    with client:
        result = run_cli("doctor", env=_env(router, db_name), cwd=tmp_path)
    _ok(result, 0, 3)
    assert "sharded cluster (connected to mongos)" in result.stdout
    assert "replica set" not in result.stdout.split("topology", 1)[1].splitlines()[0]
    assert "max lag" not in result.stdout  # BATCH_MAX_LAG unset: nothing to say


def test_doctor_says_max_lag_cannot_be_watched_through_mongos(router, db_name, tmp_path):
    """BATCH_MAX_LAG set: mongos answers replSetGetStatus "not supported through mongos", so a
    run will warn and not wait; doctor says so before, instead of "ready" and nothing."""
    client, _ = _seeded(router, db_name, 20)
    with client:
        result = run_cli("doctor", env=_env(router, db_name, BATCH_MAX_LAG="5s"), cwd=tmp_path)
    _ok(result, 0, 3)
    lines = [line for line in result.stdout.splitlines() if "max lag" in line]
    assert lines == [
        "warn max lag: BATCH_MAX_LAG 5s cannot be watched here: mongos does not report its shards' members "
        "(replSetGetStatus is not supported through mongos); batch warns once and does not wait"
    ]


def test_watch_works_behind_mongos(router, db_name, tmp_path):
    """A change stream through mongos (it merges the shards' streams): each delivery archived."""
    client, dataset = _seeded(router, db_name, 300)
    env = _env(router, db_name, BATCH_MAX_LAG="5s")  # its catch-up is held by the lag: not here
    _ok(run_cli("batch", "--run", "-q", "--limit", "10", env=env, cwd=tmp_path))  # the archive's indexes
    base = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "watch", "--token-file", str(tmp_path / "token.json")],
        env={**base, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (tmp_path / "token.json").exists(), timeout=60)
        delivered = pending_ids(dataset, 5)
        deliver(client[db_name]["Commande"], delivered)
        wait_for(lambda: set(delivered) <= archived_ids(client[db_name]), timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    with client:
        assert archived_ids(client[db_name]) >= expected_archive_ids(dataset)  # the catch-up too
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    warned = [line for line in err.splitlines() if "--max-lag is not applied" in line]
    assert len(warned) == 1
    assert "a sharded cluster (mongos does not report its shards' secondaries)" in warned[0]


# -- before 5.1, a sharded reference collection: refused in one named line, nothing written


REFUSAL = "sharded cluster: "


def _refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(
        ".Menu is sharded: $lookup reads a sharded collection from MongoDB 5.1" in line for line in lines
    ), result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("batch",),
        ("batch", "--run"),
        ("batch", "--run", "--purge-source"),
        ("verify",),
        ("restore", "--numero", "CMD-000001", "--run"),
        ("forget", "--client", "000000000000000000000000", "--run"),
        ("find", "--numero", "CMD-000001"),
    ],
    ids=lambda args: "-".join(a.strip("-") for a in args),
)
def test_a_sharded_reference_collection_before_5_1_is_refused_by_name(router_5_0, db_name, tmp_path, args):
    client, _ = _seeded(router_5_0, db_name, 30)
    with client:
        before = {
            name: client[db_name][name].count_documents({})
            for name in client[db_name].list_collection_names()
        }
        result = run_cli(*args, env=_env(router_5_0, db_name), cwd=tmp_path)
        after = {
            name: client[db_name][name].count_documents({})
            for name in client[db_name].list_collection_names()
        }
    _refused(result)
    assert after == before  # nothing written, no collection created


def test_watch_with_a_sharded_reference_collection_before_5_1_is_refused_by_name(
    router_5_0, db_name, tmp_path
):
    client, _ = _seeded(router_5_0, db_name, 30)
    with client:
        result = run_cli(
            "watch",
            "--token-file",
            str(tmp_path / "t.json"),
            env=_env(router_5_0, db_name),
            cwd=tmp_path,
            timeout=60,
        )
    _refused(result)
    assert not (tmp_path / "t.json").exists()


def test_status_names_a_layout_every_other_command_refuses(router_5_0, db_name, tmp_path):
    """status reads (it can work there) but must not call healthy, or blame a missing index "the
    next batch --run builds", a cluster where batch, watch and the rest refuse to start."""
    client, _ = _seeded(router_5_0, db_name, 30)
    with client:
        result = run_cli("status", env=_env(router_5_0, db_name), cwd=tmp_path)
        as_json = run_cli("status", "--json", env=_env(router_5_0, db_name), cwd=tmp_path)
    assert result.returncode == 3, result.stdout
    assert "Traceback" not in result.stderr
    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict.startswith(
        f"UNHEALTHY: sharded cluster: {db_name}.Menu is sharded: $lookup reads a sharded"
    )
    assert "(batch, watch, verify, restore, forget and find refuse to start)" in verdict
    assert json.loads(as_json.stdout)["problems"][0].startswith(f"sharded cluster: {db_name}.Menu is sharded")


def test_doctor_fails_the_sharding_check_before_5_1(router_5_0, db_name, tmp_path):
    client, _ = _seeded(router_5_0, db_name, 30)
    with client:
        result = run_cli("doctor", env=_env(router_5_0, db_name), cwd=tmp_path)
    assert result.returncode == 3, result.stdout
    assert "Menu is sharded" in result.stdout


# -- the record of forgotten persons sharded on another key than _id: its upserts by _id cannot be
# targeted (61 ShardKeyNotFound)


@pytest.fixture(scope="module")
def router_forgotten_sharded() -> Iterator[NxServer]:
    with running_server(
        {"NX_MONGOS": "1", "NX_SHARDED_COLLECTIONS": "archiver_forgotten:kind"}, prefix="nx-mongos-fg-"
    ) as server:
        yield server


@pytest.mark.parametrize("args", [("forget", "--run"), ("batch", "--run")], ids=["forget", "batch"])
def test_a_forgotten_record_sharded_on_another_key_is_refused_by_name(
    router_forgotten_sharded, db_name, tmp_path, args
):
    """Its upserts select by ``_id`` alone: mongos cannot target them (61), as the checkpoints'."""
    client, dataset = _seeded(router_forgotten_sharded, db_name, 60)
    env = _env(router_forgotten_sharded, db_name)
    with client:
        person = str(dataset.orders[0]["client_id"])
        before = {
            name: list(client[db_name][name].find()) for name in client[db_name].list_collection_names()
        }
        extra = ("--client", person) if args[0] == "forget" else ()
        result = run_cli(*args, *extra, env=env, cwd=tmp_path)
        after = {name: list(client[db_name][name].find()) for name in client[db_name].list_collection_names()}
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    assert "archiver_forgotten (FORGOTTEN_COLLECTION) is sharded on {'kind': 1}" in result.stderr
    assert after == before  # nothing written


@pytest.mark.parametrize("args", [("batch",), ("batch", "--run"), ("verify",)], ids=lambda a: "-".join(a))
def test_a_lookup_refused_past_an_unread_layout_is_named_exit_2(
    router_5_0, db_name, tmp_path, monkeypatch, capsys, args
):
    """A user who may not read config.collections (mongos: 13; the shipped roles grant it now, an
    older role does not): the start-up check is skipped with a warning, and the first enrichment
    meets 28769 "<ns> cannot be sharded" at the wire. One line naming the fix, exit 2, not "MongoDB
    error 28769" and exit 1. (The refusal of config.collections is made in process: the test server
    has no access control.)"""
    from pymongo.errors import OperationFailure

    from order_archiver.mongodb import deployment

    def refused(*_: object) -> dict:
        raise OperationFailure("not authorized on config to execute command", code=13)

    monkeypatch.setattr(deployment, "sharded_collections", refused)
    client, _ = _seeded(router_5_0, db_name, 30)
    with client:
        result = run_in_process(
            *args, env=_env(router_5_0, db_name), cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
        )
        assert client[db_name]["Commande_archive"].count_documents({}) == 0
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    assert (
        f"error: sharded cluster: {db_name}.Menu cannot be sharded: $lookup reads a sharded collection"
        in result.stderr
    )
