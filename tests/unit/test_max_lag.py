"""#34 item 2: `batch --max-lag D` waits, before each chunk written or purged, while a data-bearing
secondary is more than D behind its primary; the report says how long and for whom. The
measurement is MongoDB's ``replSetGetStatus`` (each member's ``state`` and ``optimeDate``, the
manual's "replSetGetStatus"); where it cannot be had, the exact refusal pymongo raises degrades
to one warning."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from order_archiver.batch.job import BatchArchiver
from order_archiver.batch.lag_hold import LagHold
from order_archiver.batch.limits import LimitReached, RunLimits
from order_archiver.batch.report import BatchOptions, BatchReport
from order_archiver.errors import ArchiverError
from order_archiver.mongodb.replication_lag import LagProbe, MemberLag, secondaries_lag, worst_over
from order_archiver.settings import Settings
from tests.helpers import ManualClock, WaitMovesClock, seed_database, unique_index

NOW = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


def member(name: str, state: int, behind_s: float | None) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "state": state}
    if behind_s is not None:
        m["optimeDate"] = NOW - timedelta(seconds=behind_s)
    return m


def status(*members: dict[str, Any]) -> dict[str, Any]:
    return {"set": "rs0", "ok": 1.0, "members": list(members)}


PRIMARY = member("a:27017", 1, 0)


# --- the pure decision: who lags, by how much -------------------------------------------------


def test_only_secondaries_count_each_behind_the_primary():
    reply = status(
        PRIMARY,
        member("b:27017", 2, 30),
        member("c:27017", 2, 2),
        member("arbiter:27017", 7, None),  # an arbiter holds no data: no optimeDate
        member("down:27017", 8, 9999),  # down: its last known optime, but it serves nothing
        member("recovering:27017", 3, 500),
    )
    assert secondaries_lag(reply) == [MemberLag("b:27017", 30.0), MemberLag("c:27017", 2.0)]
    assert worst_over(secondaries_lag(reply), 10) == MemberLag("b:27017", 30.0)
    assert worst_over(secondaries_lag(reply), 1) == MemberLag("b:27017", 30.0)  # the furthest behind
    assert worst_over(secondaries_lag(reply), 30) is None  # "more than D"


def test_a_delayed_member_counts_its_lag_less_its_delay():
    reply = status(PRIMARY, member("backup:27017", 2, 3610))
    assert secondaries_lag(reply, {"backup:27017": 3600.0}) == [MemberLag("backup:27017", 10.0)]


def test_without_a_primary_nothing_lags():
    """During an election there is no primary to be behind (and nothing written)."""
    assert secondaries_lag(status(member("b:27017", 2, 30), member("c:27017", 2, 0))) == []


# --- the wait: bounded, interruptible, reported ------------------------------------------------


class Server:
    """A client whose ``admin.command`` answers replSetGetStatus from a list of lags (seconds the
    secondary is behind), the last one repeated; or raises what it is given."""

    def __init__(self, *lags: float | BaseException) -> None:
        self.lags = list(lags)
        self.sent: list[str] = []
        self.admin = SimpleNamespace(command=self.command)

    def command(self, name: str) -> dict[str, Any]:
        self.sent.append(name)
        if name == "replSetGetConfig":
            return {"ok": 1.0, "config": {"members": [{"host": "a:27017"}, {"host": "b:27017"}]}}
        lag = self.lags.pop(0) if len(self.lags) > 1 else self.lags[0]
        if isinstance(lag, BaseException):
            raise lag
        return status(PRIMARY, member("b:27017", 2, lag))


def hold_over(
    server: Server, max_lag_s: float = 10.0, **kwargs: Any
) -> tuple[LagHold, BatchReport, WaitMovesClock]:
    clock = ManualClock()
    stop = WaitMovesClock(clock)
    report = BatchReport(dry_run=False)
    warnings: list[str] = report.warnings
    probe = LagProbe(server, "source deployment", stop, warnings.append, clock=clock)  # type: ignore[arg-type]
    report.max_lag_s = max_lag_s
    return LagHold(max_lag_s, [probe], stop, report, clock=clock, **kwargs), report, stop


def test_a_hold_waits_while_a_secondary_lags_and_says_for_whom():
    hold, report, stop = hold_over(Server(30, 25, 12, 3))
    hold.hold()
    assert stop.waits == [1.0, 1.0, 1.0]  # looked again every POLL_S until it was 3 s behind
    assert (report.lag_waited_s, report.lag_waited_for) == (3.0, {"b:27017": 3.0})
    assert ", --max-lag 10s: waited 3.0s for lagging secondaries (b:27017 3.0s)" in report.summary_line()


def test_a_secondary_within_the_limit_costs_one_command_and_no_wait():
    server = Server(5)
    hold, report, stop = hold_over(server)
    hold.hold()
    hold.hold()  # the next chunk, within CACHE_S: the measurement kept
    assert (stop.waits, report.lag_waited_s) == ([], 0.0)
    assert server.sent == ["replSetGetStatus", "replSetGetConfig"]  # the configuration once


def test_a_hold_is_bounded_and_names_the_member():
    hold, report, _ = hold_over(Server(100), limit_s=5.0)
    with pytest.raises(ArchiverError, match=r"b:27017 has been more than 10s behind its primary for 5s"):
        hold.hold()
    assert report.lag_waited_s == 5.0


def test_a_stop_ends_the_hold_at_once_and_writes_nothing_more():
    hold, _, stop = hold_over(Server(100))
    stop.set()
    with pytest.raises(ArchiverError, match="interrupted while waiting for the secondaries"):
        hold.hold()
    assert stop.waits == [1.0]


def test_the_deadline_ends_a_hold_at_the_deadline_not_at_the_holds_limit():
    """#34: a run held by a lagging secondary under --max-runtime 5s ends at 5 s, cleanly
    (``LimitReached``: the run ends as at the boundary before the chunk held), not after the
    hold's hour and with an error."""
    hold, report, stop = hold_over(Server(100))
    hold.limits = RunLimits(timedelta(seconds=5.5), None, started=hold.clock(), clock=hold.clock)
    with pytest.raises(LimitReached) as reached:
        hold.hold()
    assert reached.value.limit == "max_runtime"
    assert sum(stop.waits) == pytest.approx(5.5)  # to the deadline itself, not one poll past it
    assert report.lag_waited_s == pytest.approx(5.5)


