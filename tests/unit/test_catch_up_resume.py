"""A watcher restarted mid-catch-up goes on from where that catch-up had got to (its mark, saved
with its stream's start token), and from nowhere else: a mark saved with another start token,
by another watcher name, or under other settings (source, archive, delivered status, ARCHIVE_PII)
is another catch-up's, ignored with a warning, and the walk starts from the first ``_id`` as
before marks existed. The record is written as a store keeps it (file or mongo), then loaded and
caught up from, as ``Watcher._stream_once`` does with a ``catching_up`` record; the walk's start
shows in its summary (``scanned``). At the wire: tests/e2e/test_watch_e2e.py."""

import logging
import re
from datetime import UTC, datetime

import pytest
from bson import json_util

from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.mongodb.tokens import ResumeState
from order_archiver.settings import Settings
from order_archiver.watch.archiving import catch_up_identity
from order_archiver.watch.watcher import Watcher, WatchOptions
from tests.helpers import seed_database
from tests.unit.test_watcher_units import TOKEN

NAME = "eu-1"


def record(settings: Settings, mark: dict[str, object] | None) -> dict[str, object]:
    """A ``catching_up`` token record as both stores keep it (the mongo one adds its key and term)."""
    saved: dict[str, object] = {
        "namespace": f"{settings.mongodb_database}.{settings.orders_collection}",
        "token": dict(TOKEN),
        "invalidated": False,
        "catching_up": True,
        "saved_at": datetime.now(UTC),
        "last_event_at": None,
    }
    if mark is not None:
        saved["catch_up"] = mark
    return saved


def caught_up_from(mongo, settings: Settings, store: str, saved: dict[str, object], caplog) -> int:
    """The saved record loaded and caught up from, by watcher ``NAME``: the orders it scanned."""
    if store == "file":
        with open(settings.resume_token_file, "w", encoding="utf-8") as handle:
            handle.write(json_util.dumps({"version": 1, **saved}))
    else:
        checkpoints = mongo[settings.archive_db_name][settings.checkpoint_collection]
        checkpoints.insert_one({"_id": f"watch:{NAME}", "kind": "watch", **saved, "term": None})
    watcher = Watcher(mongo, settings, WatchOptions(token_store=store, name=NAME))  # type: ignore[arg-type]
    if watcher.lease is not None:
        assert watcher.lease.try_acquire()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        try:
            state = watcher.store.load()
            assert state.catching_up
            watcher._catch_up(state)
        finally:
            if watcher.lease is not None:
                watcher.lease.release()
    said = [r.getMessage() for r in caplog.records]
    summary = next(line for line in said if line.startswith("catch-up done"))
    found = re.match(r"catch-up done: scanned (\d+)", summary)
    assert found is not None, summary
    return int(found.group(1))


@pytest.fixture
def history(mongo, tmp_path):
    """Sixty orders, their archive's unique index; the delivered ones' _ids in order."""
    settings = Settings(simulation=True, log_dir="", batch_size=5, resume_token_file=str(tmp_path / "t.json"))
    database = mongo[settings.mongodb_database]
    seed_database(database, settings, 60, seed=7, p_anomalies=0.0)
    keys, options = ARCHIVE_INDEXES[0]
    database[settings.archive_collection].create_index(keys, **options)
    delivered = sorted(
        d["_id"] for d in database[settings.orders_collection].find({"status": settings.delivered_status})
    )
    return settings, delivered


OTHER_CATCH_UPS = {
    # the mark of the catch-up from another start token (a token lost since: a new stream)
    "another start token": lambda settings: ({"token": "8263A1B2C3FFFFFFFF"}, "not this token's"),
    "another watcher name": lambda settings: (
        {"identity": catch_up_identity(settings, "eu-2")},
        "another catch-up's",
    ),
    "another delivered status": lambda settings: (
        {"identity": catch_up_identity(settings.with_overrides(delivered_status="shipped"), NAME)},
        "another catch-up's",
    ),
    "another ARCHIVE_PII": lambda settings: (
        {"identity": catch_up_identity(settings.with_overrides(archive_pii="drop"), NAME)},
        "another catch-up's",
    ),
    "another format": lambda settings: ({"version": 99}, "not this token's"),
}


