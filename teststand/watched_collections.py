"""A change stream on a collection that does not exist yet (see ``devserver.py``; shown in
``teststand/tests/test_nx_launcher.py``).

MongoDB opens a change stream on a namespace before the collection (or the database) exists and
creates neither (mongodb/mongo ``jstests/change_streams/does_not_implicitly_create_database.js``:
"change streams can be opened on a namespace before the collection or database has been
created, and will not implicitly create either"); the stream then reports the collection's first
insert. nx-27017 reaches the collection to put its change-log triggers on it
(``ChangeStreamManager.ensure_tracked``), and neosqlite creates a table on first reach: a
``watch`` created the collection it watched.

Here: a stream on a collection whose table does not exist gets a *waiting* tracker (the change
log's place, no triggers); the triggers are put on when the collection is created
(neosqlite's ``Collection.create``, which runs before the write that creates it), so the
collection's first insert is in the stream.
"""

from __future__ import annotations

import functools
import threading
from types import SimpleNamespace
from typing import Any

from neosqlite.collection import Collection
from nx_27017 import changestream as nx_changestream
from nx_27017.handler import NeoSQLiteHandler

# (sqlite connection, collection name) -> (manager, database name): the collections watched
# before they exist, whose triggers their creation puts on.
_waiting: dict[tuple[int, str], tuple[Any, Any, str]] = {}
_waiting_lock = threading.Lock()


def table_exists(connection: Any, name: str) -> bool:
    row = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def _waiting_tracker(connection: Any, name: str) -> dict[str, Any]:
    """A tracker with no triggers: what nx reads of a tracker (its change log, by collection
    name, on ``collection.db``) is there; its ``watcher`` is None."""
    return {"watcher": None, "collection": SimpleNamespace(db=connection, name=name), "waiting": True}


def _wait_for(manager: Any, connection: Any, db_name: str, name: str) -> None:
    """The collection's tracker waits for it (no triggers), and its creation is looked for."""
    with manager._lock:
        old = manager._trackers.get((db_name, name))
        if old is not None and old.get("waiting"):
            return
        if old is not None:  # the dropped collection's: its triggers went with it
            manager._drop_tracker_locked(old)
        manager._trackers[(db_name, name)] = _waiting_tracker(connection, name)
    with _waiting_lock:
        _waiting[(id(connection), name)] = (manager, connection, db_name)


def fix_watch_creates_collection() -> None:
    """Fault: a change stream on a collection that does not exist creates it (module docstring).
    Fix: it waits for the collection instead, its triggers put on at the collection's creation."""
    handle = NeoSQLiteHandler._handle_change_stream
    live = nx_changestream.ChangeStreamManager._triggers_live
    ensure = nx_changestream.ChangeStreamManager.ensure_tracked
    create = Collection.create

    @functools.wraps(handle)
    def handle_change_stream(
        self: Any,
        request_id: int,
        coll_name: str,
        pipeline: list[dict[str, Any]],
        db: Any,
        db_name: str = "test",
        owner: Any = None,
    ) -> tuple[int, dict[str, Any]]:
        if "." not in coll_name and not table_exists(db.db, coll_name):
            _wait_for(self._change_stream_manager, db.db, db_name, coll_name)
        return handle(self, request_id, coll_name, pipeline, db, db_name, owner)

    @functools.wraps(live)
    def triggers_live(tracker: dict[str, Any]) -> bool:
        """A waiting tracker lives while its collection does not exist (the stream is not
        invalidated: it waits); once the table is there (created by a path that is not
        ``Collection.create``), it is replaced by one with triggers."""
        if not tracker.get("waiting"):
            return bool(live(tracker))
        collection = tracker["collection"]
        if not table_exists(collection.db, collection.name):
            return True
        with _waiting_lock:
            _waiting.pop((id(collection.db), collection.name), None)
        return False

    @functools.wraps(create)
    def create_collection(self: Any, **kwargs: Any) -> Any:
        result = create(self, **kwargs)
        with _waiting_lock:
            found = _waiting.pop((id(self.db), self.name), None)
        if found is not None and found[1] is self.db:  # the same database's file (ids are reused)
            manager, _, db_name = found
            ensure(manager, db_name, self.name, lambda: self)  # its triggers, before the write runs
        return result

    NeoSQLiteHandler._handle_change_stream = handle_change_stream
    nx_changestream.ChangeStreamManager._triggers_live = staticmethod(triggers_live)
    Collection.create = create_collection
