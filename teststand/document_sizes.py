"""The devserver's document size limit as MongoDB's, at the size ``hello`` announces.

MongoDB holds no document over ``maxBsonObjectSize`` (16 MB, ``BSONObjMaxUserSize``) and takes
no BSON object over 16 MB + 16 KiB (``BSONObjMaxInternalSize``, the room a command needs around
its largest document). nx-27017 stores and returns documents of any size. With
``NX_MAX_BSON_OBJECT_SIZE`` set (``devserver.max_bson_object_size``: ``hello`` announces it), the
devserver refuses, at that size, what MongoDB refuses at 16 MB:

- a command, or one document of its document sequences (an insert's documents, an update's or a
  delete's statements), over the limit plus 16 KiB: refused whole, nothing applied, ``ok: 0``
  code 10334 ``BSONObjectTooLarge``, with ``BSONObj::_assertInvalid``'s message
  (src/mongo/bson/bsonobj.cpp: "BSONObj size: N (0x..) is invalid. Size must be between 0 and
  16793600(16MB) First element: ...");
- one document of an insert over the limit: that document refused alone, ``writeErrors`` code 2
  ``BadValue`` "object to insert too large. size in bytes: N, max size: 16777216"
  (``fixDocumentForInsert``, src/mongo/db/ops/insert.cpp, 4.4 to 8.0), the others inserted;
- a reply document (a find's, an aggregation's result, a change event) over the limit plus
  16 KiB: the command fails, 10334 as above (the server builds each result as a ``BSONObj``; the
  manual: "the change stream fails" for an event over 16 MB, unless projected or split).

Not modelled: an update whose resulting document is over the limit (17419, 10334 since 7.0,
``update_stage.cpp``; an upsert's insert 17420); the tests keep their updates small.

Unset (the default), nothing is measured: no test document comes near 16 MB.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions, TypeRegistry
from neosqlite.objectid import ObjectId as NeoObjectId
from nx_27017.handler import NeoSQLiteHandler

INTERNAL_ROOM = 16 * 1024  # BSONObjMaxInternalSize - BSONObjMaxUserSize
BAD_VALUE = 2
TOO_LARGE = 10334


def announced_limit() -> int | None:
    """``NX_MAX_BSON_OBJECT_SIZE`` when set (the limit enforced), else None (nothing measured)."""
    value = os.environ.get("NX_MAX_BSON_OBJECT_SIZE", "").strip()
    return int(value) if value else None


def _as_bson(value: Any) -> Any:
    """A value of nx's own (its ObjectId, inside replies before they are encoded) as MongoDB's."""
    return ObjectId(str(value)) if isinstance(value, NeoObjectId) else str(value)


# A reply's documents may still hold nx's own ObjectIds: measured as the BSON they are sent as.
_MEASURED: CodecOptions[dict[str, Any]] = CodecOptions(type_registry=TypeRegistry(fallback_encoder=_as_bson))


def _size(document: Any) -> int:
    try:
        return len(bson.encode(document, codec_options=_MEASURED))
    except (TypeError, bson.errors.InvalidDocument):  # not a BSON document here: nx decides
        return 0


def _first_element(document: dict[str, Any]) -> str:
    for name, value in document.items():
        return f"{name}: {str(value)[:60]}"
    return ""


def too_large(size: int, document: dict[str, Any], limit: int) -> dict[str, Any]:
    """MongoDB's answer to a BSON object over ``limit`` + 16 KiB (``BSONObj::_assertInvalid``)."""
    internal = limit + INTERNAL_ROOM
    return {
        "ok": 0.0,
        "code": TOO_LARGE,
        "codeName": "BSONObjectTooLarge",
        "errmsg": f"BSONObj size: {size} (0x{size:X}) is invalid. Size must be between 0 and "
        f"{internal}({internal // (1024 * 1024)}MB) First element: {_first_element(document)}",
    }


def _sent_documents(msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The command body and each document of its document sequences, as sent."""
    for kind, section in msg.get("sections", []):
        if kind == "body" and isinstance(section, dict):
            yield section
        elif isinstance(section, dict):
            for value in section.values():
                yield from (d for d in (value if isinstance(value, list) else [value]) if isinstance(d, dict))
        elif isinstance(section, list):
            yield from (d for d in section if isinstance(d, dict))


def refused_whole(msg: dict[str, Any], limit: int) -> dict[str, Any] | None:
    """10334 for a command holding a BSON object over ``limit`` + 16 KiB, or None."""
    for document in _sent_documents(msg):
        size = _size(document)
        if size > limit + INTERNAL_ROOM:
            return too_large(size, document, limit)
    return None


def insert_refusals(documents: list[Any], limit: int) -> dict[int, dict[str, Any]]:
    """The write errors of an insert's documents over ``limit``, by index."""
    refusals = {}
    for index, document in enumerate(documents):
        size = _size(document) if isinstance(document, dict) else 0
        if size > limit:
            refusals[index] = {
                "code": BAD_VALUE,
                "codeName": "BadValue",
                "errmsg": f"object to insert too large. size in bytes: {size}, max size: {limit}",
            }
    return refusals


def refused_reply(reply: Any, limit: int) -> dict[str, Any] | None:
    """10334 for a cursor reply holding a document over ``limit`` + 16 KiB, or None."""
    cursor = reply.get("cursor") if isinstance(reply, dict) else None
    if not isinstance(cursor, dict):
        return None
    for document in (cursor.get("firstBatch") or []) + (cursor.get("nextBatch") or []):
        size = _size(document) if isinstance(document, dict) else 0
        if size > limit + INTERNAL_ROOM:
            return too_large(size, document, limit)
    return None


Handler = Callable[[Any, dict[str, Any]], tuple[int, dict[str, Any]]]


def fix_document_size_limit(
    folded_body: Callable[[dict[str, Any]], dict[str, Any] | None],
    insert_refusing: Callable[
        [Any, Handler, dict[str, Any], dict[int, dict[str, Any]]], tuple[int, dict[str, Any]]
    ],
) -> None:
    """Fault: nx-27017 takes and returns documents of any size. Fix: with
    ``NX_MAX_BSON_OBJECT_SIZE`` set, refuse as MongoDB does at its 16 MB (the module's
    docstring). Installed outside the command refusals' parse (a command MongoDB cannot even
    read is refused before anything else) and around the reply."""
    command = NeoSQLiteHandler.handle_command
    insert = NeoSQLiteHandler.handle_insert

    @functools.wraps(command)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        limit = announced_limit()
        if limit is None:
            return command(self, msg)
        answer = refused_whole(msg, limit)
        if answer is not None:
            return msg.get("request_id", 0), answer
        request_id, reply = command(self, msg)
        return request_id, refused_reply(reply, limit) or reply

    @functools.wraps(insert)
    def handle_insert(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        limit = announced_limit()
        if limit is None:
            return insert(self, msg)
        answer = refused_whole(msg, limit)
        if answer is not None:
            return msg.get("request_id", 0), answer
        body = folded_body(msg) or {}
        if "insert" not in body:  # an update or a delete sent as a document sequence
            request_id, reply = insert(self, msg)
            return request_id, refused_reply(reply, limit) or reply
        return insert_refusing(self, insert, msg, insert_refusals(list(body.get("documents") or []), limit))

    NeoSQLiteHandler.handle_command = handle_command
    NeoSQLiteHandler.handle_insert = handle_insert
