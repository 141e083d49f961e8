"""`batch --partition K/N` (#34 item 5): the share function (pure), its parsing, and N runs on
mongomock making the archive one run makes, each purge within its share. End to end (N CLI
processes on one test server, one killed and restarted): tests/e2e/test_partition_e2e.py."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime

import pytest
from bson import Int64, ObjectId

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.batch.partition import batch_checkpoint_key
from order_archiver.context import RunContext
from order_archiver.mongodb.checkpoint import checkpoint_key
from order_archiver.orders.partition import Partition, share_of
from order_archiver.settings import load_settings, parse_partition
from tests.helpers import expected_archive_ids, seed_database

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


# --- the share function ---------------------------------------------------------------------


def test_the_share_of_an_id_is_pinned():
    """The function may never change: a share's checkpoint and purge rely on each order staying
    in its share from one version to the next (a changed hash would skip or repeat orders)."""
    assert [share_of(ObjectId("65a1b2c3d4e5f60718293a4b"), n) for n in (2, 3, 4, 7)] == [1, 1, 1, 4]
    assert [share_of("CMD-000123", 4), share_of(12345, 4), share_of(Int64(12345), 4)] == [1, 0, 3]


def test_every_id_is_in_exactly_one_share_and_the_shares_are_even():
    # As one process makes them in one second: one timestamp, one random part, counters in a row
    # (fixed, so that the figures are too: a hash's spread is not the test's to draw again).
    ids = [ObjectId(bytes.fromhex("65a1b2c3" + "0a1b2c3d4e") + n.to_bytes(3, "big")) for n in range(20_000)]
    for count in (1, 2, 3, 4, 8):
        partitions = [Partition(k, count) for k in range(count)]
        owners = [[p.owns(one) for p in partitions].count(True) for one in ids]
        assert set(owners) == {1}
        sizes = Counter(share_of(one, count) for one in ids)
        assert sorted(sizes) == list(range(count))
        assert max(sizes.values()) / min(sizes.values()) < 1.1, sizes
    assert Partition(1, 4).owned(ids[:400]) == [one for one in ids[:400] if share_of(one, 4) == 1]


def test_ids_of_every_type_an_order_may_have_get_a_share():
    dirty = ["CMD-1", 7, Int64(7), 7.5, datetime(2026, 1, 1, tzinfo=UTC), {"a": 1}, None, b"\x01"]
    assert all(0 <= share_of(one, 3) < 3 for one in dirty)


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("0/1", (0, 1)), ("3/4", (3, 4)), (" 1 / 2 ", (1, 2)), ("15/16", (15, 16))]
)
def test_a_partition_is_k_of_n(text, expected):
    assert parse_partition(text) == expected
    assert str(Partition(*parse_partition(text))) == "{}/{}".format(*expected)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("4/4", "0 to 3"),
        ("-1/3", "expected K/N"),
        ("a/b", "expected K/N"),
        ("0/0", "N at least 1"),
        ("2/10001", "N at most 1000"),  # a new user's try: accepted, each share reading every _id
        ("1", "expected K/N"),
        ("\u00b2/3", "expected K/N"),  # a digit to str.isdigit, not to int(): one line, not int()'s
        ("$(JOB_COMPLETION_INDEX)/4", "define JOB_COMPLETION_INDEX"),
    ],
)
def test_a_partition_outside_its_range_is_refused_with_its_reason(text, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_partition(text)


@pytest.mark.parametrize(
    "value", ["--partition=4/4", "--partition=-1/3", "--partition=a/b", "--partition=0/0"]
)
def test_the_command_line_refuses_them_exit_2_naming_the_flag(value, capsys):
    from order_archiver.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["batch", "--simulation", "--run", value])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "--partition" in err
    assert "Traceback" not in err


def test_a_negative_share_after_a_space_is_read_as_the_flags_value(capsys):
    """`--partition -1/3` said argparse's "expected one argument" (it took -1/3 for a flag),
    not what is wrong with the value."""
    from order_archiver.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["batch", "--simulation", "--run", "--partition", "-1/3"])
    assert refused.value.code == 2
    assert "argument --partition: expected K/N" in capsys.readouterr().err


def test_the_setting_refused_names_itself_and_the_flag_overrides_it(monkeypatch, capsys):
    from order_archiver.errors import ConfigError

    with pytest.raises(ConfigError, match="BATCH_PARTITION"):
        load_settings(environ={"BATCH_PARTITION": "4/4", "MONGODB_URI": "mongodb://h"})
    settings, _ = load_settings(environ={"BATCH_PARTITION": "2/4", "MONGODB_URI": "mongodb://h"})
    assert settings.batch_partition == (2, 4)

    import json

    from order_archiver.cli.main import main

    monkeypatch.setenv("BATCH_PARTITION", "1/3")
    main(["batch", "--simulation", "--count", "60", "--json"])
    assert json.loads(capsys.readouterr().out)["partition"] == "1/3"
    main(["batch", "--simulation", "--count", "60", "--json", "--partition", "0/2"])
    assert json.loads(capsys.readouterr().out)["partition"] == "0/2"
    main(["batch", "--simulation", "--count", "60", "--run", "--partition", "1/2"])
    assert "batch 1/2 done: " in capsys.readouterr().out  # which of N the summary is


# --- N runs make one archive ------------------------------------------------------------------


def run(mongo, settings, **options):
    options.setdefault("run", True)
    options.setdefault("batch_size", 25)
    return BatchArchiver(
        mongo,
        settings,
        BatchOptions(**options),
        context=RunContext(clock=lambda: NOW),
        server_clock=lambda: NOW,
    ).run()


def test_each_share_has_its_own_checkpoint_and_one_without_keeps_its_key(settings):
    plain = batch_checkpoint_key(settings, BatchOptions())
    assert plain == checkpoint_key(settings, "batch", None, None)  # existing checkpoints still resume
    keys = {batch_checkpoint_key(settings, BatchOptions(partition=Partition(k, 4))) for k in range(4)}
    assert len(keys) == 4
    assert plain not in keys


def test_n_shares_archive_what_one_run_does_each_exactly_its_own(mongo, settings):
    dataset = seed_database(mongo[settings.mongodb_database], settings, 400, p_anomalies=0.15)
    archive = mongo[settings.archive_db_name][settings.archive_collection]
    expected = expected_archive_ids(dataset)
    for k in range(3):
        before = {d["_id"] for d in archive.find({}, {"_id": 1})}
        report = run(mongo, settings, partition=Partition(k, 3))
        added = {d["_id"] for d in archive.find({}, {"_id": 1})} - before
        assert added == {one for one in expected if share_of(one, 3) == k}
        assert report.archived == len(added)
        assert report.partition == f"{k}/3"
    assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected
    checkpoints = mongo[settings.archive_db_name][settings.checkpoint_collection]
    assert checkpoints.count_documents({"_id": {"$regex": "-of-3$"}, "kind": "batch"}) == 3
    again = run(mongo, settings, partition=Partition(1, 3), full=True)  # --full: the share again
    # The server skipped the archived ones: gone through all the same (scanned, already archived)
    share = {one for one in expected if share_of(one, 3) == 1}
    assert (again.archived, again.already_archived) == (0, len(share))
    assert again.scanned == len(share) + again.rejected


def test_a_purge_by_one_share_deletes_only_that_shares_orders(mongo, settings):
    dataset = seed_database(mongo[settings.mongodb_database], settings, 300, p_anomalies=0.0)
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    for k in range(2):
        run(mongo, settings, partition=Partition(k, 2))
    expected = expected_archive_ids(dataset)
    report = run(mongo, settings, partition=Partition(0, 2), purge_source=True)
    gone = expected - {d["_id"] for d in orders.find({}, {"_id": 1})}
    assert gone == {one for one in expected if share_of(one, 2) == 0}
    assert report.purged == len(gone) > 0


def test_a_dry_run_of_a_share_counts_that_share(mongo, settings):
    dataset = seed_database(mongo[settings.mongodb_database], settings, 300, p_anomalies=0.0)
    report = run(mongo, settings, run=False, partition=Partition(2, 4))
    assert report.would_archive == sum(1 for one in expected_archive_ids(dataset) if share_of(one, 4) == 2)


def test_a_share_leaves_the_cold_tiers_move_to_the_run_without_a_partition(monkeypatch, tmp_path):
    """ARCHIVE_COLD_URL's move takes the whole archive's old months: N shares finishing at once
    would each write the same months; the run without --partition makes it."""
    from order_archiver.cli.main import main
    from order_archiver.cold import tier

    moves = []
    monkeypatch.setattr(tier, "move_to_cold", lambda *args: moves.append(args))
    monkeypatch.setenv("ARCHIVE_COLD_URL", f"file://{tmp_path}")
    monkeypatch.setenv("ARCHIVE_COLD_AFTER", "730d")
    main(["batch", "--simulation", "--count", "100", "--run", "-q", "--partition", "0/2"])
    assert moves == []
    main(["batch", "--simulation", "--count", "100", "--run", "-q"])
    assert len(moves) == 1


def test_a_dry_run_of_a_share_says_no_move_to_the_cold_tier_as_its_run_makes_none(
    monkeypatch, tmp_path, capsys
):
    """A new user's try: ``batch --partition 0/2`` (dry run) with a cold tier printed "cold tier:
    would move 0 archived orders (dry run)", and ``--run --partition`` no such line (a share
    never moves: deployment.md, "A first archive in N parts"). The dry run says what --run
    does; the run without --partition still says its move."""
    import json

    from order_archiver.cli.main import main

    monkeypatch.setenv("ARCHIVE_COLD_URL", f"file://{tmp_path}")
    monkeypatch.setenv("ARCHIVE_COLD_AFTER", "730d")
    simulated = ["batch", "--simulation", "--count", "100"]

    def said(*flags: str) -> str:
        capsys.readouterr()
        main([*simulated, *flags])
        return capsys.readouterr().out

    for flags in (["--partition", "0/2"], ["--run", "--partition", "0/2"]):
        assert "cold tier" not in said(*flags), flags
        assert json.loads(said(*flags, "--json"))["cold"] is None, flags
    # Without --partition the dry run counts its move (nothing due here: said in --json only).
    assert json.loads(said("--json"))["cold"]["would_move"] == 0


def test_a_share_reads_n_pages_of_ids_at_once_within_a_bound():
    """A share reads N times a page's _ids (its enrichment keeps its batch), but never more than
    WIDEST: a page's ids also go to the server in one $in (--partition 0/1000 would be 500,000)."""
    from order_archiver.mongodb.source import PAGE_SIZE, WIDEST, OrderSource

    def source(partition):
        return OrderSource(None, None, "livrée", None, None, set, partition=partition)

    assert source(None).widened(PAGE_SIZE) == PAGE_SIZE
    assert source(Partition(1, 4)).widened(PAGE_SIZE) == 4 * PAGE_SIZE
    assert source(Partition(0, 1000)).widened(PAGE_SIZE) == WIDEST


