"""`batch --run` from a scheduler, night after night: the second run reads what was delivered
since the first, late deliveries included; `--full` walks everything; `status` shows the
high-water mark. The CLI runs as a subprocess on nx-27017."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.conftest import run_cli
from tests.helpers import assert_no_duplicates, deliver, expected_archive_ids, pending_ids, seed_database

pytestmark = pytest.mark.e2e


def test_scheduled_runs_read_what_is_new_late_deliveries_included(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 1500, seed=21, p_anomalies=0.0)

    def batch(*args: str) -> dict:
        result = run_cli("batch", "--run", "--json", *args, env=nx_env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    first = batch()
    assert (first["mode"], first["since"]) == ("full", None)
    # Late deliveries: orders created before the first run (small _ids, old date_commande),
    # delivered now; and orders created and delivered since.
    late = pending_ids(dataset, 30)
    deliver(database["Commande"], late)
    template = {k: v for k, v in dataset.orders[0].items() if k not in ("_id", "_dirty")}
    now = datetime.now(UTC)
    new = (
        database["Commande"]
        .insert_many(
            [
                {
                    **template,
                    "numero_commande": f"NEW-{n}",
                    "status": "livrée",
                    "date_commande": now,
                    "date_livraison": now,
                }
                for n in range(20)
            ]
        )
        .inserted_ids
    )
    second = batch()
    assert second["mode"] == "incremental"
    assert second["since"] is not None
    assert (second["archived"], second["already_archived"], second["scanned"]) == (50, 0, 50)
    archive = database["Commande_archive"]
    assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected_archive_ids(dataset) | set(
        late
    ) | set(new)

    status = json.loads(run_cli("status", "--json", env=nx_env, cwd=tmp_path).stdout)
    assert status["batch"]["high_water"] is not None
    assert status["batch"]["pass_in_progress"] is False
    assert "the next run reads deliveries since" in run_cli("status", env=nx_env, cwd=tmp_path).stdout

    full = batch("--full")
    assert (full["mode"], full["pass_reason"], full["archived"]) == ("full", "--full", 0)
    assert full["already_archived"] == len(expected_archive_ids(dataset)) + 50
    assert_no_duplicates(archive)
