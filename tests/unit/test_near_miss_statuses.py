"""Orders whose status only nearly is DELIVERED_STATUS (``Livrée``, ``livree``, `` livrée `` for
``livrée``) are never archived: DELIVERED_STATUS is matched exactly (its composed and decomposed
forms, nothing wider: the operator decides). They were archived by nothing and said by nothing;
status, doctor and batch now name each value, its orders (bounded) and what to do. On mongomock,
the command line in-process."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime

import pytest
from bson import ObjectId
from pymongo.errors import OperationFailure

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.cli import main as cli
from order_archiver.context import RunContext
from order_archiver.mongodb.connection import Clients
from order_archiver.settings import Settings

SETTINGS = Settings(simulation=True, log_dir="")
NFD = unicodedata.normalize("NFD", "livrée")
NFD_CAPITAL = unicodedata.normalize("NFD", "Livrée")
# (status, orders holding it): two delivered forms, five near misses, three others.
STATUSES = [
    ("livrée", 2),
    (NFD, 1),  # decomposed: delivered already (test_a_status_stored_decomposed_is_delivered...)
    ("Livrée", 3),
    ("livree", 1),
    ("LIVRÉE", 1),
    (" livrée ", 2),
    (NFD_CAPITAL, 1),
    ("annulée", 2),
    (7, 1),  # not a string: never a near miss, never a crash
    (None, 1),
]
NEAR_MISSES = {"Livrée": 3, "livree": 1, "LIVRÉE": 1, " livrée ": 2, NFD_CAPITAL: 1}


class Kept(Clients):
    """The test's mongomock client, for each command: closing it would lose the database."""

    def close(self) -> None:
        pass


def fill(orders) -> None:
    now = datetime.now(UTC)
    orders.insert_many(
        [
            {"_id": ObjectId(), "numero_commande": f"CMD-{i}-{n}", "status": status, "date_commande": now}
            for i, (status, count) in enumerate(STATUSES)
            for n in range(count)
        ]
    )


def on_the_command_line(mongo, monkeypatch) -> None:
    """Every command of ``cli.main`` on the test's mongomock deployment."""
    monkeypatch.setattr(cli, "_open_clients", lambda *_args, **_kwargs: Kept(mongo))
    load = cli.load_settings
    monkeypatch.setattr(
        cli, "load_settings", lambda env_file, overrides: load(env_file, {**overrides, "simulation": True})
    )


@pytest.fixture
def source(mongo, monkeypatch):
    """The command line on the test's mongomock deployment, its orders holding ``STATUSES``."""
    on_the_command_line(mongo, monkeypatch)
    orders = mongo[SETTINGS.mongodb_database][SETTINGS.orders_collection]
    fill(orders)
    orders.create_index([("status", 1), ("date_commande", 1)])  # as batch --run builds it
    return orders


@pytest.mark.parametrize(
    ("value", "near"),
    [
        ("Livrée", True),
        ("livree", True),
        ("LIVRÉE", True),
        (" livrée ", True),
        ("\tLIVREE\n", True),
        (NFD_CAPITAL, True),
        ("livrée", False),  # the delivered status itself
        (NFD, False),  # its decomposed form: archived already
        ("livrées", False),
        ("annulée", False),
        (7, False),
        (None, False),
        (["Livrée"], False),
    ],
)
def test_a_near_miss_reads_as_the_delivered_status_without_being_one_of_its_forms(value, near):
    from order_archiver.orders.enrichment import is_near_miss

    assert is_near_miss(value, "livrée") is near


