"""#34 item 1: `batch --max-rate N` holds a run to N orders a second on average (read and written,
and deleted by the purge), whatever the batch size; every wait is a stop's to cut short."""

from __future__ import annotations

import threading

import pytest

from order_archiver.batch.job import BatchArchiver
from order_archiver.batch.pacing import BURST_S, Pacer
from order_archiver.batch.report import BatchOptions, BatchReport
from order_archiver.settings import Settings
from tests.helpers import ManualClock, WaitMovesClock, expected_archive_ids, seed_database


@pytest.mark.parametrize(("rate", "chunk"), [(200, 100), (1000, 100), (5000, 500), (50, 1000)])
def test_the_rate_held_on_average_whatever_the_chunk(rate, chunk):
    clock = ManualClock()
    report = BatchReport()
    pacer = Pacer(rate, WaitMovesClock(clock), report, clock=clock)
    started = clock.now
    for _ in range(200):
        clock.now += 0.001  # the chunk's own work
        pacer.pace(chunk)
    orders, elapsed = 200 * chunk, clock.now - started
    assert orders / elapsed <= rate * 1.01 + chunk / elapsed + rate * BURST_S / elapsed
    assert orders / elapsed >= rate * 0.9  # not slower than asked either
    assert report.paced_s > 0


def test_a_run_with_max_rate_waits_and_says_so(mongo):
    settings = Settings(simulation=True, log_dir="")
    dataset = seed_database(mongo[settings.mongodb_database], settings, 300, seed=3, p_anomalies=0.0)
    report = BatchArchiver(mongo, settings, BatchOptions(run=True, batch_size=50, max_rate=100)).run()
    assert report.archived == len(expected_archive_ids(dataset))
    assert (report.max_rate, report.paced_s > 0) == (100, True)
    assert "held to --max-rate 100 (waited " in report.summary_line()


def test_a_stop_is_not_delayed_by_the_pacing():
    stop = threading.Event()
    stop.set()
    pacer = Pacer(1, stop, BatchReport())
    pacer.pace(1_000_000)  # a million seconds ahead: the set stop returns at once


def test_a_rate_of_zero_is_refused(capsys):
    from order_archiver.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["batch", "--simulation", "--max-rate", "0"])
    assert refused.value.code == 2
    assert "--max-rate" in capsys.readouterr().err


def test_the_setting_gives_every_run_its_rate_and_the_flag_overrides_it(monkeypatch, capsys):
    """#34 item 1: `--max-rate` "and a setting": BATCH_MAX_RATE, for a scheduler's every run."""
    import json

    from order_archiver.cli.main import main

    monkeypatch.setenv("BATCH_MAX_RATE", "100000")
    main(["batch", "--simulation", "--count", "50", "--json"])
    assert json.loads(capsys.readouterr().out)["max_rate"] == 100000
    main(["batch", "--simulation", "--count", "50", "--json", "--max-rate", "50000"])
    assert json.loads(capsys.readouterr().out)["max_rate"] == 50000
