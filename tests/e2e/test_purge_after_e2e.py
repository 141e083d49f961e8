"""PURGE_AFTER (#25 item 3) as a user runs it, on the test server: every delivered order is
archived, only those delivered longer ago than PURGE_AFTER leave the source, and status says
what the next purge would move."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import run_cli
from tests.helpers import archived_ids, expected_archive_ids, seed_database

pytestmark = pytest.mark.e2e


def test_purge_after_moves_only_the_old_deliveries(nx_client, nx_settings, nx_env, db_name, tmp_path):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=31, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset), key=str)
    recent, old = delivered[::2], delivered[1::2]
    now = datetime.now(UTC)
    database["Commande"].update_many(
        {"_id": {"$in": recent}}, {"$set": {"date_livraison": now - timedelta(hours=20)}}
    )
    database["Commande"].update_many(
        {"_id": {"$in": old}}, {"$set": {"date_livraison": now - timedelta(days=9)}}
    )
    env = {**nx_env, "PURGE_AFTER": "2d"}

    status = run_cli("status", "--json", env=env, cwd=tmp_path)
    assert json.loads(status.stdout)["purge_movable"] == len(old), status.stderr
    dry = run_cli("batch", "--purge-source", "--json", "-q", env=env, cwd=tmp_path)
    assert json.loads(dry.stdout)["would_purge"] == len(old), dry.stderr

    result = run_cli("batch", "--run", "--purge-source", "--json", "-q", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["archived"], report["purged"]) == (len(delivered), len(old))
    assert archived_ids(database) == set(delivered)
    remaining = {d["_id"] for d in database["Commande"].find({}, {"_id": 1})}
    assert set(recent) <= remaining
    assert not set(old) & remaining

    bad = run_cli("batch", "--run", "--purge-source", env={**nx_env, "PURGE_AFTER": "soon"}, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: PURGE_AFTER: expected a duration like 90s, 15m, 24h or 7d; got 'soon'"
    ]
