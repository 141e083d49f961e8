"""The watcher's hold on the archive's unique index on numero_commande, which its user cannot
build (deploy/mongodb-roles.js): without it two orders sharing a number would both be archived,
and no batch --run could build it afterwards (MongoDB refuses a unique index over duplicates)."""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure

from order_archiver.errors import ConfigError
from order_archiver.mongodb import indexes
from order_archiver.mongodb.indexes import ARCHIVE_INDEXES, UniqueIndexCheck, UniqueIndexMissing
from tests.helpers import ManualClock, WaitMovesClock


def unique(archive) -> None:
    archive.create_index(ARCHIVE_INDEXES[0][0], **ARCHIVE_INDEXES[0][1])


def test_a_user_who_may_not_list_the_archives_indexes_is_refused(mongo, monkeypatch):
    """listIndexes refused (13 Unauthorized) read as "unknown", which a batch run may go on
    with (it builds the index), and the watcher went on writing without it (a review)."""

    def refused(collection):
        raise OperationFailure("not authorized on livraison to execute command", code=13)

    monkeypatch.setattr(indexes, "listed_indexes", refused)
    clock = ManualClock()
    check = UniqueIndexCheck(mongo.livraison.Commande_archive, WaitMovesClock(clock), clock=clock)
    with pytest.raises(
        ConfigError, match=r"may not list the indexes of livraison\.Commande_archive \(listIndexes\)"
    ):
        check.ready()


def test_it_waits_for_the_index_then_looks_again_before_writes_every_few_seconds(mongo):
    """A unique index dropped under a running watcher (a new user's try: two orders sharing a
    number both archived, status saying the watcher waits): the next write after EVERY_S finds
    it gone and is not made."""
    archive = mongo.livraison.Commande_archive
    archive.insert_one({"_id": 1, "numero_commande": "A"})
    clock = ManualClock()
    stop = WaitMovesClock(clock)
    check = UniqueIndexCheck(archive, stop, every_s=5.0, clock=clock)
    stop.waits.clear()
    unique(archive)
    assert check.ready()
    archive.drop_index("numero_commande_1")
    check.still_there()  # looked at less than 5 s ago: no listIndexes for every write
    clock.now += 5.0
    with pytest.raises(UniqueIndexMissing, match="numero_commande_1 is missing: nothing is archived"):
        check.still_there()
    stop.set()  # stopped while waiting for it again
    assert not check.ready()


def test_a_watcher_waiting_says_so_and_starts_once_the_index_is_built(mongo, caplog):
    """It says what builds the index, and where to look when that cannot (archived orders sharing
    a number: doctor names them; it said "batch --run builds it" alone, which then never did)."""
    archive = mongo.livraison.Commande_archive
    clock = ManualClock()
    stop = WaitMovesClock(clock)
    check = UniqueIndexCheck(archive, stop, every_s=5.0, clock=clock)
    built_after = 3

    def wait(timeout=None):
        WaitMovesClock.wait(stop, timeout)
        if len(stop.waits) == built_after:
            unique(archive)
        return False

    stop.wait = wait  # type: ignore[method-assign]
    assert check.ready()
    assert stop.waits == [5.0] * built_after
    (said,) = [r.getMessage() for r in caplog.records if "nothing is archived until" in r.getMessage()]
    assert "run batch --run with the batch user, it builds it" in said
    assert "doctor names why" in said


def test_a_look_older_than_every_s_is_taken_again_before_it_is_trusted(mongo):
    """A review: ready() trusted a look however old: a standby that saw the index at its start
    and took over hours later, after it was dropped, caught up without it."""
    archive = mongo.livraison.Commande_archive
    unique(archive)
    clock = ManualClock()
    stop = WaitMovesClock(clock)
    check = UniqueIndexCheck(archive, stop, every_s=5.0, clock=clock)
    assert check.ready()
    archive.drop_index("numero_commande_1")
    clock.now += 3600.0
    stop.set()  # it waits for the index again: a stop ends that wait
    assert not check.ready()
