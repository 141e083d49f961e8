"""The development server's change-stream positions as MongoDB gives them, and drops in the
history (see ``devserver.py``; each shown in ``teststand/tests/test_nx_launcher.py``).

MongoDB (``resume_token.cpp``, ``document_source_change_stream*.cpp``, the manual's "Resume a
Change Stream" and ``postBatchResumeToken`` in the driver specification): a change stream
opened without a resume point starts just past the last oplog entry, and its position (the
``postBatchResumeToken``) is a *high-water mark* there: after every entry written so far,
before the next one. A getMore moves the position to the last entry it scanned, matched or
not. On an idle deployment no entry comes until the primary's periodic no-op
(``periodicNoopIntervalSecs``, 10 s by default; on a sharded cluster, every shard's): until
then a stream resumed from an older position and scanned to the end stands on the last entry,
short of a new stream's high-water mark. Dropping or renaming a collection writes an entry
whose event for that collection's streams is ``invalidate``; a stream resumed from before it
meets it again.

nx-27017 answered the last *matched* event's token (an idle scan's position never moved past
the changes a filter drops), a new stream's position was the last row's own token, and a drop
left no trace in the history. Positions here: ``nx:<row:020d>`` an entry (nx's own parser
reads it), ``nx:<row:020d>+<k:012d>`` the k-th periodic no-op after that row, and
``nx:<row:020d>+<k:012d>h`` the high-water mark after both: ``_data`` strings that sort in
stream order, as MongoDB's do. ``NX_PERIODIC_NOOP_S`` sets the no-op interval (default 10).
"""

from __future__ import annotations

import functools
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

from nx_27017 import changestream as nx_changestream
from nx_27017.handler import NeoSQLiteHandler

_STARTED = time.time()
_POSITION = re.compile(r"nx:(\d+)(?:\+(\d+)h?)?")


def entry_token(rowid: int) -> dict[str, str]:
    return {"_data": f"nx:{int(rowid):020d}"}


def noop_token(rowid: int, noops: int) -> dict[str, str]:
    return {"_data": f"nx:{int(rowid):020d}+{int(noops):012d}"}


def high_water_token(rowid: int, noops: int) -> dict[str, str]:
    return {"_data": f"nx:{int(rowid):020d}+{int(noops):012d}h"}


def position_rowid(token: Any) -> int | None:
    """The change-log row a position is at or after (nx's ``_wire_rowid``, which reads the
    plain ``nx:<row>`` form, plus the no-op and high-water forms); None when unreadable."""
    candidate = token
    for key in ("_id", "id", "_data"):
        if isinstance(candidate, dict) and set(candidate) == {key}:
            candidate = candidate[key]
    if isinstance(candidate, str):
        match = _POSITION.fullmatch(candidate)
        return int(match.group(1)) if match else None
    if isinstance(candidate, int) and not isinstance(candidate, bool):
        return candidate
    return None


def _later(first: dict[str, str], second: dict[str, str] | None) -> dict[str, str]:
    return second if second is not None and second["_data"] > first["_data"] else first


def noop_interval() -> float:
    """``NX_PERIODIC_NOOP_S``: an idle deployment's primary writes a no-op to the oplog this often
    (MongoDB's ``periodicNoopIntervalSecs``, 10 s by default)."""
    return float(os.environ.get("NX_PERIODIC_NOOP_S") or 10)


def _log_end(tracker: dict[str, Any] | None, collection: str) -> tuple[int, float]:
    """The collection's last change-log row and when it was written (epoch seconds; the server's
    start when it has none)."""
    if tracker is None:
        return 0, _STARTED
    try:
        row = (
            tracker["collection"]
            .db.execute(
                "SELECT id, timestamp FROM _neosqlite_changestream WHERE collection_name = ? "
                "ORDER BY id DESC LIMIT 1",
                (collection,),
            )
            .fetchone()
        )
    except Exception:  # no change log yet
        return 0, _STARTED
    if not row:
        return 0, _STARTED
    written = datetime.fromisoformat(str(row[1])).replace(tzinfo=UTC).timestamp() if row[1] else _STARTED
    return int(row[0]), max(written, _STARTED)


