"""A change stream resumed after an event, as MongoDB 6.0+ resumes it: the stream's own ``$match``
sees the resume event again, its ``updateLookup`` re-read now (see ``devserver.py``; shown in
``teststand/tests/test_resume_events.py``).

MongoDB resumes ``resumeAfter``/``startAfter`` an *event* token (not a high-water mark) with a
``$_internalChangeStreamEnsureResumeTokenPresent`` stage that must see the token's event, swallow
it, and fails the stream with ``ChangeStreamFatalError`` (280, "cannot resume stream; the resume
token was not found") at the first later event when it did not. From 5.1 the stage sits after
the post-image lookup (``document_source_change_stream.cpp``, ``_buildPipeline``: "If the resume
point is an event, we must include a DSCSEnsureResumeTokenPresent stage", after
``DocumentSourceChangeStreamAddPostImage``), and the user's ``$match`` is always moved ahead of
it (``document_source.cpp``, ``pushMatchBefore``: "Always move the $match stage ahead of internal
change stream stages appearing in the router (mongoS) pipeline"; the stage is in
``kChangeStreamRouterPipelineStages``). So on 6.0, 7.0 and 8.0 an ``update`` event whose order has
since been deleted or changed (its looked-up ``fullDocument`` null, or no longer matching) is
filtered out before the check: the resume fails (SERVER-67677, SERVER-71565 "affects 6.0.3",
SERVER-105558 "affects 8.0.9", all unresolved). On 4.4 and 5.0 the check comes before the lookup
(``DocumentSourceEnsureResumeTokenPresent`` then ``DocumentSourceLookupChangePostImage``), which
a ``$match`` on ``fullDocument`` cannot pass: the resume event is swallowed whatever it holds now.

nx-27017 never reads the resume event again (it starts after its row). Here, answering as 6.0 or
later, a stream resumed from an entry position (``nx:<row>``) whose row's event matched the
stream's ``$match`` when written (an event token: a position MongoDB would give past a filtered
entry is a high-water mark, never checked) has that event built again with the order as it is
now (``updateLookup``: an update's ``fullDocument`` looked up, null when gone); if the stream's
``$match`` now drops it, the first ``getMore`` that brings an event answers 280 and the cursor is
gone, as MongoDB's is.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from nx_27017 import changestream as nx_changestream
from nx_27017.handler import NeoSQLiteHandler
from nx_27017.utils import convert_bson_to_neo_objectids, convert_neo_to_bson_objectids

from teststand.stream_positions import position_rowid

RECHECKED_FROM = (6, 0)  # 5.1 moved the check after the lookup; 5.0 is the last release before it
_EVENT_POSITION = re.compile(r"nx:\d+")


def _event_row(token: Any) -> int | None:
    """The change-log row of an entry position ``nx:<row>`` (a no-op's or a high-water mark's:
    None)."""
    data = token.get("_data") if isinstance(token, dict) else None
    if not isinstance(data, str) or not _EVENT_POSITION.fullmatch(data):
        return None
    return position_rowid(token)


def _row(tracker: dict[str, Any], collection_name: str, rowid: int) -> Any:
    from neosqlite.collection.jsonb_support import json_data_column, supports_jsonb

    collection = tracker["collection"]
    data = json_data_column(supports_jsonb(collection.db), "document_data")
    return collection.db.execute(
        f"SELECT id, operation, document_id, {data} AS document_data, document_id_value "
        "FROM _neosqlite_changestream WHERE id = ? AND collection_name = ?",
        (rowid, collection_name),
    ).fetchone()


def _looked_up(tracker: dict[str, Any], key: Any) -> Any:
    """The order as it is now (``updateLookup``), in BSON types; None when it is gone."""
    document = tracker["collection"].find_one({"_id": convert_bson_to_neo_objectids(key)})
    return None if document is None else convert_neo_to_bson_objectids(document)


def resume_event_lost(manager: Any, stream: Any, token: Any) -> bool:
    """Whether MongoDB 6.0+ would no longer find ``token``'s event in ``stream``: it was an event
    of this stream when written, and its ``$match`` drops it as it is read now."""
    rowid = _event_row(token)
    with manager._lock:
        tracker = manager._trackers.get((stream.db_name, stream.collection_name))
    if rowid is None or tracker is None:
        return False
    try:
        row = _row(tracker, stream.collection_name, rowid)
    except Exception:  # no change log: nothing to resume after
        return False
    event = manager._translate_row(stream, rowid, row) if row else None
    if event is None or not nx_changestream._pipeline_matches(event, stream.pipeline):
        return False  # no event of this stream: a position past a filtered entry (a high-water mark)
    if event.get("operationType") == "update" and stream.full_document == "updateLookup":
        try:
            event["fullDocument"] = _looked_up(tracker, (event.get("documentKey") or {}).get("_id"))
        except Exception:  # the order unreadable: resumed as before
            return False
    return not nx_changestream._pipeline_matches(event, stream.pipeline)


def _refusal(token: Any) -> dict[str, Any]:
    data = token.get("_data") if isinstance(token, dict) else token
    return {
        "ok": 0,
        "code": 280,
        "codeName": "ChangeStreamFatalError",
        "errmsg": "Executor error during getMore :: caused by :: cannot resume stream; "
        f'the resume token was not found. {{_data: "{data}"}}',
    }


def fix_resume_event_checks(version: tuple[int, ...]) -> None:
    """Fault (answering as 6.0+): a stream resumed after an event its ``$match`` now drops is
    resumed silently; MongoDB fails it (280, module docstring). Fix: noted when the stream is
    opened, answered at its first ``getMore`` that brings an event."""
    if tuple(version[:2]) < RECHECKED_FROM:
        return
    create = nx_changestream.ChangeStreamManager.create_stream

    @functools.wraps(create)
    def create_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        stream = create(self, *args, **kwargs)
        token = stream.resume_after if stream.resume_after is not None else stream.start_after
        stream._nx_resume_lost = (
            token if token is not None and resume_event_lost(self, stream, token) else None
        )
        return stream

    nx_changestream.ChangeStreamManager.create_stream = create_stream
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = next((doc for kind, doc in msg.get("sections", []) if kind == "body"), None)
        cursor_id = body.get("getMore") if isinstance(body, dict) else None
        stream = self._change_stream_manager.get_stream(int(cursor_id)) if cursor_id is not None else None
        lost = getattr(stream, "_nx_resume_lost", None)
        request_id, reply = original(self, msg)
        if stream is None or lost is None or not isinstance(reply, dict) or not reply.get("ok"):
            return request_id, reply
        if not (reply.get("cursor") or {}).get("nextBatch"):
            return request_id, reply  # nothing past the token yet: MongoDB waits too
        self._change_stream_manager.close_stream(stream._id)
        return request_id, _refusal(lost)

    NeoSQLiteHandler.handle_command = handle_command
