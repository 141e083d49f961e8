"""Reads and no-op writes on a collection that does not exist (see ``devserver.py``; shown in
``teststand/tests/test_missing_collections.py``).

MongoDB creates a collection only by writing into it: an insert, an upsert, an index build, an
explicit ``create``. A read of a collection that does not exist reads nothing and creates
nothing: ``count`` answers 0 and the collection can be created afterwards (mongodb/mongo
``jstests/core/query/count/count11.js``, tagged ``assumes_no_implicit_collection_creation_after_drop``),
``distinct`` answers ``[]``, an ``aggregate`` runs its pipeline over no document (an empty
cursor for the stages below; SERVER-78848: "With a ``$group`` stage ... returns an empty
cursor"), a ``$lookup`` from a missing collection joins nothing. An update or a
``findAndModify`` that is no upsert, and a delete, change nothing and create nothing
(``src/mongo/db/ops/write_ops_exec.cpp``: "If this is an upsert, which is an insert, we must
have a collection. An update on a non-existent collection is okay and handled later";
``find_and_modify.cpp``: "Create the collection if it does not exist when performing an
upsert").

nx-27017 reaches a collection through neosqlite's ``Connection[name]``, which creates its table:
every ``count``, ``distinct``, ``aggregate`` (and each ``$lookup``'s foreign collection), update,
delete and ``findAndModify`` created the collection it named (its ``find`` and, through
``index_catalog.py``, ``listIndexes`` did not). A product's read-only probe (``status``,
``doctor``) then created the collections of a mistyped database, and its next run found them
there: a typo read as a healthy, empty deployment.

Here: such a command on a collection whose table does not exist is answered as MongoDB answers
it, without reaching the collection; a ``$lookup`` from a missing collection becomes the empty
join it is. Not covered (the product sends none): ``$unionWith``, ``$graphLookup`` and
``$facet`` reading missing collections, ``explain``. Like nx's own ``find`` on a missing
collection, the filter of a command answered here is not parsed (MongoDB refuses an unknown
operator even there: count11.js).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from nx_27017 import changestream as nx_changestream
from nx_27017.handler import NeoSQLiteHandler

from teststand.watched_collections import table_exists

# Stages that make nothing out of nothing: a pipeline of them over no document yields none.
_EMPTY_FROM_EMPTY = frozenset(
    {
        "$match",
        "$project",
        "$addFields",
        "$set",
        "$unset",
        "$sort",
        "$limit",
        "$skip",
        "$group",
        "$lookup",
        "$unwind",
        "$count",
        "$sortByCount",
        "$replaceRoot",
        "$replaceWith",
        "$sample",
        "$bucket",
        "$bucketAuto",
        "$redact",
    }
)

# The commands that name a collection they must not create (all but an upsert).
_NAMED = frozenset({"count", "distinct", "aggregate", "update", "delete", "findAndModify", "findandmodify"})

Body = dict[str, Any]
Exists = Callable[[str], bool]


def _stage_name(stage: Any) -> str:
    return next(iter(stage), "") if isinstance(stage, dict) and len(stage) == 1 else ""


def _empty_from_empty(pipeline: Any) -> bool:
    return isinstance(pipeline, list) and all(_stage_name(stage) in _EMPTY_FROM_EMPTY for stage in pipeline)


def _cursor(db_name: str, collection: str) -> Body:
    return {"cursor": {"firstBatch": [], "id": 0, "ns": f"{db_name}.{collection}"}, "ok": 1.0}


def _aggregate_answer(body: Body, db_name: str) -> Body | None:
    pipeline = body.get("pipeline")
    if "explain" in body or not _empty_from_empty(pipeline):
        return None
    if nx_changestream.is_change_stream_pipeline(pipeline):  # it waits for the collection
        return None
    return _cursor(db_name, str(body["aggregate"]))


def _update_answer(body: Body) -> Body | None:
    statements = body.get("updates") or []
    if any(isinstance(st, dict) and st.get("upsert") for st in statements):
        return None  # an upsert inserts: MongoDB creates the collection for it
    return {"n": 0, "nModified": 0, "ok": 1.0}


def _find_and_modify_answer(body: Body) -> Body | None:
    if body.get("upsert"):
        return None
    last = {"n": 0} if body.get("remove") else {"n": 0, "updatedExisting": False}
    return {"lastErrorObject": last, "value": None, "ok": 1.0}


def answer_for_missing(body: Body, exists: Exists) -> Body | None:
    """MongoDB's answer to ``body`` when the collection it names does not exist, or None when
    the command is to run (the collection exists, or the command creates it as MongoDB does)."""
    name = next(iter(body), "")
    collection = body.get(name)
    if not isinstance(collection, str) or not collection or exists(collection):
        return None
    db_name = str(body.get("$db", "test"))
    answers: dict[str, Callable[[], Body | None]] = {
        "count": lambda: {"n": 0, "ok": 1.0},
        "distinct": lambda: {"values": [], "ok": 1.0},
        "aggregate": lambda: _aggregate_answer(body, db_name),
        "update": lambda: _update_answer(body),
        "delete": lambda: {"n": 0, "ok": 1.0},
        "findAndModify": lambda: _find_and_modify_answer(body),
        "findandmodify": lambda: _find_and_modify_answer(body),
    }
    answer = answers.get(name)
    return answer() if answer is not None else None


def _empty_join(stage: Any, exists: Exists) -> Any:
    """A ``$lookup`` from a collection that does not exist joins nothing: its ``as`` is ``[]``
    in every document (its sub-pipeline, if any, runs over no document)."""
    spec = stage.get("$lookup") if _stage_name(stage) == "$lookup" else None
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("from"), str)
        or not isinstance(spec.get("as"), str)
    ):
        return stage
    if exists(spec["from"]) or not _empty_from_empty(spec.get("pipeline", [])):
        return stage
    return {"$addFields": {spec["as"]: {"$literal": []}}}


def without_missing_joins(pipeline: list[Any], exists: Exists) -> list[Any] | None:
    """The pipeline with each top-level ``$lookup`` from a missing collection made its empty
    join, or None when it has none."""
    joined = [_empty_join(stage, exists) for stage in pipeline]
    return None if all(a is b for a, b in zip(joined, pipeline, strict=True)) else joined


def _with_pipeline(msg: dict[str, Any], pipeline: list[Any]) -> dict[str, Any]:
    sections = [
        (kind, {**doc, "pipeline": pipeline} if kind == "body" else doc)
        for kind, doc in msg.get("sections", [])
    ]
    return {**msg, "sections": sections}


def fix_reads_create_collections(folded_body: Callable[[dict[str, Any]], Body | None]) -> None:
    """Fault: a read (count, distinct, aggregate, a ``$lookup``'s foreign collection) or a write
    that is no upsert creates the collection it names (module docstring). Fix: answered as
    MongoDB answers on a missing collection, without reaching it."""
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = folded_body(msg)
        if body is None or next(iter(body), "") not in _NAMED:
            return original(self, msg)
        try:
            database = self.get_database(str(body.get("$db", "test")))
        except ValueError:  # a name no file can have: nx's own answer
            return original(self, msg)

        def exists(name: str) -> bool:
            return "." in name or table_exists(database.db, name)  # a system or GridFS name: as nx

        answer = answer_for_missing(body, exists)  # a create racing it: as if it came after
        if answer is not None:
            return msg.get("request_id", 0), answer
        pipeline = body.get("pipeline")
        joined = (
            without_missing_joins(pipeline, exists)
            if "aggregate" in body and isinstance(pipeline, list)
            else None
        )
        return original(self, msg if joined is None else _with_pipeline(msg, joined))

    NeoSQLiteHandler.handle_command = handle_command
