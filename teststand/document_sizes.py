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

- an update statement whose resulting document is over the limit: that statement refused, 17419
  "Resulting document after update is larger than 16777216" (``update_stage.cpp``, 4.4 to 8.0;
  10334 in later versions), an upsert that inserts 17420 "Document to upsert is larger than
  16777216" (``upsert_stage.cpp``); the others applied (an ordered command stops there). The
  result is computed here for the operators the archiver sends (``$set``, ``$unset``,
  ``$setOnInsert``, ``$inc``, ``$max``, ``$min``, a replacement); a multi-document statement
  refused is refused whole, where MongoDB has updated the documents before the one too large.

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
_SET_LIKE = ("$set", "$inc", "$max", "$min")  # the value written (near enough in size for a number)


def _put(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        child = document.get(part)
        document[part] = child = dict(child) if isinstance(child, dict) else {}
        document = child
    document[last] = value


def _drop(document: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    for part in parents:
        child = document.get(part)
        if not isinstance(child, dict):
            return
        document[part] = document = dict(child)
    document.pop(last, None)


def updated(document: dict[str, Any], update: dict[str, Any], *, inserting: bool) -> dict[str, Any] | None:
    """``document`` after ``update`` (a replacement, or the operators above), or None for an
    operator not modelled here (nothing refused then)."""
    if not any(str(key).startswith("$") for key in update):
        return {"_id": document.get("_id"), **update}
    result = dict(document)
    for operator, fields in update.items():
        if not isinstance(fields, dict):
            return None
        if operator in _SET_LIKE or (operator == "$setOnInsert" and inserting):
            for path, value in fields.items():
                _put(result, str(path), value)
        elif operator == "$unset":
            for path in fields:
                _drop(result, str(path))
        elif operator != "$setOnInsert":
            return None
    return result


def _upserted_base(query: Any) -> dict[str, Any]:
    """The fields an upsert's insert takes from its query: its plain equalities."""
    if not isinstance(query, dict):
        return {}
    return {
        k: v
        for k, v in query.items()
        if not str(k).startswith("$") and not (isinstance(v, dict) and any(str(o).startswith("$") for o in v))
    }


def _location(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "codeName": f"Location{code}", "errmsg": message}


def statement_refusal(
    matched: list[dict[str, Any]], statement: dict[str, Any], limit: int
) -> dict[str, Any] | None:
    """The write error of an update statement whose result is over ``limit`` (``matched``: the
    documents its query selects), or None."""
    update = statement.get("u")
    if not isinstance(update, dict):
        return None  # a pipeline update: not modelled
    if not matched and statement.get("upsert"):
        inserted = updated(_upserted_base(statement.get("q")), update, inserting=True)
        if inserted is not None and _size(inserted) > limit:
            return _location(17420, f"Document to upsert is larger than {limit}")
        return None
    for document in matched:
        result = updated(document, update, inserting=False)
        if result is not None and _size(result) > limit:
            return _location(17419, f"Resulting document after update is larger than {limit}")
    return None


def _matched(
    handler: Any, run: Handler, body: dict[str, Any], statement: dict[str, Any]
) -> list[dict[str, Any]]:
    one = not statement.get("multi")
    find = {
        "find": body.get("update"),
        "filter": statement.get("q") or {},
        "batchSize": 100_000,
        "$db": body.get("$db", "test"),
    }
    reply = run(handler, {"request_id": 0, "sections": [("body", find | ({"limit": 1} if one else {}))]})[1]
    return list(((reply.get("cursor") or {}).get("firstBatch")) or [])


def update_refusing(
    handler: Any, run: Handler, msg: dict[str, Any], body: dict[str, Any], limit: int
) -> tuple[int, dict[str, Any]]:
    """An update whose statements with a result over ``limit`` are refused with their write
    errors, the others applied by ``run`` (the server's command handler, which reads what each
    selects first); an ordered update stops at its first refusal."""
    statements = [s for s in body.get("updates") or [] if isinstance(s, dict)]
    refusals = {
        i: error
        for i, statement in enumerate(statements)
        if (error := statement_refusal(_matched(handler, run, body, statement), statement, limit)) is not None
    }
    if not refusals:
        return run(handler, msg)
    refused = sorted(refusals)
    if body.get("ordered", True):
        statements, refused = statements[: refused[0] + 1], refused[:1]
    kept = [i for i in range(len(statements)) if i not in refusals]
    request_id, reply = msg.get("request_id", 0), dict[str, Any]()
    if kept:
        command = {**body, "updates": [statements[i] for i in kept]}
        request_id, reply = run(handler, {**msg, "sections": [("body", command)]})
    reply = {"ok": 1.0, "n": 0, "nModified": 0, **reply}
    if reply.get("upserted"):
        reply["upserted"] = [{**u, "index": kept[u["index"]]} for u in reply["upserted"]]
    errors = [{**e, "index": kept[e["index"]]} for e in reply.get("writeErrors") or []]
    errors += [{"index": i, **refusals[i]} for i in refused]
    reply["writeErrors"] = sorted(errors, key=lambda e: int(e["index"]))
    return request_id, reply


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
        body = folded_body(msg) or {}
        if "update" in body:
            return update_refusing(self, command, msg, body, limit)
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
        if "insert" not in body:  # a delete sent as a document sequence
            request_id, reply = insert(self, msg)
            return request_id, refused_reply(reply, limit) or reply
        return insert_refusing(self, insert, msg, insert_refusals(list(body.get("documents") or []), limit))

    NeoSQLiteHandler.handle_command = handle_command
    NeoSQLiteHandler.handle_insert = handle_insert
