"""Long read-only walks through cuts: ``source.scan_by_id`` and ``verify`` over it."""

from contextlib import contextmanager

import mongomock
import pytest
from pymongo.errors import AutoReconnect, CursorNotFound, OperationFailure

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.errors import FatalError, TransientError
from order_archiver.mongodb.source import scan_by_id
from order_archiver.operations.verify import verify
from order_archiver.retry import Purpose
from tests.helpers import delivered_rejects, expected_archive_ids, seed_database

DOCUMENTS = [{"_id": n} for n in range(10)]


@pytest.fixture(autouse=True)
def no_waits(monkeypatch):
    def instant(self):
        self.failures += 1
        return 0.0

    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", instant)


def opener(failures: dict[int, Exception]):
    """A query over DOCUMENTS after an id; the n-th opening fails after its first two
    documents with ``failures[n]`` (n counts from 1). Records each opening's ``after_id``."""
    openings: list[object] = []

    @contextmanager
    def open_cursor(after_id):
        openings.append(after_id)
        failure = failures.get(len(openings))
        rest = [d for d in DOCUMENTS if after_id is None or d["_id"] > after_id]

        def cursor():
            for index, document in enumerate(rest):
                if failure is not None and index == 2:
                    raise failure
                yield document

        yield cursor()

    return open_cursor, openings


def test_a_lost_cursor_reopens_after_the_last_id_read():
    open_cursor, openings = opener({1: CursorNotFound("cursor id 7 not found", 43), 2: AutoReconnect("cut")})
    assert [d["_id"] for d in scan_by_id(open_cursor)] == list(range(10))
    assert openings == [None, 1, 3]


def test_a_non_transient_error_is_raised_at_once():
    open_cursor, openings = opener({1: OperationFailure("not authorized", 13)})
    with pytest.raises(FatalError):
        list(scan_by_id(open_cursor))
    assert openings == [None]


def test_failures_without_progress_give_up():
    @contextmanager
    def open_cursor(after_id):
        raise AutoReconnect("server down")
        yield  # pragma: no cover

    with pytest.raises(TransientError):
        list(scan_by_id(open_cursor, purpose=Purpose(3)))


def test_a_stop_during_a_wait_raises_instead_of_ending_quietly():
    import threading

    stop = threading.Event()
    stop.set()
    open_cursor, openings = opener({1: AutoReconnect("cut")})
    read = []
    with pytest.raises(TransientError):
        read.extend(d["_id"] for d in scan_by_id(open_cursor, stop_event=stop))
    assert read == [0, 1]
    assert openings == [None]


def test_verify_reads_on_through_a_lost_cursor(mongo, settings, monkeypatch):
    dataset = seed_database(mongo[settings.mongodb_database], settings, 300, p_anomalies=0.15)
    BatchArchiver(mongo, settings, BatchOptions(run=True)).run()
    original = mongomock.collection.Collection.aggregate
    lost = []

    def losing(self, pipeline, *args, **kwargs):
        cursor = original(self, pipeline, *args, **kwargs)
        if lost:
            return cursor
        lost.append(True)
        documents = [next(cursor) for _ in range(50)]

        class Lost:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def __iter__(self):
                yield from documents
                raise CursorNotFound("cursor id 9 not found", 43)

        return Lost()

    monkeypatch.setattr(mongomock.collection.Collection, "aggregate", losing)
    report = verify(mongo, settings)
    assert lost
    assert report.checked == len(expected_archive_ids(dataset))
    assert report.invalid == delivered_rejects(dataset)
    assert report.missing == report.mismatched == 0