def test_status_names_each_near_miss_with_its_orders_and_what_to_do(source, capsys):
    assert cli.main(["status", "--json"]) in (0, 3)
    found = json.loads(capsys.readouterr().out)["near_misses"]
    assert found["delivered_status"] == "livrée"
    assert {m["status"]: m["orders"] for m in found["found"]} == NEAR_MISSES
    assert not any(m["more"] for m in found["found"])
    assert (found["uncounted"], found["values_more"]) == (0, False)

    assert cli.main(["status"]) in (0, 3)
    lines = capsys.readouterr().out.splitlines()
    line = next(line for line in lines if line.startswith("never archived: "))
    assert "DELIVERED_STATUS 'livrée' only by case, accents or spaces" in line
    assert "'Livrée' (3 orders)" in line
    assert "' livrée ' (2 orders)" in line
    assert f"{NFD_CAPITAL!r} (1 order, decomposed (NFD))" in line
    assert "fix the status at the source, or set DELIVERED_STATUS" in line
    assert "'annulée'" not in line


def test_status_says_nothing_of_near_misses_when_there_are_none(mongo, monkeypatch, capsys):
    on_the_command_line(mongo, monkeypatch)
    orders = mongo[SETTINGS.mongodb_database][SETTINGS.orders_collection]
    orders.insert_many([{"status": "livrée"}, {"status": NFD}, {"status": 3}, {"status": None}, {}])
    assert cli.main(["status", "--json"]) in (0, 3)
    assert json.loads(capsys.readouterr().out)["near_misses"]["found"] == []
    assert cli.main(["status"]) in (0, 3)
    assert "never archived" not in capsys.readouterr().out


def test_the_reads_are_bounded_and_the_bounds_said(source, monkeypatch):
    """At most STATUS_VALUES_LOOKED_AT values looked at, NEAR_MISSES_COUNTED near misses
    counted, each count stopped at ORDERS_COUNTED_AT_MOST ("at least N")."""
    from order_archiver.mongodb import statuses

    limits: list[int | None] = []
    count = type(source).count_documents

    def counting(self, filter_, **options):
        limits.append(options.get("limit"))
        return count(self, filter_, **options)

    monkeypatch.setattr(type(source), "count_documents", counting)
    monkeypatch.setattr(statuses, "ORDERS_COUNTED_AT_MOST", 2)
    found = statuses.read_near_misses(source, "livrée", RunContext())
    assert {m.status: (m.orders, m.more) for m in found.found} == {
        status: (min(orders, 2), orders > 2) for status, orders in NEAR_MISSES.items()
    }
    assert limits == [3] * len(NEAR_MISSES)  # one count per near miss, each stopped one past the bound
    assert "'Livrée' (at least 2 orders)" in (found.line() or "")
    assert "' livrée ' (2 orders)" in (found.line() or "")

    monkeypatch.setattr(statuses, "NEAR_MISSES_COUNTED", 2)
    limits.clear()
    found = statuses.read_near_misses(source, "livrée", RunContext())
    assert (len(found.found), found.uncounted, len(limits)) == (2, len(NEAR_MISSES) - 2, 2)
    assert "and 3 other values" in (found.line() or "")

    monkeypatch.setattr(statuses, "STATUS_VALUES_LOOKED_AT", 3)
    values = [" livrée ", "a", "b", "Livrée"]  # the fourth is past the bound: not looked at
    bounded = statuses.near_misses(source, "livrée", values, RunContext())
    assert [m.status for m in bounded.found] == [" livrée "]
    assert bounded.values_more
    assert "(among the first 3 status values)" in (bounded.line() or "")


def test_batch_warns_of_the_near_misses_it_does_not_archive(source, capsys):
    report = BatchArchiver(source.database.client, SETTINGS, BatchOptions(run=True)).run()
    assert report.archived == 3  # livrée and its decomposed form: nothing wider
    warning = next(w for w in report.warnings if w.startswith("never archived: "))
    assert "'Livrée' (3 orders)" in warning
    assert "set DELIVERED_STATUS" in warning
    source.delete_many({"status": {"$in": list(NEAR_MISSES)}})
    again = BatchArchiver(source.database.client, SETTINGS, BatchOptions(run=True)).run()
    assert not [w for w in again.warnings if w.startswith("never archived: ")]


