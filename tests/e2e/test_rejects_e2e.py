"""Rejected orders through the command line: recorded once, listed, left out of the backlog,
exit 3 only for new ones, and gone from the list once fixed at the source and archived."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.conftest import run_cli
from tests.helpers import delivered_rejects, expected_archive_ids, seed_database

pytestmark = pytest.mark.e2e

EVERYTHING = ("--lookback", "3650d", "--max-backlog-age", "1s")  # the seeded dates are past


def rejected_ids(dataset) -> set:
    return {
        o["_id"]
        for o in dataset.orders
        if o["status"] == "livrée" and o.get("_dirty") == "numero_commande_missing"
    }


def test_a_rejected_order_is_listed_once_and_fails_no_later_run(
    nx_client, nx_env, nx_settings, db_name, tmp_path
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 400, seed=7, p_anomalies=0.15)
    bad = rejected_ids(dataset)
    assert len(bad) == delivered_rejects(dataset) >= 2

    dry = run_cli("batch", "--json", env=nx_env, cwd=tmp_path)
    assert dry.returncode == 3, dry.stderr  # new invalid orders found, even by a dry run
    assert json.loads(dry.stdout)["rejected_new"] == len(bad)
    assert database["archiver_rejects"].count_documents({}) == 0  # a dry run writes nothing

    first = run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path)
    report = json.loads(first.stdout)
    assert first.returncode == 3, first.stderr
    assert report["rejected"] == report["rejected_new"] == len(bad)
    assert report["archived"] + report["already_archived"] + report["rejected"] == report["delivered"]
    assert first.stderr.count("order rejected") == len(bad)

    listed = run_cli("rejects", "--json", env=nx_env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert entries["total"] == len(bad)
    assert {e["id"] for e in entries["rejected"]} == {str(i) for i in bad}
    entry = entries["rejected"][0]
    assert entry["reason"] == "numero_commande missing"
    assert entry["source"] == "batch"
    assert entry["first_seen"].endswith("+00:00")
    assert "T" in entry["first_seen"]

    second = run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path)
    report = json.loads(second.stdout)
    assert second.returncode == 0, second.stderr  # known rejects: the nightly job stays green
    assert report["rejected"] == len(bad)
    assert report["rejected_new"] == 0
    assert "order rejected" not in second.stderr  # not logged again at the default level
    assert run_cli("batch", env=nx_env, cwd=tmp_path).returncode == 0  # nor a dry run

    # status: rejected orders are listed, and are not backlog (healthy, exit 0).
    status = run_cli("status", "--json", *EVERYTHING, env=nx_env, cwd=tmp_path)
    state = json.loads(status.stdout)
    assert status.returncode == 0, status.stdout
    assert state["backlog"] == 0
    assert state["rejected"] == len(bad)
    assert state["healthy"]
    assert "T" in state["checked_at"]
    assert state["checked_at"].endswith("+00:00")
    text = run_cli("status", *EVERYTHING, env=nx_env, cwd=tmp_path).stdout
    assert f"rejected orders (invalid, not archived until fixed at the source): {len(bad)}" in text

    # Fixed at the source: archived by the next run, gone from the list.
    fixed = sorted(bad)[0]
    database["Commande"].update_one({"_id": fixed}, {"$set": {"numero_commande": "CMD-FIXED-1"}})
    third = run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path)
    report = json.loads(third.stdout)
    assert third.returncode == 0
    assert report["archived"] == 1
    assert database["Commande_archive"].find_one({"_id": fixed})["numero_commande"] == "CMD-FIXED-1"
    assert json.loads(run_cli("rejects", "--json", env=nx_env, cwd=tmp_path).stdout)["total"] == len(bad) - 1
    assert database["archiver_rejects"].find_one({"_id": fixed}) is None  # pruned by that run
    archived = {d["_id"] for d in database["Commande_archive"].find({}, {"_id": 1})}
    assert archived == expected_archive_ids(dataset) | {fixed}


def test_a_new_invalid_order_after_known_ones_is_exit_3_again(
    nx_client, nx_env, nx_settings, db_name, tmp_path
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=8, p_anomalies=0.15)
    assert rejected_ids(dataset)
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode == 3
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode == 0
    template = next(o for o in dataset.orders if o["status"] == "livrée" and "_dirty" not in o)
    invalid = {k: v for k, v in template.items() if k not in ("_id", "_dirty", "numero_commande")}
    database["Commande"].insert_one({**invalid, "date_livraison": datetime.now(UTC)})  # delivered now
    result = run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path)
    assert result.returncode == 3
    assert json.loads(result.stdout)["rejected_new"] == 1