def test_status_counts_the_shares_of_a_backfill(mongo, settings):
    """After a backfill in N parts the plain checkpoint holds no run yet: status says so, and
    how many shares have a complete pass (a new user read only "no complete run yet")."""
    from order_archiver.operations.status import collect_status

    seed_database(mongo[settings.mongodb_database], settings, 200, p_anomalies=0.0)
    run(mongo, settings, partition=Partition(0, 3))
    line = next(
        line for line in collect_status(mongo, settings, now=NOW).lines() if line.startswith("batch:")
    )
    assert line.endswith("; --partition: 1 of 1 share complete")  # the others have not begun
    for k in (1, 2):
        run(mongo, settings, partition=Partition(k, 3))
    report = collect_status(mongo, settings, now=NOW)
    assert (report.batch["shares"], report.batch["shares_complete"]) == (3, 3)
    assert (
        "no complete run yet (the next run is a full one); --partition: 3 of 3 shares complete"
        in "\n".join(report.lines())
    )


def test_a_lease_taken_while_the_server_does_not_answer_yet_is_retried(mongo, monkeypatch):
    """Found by bench/partitions.py at 100,000 orders, 4 shares on one overloaded test server: a
    share restarted while the server's answers were being cancelled ended with "error: unexpected
    _OperationCancelled" (exit 1, unclassified). The lease's clock (``hello``'s localTime, no
    measurement yet) was read outside its retried command: the exact pymongo error escaped."""
    import threading
    from datetime import UTC, datetime

    from pymongo.errors import _OperationCancelled

    from order_archiver.mongodb.lease import Lease

    answers: list[object] = [_OperationCancelled("operation cancelled")]

    def hello(client):
        if answers:
            raise answers.pop()  # type: ignore[misc]
        return {"ok": 1.0, "localTime": datetime.now(UTC)}

    monkeypatch.setattr("order_archiver.mongodb.lease.hello", hello)
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    lease = Lease(
        mongo["livraison"]["archiver_checkpoints"],
        "share",
        ttl_s=30,
        renew_s=10,
        stop_event=threading.Event(),
    )
    assert lease.try_acquire()
    lease.release()


