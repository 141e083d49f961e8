"""The progress of a batch run, as the job gives it: its total after a resume, the purge's line."""

from __future__ import annotations

import functools
import re
from typing import ClassVar

import pytest

import order_archiver.batch.job as job
from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.logs import plural
from order_archiver.orders.partition import Partition
from order_archiver.reporting.progress import Progress
from tests.helpers import expected_archive_ids, seed_database


class Recorded(Progress):
    """A ``Progress`` the test can look at once the run is over."""

    made: ClassVar[list[Recorded]] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        Recorded.made.append(self)


@pytest.fixture
def recorded(monkeypatch):
    Recorded.made = []
    monkeypatch.setattr(job, "Progress", functools.partial(Recorded, log_every_s=0))
    return Recorded.made


@pytest.mark.parametrize("run", [True, False])
def test_a_resumed_pass_counts_what_it_has_left(mongo, settings, recorded, run):
    """A resumed backfill said "900/24064 orders (58/s, ETA 398s)" and ended 5 s later: its total
    was the whole window's count, its count this run's. The total of a resumed pass is the
    delivered orders after where it resumes (the checkpoint's last _id: one count on the
    ``status, _id`` index the pass reads), the orders this run goes through: a dry run after
    an interrupted --run reads from the checkpoint too."""
    dataset = seed_database(mongo[settings.mongodb_database], settings, 600, seed=8, p_anomalies=0.0)
    delivered = len(expected_archive_ids(dataset))
    first = BatchArchiver(mongo, settings, BatchOptions(run=True, batch_size=50, limit=200)).run()
    assert first.scanned == 200  # cut short by --limit: the next run resumes the pass
    report = BatchArchiver(mongo, settings, BatchOptions(run=run, batch_size=50, progress="log")).run()
    assert report.resumed_from is not None or not run
    (progress,) = recorded
    assert progress.done == report.scanned == delivered - 200
    assert progress.total == delivered - 200


PURGE_LINE = re.compile(r"^purging: (\d+)/(\d+) orders \([^)]*\): purged (\d+), kept (\d+), held (\d+)$")


def test_the_purge_has_its_progress_line_and_its_own_rate(mongo, settings, recorded, caplog):
    """The purge of a backfill's share ran ~90 s without a line, and the summary's rate ("1
    order/s over its pass of 16.53s ... purged 7989") left it out, though --max-rate paced it.
    The purge shows its lines as the pass does (the orders walked, what --max-rate pays for,
    over its delivered orders: one index count; what became of them in the summary's words),
    and the summary says its rate apart, over its own time: each figure divides as it says."""
    dataset = seed_database(mongo[settings.mongodb_database], settings, 300, seed=9, p_anomalies=0.0)
    delivered = len(expected_archive_ids(dataset))
    caplog.set_level("INFO", logger="order_archiver.progress")
    options = BatchOptions(run=True, batch_size=50, purge_source=True, max_rate=400.0, progress="log")
    report = BatchArchiver(mongo, settings, options).run()
    assert report.purged == delivered
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("purging:")]
    assert len(lines) >= 2, lines  # one a chunk walked
    last = PURGE_LINE.match(lines[-1])
    assert last is not None, lines[-1]
    walked, total, purged, kept, held = map(int, last.groups())
    assert walked == total == report.purge_walked == delivered
    assert (purged, kept, held) == (report.purged, report.purge_kept, report.purge_held)

    assert report.pass_seconds is not None
    assert report.purge_seconds is not None
    purge_rate = report.purge_walked / report.purge_seconds
    line = report.summary_line()
    pass_rate = f"{plural(report.scanned / report.pass_seconds, 'order')}/s over its pass of {report.pass_seconds:.2f}s"
    assert pass_rate in line, line
    said = f"the purge {plural(purge_rate, 'order')}/s over its {report.purge_seconds:.2f}s, {delivered} orders walked"
    assert said in line, line
    assert report.as_dict()["purge_orders_per_second"] == round(purge_rate, 1)


def test_a_share_of_a_backfill_says_about_how_much_it_has_left(mongo, settings, recorded, caplog):
    """A backfill's shares (--partition), the longest runs there are, showed no total and no ETA
    (a new operator's try: "archiving: 3120 orders (31/s)" for 256 s): no index holds a share
    (the client's hash of each _id), but the hash splits the window evenly, so a share's total
    is the window's count (after the share's own checkpoint) divided by N, said as an estimate
    ("~"), for its pass and its purge alike."""
    dataset = seed_database(mongo[settings.mongodb_database], settings, 600, seed=10, p_anomalies=0.0)
    delivered = len(expected_archive_ids(dataset))
    caplog.set_level("INFO", logger="order_archiver.progress")
    share = Partition(1, 3)
    options = BatchOptions(run=True, batch_size=50, partition=share, purge_source=True, progress="log")
    report = BatchArchiver(mongo, settings, options).run()
    passed, purging = recorded
    assert passed.total == purging.total == round(delivered / 3)
    assert passed.estimated
    assert purging.estimated
    assert passed.done == report.scanned
    assert abs(report.scanned - delivered / 3) < delivered / 3 * 0.25
    lines = [r.getMessage() for r in caplog.records]
    assert any(re.match(rf"^archiving: \d+/~{passed.total} orders ", line) for line in lines), lines
    assert any(re.match(rf"^purging: \d+/~{purging.total} orders ", line) for line in lines), lines
