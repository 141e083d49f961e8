"""The progress of a batch run, as the job gives it: its total after a resume, the purge's line."""

from __future__ import annotations

import functools
from typing import ClassVar

import pytest

import order_archiver.batch.job as job
from order_archiver.batch.job import BatchArchiver, BatchOptions
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
