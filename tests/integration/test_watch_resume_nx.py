"""A watcher restarted after its last delivered order was purged (or is no longer delivered)
resumes its stream without a catch-up.

MongoDB 6.0+ resumes after an *event* token only if the stream's ``$match``, run again on that
event with its order looked up as it is now (``updateLookup``), still lets it through; else the
resume fails, 280 "cannot resume stream; the resume token was not found" (SERVER-67677,
SERVER-71565; teststand/resume_events.py for the stages). A high-water mark, the
``postBatchResumeToken`` a getMore gives once it has scanned past the last event, needs no event.
The watcher saved its last event's token: every such restart walked the whole history again.
It now saves the driver's position (``position_after``), and its position at a clean stop.
The delete below is what ``batch --run --purge-source`` sends for an archived order."""

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.watch.watcher import Watcher, WatchOptions
from tests.helpers import seed_database

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        threading.Event().wait(0.02)


class Running:
    """A watcher on a thread of its own, its micro-batches and saves recorded as they happen."""

    def __init__(self, client: Any, settings: Any) -> None:
        self.watcher = Watcher(client, settings, WatchOptions())
        self.archived: list[list[Any]] = []  # each micro-batch's orders, once written
        self.saved: list[tuple[int, Any]] = []  # each token saved, after how many micro-batches
        self.positions: list[Any] = []  # the stream's position at each quiet getMore
        self.after_archive: Callable[[list[Any]], None] = lambda ids: None
        archive, save, quiet = self.watcher._archive, self.watcher._save_token, self.watcher._on_quiet

        def archiving(events: list[Any]) -> None:
            archive(events)
            ids = [event["documentKey"]["_id"] for event in events]
            self.archived.append(ids)
            self.after_archive(ids)

        def saving(token: Any, *args: Any, **kwargs: Any) -> None:
            save(token, *args, **kwargs)
            self.saved.append((len(self.archived), token))

        def quieting(stream: Any, *args: Any, **kwargs: Any) -> None:
            self.positions.append(stream.resume_token)
            quiet(stream, *args, **kwargs)

        self.watcher._archive = archiving  # type: ignore[method-assign]
        self.watcher._save_token = saving  # type: ignore[method-assign]
        self.watcher._on_quiet = quieting  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)
        self.thread.start()

    def streamed(self, order_id: Any) -> bool:
        return any(order_id in ids for ids in self.archived)

    def saved_after(self, order_id: Any) -> bool:
        """The micro-batch that wrote ``order_id`` has saved its position."""
        batch = next((i for i, ids in enumerate(self.archived) if order_id in ids), None)
        return batch is not None and any(after > batch for after, _ in self.saved)

    def stop(self) -> None:
        self.watcher.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def shop(nx_client, nx_settings):
    # No heartbeat in between: what a restart resumes from is what the micro-batches and the stop saved.
    settings = replace(nx_settings, watch_heartbeat_s=3600)
    database = nx_client[settings.mongodb_database]
    seed_database(database, settings, 40, seed=11, p_anomalies=0.0)
    keys, options = ARCHIVE_INDEXES[0]
    database[settings.archive_collection].create_index(keys, **options)
    orders = database[settings.orders_collection]
    pending = [
        o["_id"]
        for o in orders.find(
            {"status": {"$in": ["en_attente", "en_preparation", "en_livraison"]}}, {"_id": 1}
        ).sort("_id", 1)
    ]
    assert len(pending) >= 4
    return settings, orders, database[settings.archive_collection], pending[:4]


def deliver(orders, order_id) -> None:
    orders.update_one({"_id": order_id}, {"$set": {"status": "livrée", "date_livraison": datetime.now(UTC)}})


def consuming(running: Running) -> None:
    """Past its catch-up, on its stream: a delivery comes as an event (sentinel)."""
    wait_for(lambda: running.watcher.stats.catch_ups == 1 and running.saved, "the catch-up")


@pytest.mark.parametrize("change", ["purged", "returned"])
def test_a_watcher_stopped_after_its_last_order_changed_resumes_without_a_catch_up(nx_client, shop, change):
    """The last order it archived is deleted from the source (or returned) while it runs; it is
    stopped cleanly before any heartbeat; started again, it resumes, no catch-up."""
    settings, orders, archive, (marker, x, y, _) = shop
    first = Running(nx_client, settings)
    consuming(first)
    deliver(orders, marker)
    wait_for(lambda: first.streamed(marker), "the marker streamed")
    deliver(orders, x)
    wait_for(lambda: first.saved_after(x), "x's micro-batch saved")
    seen = len(first.positions)
    if change == "purged":
        orders.delete_one({"_id": x})
    else:
        orders.update_one({"_id": x}, {"$set": {"status": "annulée"}})
    at_x = first.saved[-1][1]
    wait_for(
        lambda: any(p is not None and p != at_x for p in first.positions[seen:]),
        "a getMore past the change",
    )
    first.stop()
    second = Running(nx_client, settings)
    try:
        deliver(orders, y)
        wait_for(
            lambda: second.streamed(y) or second.watcher.stats.catch_ups > 0, "y streamed, or a catch-up"
        )
        assert second.watcher.stats.catch_ups == 0
        assert archive.count_documents({"_id": y}) == 1
    finally:
        second.stop()


def test_a_watcher_that_dies_after_a_micro_batch_resumes_without_a_catch_up(nx_client, shop, tmp_path):
    """The getMore that brought x's delivery had also scanned a later change (another order
    prepared): the position saved after x's micro-batch is past it. The watcher dies right there
    (its token file, as it left it, copied); x is purged; a watcher started from that file
    resumes, no catch-up."""
    settings, orders, archive, (marker, x, y, z) = shop
    first = Running(nx_client, settings)
    consuming(first)

    def after(ids: list[Any]) -> None:  # while it writes the marker's batch, two changes come
        if marker in ids:
            deliver(orders, x)
            orders.update_one({"_id": z}, {"$set": {"status": "en_preparation"}})

    first.after_archive = after
    deliver(orders, marker)
    wait_for(lambda: first.saved_after(x), "x's micro-batch saved")
    assert [x] in first.archived  # the one getMore brought x's event, and scanned z's change
    crashed = tmp_path / "crashed.json"
    shutil.copy(settings.resume_token_file, crashed)
    first.stop()
    orders.delete_one({"_id": x})
    second = Running(nx_client, replace(settings, resume_token_file=str(crashed)))
    try:
        deliver(orders, y)
        wait_for(
            lambda: second.streamed(y) or second.watcher.stats.catch_ups > 0, "y streamed, or a catch-up"
        )
        assert second.watcher.stats.catch_ups == 0
        assert archive.count_documents({"_id": y}) == 1
    finally:
        second.stop()
