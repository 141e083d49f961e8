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


def erased_by_age_as_a70eb61_did(archive, ids: list, at: datetime) -> None:
    """ARCHIVE_PII_RETENTION's erasure as a70eb61 (the end of 2026-11-30's work) made it:
    ``git show a70eb61:order_archiver/mongodb/erasure.py``, ``erase_personal_data``: the client's
    name, e-mail and phone, the delivery address and its source copy set to null, marked
    ``forgotten_at``/``forgotten_by``; the courier's name kept (erased by age since d585069), the
    fingerprint left the order's before the erasure; no record of forgotten persons (the
    collection came with d585069, and with it the note that its upgrade ran)."""
    cleared = {f"client.{name}": None for name in ("nom", "prenom", "email", "telephone")}
    cleared |= {"adresse_livraison": None, "source.adresse_livraison": None}
    archive.update_many(
        {"_id": {"$in": ids}},
        {"$set": {**cleared, "forgotten_at": at, "forgotten_by": "ARCHIVE_PII_RETENTION"}},
    )


def test_status_and_doctor_count_an_earlier_versions_erasures_the_next_run_completes(
    nx_client, nx_env, nx_settings, db_name, tmp_path
):
    """Upgraded from a70eb61, status and doctor said ARCHIVE_PII_RETENTION's "none past it
    holds any" while verify said the old erasures still hold personal data (their couriers'
    names: exit 3) and the next batch --run erased them (its one-time upgrade of earlier
    erasures): the three now agree, and all say none once that run is done."""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 120, seed=3, p_anomalies=0)
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode == 0
    archive = database[nx_settings.archive_collection]
    database.drop_collection(nx_settings.forgotten_collection)  # a70eb61 had none
    ids = [d["_id"] for d in archive.find({"livreur.nom": {"$type": "string"}}, {"_id": 1}).limit(7)]
    assert len(ids) == 7
    erased_by_age_as_a70eb61_did(archive, ids, datetime.now(UTC) - timedelta(days=1))
    env = {**nx_env, "ARCHIVE_PII_RETENTION": "3650d"}  # the seeded orders are younger: none due

    verify = run_cli("verify", "--json", env=env, cwd=tmp_path)
    assert verify.returncode == 3, verify.stdout
    assert json.loads(verify.stdout)["unerased_earlier"] == len(ids), verify.stdout
    said = run_cli("verify", env=env, cwd=tmp_path).stdout  # and the way out
    assert "7 archived orders erased by an earlier version (couriers' names kept) in the archive: " in said
    assert "the next batch --run erases them again" in said
    status = run_cli("status", "--json", "--lookback", "3650d", env=env, cwd=tmp_path)
    assert json.loads(status.stdout)["pii_retention_pending"] == len(ids), status.stdout
    text = run_cli("status", "--lookback", "3650d", env=env, cwd=tmp_path).stdout
    assert "none past it holds any" not in text
    assert "7 archived orders erased by an earlier version" in text
    doctor = run_cli("doctor", env=env, cwd=tmp_path).stdout
    assert "no archived order past it holds any" not in doctor
    assert "7 archived orders erased by an earlier version" in doctor

    assert run_cli("batch", "--run", "-q", env=env, cwd=tmp_path).returncode == 0
    assert run_cli("verify", env=env, cwd=tmp_path).returncode == 0
    status = run_cli("status", "--json", "--lookback", "3650d", env=env, cwd=tmp_path)
    assert json.loads(status.stdout)["pii_retention_pending"] == 0
    assert "no archived order past it holds any" in run_cli("doctor", env=env, cwd=tmp_path).stdout