def test_a_stop_file_ends_a_hold(tmp_path):
    stop_file = tmp_path / "stop"
    hold, _, stop = hold_over(Server(100))
    hold.limits = RunLimits(None, str(stop_file), clock=hold.clock)
    hold.hold = _touch_after(hold.hold, stop, stop_file, waits=3)  # type: ignore[method-assign]
    with pytest.raises(LimitReached) as reached:
        hold.hold()
    assert reached.value.limit == "stop_file"
    assert len(stop.waits) == 3  # looked for at every poll: ended at the first one after it appeared


def _touch_after(hold: Any, stop: WaitMovesClock, path: Any, waits: int) -> Any:
    """``hold``, with ``path`` created once ``stop`` has waited ``waits`` times (an operator's
    ``touch`` during the hold)."""
    wait = stop.wait

    def waiting(timeout: float | None = None) -> bool:
        if len(stop.waits) + 1 >= waits:
            path.touch()
        return wait(timeout)

    stop.wait = waiting  # type: ignore[method-assign]
    return hold


def test_a_transient_failure_is_retried_not_taken_for_a_lag():
    server = Server(AutoReconnect("connection reset"), 0)
    hold, report, _ = hold_over(server)
    hold.hold()
    assert server.sent.count("replSetGetStatus") == 2
    assert report.warnings == []


# --- where it cannot measure: one warning, never an error ---------------------------------------

MONGOS = OperationFailure(
    "replSetGetStatus is not supported through mongos",
    details={"ok": 0.0, "errmsg": "replSetGetStatus is not supported through mongos", "info": "mongos"},
)


@pytest.mark.parametrize(
    ("refusal", "said"),
    [
        (
            OperationFailure(
                "not authorized on admin to execute command { replSetGetStatus: 1 }",
                code=13,
                details={"ok": 0.0, "code": 13, "codeName": "Unauthorized"},
            ),
            "may not run replSetGetStatus",
        ),
        (
            OperationFailure(
                "not running with --replSet",
                code=76,
                details={"ok": 0.0, "code": 76, "codeName": "NoReplicationEnabled"},
            ),
            "a standalone server has no secondaries",
        ),
        (MONGOS, "a sharded cluster (mongos does not report its shards' secondaries)"),
        (
            NotImplementedError("command is a valid Database method but is not implemented in Mongomock yet"),
            "the in-process simulation has no replication",
        ),
    ],
)
def test_what_cannot_be_measured_is_one_warning(refusal, said):
    server = Server(refusal)
    hold, report, stop = hold_over(server)
    for _ in range(5):  # five chunks
        hold.hold()
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("--max-lag is not applied to the source deployment: ")
    assert said in report.warnings[0]
    assert (server.sent, stop.waits) == (["replSetGetStatus"], [])  # asked once, never again


