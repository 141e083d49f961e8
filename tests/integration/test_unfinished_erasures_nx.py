"""The erasures a forget left unfinished in the cold tier, read within a bound, at the wire: every
list sent to or read from the server is bounded, and a count past its bound says "at least".

Scaled down: ``UNFINISHED_READ_AT_MOST`` (1,000) lowered to 2, three persons marked
(``cold_pending``, as forget --run records a person before it rewrites their cold files; none
of them has a cold order, so each erasure finishes at once)."""

from __future__ import annotations

import json

import pytest
from bson import ObjectId

from order_archiver.cli.main import main
from order_archiver.mongodb.forgotten import ForgottenPersons
from order_archiver.orders.erasing import COURIER
from tests.helpers import seed_database

pytestmark = pytest.mark.integration

BOUND = 2


def test_status_says_at_least_past_the_bound_and_each_batch_run_finishes_that_many(
    nx_client, nx_settings, nx_env, tmp_path, monkeypatch, capsys
):
    """status names two of the three and says "at least 2" (``forgotten_unfinished_more``); a
    batch --run finishes two (one read of two), the next the third; status is then silent on it.
    Before, both read the latest 100 records whole, whatever their number."""
    cold = tmp_path / "cold"
    cold.mkdir()
    monkeypatch.setenv("ARCHIVE_COLD_URL", cold.as_uri())
    monkeypatch.setenv("ARCHIVE_COLD_AFTER", "365d")
    monkeypatch.setattr("order_archiver.operations.status.UNFINISHED_READ_AT_MOST", BOUND, raising=False)
    monkeypatch.setattr("order_archiver.cold.tier.UNFINISHED_READ_AT_MOST", BOUND, raising=False)
    database = nx_client[nx_settings.mongodb_database]
    seed_database(database, nx_settings, 40, seed=37, p_anomalies=0.0)
    record = ForgottenPersons(database[nx_settings.forgotten_collection])
    marked = [ObjectId() for _ in range(BOUND + 1)]
    for person in marked:
        record.record(COURIER, person, cold_pending=True)
    named = {f"livreur:{person}" for person in marked}

    def status() -> dict:
        capsys.readouterr()
        assert main(["status", "--json"]) in (0, 3)
        return json.loads(capsys.readouterr().out)

    def batch() -> dict:
        capsys.readouterr()
        assert main(["batch", "--run", "--json", "-q"]) == 0
        return json.loads(capsys.readouterr().out)

    said = status()
    assert len(said["forgotten_unfinished"]) == BOUND
    assert set(said["forgotten_unfinished"]) <= named
    assert said["forgotten_unfinished_more"] is True
    assert any(p.startswith(f"at least {BOUND} forgotten persons whose erasure") for p in said["problems"])

    assert batch()["cold"]["forgotten_finished"] == BOUND
    said = status()
    assert (len(said["forgotten_unfinished"]), said["forgotten_unfinished_more"]) == (1, False)
    assert any(p.startswith("1 forgotten person whose erasure") for p in said["problems"])
    assert batch()["cold"]["forgotten_finished"] == 1
    said = status()
    assert (said["forgotten_unfinished"], said["forgotten_unfinished_more"]) == ([], False)
    assert not [p for p in said["problems"] if "forgotten person" in p]