def test_a_second_process_waits_one_lease_life_as_it_says_and_takes_a_lease_released_meanwhile(mongo, caplog):
    """A second process given a running share said "waiting up to 15s" and waited 21 to 23 s:
    it tried ttl / renew + 2 times, a renewal apart. A live holder's lease is refused after one
    life (the holder renewed it at the latest when the wait began), tried at its end; a lease
    released meanwhile (the first process ended) is taken, and the run goes on."""
    import threading
    import time
    from datetime import timedelta
    from types import SimpleNamespace

    from order_archiver.batch.partition import ShareLease
    from order_archiver.errors import ConfigError
    from order_archiver.settings import Settings

    settings = Settings(simulation=True, log_dir="", watch_lease_ttl_s=2, watch_lease_renew_s=1)
    collection = mongo["livraison"]["archiver_checkpoints"]
    key = "batch:window:1-of-2"
    checkpoint = SimpleNamespace(
        collection=collection, key=key, context=SimpleNamespace(stop=threading.Event())
    )
    held = {"_id": f"lease:{key}", "owner": "the first process", "term": 1}
    collection.insert_one({**held, "expires_at": datetime.now(UTC) + timedelta(hours=1)})  # renewed, alive
    options = BatchOptions(run=True, partition=Partition(1, 2))
    started = time.monotonic()
    with caplog.at_level("INFO"), pytest.raises(ConfigError, match="another process is archiving this share"):
        ShareLease(checkpoint, options, settings).__enter__()
    waited = time.monotonic() - started
    assert "waiting up to 2s" in caplog.text
    assert 2.0 <= waited < 2.3, waited

    def first_process_ends() -> None:
        time.sleep(0.5)
        collection.update_one(held, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})

    ending = threading.Thread(target=first_process_ends)
    ending.start()
    started = time.monotonic()
    share = ShareLease(checkpoint, options, settings).__enter__()
    ending.join()
    assert share.lease is not None
    assert share.lease.held()
    assert time.monotonic() - started < 1.5
    share.__exit__(None, None, None)