def test_a_run_on_the_simulation_warns_once_and_archives(mongo):
    settings = Settings(simulation=True, log_dir="")
    seed_database(mongo[settings.mongodb_database], settings, 200, seed=5, p_anomalies=0.0)
    options = BatchOptions(run=True, batch_size=20, max_lag=timedelta(seconds=5), purge_source=True)
    report = BatchArchiver(mongo, settings, options).run()
    assert report.archived > 0
    assert report.purged > 0
    assert [w for w in report.warnings if "--max-lag" in w] == [
        "--max-lag is not applied to the source deployment: the in-process simulation has no replication"
    ]
    assert report.as_dict()["max_lag_s"] == 5.0


# --- the command line and the setting ------------------------------------------------------------


@pytest.mark.parametrize("value", ["0s", "0d", "-5s", "soon", "10"])
def test_a_lag_of_zero_or_unreadable_is_refused_before_anything(value, capsys):
    from order_archiver.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["batch", "--simulation", "--run", "--max-lag", value])
    assert refused.value.code == 2
    assert "argument --max-lag: " in capsys.readouterr().err  # named, not "unrecognized"


def test_the_setting_is_refused_when_zero(monkeypatch, capsys):
    from order_archiver.cli.main import main

    monkeypatch.setenv("BATCH_MAX_LAG", "0s")
    assert main(["batch", "--simulation", "--run", "--count", "20"]) == 2
    assert "BATCH_MAX_LAG" in capsys.readouterr().err


def test_the_setting_gives_every_run_its_lag_and_the_flag_overrides_it(monkeypatch, capsys):
    from order_archiver.cli.main import main

    monkeypatch.setenv("BATCH_MAX_LAG", "30s")
    main(["batch", "--simulation", "--count", "50", "--json"])
    assert json.loads(capsys.readouterr().out)["max_lag_s"] == 30.0
    main(["batch", "--simulation", "--count", "50", "--json", "--max-lag", "2m"])
    out = json.loads(capsys.readouterr().out)
    assert (out["max_lag_s"], out["lag_waited_s"], out["lag_waited_for"]) == (120.0, 0.0, {})


# --- watch: its catch-up (a first start's backfill) is paced and held as batch is ----------------


def test_the_watchers_catch_up_holds_the_rate_and_the_lag(mongo, caplog):
    """#34 "for watch where it applies": a first start's catch-up can be a whole history. It is
    the batch path: BATCH_MAX_RATE / BATCH_MAX_LAG (watch --max-rate / --max-lag) apply to it."""
    from order_archiver.settings import Duration
    from order_archiver.watch.watcher import Watcher, WatchOptions

    settings = Settings(
        simulation=True, log_dir="", batch_size=20, batch_max_rate=400, batch_max_lag=Duration(seconds=5)
    )
    seed_database(mongo["livraison"], settings, 300, seed=4, p_anomalies=0.0)
    unique_index(mongo["livraison"][settings.archive_collection])
    caplog.set_level("INFO")
    watcher = Watcher(mongo, settings, WatchOptions())
    watcher._catch_up()
    assert watcher.stats.caught_up.archived > 0
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("catch-up done"))
    assert "held to --max-rate 400 orders read a second, already archived ones included (waited " in summary
    rate = re.search(r"s \(([\d.,]+) orders?/s", summary)
    assert rate is not None
    assert float(rate.group(1).replace(",", "")) <= 400  # over its pass: batch's pacer
    assert ", --max-lag 5s: not applied (see the warning)" in summary  # nothing measured: no claim
    lag_warnings = [r for r in caplog.records if "--max-lag is not applied" in r.getMessage()]
    assert len(lag_warnings) == 1


@pytest.mark.parametrize("flag", ["--max-rate", "--max-lag"])
def test_watch_refuses_a_limit_of_zero(flag, capsys):
    from order_archiver.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["watch", flag, "0"])
    assert refused.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err


def test_a_run_that_wrote_nothing_claims_no_lag_it_did_not_measure():
    """A new user's try: a run with nothing to write (nothing held, nothing measured, so no
    warning either) said "waited 0.0s for lagging secondaries (none lagged)"."""
    from order_archiver.batch.report import BatchReport

    report = BatchReport(dry_run=False)
    report.max_lag_s = 10.0
    assert ", --max-lag 10s: nothing written, nothing measured" in report.summary_line()
    report.lag_checks = 3
    assert ", --max-lag 10s: waited 0.0s for lagging secondaries (none lagged)" in report.summary_line()