def test_doctor_warns_of_each_near_miss_and_passes_without(source):
    from order_archiver.operations.doctor import DoctorReport, delivered_status_check

    report = DoctorReport()
    delivered_status_check(report, source.database.client, SETTINGS, RunContext())
    (check,) = report.checks
    assert (check.name, check.outcome) == ("delivered status", "warn")
    assert "'LIVRÉE' (1 order)" in check.detail
    assert "set DELIVERED_STATUS" in check.detail
    source.delete_many({"status": {"$in": list(NEAR_MISSES)}})
    report = DoctorReport()
    delivered_status_check(report, source.database.client, SETTINGS, RunContext())
    assert [(c.outcome, c.detail) for c in report.checks] == [
        ("pass", "no status value differs from DELIVERED_STATUS 'livrée' only by case, accents or spaces")
    ]


def test_doctor_only_warns_when_the_status_values_cannot_be_read(source, monkeypatch):
    """A server that refuses the distinct (13 Unauthorized, 17217 distinct too big): not
    checked, a warning; nothing else of doctor depends on it."""

    def refused(self, key, *_args, **_kwargs):
        raise OperationFailure("distinct too big, 16mb cap", code=17217)

    from order_archiver.operations.doctor import DoctorReport, delivered_status_check

    monkeypatch.setattr(type(source), "distinct", refused)
    report = DoctorReport()
    delivered_status_check(report, source.database.client, SETTINGS, RunContext())
    (check,) = report.checks
    assert check.outcome == "warn"
    assert "not checked" in check.detail
    assert "17217" in check.detail


def test_a_fault_of_the_near_miss_read_fails_no_run(source, monkeypatch):
    """The read only informs, after the pass's writes (and, in a watcher, after a catch-up whose
    token still says catching_up: a failure there made it catch up again from the start). An
    AutoReconnect that outlasts its retries failed the run, exit 1, after it had archived
    everything (a review of the change)."""
    from pymongo.errors import AutoReconnect

    from order_archiver import retry

    monkeypatch.setattr(retry.Backoff, "next_delay", lambda self: 0.0)

    def lost(self, key, *_args, **_kwargs):
        raise AutoReconnect("connection reset")

    monkeypatch.setattr(type(source), "distinct", lost)
    report = BatchArchiver(source.database.client, SETTINGS, BatchOptions(run=True)).run()
    assert report.archived == 3
    assert not [w for w in report.warnings if w.startswith("never archived: ")]


def test_without_an_index_led_by_status_the_values_are_not_read(source, monkeypatch):
    """A distinct on ``status`` is an index walk only with an index led by it; without one (a
    first doctor, before batch --run built it) it reads every order: not read, "not checked"."""
    from order_archiver.operations.doctor import DoctorReport, delivered_status_check

    source.drop_indexes()
    read: list[str] = []
    monkeypatch.setattr(type(source), "distinct", lambda self, key, *a, **k: read.append(key) or [])
    report = DoctorReport()
    delivered_status_check(report, source.database.client, SETTINGS, RunContext())
    (check,) = report.checks
    assert check.outcome == "warn"
    assert check.detail == (
        "not checked yet: no index on the orders is led by status (batch --run builds "
        "{status, date_commande}; without it, reading the status values would read every order)"
    )  # one reason, said once (it was nested in "cannot be read (...): not checked")
    assert read == []


def test_a_dry_run_before_the_status_index_says_nothing_of_near_misses(source, caplog):
    """A first dry run (no index yet: the first --run builds it) logged at INFO "the orders'
    status values were not read (not checked yet: ...)": noise on a new user's first command."""
    import logging

    source.drop_indexes()
    with caplog.at_level(logging.INFO, logger="order_archiver"):
        report = BatchArchiver(source.database.client, SETTINGS, BatchOptions()).run()
    assert report.dry_run
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "status values" in r.getMessage()]
