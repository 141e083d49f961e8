"""State an earlier version wrote, read by this one (docs/deployment.md, "Upgrading": "a new
version reads what the one before wrote"). Each test writes the old state as that version wrote
it, naming the commit, rather than running old code in the suite."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import run_cli
from tests.helpers import seed_database

pytestmark = pytest.mark.e2e


def old_rejects_entry(order: dict, first_source: str, last_source: str, seen: datetime) -> dict:
    """A rejects entry as 844068a (the start of 2026-12-07's work) wrote it:
    ``git show 844068a:order_archiver/mongodb/rejects.py``, ``RejectStore.record``: ``first_run``
    (the run's uuid), ``first_source`` and ``times_seen`` incremented; no ``counted_by`` (since
    5362585) and no news flags (``batch_news`` since 425cee6). Its batch never told a rejection its
    watcher had listed first (a batch run only ever found it listed)."""
    return {
        "_id": order["_id"],
        "reason": "numero_commande missing",
        "numero_commande": None,
        "source": last_source,
        "last_seen": seen,
        "first_seen": seen,
        "first_run": "45697a357dd54680a0509285eec7e28f",
        "first_source": first_source,
        "times_seen": 2 if first_source != last_source else 1,
    }


def test_a_rejection_an_old_watcher_listed_first_is_news_to_the_first_batch_run_after_the_upgrade(
    nx_client, nx_env, nx_settings, db_name, tmp_path
):
    """The documented upgrade replaces batch first (step 2) while the old watcher runs on
    (step 3): an invalid order it listed at its delivery was no news to the new batch (exit 0,
    -q silent, rejected_new 0), though this version tells a watcher's listing to the next batch
    run. Entries the old batch listed first were told by it: known, no exit 3 for them."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 400, seed=7, p_anomalies=0.15)
    invalid = [
        o for o in dataset.orders if o["status"] == "livrée" and o.get("_dirty") == "numero_commande_missing"
    ]
    assert len(invalid) >= 3
    by_watcher, *by_batch = invalid
    seen = datetime.now(UTC) - timedelta(hours=1)
    rejects = database[nx_settings.rejects_collection]
    rejects.insert_many(
        [old_rejects_entry(by_watcher, "watch", "watch", seen)]
        # The old batch listed these (told, exit 3 then); its watcher's catch-up met them again.
        + [old_rejects_entry(order, "batch", "watch", seen) for order in by_batch]
    )

    dry = run_cli("batch", "--json", env=nx_env, cwd=tmp_path)
    assert dry.returncode == 3, dry.stderr
    assert json.loads(dry.stdout)["rejected_new"] == 1  # the dry run's figure is the run's

    first = run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path)
    report = json.loads(first.stdout)
    assert first.returncode == 3, first.stderr
    assert report["rejected"] == len(invalid)
    assert report["rejected_new"] == 1
    assert str(by_watcher["_id"]) in first.stderr
    assert all(str(o["_id"]) not in first.stderr for o in by_batch)

    again = run_cli("batch", "--run", "--json", env=nx_env, cwd=tmp_path)  # told once: no storm
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rejected_new"] == 0
    listed = json.loads(run_cli("rejects", "--json", "--all", env=nx_env, cwd=tmp_path).stdout)
    assert {e["id"] for e in listed["rejected"]} == {str(o["_id"]) for o in invalid}