# A share's total is an estimate ("~": the window's count divided by N), which its count may pass.
PROGRESS_LINE = re.compile(r"^(?:archiving|examining): (\d+)/~\d+ orders \([^)]*\): (.+)$")


@pytest.mark.parametrize("run", [True, False])
def test_the_progress_lines_of_a_share_count_what_its_summary_counts(
    mongo, settings, monkeypatch, caplog, run
):
    """A user's `batch --partition 1/2 --max-rate 15`: its progress lines said "archiving: 1
    orders (0/s)" and its summary "archived 0, already archived 362": the lines counted the
    orders examined, not those the read skipped as archived (a share reads in pages, skipping
    what the archive holds), which are most of a share's history and what --max-rate paces.
    The lines count the orders gone through (the summary's scanned, or "to examine") and say
    what they were in the summary's words; the last one agrees with the summary. A line each
    chunk here (the interval, 10 s, set to 0); the rate kept high (the pacing is not the point)."""
    import functools

    import order_archiver.batch.job as job
    from order_archiver.reporting.progress import Progress
    from tests.helpers import deliver, pending_ids

    monkeypatch.setattr(job, "Progress", functools.partial(Progress, log_every_s=0))
    dataset = seed_database(mongo[settings.mongodb_database], settings, 400, seed=3, p_anomalies=0.2)
    BatchArchiver(mongo, settings, BatchOptions(run=True, batch_size=50)).run()
    deliver(mongo[settings.mongodb_database][settings.orders_collection], pending_ids(dataset, 30))
    caplog.set_level("INFO", logger="order_archiver.progress")
    options = BatchOptions(run=run, batch_size=50, partition=Partition(1, 2), max_rate=2000.0, progress="log")
    report = BatchArchiver(mongo, settings, options).run()
    lines = [r.getMessage() for r in caplog.records if r.name == "order_archiver.progress"]
    assert len(lines) >= 2, lines  # one a chunk
    last = PROGRESS_LINE.match(lines[-1])
    assert last is not None, lines[-1]
    assert int(last.group(1)) == report.scanned
    if run:
        expected = (
            f"archived {report.archived}, already archived {report.already_archived}, "
            f"revised {report.revised}, rejected {report.rejected}"
        )
    else:
        expected = (
            f"would archive {report.would_archive}, already archived {report.already_archived}, "
            f"would reject {report.rejected}"
        )
    assert last.group(2) == expected
    assert report.already_archived > 0  # every kind met: skipped, written, rejected
    assert report.rejected > 0
    assert max(report.archived, report.would_archive) > 0