@pytest.mark.parametrize("store", ["file", "mongo"])
def test_a_restarted_catch_up_goes_on_after_its_own_mark(mongo, history, store, caplog):
    """Before: a watcher restarted mid-catch-up walked every delivered order again, from the
    first _id, whatever the last one had got through (a years-old history: one whole pass per
    restart). Now it reads only those past its mark."""
    settings, delivered = history
    through = delivered[len(delivered) // 2]
    mark = {
        "version": 1,
        "token": TOKEN["_data"],
        "identity": catch_up_identity(settings, NAME),
        "through_id": through,
    }
    scanned = caught_up_from(mongo, settings, store, record(settings, mark), caplog)
    assert scanned == len([order_id for order_id in delivered if order_id > through])
    assert scanned < len(delivered)
    assert "going on after _id" in caplog.text


@pytest.mark.parametrize("store", ["file", "mongo"])
@pytest.mark.parametrize("other", sorted(OTHER_CATCH_UPS))
def test_a_mark_of_another_catch_up_is_never_used(mongo, history, store, other, caplog):
    """A mark that is not this catch-up's is said and ignored: the catch-up reads every delivered
    order (resuming after it could skip orders delivered between the two starts, or leave copies
    unrevised under a changed ARCHIVE_PII)."""
    settings, delivered = history
    changed, warning = OTHER_CATCH_UPS[other](settings)
    mark = {
        "version": 1,
        "token": TOKEN["_data"],
        "identity": catch_up_identity(settings, NAME),
        "through_id": delivered[len(delivered) // 2],
        **changed,
    }
    scanned = caught_up_from(mongo, settings, store, record(settings, mark), caplog)
    assert scanned == len(delivered)
    assert warning in caplog.text
    assert "the catch-up starts from the beginning" in caplog.text


def test_a_saved_mark_passes_no_rejected_order_not_listed_yet(mongo, tmp_path):
    """A catch-up gone on after its mark never meets the orders below it again: one rejected
    there must be on the rejects list by the time the mark is saved (listed, they wait for a
    person). The list was written every thousand rejections or at the end of the pass, so a
    kill -9 after a save would have left them off it for good. Each save with a mark is looked
    at as it happens (a kill could follow any of them)."""
    settings = Settings(
        simulation=True,
        log_dir="",
        batch_size=5,
        watch_heartbeat_s=0,  # every chunk's reach saved
        resume_token_file=str(tmp_path / "t.json"),
    )
    database = mongo[settings.mongodb_database]
    seed_database(database, settings, 120, seed=8, p_anomalies=0.3)
    keys, options = ARCHIVE_INDEXES[0]
    database[settings.archive_collection].create_index(keys, **options)
    rejects = mongo[settings.archive_db_name][settings.rejects_collection]
    watcher = Watcher(mongo, settings, WatchOptions(token_store="file", name=NAME))
    listed_at_saves: list[tuple[object, set[object]]] = []
    store_save = watcher.store.save

    def save(token, **fields):
        mark = fields.get("catch_up")
        if mark is not None:
            listed_at_saves.append((mark.through_id, {d["_id"] for d in rejects.find({}, {"_id": 1})}))
        store_save(token, **fields)

    watcher.store.save = save  # type: ignore[method-assign]
    watcher._catch_up(ResumeState("token", TOKEN))
    rejected = {d["_id"] for d in rejects.find({}, {"_id": 1})}
    assert rejected, "no order rejected: the seed has no anomaly the archive refuses"
    assert len(listed_at_saves) > 2
    for through, listed in listed_at_saves:
        assert {order_id for order_id in rejected if order_id <= through} <= listed