def _noops_since(written: float) -> int:
    return int(max(time.time() - written, 0) // noop_interval())


def _tracker(manager: Any, stream: Any) -> dict[str, Any] | None:
    with manager._lock:
        tracker: dict[str, Any] | None = manager._trackers.get((stream.db_name, stream.collection_name))
        return tracker


def fix_stream_positions() -> None:
    """Fault: positions are not MongoDB's (module docstring). Fix: a new stream's position is the
    high-water mark past the collection's last row and the no-ops since; a getMore's is the
    last row it scanned, or the last no-op when it scanned to the end; never backwards."""
    nx_changestream._wire_rowid = position_rowid
    create = nx_changestream.ChangeStreamManager.create_stream
    pull = nx_changestream.ChangeStreamManager.pull_stream

    @functools.wraps(create)
    def create_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        stream = create(self, *args, **kwargs)
        token = stream.resume_after if stream.resume_after is not None else stream.start_after
        stream._nx_start_row = stream._watermark
        if token is not None and position_rowid(token) is not None:
            data = token
            while isinstance(data, dict) and len(data) == 1 and "_data" not in data:
                data = next(iter(data.values()))
            stream._nx_position = {"_data": str(data["_data"] if isinstance(data, dict) else data)}
        else:
            last, written = _log_end(_tracker(self, stream), stream.collection_name)
            stream._nx_position = high_water_token(last, _noops_since(written))
        return stream

    @functools.wraps(pull)
    def pull_stream(self: Any, stream: Any, batch_size: int = 101) -> tuple[list[dict[str, Any]], dict]:
        batch, _ = pull(self, stream, batch_size)
        position = getattr(stream, "_nx_position", None) or entry_token(stream._watermark)
        if stream._watermark > getattr(stream, "_nx_start_row", stream._watermark):
            position = _later(position, entry_token(stream._watermark))
        last, written = _log_end(_tracker(self, stream), stream.collection_name)
        noops = _noops_since(written)
        if stream._watermark >= last and noops:
            position = _later(position, noop_token(last, noops))
        stream._nx_position = position
        return batch, position

    def get_resume_token(self: Any) -> dict[str, str]:
        position: dict[str, str] | None = getattr(self, "_nx_position", None)
        return position or entry_token(self._watermark)

    nx_changestream.ChangeStreamManager.create_stream = create_stream
    nx_changestream.ChangeStreamManager.pull_stream = pull_stream
    nx_changestream.ChangeStreamCursor.get_resume_token = get_resume_token


def _dropped_collection(body: dict[str, Any]) -> str | None:
    """The collection a ``drop`` or ``renameCollection`` (its source) takes away, if any."""
    if isinstance(body.get("drop"), str):
        return str(body["drop"])
    source = body.get("renameCollection")
    if isinstance(source, str):
        return source.split(".", 1)[-1]
    return None


def fix_drops_in_history() -> None:
    """Fault: dropping or renaming a collection leaves nothing in the change history, so a
    stream resumed from before it reads on into the next collection of that name as if nothing
    happened. MongoDB records it in the oplog; that collection's streams meet an ``invalidate``
    there and end, every time one resumes from before it. Fix: a successful ``drop`` or
    ``renameCollection`` writes a ``drop`` row for the collection into the change log; a
    stream reading it answers ``invalidate`` (``invalidate_event``) and is closed."""
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = next((doc for kind, doc in msg.get("sections", []) if kind == "body"), None)
        gone = _dropped_collection(body) if isinstance(body, dict) else None
        if gone is None or not isinstance(body, dict):
            return original(self, msg)
        db_name = str(body.get("$db", "test"))
        if "renameCollection" in body:
            db_name = str(body["renameCollection"]).split(".", 1)[0]
        with self._lock_for(db_name):
            existed = gone in self.get_database(db_name).list_collection_names()
        request_id, reply = original(self, msg)
        if not existed or not (isinstance(reply, dict) and reply.get("ok")):
            return request_id, reply  # nothing dropped: nothing in the history (as on MongoDB)
        with self._lock_for(db_name):
            connection = self.get_database(db_name).db
            try:
                connection.execute(
                    "INSERT INTO _neosqlite_changestream (collection_name, operation, timestamp) "
                    "VALUES (?, 'drop', strftime('%Y-%m-%d %H:%M:%f', 'now'))",
                    (gone,),
                )
                connection.commit()
            except Exception:  # no change log: nothing ever watched this database
                pass
        return request_id, reply

    NeoSQLiteHandler.handle_command = handle_command


def invalidate_event(rowid: int, when: datetime) -> dict[str, Any]:
    """What a stream reads at a ``drop`` row: an ``invalidate`` at that position."""
    return {"_id": entry_token(rowid), "operationType": "invalidate", "clusterTime": when, "wallTime": when}


def cut_at_invalidate(manager: Any, stream: Any, reply: dict[str, Any]) -> dict[str, Any]:
    """A getMore reply whose batch holds an ``invalidate``: the batch ends with it and the
    stream is closed (cursor id 0), as MongoDB ends an invalidated stream."""
    cursor = reply["cursor"]
    batch = list(cursor.get("nextBatch") or [])
    index = next(i for i, event in enumerate(batch) if event.get("operationType") == "invalidate")
    manager.close_stream(stream._id)
    token = batch[index]["_id"]
    return {
        **reply,
        "cursor": {**cursor, "id": 0, "nextBatch": batch[: index + 1], "postBatchResumeToken": token},
    }
