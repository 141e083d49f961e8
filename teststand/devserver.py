"""A local development server: nx-27017 (a MongoDB wire-protocol server over SQLite) with
its known departures from MongoDB fixed. For the demo, ``make dev-server``, the tests and the
benchmarks; never for production data (no replication, no durability promise).

nx-27017 is the only MongoDB-speaking server that installs on machines without MongoDB;
``shared/nx-27017.md`` lists where it departs from MongoDB's documented behaviour. Each
``_fix_*`` function below patches one such departure, so that the archiver meets what
MongoDB does, not the stand-in's quirks. Every fix has a test in
``teststand/tests/test_nx_launcher.py`` that shows the fixed behaviour. The tests add
fault knobs of their own on top (``teststand/nx_launcher.py``).

Usage::

    python -m teststand.devserver --data-dir DIR -p PORT [--standalone]   (make dev-server [PORT=N]; log, pid in DIR)
    DevServer(folder).start() ... .stop()              (demo, tests, benchmarks)

Both start the primary of a one-member replica set (``DEFAULT_REPLICA_SET``, rs0), the smallest
deployment with change streams; ``--standalone`` (``DevServer(folder, replica_set="")``) a
standalone, which refuses change streams as MongoDB does (40573).

From the command line (``serve``): a port in use is one line and exit 2; the log and pid
files default to the data folder; the engine's fallback warnings go to the log file only.

It needs the development requirements (``requirements-dev.txt``: nx-27017, neosqlite).

It refuses what MongoDB refuses (``_refuse_what_mongodb_refuses``, from the tables of
``mongodb_definitions.py``): a stand-in that accepts a command MongoDB refuses is a lie in
every test that sends it.

Environment: ``NX_MONGODB_VERSION`` the MongoDB version it answers as and whose definitions it
enforces (default 8.0; ``4.4`` for the version floor, ``4.4.1`` for a server without
``hello``); ``NX_REPLICA_SET=NAME`` answers ``hello`` as the primary of a one-member replica
set of that name (unset: a standalone server, which refuses ``$changeStream``; the command
line and ``DevServer`` set it to rs0 unless asked for a standalone); ``NX_RESUME_RETENTION_ROWS`` sets how many
change-log rows the server keeps past the slowest open stream (default 1000), so that a test
can make history run out cheaply; ``NX_EVENT_CLOCK_AHEAD_S`` how far change events' clock
runs ahead of ``hello``'s (a shard primary's clock ahead of ``mongos``);
``NX_CLOCK_AHEAD_S`` how far the deployment's clock (``hello``'s ``localTime``) runs ahead of the
host's, where a client's host clock is behind its server's; ``NX_PERIODIC_NOOP_S`` how often an idle change history gets a no-op entry (MongoDB's
``periodicNoopIntervalSecs``, default 10: ``stream_positions.py``); ``NX_MAX_BSON_OBJECT_SIZE`` the ``maxBsonObjectSize`` ``hello`` answers (default 16 MB), so that
a test makes the driver's command size limit bite with a few thousand ids, and the size the
server then enforces as MongoDB does its 16 MB (documents inserted, commands, results and change
events: ``document_sizes.py``);
``NX_SCAN_TIME_LIMIT_OVER=N`` an ``aggregate`` carrying ``maxTimeMS`` that reads a whole
collection of more than N documents answers 50 MaxTimeMSExpired (a large collection outlasting
its time limit); ``NX_SORT_MEMORY_OVER=N``, answering as a version before 6.0, a ``find`` sorted
on no index's order, without ``allowDiskUse``, over more than N documents answers 292 (a blocking
sort past its 100 MB); ``NX_SECONDARY_LAG_FILE=PATH`` (with ``NX_REPLICA_SET``) a secondary in ``replSetGetStatus`` as
many seconds behind as the file says, read at every call (``replica_status.py``); ``NX_MONGOS=1``
answers as a sharded cluster's ``mongos`` (``hello``, ``replSetGetStatus``), with
``NX_SHARDED_COLLECTIONS=NAME[:FIELD],...`` the collections it says are sharded
(``config.collections``, untargeted upserts 61, ``$lookup`` from them before 5.1: 28769;
``mongos.py``); ``NX_PLAIN_USERS=user:password,...`` the accounts SASL PLAIN
accepts (tests only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import errno
import functools
import inspect
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import neosqlite.changestream as neo_changestream
import neosqlite.collection.query_engine as neo_query_engine
import neosqlite.collection.query_engine.python_aggregation_engine as neo_python_engine
import neosqlite.collection.query_helper.utils as neo_query_utils
import neosqlite.exceptions as neo_exceptions
import pymongo
from bson import Decimal128, MaxKey, MinKey, ObjectId
from neosqlite.collection.cursor import Cursor
from neosqlite.collection.json_helpers import neosqlite_json_dumps, neosqlite_json_loads
from neosqlite.collection.json_path_utils import parse_json_path
from neosqlite.collection.query_helper import QueryHelper
from neosqlite.collection.query_helper._sql_updates import SqlUpdatesMixin
from neosqlite.collection.query_helper.update_operations import UpdateOperationsMixin
from neosqlite.objectid import ObjectId as NeoObjectId
from neosqlite.sql_utils import quote_table_name
from nx_27017 import changestream as nx_changestream
from nx_27017.handler import NeoSQLiteHandler
from nx_27017.utils import convert_bson_to_neo_objectids, convert_neo_to_bson_objectids

from teststand import (
    comparisons,
    document_sizes,
    index_catalog,
    missing_collections,
    mongos,
    replica_status,
    resume_events,
    stream_positions,
    watched_collections,
)
from teststand import mongodb_definitions as definitions

_fallback = threading.local()
_unknown_cursor = threading.local()  # set by a getMore whose cursor the server does not know


# --- Queries ------------------------------------------------------------------------------


def _per_thread_force_fallback() -> bool:  # pragma: no cover - runs with utils' globals
    return getattr(_NX_FALLBACK_LOCAL, "on", False)  # type: ignore[name-defined]  # noqa: F821 - resolved in neosqlite


def _fix_force_fallback_per_thread() -> None:
    """Fault: the SQL aggregation tier mis-encodes ``$lookup`` results (``_id`` as a string,
    the joined array as JSON text). Its Python engine is right, but the only switch to it is
    global, and with it on every ``find_one`` is a full scan and ObjectId-filtered
    ``update_many``/``delete_many`` match nothing. Fix: make the switch per thread (every
    module imported the function object, so its code is swapped in place) and turn it on
    only while an ``aggregate`` command is handled (see ``_wrap_handle_command``)."""
    neo_query_utils._NX_FALLBACK_LOCAL = _fallback
    neo_query_utils.get_force_fallback.__code__ = _per_thread_force_fallback.__code__


class _PrefetchedEngine:
    """The query engine, except that ``find()`` yields documents fetched beforehand."""

    def __init__(self, engine: Any, docs: list[dict[str, Any]]) -> None:
        self._engine = engine
        self._docs = docs

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return iter(self._docs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _has_dotted_key(spec: Any) -> bool:
    if isinstance(spec, dict):
        return any(("." in k) or _has_dotted_key(v) for k, v in spec.items())
    if isinstance(spec, list):
        return any(_has_dotted_key(v) for v in spec)
    return False


_LOOKUP_STRIPS_ID = 'k: v for k, v in match_doc.items() if k != "_id"'


def _fix_lookup_drops_foreign_id() -> None:
    """Fault: the Python engine's ``$lookup`` drops the joined documents' ``_id``; MongoDB keeps
    it, and the archiver needs it to tell which joined dish is which item's. Fix: recompile the
    engine's function without that one filter (the version is pinned; fail loudly if the
    source no longer has it)."""
    source = inspect.getsource(neo_python_engine.execute_python_aggregation)
    if _LOOKUP_STRIPS_ID not in source:
        raise RuntimeError("neosqlite changed: the $lookup _id fix no longer applies")
    source = source.replace(_LOOKUP_STRIPS_ID, "k: v for k, v in match_doc.items()")
    exec(compile(source, neo_python_engine.__file__, "exec"), neo_python_engine.__dict__)
    neo_query_engine.execute_python_aggregation = neo_python_engine.execute_python_aggregation


_MISSING = object()


def _include_paths(value: Any, paths: list[list[str]]) -> Any:
    """MongoDB's inclusion projection of dotted ``paths`` (split) on one value: through arrays
    element by element; a scalar where a subdocument was expected is dropped."""
    if isinstance(value, list):
        kept = [_include_paths(v, paths) for v in value if isinstance(v, (dict, list))]
        return [v for v in kept if v is not _MISSING]
    if not isinstance(value, dict):
        return _MISSING
    grouped: dict[str, list[list[str]]] = {}
    for path in paths:
        grouped.setdefault(path[0], []).append(path[1:])
    out: dict[str, Any] = {}
    for key, rests in grouped.items():
        if key not in value:
            continue
        if any(not rest for rest in rests):
            out[key] = value[key]
            continue
        projected = _include_paths(value[key], rests)
        if projected is not _MISSING:
            out[key] = projected
    return out


def _fix_dotted_inclusion_projection() -> None:
    """Fault: the Python engine's ``$project`` ignores dotted inclusion paths
    (``{"client.nom": 1}`` yields no ``client``), which MongoDB applies through subdocuments
    and arrays of them. Fix: apply plain inclusion projections with a dotted path the
    MongoDB way; anything else (expressions, exclusions) goes to the engine as before."""
    original = QueryHelper._apply_projection

    @functools.wraps(original)
    def apply_projection(self: Any, projection: dict[str, Any], document: dict[str, Any]) -> Any:
        if (
            projection
            and any("." in key for key in projection)
            and all(
                v in (0, 1, True, False) and not (k != "_id" and v in (0, False))
                for k, v in projection.items()
            )
        ):
            paths = [key.split(".") for key, v in projection.items() if v and key != "_id"]
            if projection.get("_id", 1):
                paths.append(["_id"])
            return _include_paths(document, paths)
        return original(self, projection, document)

    QueryHelper._apply_projection = apply_projection


def _fix_python_aggregation_full_load() -> None:
    """Fault: the Python aggregation engine loads the whole collection on every call, so a
    one-order enrichment costs a full scan. Fix: when the pipeline starts with a ``$match``
    without dotted keys, fetch those documents with the indexed ``find`` (switch off), then
    run the pipeline (its ``$match`` included, harmlessly) over them."""
    original = neo_query_engine.execute_python_aggregation

    @functools.wraps(original)
    def execute(query_engine: Any, pipeline: list[dict[str, Any]], session: Any = None) -> Any:
        first = pipeline[0] if pipeline else None
        if isinstance(first, dict) and set(first) == {"$match"}:
            match = first["$match"]
            if isinstance(match, dict) and not _has_dotted_key(match):
                previous = getattr(_fallback, "on", False)
                _fallback.on = False
                try:
                    docs = list(query_engine.find(match, session=session))
                finally:
                    _fallback.on = previous
                return original(_PrefetchedEngine(query_engine, docs), pipeline, session)
        return original(query_engine, pipeline, session)

    neo_query_engine.execute_python_aggregation = execute


_NEO_OBJECTID_TAG = "__neosqlite_objectid__"


def _stored_forms(value: Any) -> list[str]:
    """What ``json_extract`` reads back where ``value`` is stored: an ObjectId (neosqlite's
    form, as compact JSON) or the same 24 hexadecimal digits as a string. neosqlite's find
    turns a filter's ObjectIds into such strings before the SQL tier, whose ``$in`` then
    matches either: both are kept."""
    return [json.dumps({_NEO_OBJECTID_TAG: True, "id": str(value)}, separators=(",", ":")), str(value)]


def _is_objectid(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) == 24 and ObjectId.is_valid(value)
    return isinstance(value, (ObjectId, NeoObjectId))


def _objectids(value: Any) -> list[Any] | None:
    """The ObjectIds an equality or ``$in`` names (bson's, neosqlite's, or as the 24
    hexadecimal digits neosqlite's find makes of them), or None."""
    values = value.get("$in", value.get("$eq")) if isinstance(value, dict) and len(value) == 1 else value
    values = values if isinstance(values, list) else [values]
    if values and all(_is_objectid(v) for v in values):
        return values
    return None


def _indexed_objectid_terms(helper: Any, query: Any) -> list[tuple[str, list[Any]]] | None:
    """``(field, ObjectIds)`` for a filter made only of ObjectId equalities (``$in``) on fields
    other than ``_id`` that have an index, alone or as the branches of one ``$or``; else None."""
    if not isinstance(query, dict) or len(query) != 1:
        return None
    branches = query.get("$or", [query])
    if not isinstance(branches, list) or not branches:
        return None
    indexes = set(helper.collection.list_indexes())
    terms = []
    for branch in branches:
        if not isinstance(branch, dict) or len(branch) != 1:
            return None
        (field, value), *_ = branch.items()
        ids = _objectids(value)
        indexed = f"idx_{helper.collection.name}_{field.replace('.', '_')}" in indexes
        if field.startswith("$") or field == "_id" or ids is None or not indexed:
            return None
        terms.append((field, ids))
    return terms


def _fix_indexed_objectid_selections() -> None:
    """Fault: nx-27017 reads an ObjectId equality on a field other than ``_id`` (as ``$in``,
    see ``_rewrite_objectid_equality``) and every ``$or`` in Python, over the whole
    collection, index or not. MongoDB reads an equality on an indexed field from its index,
    and an ``$or`` from indexes when every branch has one (an index union; one branch without
    an index: a collection scan; the manual's ``$or`` page, "$or Clauses and Indexes"). A
    selection MongoDB serves from an index (forget's and restore's ``client.id`` /
    ``source.client_id``) then costs the whole collection here, and a benchmark measures the
    stand-in. Fix: a filter made only of such equalities on indexed fields, one or the branches
    of one ``$or``, becomes SQL that the index's own expression serves (the stored form of the
    ObjectId, compared with ``json_extract``); SQLite reads an OR of indexed terms by
    "MULTI-INDEX OR" and scans when a term has no index, as MongoDB does. Any other filter goes
    to neosqlite as before."""
    if json.loads(neosqlite_json_dumps(NeoObjectId())).keys() != {_NEO_OBJECTID_TAG, "id"}:
        raise RuntimeError("neosqlite changed: the stored form of an ObjectId is not the one this fix reads")
    original = QueryHelper._build_simple_where_clause

    @functools.wraps(original)
    def build_simple_where_clause(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        terms = None if neo_query_utils.get_force_fallback() else _indexed_objectid_terms(self, query)
        if terms is None or self.jsonb.json_function_prefix != "json":
            return original(self, query, *args, **kwargs)
        clauses = [
            f"json_extract(data, '{parse_json_path(field)}') IN ({', '.join('?' * (2 * len(ids)))})"
            for field, ids in terms
        ]
        params = [form for _, ids in terms for one in ids for form in _stored_forms(one)]
        return "WHERE (" + " OR ".join(clauses) + ")", params, []

    QueryHelper._build_simple_where_clause = build_simple_where_clause


_ID_RANGE_SQL = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _objectid_range(value: Any) -> list[tuple[str, str]] | None:
    """``[(SQL operator, 24 hexadecimal digits)]`` for an ``_id`` range made only of
    ``$gt``/``$gte``/``$lt``/``$lte`` ObjectIds; else None (a string bound compares strings)."""
    if not isinstance(value, dict) or not value or any(op not in _ID_RANGE_SQL for op in value):
        return None
    if not all(isinstance(bound, (ObjectId, NeoObjectId)) for bound in value.values()):
        return None
    return [(_ID_RANGE_SQL[op], str(bound)) for op, bound in value.items()]


def _fix_objectid_range_selections() -> None:
    """Fault: nx-27017 reads a filter with an ``_id`` range (``{_id: {$gt: oid}}``, beside other
    fields or alone) in Python: every document of the collection decoded, tested and sorted,
    for each page of a keyset walk (0.85 s a page at 100,000 orders). MongoDB reads it from an
    index range (``{status: 1, _id: 1}`` or ``_id``), a page's cost that of the page. A
    ``--partition`` share and the page-by-page read walk the delivered ``_id``s that way, so
    their cost here grew with the history and a benchmark measured the stand-in. Fix: the range
    becomes SQL on the ``_id`` column (an ObjectId is stored there as its 24 lower-case
    hexadecimal digits, whose text order is the ObjectId's byte order), kept to documents whose
    ``_id`` is stored as an ObjectId (neosqlite's tagged form), as MongoDB's comparison with an
    ObjectId matches no other type (a string of the same digits, an embedded document); the
    rest of the filter is built as before (none that it cannot build in SQL: the whole filter
    goes to Python, as before)."""
    original = QueryHelper._build_simple_where_clause

    @functools.wraps(original)
    def build_simple_where_clause(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        bounds = _objectid_range(query.get("_id")) if isinstance(query, dict) else None
        if (
            bounds is None
            or neo_query_utils.get_force_fallback()
            or self.jsonb.json_function_prefix != "json"
        ):
            return original(self, query, *args, **kwargs)
        rest = {field: value for field, value in query.items() if field != "_id"}
        built = original(self, rest, *args, **kwargs) if rest else ("", [], [])
        if built is None:
            return original(self, query, *args, **kwargs)
        where, params, tables = built
        column = f"{quote_table_name(self.collection.name)}._id"
        terms = [f"{column} {op} ?" for op, _ in bounds] + [
            f"json_extract(data, '$._id.{_NEO_OBJECTID_TAG}') IS NOT NULL"
        ]
        clause = f"{where} AND " if where else "WHERE "
        return clause + " AND ".join(terms), [*params, *(digits for _, digits in bounds)], tables

    QueryHelper._build_simple_where_clause = build_simple_where_clause


# MongoDB's order of types (the manual's "Comparison/Sort Order"): MinKey, null, numbers,
# strings, objects, arrays, binary data, ObjectId, booleans, dates, then timestamps and regexes
# (which a document here never holds: neosqlite stores neither), MaxKey. bool before int: a bool
# is an int. Not MongoDB's: an array sorts by its elements in turn (MongoDB: by its smallest
# element ascending, its largest descending; an empty one before null).
_BSON_RANKS: tuple[tuple[type | tuple[type, ...], int], ...] = (
    (MinKey, 0),
    (MaxKey, 14),
    (bool, 8),
    ((int, float, Decimal128), 2),
    (str, 3),
    (dict, 4),
    ((list, tuple), 5),
    (bytes, 6),
    ((ObjectId, NeoObjectId), 7),
    (datetime, 9),
)


def _bson_order_key(value: Any) -> tuple[Any, ...]:
    """A sort key in MongoDB's order of types (neosqlite's ``bson_sort_key`` puts an ObjectId
    after booleans and dates, and a boolean before binary data)."""
    if value is None:
        return (1,)
    rank = next((rank for types, rank in _BSON_RANKS if isinstance(value, types)), 13)
    if rank == 4:  # field by field in the document's order: each value's type, its name, its value
        fields = ((name, _bson_order_key(item)) for name, item in value.items())
        return (rank, tuple((key[0], name, key) for name, key in fields))
    if rank == 5:
        return (rank, tuple(_bson_order_key(item) for item in value))
    if rank == 6:
        return (rank, len(value), bytes(value))  # binary data: the length first
    if rank == 7:
        return (rank, str(value))  # the 24 hexadecimal digits, in the bytes' order
    if rank == 9:
        return (rank, value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp())
    if rank == 13:
        return (rank, type(value).__name__, repr(value))
    if isinstance(value, Decimal128):
        return (rank, value.to_decimal())
    if rank in (0, 14):
        return (rank,)
    return (rank, value)


# ``$type`` names and numbers neosqlite does not know (it knows numbers, strings, objects, arrays,
# booleans and null): an ObjectId, a date, binary data matched nothing.
_MORE_TYPES: dict[str | int, type | tuple[type, ...]] = {
    "objectId": (ObjectId, NeoObjectId),
    7: (ObjectId, NeoObjectId),
    "date": datetime,
    9: datetime,
    "binData": bytes,
    5: bytes,
}


def _fix_bson_types_and_order() -> None:
    """Fault: nx-27017 sorts values of different types in an order of its own (an ObjectId after
    booleans and dates: a sort on ``_id`` across types, as a walk past dirty data makes, comes
    back in another order than MongoDB's), and its ``$type`` matches no ObjectId, date nor
    binary data (``{_id: {$type: "objectId"}}`` finds nothing, so a walk past a string ``_id``
    never reached the ObjectIds after it). Fix: sorts take ``_bson_order_key`` (MongoDB's order
    of types) wherever neosqlite sorts, and ``$type`` knows those three types, by name and
    number, alone or in a list."""
    import neosqlite.collection.cursor as neo_cursor
    import neosqlite.collection.query_helper.fill_stage as neo_fill
    import neosqlite.collection.query_helper.window_operators as neo_windows
    import neosqlite.collection.type_utils as neo_type_utils
    import neosqlite.query_operators as neo_operators

    for module in (neo_type_utils, neo_cursor, neo_python_engine, neo_fill, neo_windows):
        module.bson_sort_key = _bson_order_key
    original = neo_operators._type

    @functools.wraps(original)
    def type_of(field: str, value: Any, document: dict[str, Any]) -> bool:
        names = value if isinstance(value, list) else [value]
        if not any(name in _MORE_TYPES for name in names if isinstance(name, (str, int))):
            return bool(original(field, value, document))
        found = neo_operators._get_nested_field(field, document)
        return any(
            isinstance(found, _MORE_TYPES[name]) if name in _MORE_TYPES else original(field, name, document)
            for name in names
        )

    neo_operators._type = type_of


# The types MongoDB sorts after ObjectId (the manual's "Comparison/Sort Order"), as ``$type``
# names them: an ``_id`` walk across types ends with these.
_TYPES_AFTER_OBJECTID = frozenset({"bool", "date", "timestamp", "regex", "maxKey"})


def _later_type_branch(branch: Any) -> bool:
    spec = branch.get("_id") if isinstance(branch, dict) and list(branch) == ["_id"] else None
    return isinstance(spec, dict) and list(spec) == ["$type"] and spec["$type"] in _TYPES_AFTER_OBJECTID


def _id_walk_parts(query: Any) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """A keyset walk's filter across types, ``{..., $or: [{_id: {$gt: oid}}, {_id: {$type:
    "bool"}}, ...]}`` (``selection.ids_after``), as its two disjoint parts in ``_id`` order: the
    ObjectIds after the bound, then the ``_id``s of the types MongoDB sorts after ObjectId. None
    for any other filter."""
    branches = query.get("$or") if isinstance(query, dict) and "_id" not in query else None
    if not isinstance(branches, list) or not branches:
        return None
    ranges = [b for b in branches if isinstance(b, dict) and list(b) == ["_id"] and _objectid_range(b["_id"])]
    later = [b for b in branches if b not in ranges]
    if len(ranges) != 1 or not all(_later_type_branch(b) for b in later):
        return None
    rest = {field: value for field, value in query.items() if field != "$or"}
    return {**rest, "_id": ranges[0]["_id"]}, ({**rest, "$or": later} if later else None)


def _fix_id_walk_across_types() -> None:
    """Fault: a filter with an ``$or`` is read in Python over the whole collection, and the
    product's keyset walk has one: ``_id`` after the last one *across* types (``{$or: [{_id:
    {$gt: oid}}, {_id: {$type: "bool"}}, ...]}``, ``selection.ids_after``: ``$gt`` alone stays
    within a type), so every page of a ``--partition`` share decoded the collection (1.25 s a
    page at 30,000 orders). MongoDB reads each branch from an index range. Fix: such a filter,
    sorted on ``_id`` ascending or not sorted, is read as its two parts in that order: the
    ObjectIds after the bound (SQL, ``_fix_objectid_range_selections``), then, only while the
    limit is not reached, the ``_id``s of the later types (Python, as before; a walk meets them
    once, at its end). Every ObjectId sorts before those types, so the answer is MongoDB's."""
    original = Cursor._execute_query

    @functools.wraps(original)
    def execute_query(self: Any) -> Any:
        parts = _id_walk_parts(self._filter)
        plain = not (self._skip or self._min or self._max or self._where_predicate)
        ordered = self._sort == {"_id": 1} or (not self._sort and not self._limit)
        if parts is None or not (plain and ordered) or neo_query_utils.get_force_fallback():
            yield from original(self)
            return
        first = self.clone()
        first._filter = parts[0]
        found = list(first)
        yield from found
        wanted = abs(self._limit) - len(found) if self._limit else None
        if parts[1] is not None and (wanted is None or wanted > 0):
            then = self.clone()
            then._filter, then._limit = parts[1], wanted
            yield from then

    Cursor._execute_query = execute_query


def _rewrite_objectid_equality(spec: Any) -> Any:
    """``{field: oid}`` / ``{field: {"$eq": oid}}`` -> ``{field: {"$in": [oid]}}``: the same query
    in MongoDB, and the only form nx's SQL tier matches on a field other than ``_id``, dotted
    paths included (``client.id``: plain equality matched nothing in an update, found by
    ``forget``). The same for ``null``: inside ``$and``/``$or``, ``{field: null}`` matched only
    documents without the field, not those holding null, and ``count`` of two such equalities
    side by side counted one of three (found by the erasure's "every personal field is null");
    ``{field: {"$in": [null]}}`` (the same query in MongoDB: null or missing) is read right."""
    if not isinstance(spec, dict):
        return spec
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key in ("$and", "$or", "$nor") and isinstance(value, list):
            out[key] = [_rewrite_objectid_equality(v) for v in value]
        elif key == "_id" or key.startswith("$"):
            out[key] = value
        elif value is None or isinstance(value, ObjectId):
            out[key] = {"$in": [value]}
        elif (
            isinstance(value, dict)
            and set(value) == {"$eq"}
            and (value["$eq"] is None or isinstance(value["$eq"], ObjectId))
        ):
            out[key] = {"$in": [value["$eq"]]}
        else:
            out[key] = value
    return out


def _rewrite_statements(statements: Any) -> Any:
    if not isinstance(statements, list):
        return statements
    return [_fix_statement(s) if isinstance(s, dict) and "q" in s else s for s in statements]


def _upsert_keeps_id(statement: dict[str, Any]) -> dict[str, Any]:
    """Fault: an upsert whose ``_id`` is only in the filter (``{q: {_id: oid}, u: {$set: …},
    upsert: true}``) inserts a document whose ``_id`` is the ObjectId's hex *string*; MongoDB
    takes the filter's equality fields as they are. Fix: give the insert the filter's ``_id``
    through ``$setOnInsert`` (what MongoDB's upsert does by itself)."""
    query, update = statement.get("q"), statement.get("u")
    if not statement.get("upsert") or not isinstance(query, dict) or not isinstance(update, dict):
        return statement
    key = query.get("_id")
    if key is None or isinstance(key, dict) or not update or not all(k.startswith("$") for k in update):
        return statement
    on_insert = update.get("$setOnInsert") or {}
    if "_id" in on_insert or "_id" in (update.get("$set") or {}):
        return statement
    return {**statement, "u": {**update, "$setOnInsert": {**on_insert, "_id": key}}}


def _filter_id(query: Any) -> Any:
    """The ``_id`` a filter names by equality (``{_id: v}`` or ``{_id: {$eq: v}}``), or _MISSING."""
    key = query.get("_id", _MISSING) if isinstance(query, dict) else _MISSING
    if isinstance(key, dict) and any(k.startswith("$") for k in key):
        return key["$eq"] if set(key) == {"$eq"} else _MISSING
    return key


def _replacement_keeps_id(query: Any, replacement: Any, upsert: Any) -> Any:
    """Fault: an upsert with a replacement document (``replace_one({_id: 3}, {e: 1},
    upsert=True)``, ``find_one_and_replace`` likewise) inserts it under a new ObjectId. MongoDB
    (manual, ``db.collection.replaceOne()``, upsert): a replacement without ``_id`` takes the
    filter's ``_id`` equality, and only that field of the filter. Fix: copy it in first."""
    if not upsert or not isinstance(replacement, dict) or any(k.startswith("$") for k in replacement):
        return replacement
    key = _filter_id(query)
    if key is _MISSING or "_id" in replacement:
        return replacement
    return {"_id": key, **replacement}


def _id_beside_or(statement: dict[str, Any]) -> dict[str, Any]:
    """Fault: an update whose filter has an ``_id`` equality beside a top-level ``$or``
    (``{_id: "watch:a", $or: [{term: {$lte: 1}}, {term: null}]}``, a fenced save) ignores the
    ``_id`` and rewrites the first document the ``$or`` matches, another key's document
    included; ``find`` with the same filter is right. Fix: nest both in an ``$and``, which
    the update path reads right (after ``_upsert_keeps_id`` has read the ``_id``)."""
    query = statement.get("q")
    if not isinstance(query, dict) or "$or" not in query or "_id" not in query:
        return statement
    rest = {k: v for k, v in query.items() if k != "_id"}
    return {**statement, "q": {"$and": [{"_id": query["_id"]}, rest]}}


def _ne_matches_missing(statement: dict[str, Any]) -> dict[str, Any]:
    """Fault: in an update's filter, ``{field: {$ne: v}}`` matches only the documents that hold
    ``field`` (an update tagged so that a retry does not apply it twice, ``{_id: x, counted_by:
    {$ne: tag}}``, never applied to a document without the tag; ``find`` with the same filter is
    right); MongoDB's ``$ne`` also matches the documents without the field. Fix: ``{$or:
    [{field: {$exists: false}}, {field: {$ne: v}}]}``, the same query in MongoDB, which the update
    path reads right (one such field, and no ``$or`` of its own beside it)."""
    query = statement.get("q")
    if not isinstance(query, dict) or "$or" in query:
        return statement
    fields = [
        k
        for k, v in query.items()
        if not k.startswith("$") and k != "_id" and isinstance(v, dict) and set(v) == {"$ne"}
    ]
    if len(fields) != 1:
        return statement
    field = fields[0]
    rest = {k: v for k, v in query.items() if k != field}
    either = [{field: {"$exists": False}}, {field: query[field]}]
    return {**statement, "q": {**rest, "$or": either}}


def _fix_statement(statement: dict[str, Any]) -> dict[str, Any]:
    fixed = _upsert_keeps_id({**statement, "q": _rewrite_objectid_equality(statement["q"])})
    fixed["u"] = _replacement_keeps_id(statement["q"], fixed.get("u"), fixed.get("upsert"))
    return _id_beside_or(_ne_matches_missing(fixed))


def _rewrite_pipeline(pipeline: list[Any]) -> list[Any]:
    return [
        {"$match": _rewrite_objectid_equality(stage["$match"])}
        if isinstance(stage, dict) and set(stage) == {"$match"}
        else stage
        for stage in pipeline
    ]


_AUTH_FAILED = {
    "ok": 0,
    "code": 18,
    "codeName": "AuthenticationFailed",
    "errmsg": "Authentication failed.",
}
_AUTH_COMMANDS = ("saslStart", "saslContinue", "authenticate")


def _plain_users() -> set[bytes]:
    """``NX_PLAIN_USERS=user:password,...``: accounts the PLAIN mechanism accepts (tests only)."""
    users = set()
    for entry in os.environ.get("NX_PLAIN_USERS", "").split(","):
        if ":" in entry:
            user, password = entry.split(":", 1)
            users.add(f"\x00{user}\x00{password}".encode())
    return users


def _authenticate(command: dict[str, Any]) -> dict[str, Any]:
    """SASL PLAIN (RFC 4616, MongoDB's LDAP mechanism) for the accounts of ``NX_PLAIN_USERS``,
    so that tests can run every command with a password in the URI; anything else gets what
    MongoDB answers an unknown user."""
    payload = command.get("payload")
    if command.get("mechanism") == "PLAIN" and payload is not None and bytes(payload) in _plain_users():
        return {"ok": 1, "conversationId": 1, "done": True, "payload": b""}
    return dict(_AUTH_FAILED)


def _compound_with_id(index: Any) -> bool:
    key = index.get("key") if isinstance(index, dict) else None
    return isinstance(key, dict) and "_id" in key and len(key) > 1


def _answered_here(body: dict[str, Any]) -> dict[str, Any] | None:
    """A reply the wrapper gives itself: authentication, or an index build left with nothing."""
    if any(c in body for c in _AUTH_COMMANDS):
        return _authenticate(body)
    indexes = body.get("indexes")
    if "createIndexes" in body and isinstance(indexes, list) and all(_compound_with_id(ix) for ix in indexes):
        return {"ok": 1, "note": "compound index on _id skipped (nx-27017)"}
    return None


def _without_compound_id_indexes(body: dict[str, Any]) -> dict[str, Any]:
    if "createIndexes" in body and isinstance(body.get("indexes"), list):
        return {**body, "indexes": [ix for ix in body["indexes"] if not _compound_with_id(ix)]}
    return body


def _rewrite_section(section_type: str, doc: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The section with ObjectId equality, upserts and pipelines fixed; True for an aggregate."""
    doc = dict(doc)
    for key in ("filter", "query"):
        if isinstance(doc.get(key), dict):
            doc[key] = _rewrite_objectid_equality(doc[key])
    for key in ("updates", "deletes"):
        if key in doc:
            doc[key] = _rewrite_statements(doc[key])
    if "findAndModify" in doc and "update" in doc:
        doc["update"] = _replacement_keeps_id(doc.get("query"), doc["update"], doc.get("upsert"))
    pipeline = doc.get("pipeline")
    if (
        section_type == "body"
        and "aggregate" in doc
        and isinstance(pipeline, list)
        and not nx_changestream.is_change_stream_pipeline(pipeline)
    ):
        doc["pipeline"] = convert_bson_to_neo_objectids(_rewrite_pipeline(pipeline))
        return doc, True
    return doc, False


def _wrap_handle_command() -> None:
    """One wrapper around the command entry point carries five fixes:

    - aggregate (not change streams) runs on the Python engine: the per-thread switch is on
      only while it is handled (see ``_fix_force_fallback_per_thread``);
    - ObjectIds inside an aggregate pipeline are converted to neosqlite's, as nx already does
      for find/update/delete (otherwise ``{$match: {_id: oid}}`` matches nothing);
    - ObjectId equality on a non-``_id`` field is rewritten to ``$in`` in ``filter``, ``query``,
      the ``q`` of ``updates``/``deletes`` (body or payload sections) and ``$match`` stages;
    - ``saslStart``/``saslContinue``/``authenticate`` answer what MongoDB with access control
      answers an unknown user (code 18), instead of a reply pymongo cannot read
      (``KeyError: 'payload'``); PLAIN succeeds for the test accounts of ``NX_PLAIN_USERS``;
    - ``createIndexes`` of a compound key with ``_id`` (``{status: 1, _id: 1}``, which MongoDB
      builds) fails in neosqlite ("JSON path error near '_id'"): such an index is skipped
      and the command succeeds (it only speeds up a walk in ``_id`` order).
    """
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        sections = []
        is_aggregate = False
        for section_type, doc in msg.get("sections", []):
            if isinstance(doc, dict) and section_type == "body":
                early = _answered_here(doc)
                if early is not None:
                    return msg["request_id"], early
                doc = _without_compound_id_indexes(doc)
            if isinstance(doc, dict):
                doc, aggregate = _rewrite_section(section_type, doc)
                is_aggregate = is_aggregate or aggregate
            sections.append((section_type, doc))
        msg = {**msg, "sections": sections}
        if not is_aggregate:
            return original(self, msg)
        previous = getattr(_fallback, "on", False)
        _fallback.on = True
        try:
            return original(self, msg)
        finally:
            _fallback.on = previous

    NeoSQLiteHandler.handle_command = handle_command


def _distinct_values(documents: list[dict[str, Any]], key: str) -> list[Any]:
    """MongoDB's ``distinct``: each value ``key`` reaches (through subdocuments and arrays of
    them), an array's elements each (an array in it is one value), once by MongoDB's equality
    (numbers of every kind equal, a boolean no number), in MongoDB's order of types."""
    found: dict[tuple[Any, ...], Any] = {}
    for document in documents:
        reached, _ = comparisons.reached(document, key.split("."))
        for value in reached:
            for one in value if isinstance(value, list) else [value]:
                found.setdefault(_bson_order_key(one), one)
    return [found[order] for order in sorted(found)]


def _matching_documents(
    handler: Any, command: Any, body: dict[str, Any]
) -> list[dict[str, Any]] | dict[str, Any]:
    """The documents of ``body``'s collection its ``query`` selects (a ``find`` and its
    ``getMore``s through the server's own handler), or the ``find``'s error."""
    collection = body["distinct"]
    reply = _inner(handler, command, body, {"find": collection, "filter": body.get("query") or {}})
    documents: list[dict[str, Any]] = []
    while reply.get("ok"):
        cursor = reply.get("cursor") or {}
        documents += cursor.get("firstBatch") or cursor.get("nextBatch") or []
        if not cursor.get("id"):
            return documents
        reply = _inner(handler, command, body, {"getMore": cursor["id"], "collection": collection})
    return reply


def _fix_distinct() -> None:
    """Fault: nx-27017's ``distinct`` (neosqlite's) reads the key with SQLite's
    ``json_extract``: on ``_id`` (a column of its own) it fails, "JSON path error near '_id'";
    it reads ``true`` as 1 (one value with the number 1) and the string "1" as the number 1.
    MongoDB's ``distinct`` command (the manual): the distinct values of ``key`` among the
    documents ``query`` selects, ``_id`` as any field, each element of an array a value. Fix:
    the documents are read by a ``find`` with that filter, and the values taken from them."""
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = _folded_body(msg)
        if body is None or not isinstance(body.get("distinct"), str) or not isinstance(body.get("key"), str):
            return original(self, msg)
        documents = _matching_documents(self, original, body)
        if isinstance(documents, dict):
            return msg.get("request_id", 0), documents
        return msg.get("request_id", 0), {"values": _distinct_values(documents, body["key"]), "ok": 1.0}

    NeoSQLiteHandler.handle_command = handle_command


def _fix_invalidate_on_drop() -> None:
    """Fault: dropping (or renaming) a watched collection sends no ``invalidate`` event; the
    stream stays open and silently sees nothing, even after the collection is re-created.
    MongoDB sends ``invalidate`` and closes the cursor. Fix: a change-stream ``getMore`` that
    finds nothing new and the collection's triggers gone answers one ``invalidate`` event
    (its token resumable with ``startAfter``) and closes the stream (cursor id 0)."""
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = next((doc for kind, doc in msg.get("sections", []) if kind == "body"), None)
        stream = None
        if isinstance(body, dict) and "getMore" in body:
            try:
                stream = self._change_stream_manager.get_stream(int(body["getMore"]))
            except (TypeError, ValueError):
                stream = None
        request_id, reply = original(self, msg)
        cursor = reply.get("cursor") if isinstance(reply, dict) else None
        if stream is None or not isinstance(cursor, dict):
            return request_id, reply
        manager = self._change_stream_manager
        if any(event.get("operationType") == "invalidate" for event in cursor.get("nextBatch") or []):
            return request_id, stream_positions.cut_at_invalidate(manager, stream, reply)
        if cursor.get("nextBatch"):
            return request_id, reply
        tracker = manager._trackers.get((stream.db_name, stream.collection_name))
        if tracker is None:
            return request_id, reply
        with self._lock_for(stream.db_name):
            live = manager._triggers_live(tracker)
        if live:
            return request_id, reply
        token = nx_changestream._wire_token(stream._watermark)
        now = datetime.now(UTC) + event_clock_ahead()
        manager.close_stream(stream._id)
        invalidate = {"_id": token, "operationType": "invalidate", "clusterTime": now, "wallTime": now}
        return request_id, {
            **reply,
            "cursor": {**cursor, "id": 0, "nextBatch": [invalidate], "postBatchResumeToken": token},
        }

    NeoSQLiteHandler.handle_command = handle_command


def _fix_unknown_cursor_reads_as_exhausted() -> None:
    """Fault: a ``getMore`` on a cursor the server does not know answers ``ok: 1`` with an
    empty batch and cursor id 0, the reply of a cursor that simply ended. nx-27017 closes a
    connection's cursors when that connection drops, and pymongo sends the next ``getMore``
    on another connection, so after a network cut a half-read query looks complete and
    every order after the cut is silently skipped. MongoDB answers error 43
    ``CursorNotFound`` (pymongo raises ``CursorNotFound``), which the archiver retries from
    its last position. Fix: when the data-cursor lookup of a ``getMore`` finds nothing (a
    cursor that ended was removed with its last batch, so pymongo never asks for it again),
    the reply is that error. Closing cursors on disconnect is kept: it is what a cursor
    lost to a failover or a timeout looks like."""
    lookup = NeoSQLiteHandler._getmore_data

    @functools.wraps(lookup)
    def _getmore_data(self: Any, cursor_id: int, batch_size: int) -> dict[str, Any] | None:
        data = lookup(self, cursor_id, batch_size)
        if data is None:
            _unknown_cursor.id = cursor_id
        return data

    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        _unknown_cursor.id = None
        request_id, reply = original(self, msg)
        cursor_id, _unknown_cursor.id = _unknown_cursor.id, None
        if cursor_id is None:
            return request_id, reply
        return request_id, {
            "ok": 0,
            "code": 43,
            "codeName": "CursorNotFound",
            "errmsg": f"cursor id {cursor_id} not found",
        }

    NeoSQLiteHandler._getmore_data = _getmore_data
    NeoSQLiteHandler.handle_command = handle_command


# --- Change streams -------------------------------------------------------------------------


_NO_ID = object()


def _stored_id(document_data: Any) -> Any:
    """The ``_id`` of a change log row's stored document, decoded to its type (``_NO_ID``: none)."""
    if isinstance(document_data, bytes):
        document_data = document_data.decode("utf-8", "replace")
    if not isinstance(document_data, str) or not document_data:
        return _NO_ID
    try:
        document = neosqlite_json_loads(document_data)
    except ValueError:
        return _NO_ID
    return document["_id"] if isinstance(document, dict) and "_id" in document else _NO_ID


def _fix_change_event_documents() -> None:
    """Faults: an event's ``clusterTime``/``wallTime`` is the time it is read, not written
    (a stream resumed later sees every old change as new: fixed from the change log's
    timestamp); ``fullDocument`` holds neosqlite's storage encoding (ObjectIds as
    ``{"__neosqlite_objectid__": ...}``, dates as ``{"$date": ...}``), delete events carry a
    document, and ``updateDescription`` is always null. Fix: decode the document to BSON
    types, drop it from deletes, and give updates an ``updateDescription`` listing every field
    of the post-image (nx keeps no pre-image: a superset of what changed, which an idempotent
    consumer absorbs). And ``documentKey._id`` was the text of the ``_id`` column (an integer
    ``_id`` 7 came as ``"7"``, an embedded document as its ``repr``): it is the stored
    document's ``_id``, in its type."""
    original = nx_changestream.ChangeStreamManager._translate_row

    @functools.wraps(original)
    def translate_row(self: Any, stream: Any, rowid: int, row: Any) -> dict[str, Any] | None:
        if row[1] == "drop":  # the collection dropped or renamed (stream_positions.fix_drops_in_history)
            dropped = _written_at(self, stream, rowid) or datetime.now(UTC)
            return stream_positions.invalidate_event(rowid, dropped + event_clock_ahead())
        event = original(self, stream, rowid, row)
        if event is None:
            return None
        document = event.get("fullDocument")
        if event.get("operationType") == "delete":
            event.pop("fullDocument", None)
        elif isinstance(document, dict):
            decoded = neosqlite_json_loads(json.dumps(document))
            event["fullDocument"] = convert_neo_to_bson_objectids(decoded)
        if event.get("operationType") == "update":
            post_image = event.get("fullDocument") or {}
            event["updateDescription"] = {
                "updatedFields": {k: v for k, v in post_image.items() if k != "_id"},
                "removedFields": [],
                "truncatedArrays": [],
            }
        else:
            event.pop("updateDescription", None)
        stored_id = _stored_id(row[3] if len(row) > 3 else None)
        if stored_id is not _NO_ID:  # as stored: an integer _id 7 is 7, not the column's text "7"
            event["documentKey"] = {"_id": stored_id}
        event["documentKey"] = convert_neo_to_bson_objectids(event.get("documentKey"))
        written = _written_at(self, stream, rowid)
        event["clusterTime"] = event["wallTime"] = (written or event["wallTime"]) + event_clock_ahead()
        return event

    nx_changestream.ChangeStreamManager._translate_row = translate_row


_LOG_COLUMNS = "(collection_name, operation, document_id, document_data, document_id_value)"


def _fix_change_log_times() -> None:
    """The change log's ``timestamp`` defaults to SQLite's CURRENT_TIMESTAMP (to the second):
    its triggers are recompiled to write the time to the millisecond (``_written_at`` reads it
    as each event's ``clusterTime``). The version is pinned; fail loudly if the source changes."""
    source = textwrap.dedent(inspect.getsource(neo_changestream.ChangeStream._setup_triggers))
    if source.count(_LOG_COLUMNS) != 3:
        raise RuntimeError("neosqlite changed: the change log time fix no longer applies")
    source = source.replace(_LOG_COLUMNS, _LOG_COLUMNS[:-1] + ", timestamp)")
    for image in ("NEW._id)", "OLD._id)"):
        source = source.replace(image, image[:-1] + ", strftime('%Y-%m-%d %H:%M:%f', 'now'))")
    namespace: dict[str, Any] = {}
    exec(compile(source, neo_changestream.__file__, "exec"), neo_changestream.__dict__, namespace)
    neo_changestream.ChangeStream._setup_triggers = namespace["_setup_triggers"]


def event_clock_ahead() -> timedelta:
    """``NX_EVENT_CLOCK_AHEAD_S``: how far the clock that stamps change events (``clusterTime``,
    ``wallTime``) runs ahead of the clock ``hello`` answers with (default 0). On MongoDB an
    event carries the time of the primary that wrote it; behind ``mongos`` that is a shard's
    clock, seconds off the router's (the manual's "Change Events": ``wallTime`` is the server
    date and time of the operation; ``clusterTime`` the oplog entry's timestamp)."""
    return timedelta(seconds=float(os.environ.get("NX_EVENT_CLOCK_AHEAD_S") or 0))


def _written_at(manager: Any, stream: Any, rowid: int) -> datetime | None:
    """When the change was written: the change log's own timestamp (UTC, to the millisecond
    with ``_fix_change_log_times``), not the time it is read."""
    tracker = manager._trackers.get((stream.db_name, stream.collection_name))
    try:
        row = (
            tracker["collection"]
            .db.execute("SELECT timestamp FROM _neosqlite_changestream WHERE id = ?", (rowid,))
            .fetchone()
        )
        return datetime.fromisoformat(str(row[0])).replace(tzinfo=UTC) if row and row[0] else None
    except Exception:  # no tracker or no row: the time it is read, as before
        return None


def _matches(document: Any, spec: Any) -> bool:
    if not isinstance(spec, dict):
        return True
    for key, condition in spec.items():
        if key == "$or":
            if not any(_matches(document, sub) for sub in condition):
                return False
        elif key == "$and":
            if not all(_matches(document, sub) for sub in condition):
                return False
        elif key == "$nor":
            if any(_matches(document, sub) for sub in condition):
                return False
        elif not nx_changestream._match_spec(nx_changestream._get_dotted(document, key), condition):
            return False
    return True


def _pipeline_matches(change: dict[str, Any], pipeline: list[dict[str, Any]]) -> bool:
    for stage in pipeline:
        if isinstance(stage, dict) and set(stage) == {"$match"} and not _matches(change, stage["$match"]):
            return False
    return True


def _fix_change_stream_match() -> None:
    """Fault: the stream's ``$match`` knows only top-level equality and a few operators:
    ``$or``/``$and``/``$nor`` match nothing, so a standard "delivered now" filter drops every
    event. Fix: recurse into them, with nx's own leaf predicate."""
    nx_changestream._pipeline_matches = _pipeline_matches


# Newest change-log row that pruning deleted, per (db, collection): a token older than it
# points into history the server no longer has.
_pruned_through: dict[tuple[str, str], int] = {}
_pruned_lock = threading.Lock()


def _projected(event: dict[str, Any], pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    """``event`` through the pipeline's plain inclusion ``$project`` stages (the resume token,
    ``_id``, kept: MongoDB refuses a stream whose events lose it)."""
    for stage in pipeline:
        spec = stage.get("$project") if isinstance(stage, dict) and set(stage) == {"$project"} else None
        if isinstance(spec, dict) and spec and all(v in (1, True) for v in spec.values()):
            paths = [["_id"], *(str(key).split(".") for key in spec)]
            event = _include_paths(event, paths)
    return event


def _fix_change_stream_project() -> None:
    """Fault: a change stream's ``$project`` is ignored: every event carries the whole looked-up
    order and, from the fix above, an update's every field, where MongoDB sends what the
    projection keeps (the manual, "Change Events": an event over 16 MB fails the stream unless
    projected down or split). With the size limit enforced (``document_sizes.py``), a stream that
    projects would fail here and not on MongoDB. Fix: apply plain inclusion projections to the
    events of a pull, as the dotted ``find`` projection is applied (``_include_paths``)."""
    pull = nx_changestream.ChangeStreamManager.pull_stream

    @functools.wraps(pull)
    def pull_stream(self: Any, stream: Any, batch_size: int = 101) -> tuple[list[dict[str, Any]], dict]:
        batch, token = pull(self, stream, batch_size)
        pipeline = getattr(stream, "pipeline", None) or []
        return [_projected(event, pipeline) for event in batch], token

    nx_changestream.ChangeStreamManager.pull_stream = pull_stream


_lost_position = threading.local()  # set by a getMore whose stream's history was pruned under it


def _capped_prune(self: Any, db_name: str, collection_name: str) -> None:
    """The change log kept as MongoDB keeps the oplog: a capped collection, its newest
    ``_RESUME_RETENTION_ROWS`` changes per collection whoever reads it; the newest row it
    deleted remembered (``_pruned_through``)."""
    with self._lock:
        tracker = self._trackers.get((db_name, collection_name))
    if tracker is None:
        return
    db = tracker["collection"].db
    try:
        row = db.execute(
            "SELECT id FROM _neosqlite_changestream WHERE collection_name = ? "
            "ORDER BY id DESC LIMIT 1 OFFSET ?",
            (collection_name, nx_changestream._RESUME_RETENTION_ROWS),
        ).fetchone()
        if row is None:
            return  # no more changes than the history keeps
        newest_deleted = int(row[0])
        db.execute(
            "DELETE FROM _neosqlite_changestream WHERE collection_name = ? AND id <= ?",
            (collection_name, newest_deleted),
        )
    except Exception:  # nx's own prune skips on the same errors (a table not made yet)
        return
    with _pruned_lock:
        key = (db_name, collection_name)
        _pruned_through[key] = max(_pruned_through.get(key, 0), newest_deleted)


def _fix_history_loss_detection() -> None:
    """Faults: (1) the change log is pruned only below every open stream's position, so an open
    stream pins its history for ever and, with no stream open, nothing is ever pruned: a
    watcher that falls behind, or a stream left idle through hours of writes (a long catch-up),
    never loses its place, where MongoDB's oplog is a capped collection that drops its oldest
    entries whoever still needs them (the manual, "Replica Set Oplog": a fixed size, or a
    minimum retention period, then the oldest entries go). (2) A resume token whose history was
    pruned is resumed from silently. Fixes: the history is capped at ``_RESUME_RETENTION_ROWS``
    per collection, pruned at each pull, open and close of a stream whatever the streams'
    positions; a token older than the newest pruned row fails with ChangeStreamHistoryLost (286,
    ``_fix_resume_token_validation``), as MongoDB does when the oplog has rolled; and an open
    stream whose next ``getMore`` would read past a pruned row fails with CappedPositionLost (136,
    "CollectionScan died due to position in capped collection being deleted"), which is what
    MongoDB's tailing of the oplog answers then (reported against change streams by monstache
    #744, 2025, and opensearch data-prepper #5730), and the cursor is gone."""
    nx_changestream.ChangeStreamManager._prune = _capped_prune
    pull = nx_changestream.ChangeStreamManager.pull_stream

    @functools.wraps(pull)
    def pull_stream(self: Any, stream: Any, batch_size: int = 101) -> tuple[list[dict[str, Any]], dict]:
        _capped_prune(self, stream.db_name, stream.collection_name)
        with _pruned_lock:
            pruned = _pruned_through.get((stream.db_name, stream.collection_name), 0)
        if stream._watermark < pruned:  # rows after its position, unread, deleted
            _lost_position.id = stream._id
            return [], stream.get_resume_token()
        return pull(self, stream, batch_size)

    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        _lost_position.id = None
        request_id, reply = original(self, msg)
        stream_id, _lost_position.id = _lost_position.id, None
        if stream_id is None:
            return request_id, reply
        self._change_stream_manager.close_stream(stream_id)  # MongoDB kills a cursor that failed
        return request_id, {
            "ok": 0,
            "code": 136,
            "codeName": "CappedPositionLost",
            "errmsg": "Executor error during getMore :: caused by :: CollectionScan died due to "
            "position in capped collection being deleted.",
        }

    nx_changestream.ChangeStreamManager.pull_stream = pull_stream
    NeoSQLiteHandler.handle_command = handle_command


def _fix_resume_token_validation() -> None:
    """Faults: an unreadable resume token is accepted and the stream starts "now"; a token
    whose history was pruned is resumed from. Both lose changes silently. Fix: refuse them
    as MongoDB does, with InvalidResumeToken (260) and ChangeStreamHistoryLost (286)."""
    original = NeoSQLiteHandler._handle_change_stream

    @functools.wraps(original)
    def handle_change_stream(
        self: Any,
        request_id: int,
        coll_name: str,
        pipeline: list[dict],
        db: Any,
        db_name: str = "test",
        owner: Any = None,
    ) -> tuple[int, dict[str, Any]]:
        options = nx_changestream.extract_change_stream_options(pipeline)
        token = options.get("resume_after")
        if token is None:
            token = options.get("start_after")
        if token is not None:
            rowid = nx_changestream._wire_rowid(token)
            # The writes since a stream last pruned it (none open: none did).
            _capped_prune(self._change_stream_manager, db_name, coll_name)
            if rowid is None:
                return request_id, {
                    "ok": 0,
                    "code": 260,
                    "codeName": "InvalidResumeToken",
                    "errmsg": f"cannot decode resume token {token!r}",
                }
            with _pruned_lock:
                pruned = _pruned_through.get((db_name, coll_name), 0)
            if rowid < pruned:
                return request_id, {
                    "ok": 0,
                    "code": 286,
                    "codeName": "ChangeStreamHistoryLost",
                    "errmsg": "Resume of change stream was not possible, as the resume point "
                    "may no longer be in the oplog.",
                }
        return original(self, request_id, coll_name, pipeline, db, db_name, owner)

    NeoSQLiteHandler._handle_change_stream = handle_change_stream


def _ordered_token(rowid: int) -> dict[str, str]:
    return {"_data": f"nx:{int(rowid):020d}"}


def _fix_token_order() -> None:
    """Fault: a resume token's ``_data`` is ``nx:<row id>`` in decimal, so ``nx:10`` sorts
    before ``nx:9``; MongoDB documents that ``_data`` strings sort in stream order (since 4.0),
    and a reader that drains a stream up to a position compares them. Fix: the row id
    zero-padded to 20 digits (still read by nx's own parser)."""
    nx_changestream._wire_token = _ordered_token


NATURAL = "$natural"  # a sort on the collection's own order (the manual's "$natural")


def _fix_natural_order() -> None:
    """Fault: nx-27017 reads a sort on ``$natural`` as a sort on a field of that name, which no
    document has: ``sort({$natural: -1})`` came back in insertion order, the oldest first.
    MongoDB documents ``{$natural: -1}`` as the reverse of the order documents are stored in
    (the manual's ``cursor.sort()``, "Return in Natural Order"; in insertion order on a
    collection documents are only added to): a read of the most recent documents read the
    oldest instead, and a test of one could not fail. Fix: ``$natural`` sorts on the row id of
    neosqlite's table (the order of the inserts), in SQL and where neosqlite sorts in Python
    (its rows come in row-id order: the ``$natural: -1`` read reverses them)."""
    from neosqlite.collection.query_helper._sql_query_builder import SqlQueryBuilderMixin
    from neosqlite.sql_utils import quote_table_name

    built = SqlQueryBuilderMixin._build_sort_clause

    @functools.wraps(built)
    def sort_clause(self: Any, sort: Any, collation: Any = None) -> str:
        if not sort or NATURAL not in sort:
            return str(built(self, sort, collation))
        rest = {field: direction for field, direction in sort.items() if field != NATURAL}
        row = f"{quote_table_name(self.collection.name)}.id {'DESC' if sort[NATURAL] == -1 else 'ASC'}"
        clause = str(built(self, rest, collation)) if rest else ""
        return f"{clause}, {row}" if clause else f" ORDER BY {row}"

    SqlQueryBuilderMixin._build_sort_clause = sort_clause
    sorting = Cursor._apply_sorting

    @functools.wraps(sorting)
    def apply_sorting(self: Any, docs: Any) -> list[dict[str, Any]]:
        if not self._sort or list(self._sort) != [NATURAL]:
            return list(sorting(self, docs))
        ordered = list(docs)
        return ordered[::-1] if self._sort[NATURAL] == -1 else ordered

    Cursor._apply_sorting = apply_sorting


def _sql_sort_keys(field: str, direction: int, collate: str) -> str:
    """ORDER BY terms for one field in MongoDB's order of types (``_BSON_RANKS``: null and missing,
    numbers, strings, objects, arrays, ObjectId, booleans, dates), then the value within its type
    (a date by its instant, an ObjectId by its hexadecimal digits)."""
    path = parse_json_path(field)
    date, oid = f"'{path}.\"$date\"'", f"'{path}.__neosqlite_objectid__'"
    kind = f"json_type(data, '{path}')"
    rank = (
        f"CASE {kind} WHEN 'null' THEN 1 WHEN 'integer' THEN 2 WHEN 'real' THEN 2 WHEN 'text' THEN 3 "
        f"WHEN 'object' THEN (CASE WHEN json_type(data, {date}) IS NOT NULL THEN 9 "
        f"WHEN json_type(data, {oid}) IS NOT NULL THEN 7 ELSE 4 END) "
        f"WHEN 'array' THEN 5 WHEN 'true' THEN 8 WHEN 'false' THEN 8 ELSE 1 END"
    )
    value = (
        f"CASE WHEN json_type(data, {date}) IS NOT NULL THEN julianday(json_extract(data, {date})) "
        f"WHEN json_type(data, {oid}) IS NOT NULL THEN json_extract(data, '{path}.id') "
        f"ELSE json_extract(data, '{path}') END"
    )
    order = "ASC" if direction == 1 else "DESC"
    return f"{rank} {order}, {value}{collate} {order}"


def _fix_sql_sort_across_types() -> None:
    """Fault: a ``find`` sorted in SQL (neosqlite's ``ORDER BY json_extract(data, path)``) orders
    values of different types as SQLite does: a boolean as the number 0 or 1 (before 2.5), a
    date and an ObjectId as the JSON text of their encodings, sorted among documents. MongoDB
    sorts by its order of types (the manual's "Comparison/Sort Order": null, numbers, strings,
    objects, arrays, binary data, ObjectId, booleans, dates), as the Python tier here already
    does (``_fix_bson_types_and_order``). Fix: each field but ``_id`` (its own column:
    ``_fix_id_walk_across_types``) sorts by its type's rank, then its value."""
    from neosqlite.collection.query_helper._sql_query_builder import SqlQueryBuilderMixin

    built = SqlQueryBuilderMixin._build_sort_clause

    @functools.wraps(built)
    def sort_clause(self: Any, sort: Any, collation: Any = None) -> str:
        if (
            not sort
            or self.jsonb.json_function_prefix != "json"
            or any(
                not isinstance(field, str) or field in ("_id", NATURAL) or field.startswith("$")
                for field in sort
            )
        ):
            return str(built(self, sort, collation))
        strength, case_level = (collation or {}).get("strength", 3), (collation or {}).get("caseLevel", False)
        collate = " COLLATE NOCASE" if collation and (strength <= 2 or not case_level) else ""  # as neosqlite
        return " ORDER BY " + ", ".join(
            _sql_sort_keys(field, direction, collate) for field, direction in sort.items()
        )

    SqlQueryBuilderMixin._build_sort_clause = sort_clause


def _fix_retention_knob() -> None:
    """Fault: retained history is fixed at 1000 rows past the slowest open stream, so a test
    cannot make it run out cheaply. Fix: read it from ``NX_RESUME_RETENTION_ROWS``."""
    value = os.environ.get("NX_RESUME_RETENTION_ROWS", "").strip()
    if not value:
        return
    if not value.isdigit() or int(value) < 1:  # one line, exit 2: the dev server's other mistakes
        sys.stderr.write(
            f"error: NX_RESUME_RETENTION_ROWS={value[:20]}: a whole number of changes, 1 or more "
            "(make dev-server HISTORY=200000)\n"
        )
        raise SystemExit(2)
    nx_changestream._RESUME_RETENTION_ROWS = int(value)


def _fix_dates_set_by_updates() -> None:
    """Fault: a datetime that an update's ``$set`` (or ``$setOnInsert``) writes into an existing
    document goes through neosqlite's SQL tier (``json_set``), where sqlite3 binds it as text
    (``'2026-11-26 14:08:13.755000'``): read back, it is a string, and a pipeline's date range
    never matches it. Fix: such an update takes neosqlite's Python tier, which stores dates as
    it stores inserted ones."""
    original = SqlUpdatesMixin._can_use_sql_updates

    @functools.wraps(original)
    def can_use_sql_updates(self: Any, update_spec: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        if any(
            isinstance(value, datetime)
            for fields in update_spec.values()
            if isinstance(fields, dict)
            for value in fields.values()
        ):
            return False
        return original(self, update_spec, *args, **kwargs)

    SqlUpdatesMixin._can_use_sql_updates = can_use_sql_updates


# Operators whose dotted paths neosqlite's Python tier applies through subdocuments ...
_NEOSQLITE_DOTTED = ("$set", "$setOnInsert", "$currentDate", "$pull")
# ... and those it applied to a top-level field named "a.b", applied here in the subdocument
# (``_fix_dotted_paths_in_python_updates``); of these, the ones that create the path.
_LIFTED = ("$inc", "$mul", "$min", "$max", "$unset", "$push", "$addToSet", "$pop", "$pullAll", "$bit")
_CREATING = ("$inc", "$mul", "$min", "$max", "$push", "$addToSet", "$bit")
_PYTHON_TIER_DOTTED = _NEOSQLITE_DOTTED + _LIFTED  # $rename's dotted paths are still misapplied


def _parent_of(document: dict[str, Any], parents: list[str], create: bool) -> dict[str, Any] | None:
    """The subdocument a dotted path's last name is in (made, for an operator that creates the
    path); None where there is none to change (MongoDB: ``$unset`` of a missing path is a no-op)."""
    node: Any = document
    for name in parents:
        if not isinstance(node, dict):
            if create:  # MongoDB: 28 PathNotViable
                raise neo_exceptions.MalformedQueryException(
                    f"Cannot create field '{name}' in element {node!r}"
                )
            return None
        if name not in node:
            if not create:
                return None
            node[name] = {}
        node = node[name]
    return node if isinstance(node, dict) else None


def _fix_dotted_paths_in_python_updates() -> None:
    """Fault: neosqlite's Python tier (which an update takes when ``$set`` holds a date, or a
    bool: ``_fix_dates_set_by_updates``, ``_fix_bools_set_by_updates``; and an upsert) applies a
    dotted path of ``$inc``, ``$mul``, ``$min``, ``$max``, ``$unset``, ``$push``, ``$addToSet``,
    ``$pop``, ``$pullAll``, ``$bit`` to a top-level field literally named "a.b":
    ``{$set: {d: date}, $inc: {"a.b": 1}}`` left ``a.b`` as it was and added ``"a.b": 1``.
    MongoDB (the manual's update operators: "To specify a <field> in an embedded document ...
    use dot notation") changes ``b`` in the document ``a``, making ``a`` if it is missing. Fix:
    each such path is applied by the same operator to the subdocument that holds its last name,
    then the rest of the update as before."""
    original = UpdateOperationsMixin._perform_python_update

    @functools.wraps(original)
    def perform(
        self: Any,
        doc_id: Any,
        update_spec: dict[str, Any],
        original_doc: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], bool]:
        lifted = {
            op: {path: v for path, v in fields.items() if "." in path and "$" not in path}
            for op, fields in update_spec.items()
            if op in _LIFTED and isinstance(fields, dict)
        }
        lifted = {op: fields for op, fields in lifted.items() if fields}
        if not lifted:
            return original(self, doc_id, update_spec, original_doc, *args, **kwargs)
        document = copy.deepcopy(original_doc)
        for op, fields in lifted.items():
            for path, operand in fields.items():
                *parents, last = path.split(".")
                parent = _parent_of(document, parents, create=op in _CREATING)
                if parent is not None:
                    changed, _ = original(self, 0, {op: {last: operand}}, parent)  # 0: applied, not written
                    parent.clear()
                    parent.update(changed)
        rest = {
            op: {path: v for path, v in fields.items() if path not in lifted[op]} if op in lifted else fields
            for op, fields in update_spec.items()
        }
        rest = {op: fields for op, fields in rest.items() if fields or op not in lifted}
        updated, _ = original(self, doc_id, rest, document, *args, **kwargs)
        return updated, updated != original_doc

    UpdateOperationsMixin._perform_python_update = perform


def _binds_a_bool(update_spec: dict[str, Any]) -> bool:
    """Whether an update operator's value is a bool (or a ``$each`` list holds one)."""
    for fields in update_spec.values():
        for value in fields.values() if isinstance(fields, dict) else ():
            each = value.get("$each") if isinstance(value, dict) else None
            if isinstance(value, bool) or (isinstance(each, list) and any(isinstance(v, bool) for v in each)):
                return True
    return False


def _fix_bools_set_by_updates() -> None:
    """Fault: a bool that an update writes into an existing document (``$set: {flag: true}``,
    ``update_many``, ``findAndModify``, a dotted path, ``$push``) goes through neosqlite's SQL
    tier, where sqlite3 binds it as the integer 1 or 0: read back, ``{flag: 1}``. MongoDB stores
    the BSON boolean it was sent (a subdocument or array holding bools was already right: the
    SQL tier passes those as JSON). Fix: such an update takes neosqlite's Python tier, unless
    another operator of it has a dotted path that tier would still misapply (``$rename``'s: then
    the bool stays an integer, the lesser harm; the others' are applied in the subdocument,
    ``_fix_dotted_paths_in_python_updates``)."""
    original = SqlUpdatesMixin._can_use_sql_updates

    @functools.wraps(original)
    def can_use_sql_updates(self: Any, update_spec: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        python_tier_reads_it = all(
            op in _PYTHON_TIER_DOTTED or not any("." in path for path in fields)
            for op, fields in update_spec.items()
            if isinstance(fields, dict)
        )
        if python_tier_reads_it and _binds_a_bool(update_spec):
            return False
        return original(self, update_spec, *args, **kwargs)

    SqlUpdatesMixin._can_use_sql_updates = can_use_sql_updates


def _root_equals(statement: Any) -> Any:
    """The document a ``$expr: {$eq: ["$$ROOT", {$literal: D}]}`` in a statement's filter
    compares the whole stored document with (D), or None."""
    query = statement.get("q") if isinstance(statement, dict) else None
    expr = query.get("$expr") if isinstance(query, dict) else None
    if not isinstance(expr, dict) or set(expr) != {"$eq"}:
        return None
    operands = expr["$eq"]
    if not (isinstance(operands, list) and len(operands) == 2 and operands[0] == "$$ROOT"):
        return None
    literal = operands[1]
    return literal.get("$literal") if isinstance(literal, dict) and set(literal) == {"$literal"} else None


def _canonical(value: Any) -> Any:
    """A value as MongoDB compares it: documents field by field in their order, numbers by
    value, dates to the millisecond in UTC."""
    if isinstance(value, dict):
        return ("doc", tuple((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return ("date", round(moment.timestamp() * 1000))
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    return ("value", repr(value))


def _fix_expr_root_equality() -> None:
    """Fault: a delete whose filter compares the whole document (``$expr: {$eq: ["$$ROOT",
    {$literal: D}]}``, the purge's "only the version the archive holds") never matches: nx's
    expression engine compares its storage encoding with the literal. Fix: for such a
    statement, read the document the rest of the filter names and compare it here, as MongoDB
    does (field order, numbers by value, dates to the millisecond); the statement then names
    that ``_id`` or nothing. Under the database's lock, so no write lands between the
    comparison and the delete."""
    original = NeoSQLiteHandler.handle_command

    def stored(self: Any, db_name: str, collection: str, query: dict[str, Any]) -> Any:
        rest = {k: v for k, v in query.items() if k != "$expr"}
        find = {"find": collection, "filter": rest, "limit": 2, "$db": db_name}
        _, reply = original(self, {"request_id": 0, "sections": [("body", find)]})
        batch = ((reply or {}).get("cursor") or {}).get("firstBatch") or []
        return batch[0] if len(batch) == 1 else None

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = _folded_body(msg) or {}
        statements = list(body.get("deletes") or [])
        if "delete" not in body or not any(_root_equals(st) is not None for st in statements):
            return original(self, msg)
        db_name = body.get("$db", "test")
        with self._lock_for(db_name):
            rewritten = []
            for statement in statements:
                expected = _root_equals(statement)
                if expected is None:
                    rewritten.append(statement)
                    continue
                current = stored(self, db_name, body["delete"], statement["q"])
                same = current is not None and _canonical(current) == _canonical(expected)
                target = current["_id"] if same else {"$in": []}
                rewritten.append({**statement, "q": {"_id": target}})
            sections = [("body", {k: v for k, v in body.items() if k != "deletes"} | {"deletes": rewritten})]
            return original(self, {**msg, "sections": sections})

    NeoSQLiteHandler.handle_command = handle_command


# --- what MongoDB refuses ----------------------------------------------------------------------

_HELLO_COMMANDS = ("hello", "Hello", "isMaster", "ismaster")
_BUILD_INFO = ("buildInfo", "buildinfo")
_PATCH: dict[definitions.Version, int] = {
    (4, 4): 29,
    (5, 0): 31,
    (6, 0): 20,
    (7, 0): 16,
    (8, 0): 4,
}  # a released patch of each


def server_version() -> definitions.Version:
    """The version this server answers as (``NX_MONGODB_VERSION``, default the newest)."""
    value = os.environ.get("NX_MONGODB_VERSION", "").strip()
    version = definitions.parse_version(value) if value else definitions.NEWEST
    if version[:2] not in definitions.WIRE_VERSIONS:
        raise SystemExit(f"NX_MONGODB_VERSION={value}: one of {sorted(definitions.WIRE_VERSIONS)}")
    return version if len(version) > 2 else (*version, _PATCH[version[:2]])


def _folded_body(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The command as MongoDB parses it: the body with its document sequences folded in."""
    body: dict[str, Any] | None = None
    sequences: dict[str, Any] = {}
    for kind, doc in msg.get("sections", []):
        if kind == "body" and isinstance(doc, dict):
            body = doc
        elif kind == "payload" and isinstance(doc, dict):
            sequences.update(doc)
    return None if body is None else {**body, **sequences}


def max_bson_object_size() -> int:
    """``NX_MAX_BSON_OBJECT_SIZE``: the largest document the server says it accepts (``hello``
    and ``buildInfo``'s ``maxBsonObjectSize``), 16 MB by default as on MongoDB. The driver
    refuses a command larger than it plus 16 KiB before sending it (``DocumentTooLarge``):
    lowered, a few thousand ids in one ``$in`` do what ~850,000 do on a real server."""
    return int(os.environ.get("NX_MAX_BSON_OBJECT_SIZE") or 16 * 1024 * 1024)


def _build_info(version: definitions.Version) -> dict[str, Any]:
    return {
        "ok": 1.0,
        "version": definitions.text(version),
        "versionArray": [*version, 0],
        "gitVersion": "nx-27017",
        "bits": 64,
        "maxBsonObjectSize": max_bson_object_size(),
        "modules": [],
        "storageEngines": ["wiredTiger"],
    }


# What every server the tests, the benchmarks, the demo and ``make dev-server`` start answers as
# unless told otherwise: the primary of a one-member replica set, the smallest deployment with
# change streams (a standalone refuses them: 40573, ``mongodb_definitions.py``), as the compose
# file and CI's real MongoDB run. ``--standalone`` (``DevServer(replica_set="")``) for a test
# of what the product does on a standalone.
DEFAULT_REPLICA_SET = "rs0"
STANDALONE_OPTION = "--standalone"


def choose_topology(argv: list[str]) -> list[str]:
    """Before ``apply_fixes`` (the fixes read ``NX_REPLICA_SET``): a replica set named
    ``NX_REPLICA_SET`` (``DEFAULT_REPLICA_SET`` when unset), or a standalone with
    ``--standalone``. Returns the arguments for nx-27017 (whose parser knows no
    ``--standalone``)."""
    if STANDALONE_OPTION in argv:
        os.environ.pop("NX_REPLICA_SET", None)
        return [arg for arg in argv if arg != STANDALONE_OPTION]
    os.environ["NX_REPLICA_SET"] = os.environ.get("NX_REPLICA_SET", "").strip() or DEFAULT_REPLICA_SET
    return argv


def _hello_fields(version: definitions.Version, replica_set: str) -> dict[str, Any]:
    """What ``hello`` says of the version and the topology (a standalone has no ``setName``)."""
    fields: dict[str, Any] = {
        "maxWireVersion": definitions.WIRE_VERSIONS[version[:2]],
        "maxBsonObjectSize": max_bson_object_size(),
    }
    if mongos.enabled():  # a router: no replica-set field (its shards' are not its own)
        fields.update(mongos.hello_fields())
    elif replica_set:
        me = os.environ.get("NX_HOST", "127.0.0.1:27017")
        fields.update(setName=replica_set, setVersion=1, hosts=[me], primary=me, me=me, secondary=False)
    ahead = os.environ.get("NX_CLOCK_AHEAD_S", "").strip()
    if ahead:  # the deployment's clock ahead of this host's (negative: behind)
        fields["localTime"] = datetime.now(UTC) + timedelta(seconds=float(ahead))
    return fields


def _refuse_what_mongodb_refuses() -> None:
    """Fault: nx-27017 accepts whatever it does not understand: an index specification with a
    field MongoDB does not define (197 on MongoDB since 3.4: ``create_index(commitQuorum=...)``
    put it there and every real ``batch --run`` failed), ``commitQuorum`` on a standalone
    (2 BadValue), a change stream on a standalone (40573: nx-27017 served it, so a watcher
    tested here would have worked where every real standalone refuses it), a field a
    command's definition does not have (40415), a stage or an operator newer than the
    server; and it answers ``buildinfo`` (pymongo's
    ``server_info()``) without a version; and an insert's document with a top-level "$" field
    name, which MongoDB before 5.0 refuses alone. Fix: refuse each as a MongoDB of
    ``NX_MONGODB_VERSION`` does (``mongodb_definitions.refusal``, one document of an insert:
    ``insert_document_refusal``), answer ``buildInfo`` and ``buildinfo`` with that version, and
    ``hello`` with its wire version and topology."""
    version = server_version()
    replica_set = os.environ.get("NX_REPLICA_SET", "").strip()
    command = NeoSQLiteHandler.handle_command
    insert = NeoSQLiteHandler.handle_insert

    def refused(msg: dict[str, Any]) -> dict[str, Any] | None:
        body = _folded_body(msg)
        if body is None:
            return None
        if definitions.command_name(body) in _BUILD_INFO:
            return _build_info(version)
        return definitions.refusal(body, version, replica_set=bool(replica_set))

    @functools.wraps(command)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answer = refused(msg)
        if answer is not None:
            return msg.get("request_id", 0), answer
        request_id, reply = command(self, msg)
        body = _folded_body(msg) or {}
        if definitions.command_name(body) in _HELLO_COMMANDS and isinstance(reply, dict) and reply.get("ok"):
            reply = {**reply, **_hello_fields(version, replica_set)}
            if mongos.enabled():
                reply = {k: v for k, v in reply.items() if k not in mongos.REPLICA_SET_FIELDS}
        return request_id, reply

    @functools.wraps(insert)
    def handle_insert(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answer = refused(msg)
        if answer is not None:
            return msg.get("request_id", 0), answer
        documents = (_folded_body(msg) or {}).get("documents") or []
        refusals = {
            i: error
            for i, document in enumerate(documents)
            if isinstance(document, dict)
            and (error := definitions.insert_document_refusal(document, version)) is not None
        }
        return insert_refusing(self, insert, msg, refusals)

    NeoSQLiteHandler.handle_command = handle_command
    NeoSQLiteHandler.handle_insert = handle_insert


def insert_refusing(
    handler: Any, insert: Any, msg: dict[str, Any], refusals: dict[int, dict[str, Any]]
) -> tuple[int, dict[str, Any]]:
    """An insert whose documents at the indexes of ``refusals`` are refused with those write
    errors, as MongoDB answers one: an unordered insert inserts the others, an ordered one
    stops at its first error; one ``writeErrors`` entry per refused document at its index in
    the command, ``n`` the documents inserted."""
    if not refusals:
        return insert(handler, msg)
    body = _folded_body(msg) or {}
    documents = list(body.get("documents") or [])
    refused = sorted(refusals)
    if body.get("ordered", True):
        documents, refused = documents[: refused[0] + 1], refused[:1]
    kept = [i for i in range(len(documents)) if i not in refusals]
    request_id, reply = msg.get("request_id", 0), {}
    if kept:
        command = {**body, "documents": [documents[i] for i in kept]}
        request_id, reply = insert(handler, {**msg, "sections": [("body", command)]})
    reply = {"ok": 1.0, "n": 0, **reply}
    reply.pop("insertedIds", None)  # not in MongoDB's reply
    errors = [{**e, "index": kept[e["index"]]} for e in reply.get("writeErrors") or []]
    errors += [{"index": i, **refusals[i]} for i in refused]
    reply["writeErrors"] = sorted(errors, key=lambda e: int(e["index"]))
    return request_id, reply


def _array_paths(update: Any) -> list[str]:
    """The field paths of an update document that go into an array by index (``items.0.x``)."""
    if not isinstance(update, dict):
        return []  # a replacement's fields are not paths; a pipeline is not checked
    return [
        path
        for operator, fields in update.items()
        if operator.startswith("$") and isinstance(fields, dict)
        for path in fields
        if any(part.isdigit() for part in str(path).split("."))
    ]


def _refuse_paths_into_arrays() -> None:
    """Fault: an update whose path goes into an array by index (``{$set: {"items.0.quantite":
    3}}``, ``$inc`` alike) is acknowledged by nx-27017 and changes nothing (its SQL path misses
    the element); MongoDB applies it. Found by the chaos run (bench/chaos.py), whose
    corrections vanished. Fix: refuse it (2 BadValue, naming the path), so that a test that
    relies on one fails loudly instead of passing on an update that never happened."""
    command = NeoSQLiteHandler.handle_command

    @functools.wraps(command)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = _folded_body(msg) or {}
        name = definitions.command_name(body)
        updates = (
            [s.get("u") for s in body.get("updates", []) if isinstance(s, dict)] if name == "update" else []
        )
        if name in ("findAndModify", "findandmodify"):
            updates = [body.get("update")]
        paths = [path for update in updates for path in _array_paths(update)]
        if paths:
            message = (
                f"nx-27017 cannot apply an update path into an array ({paths[0]}): MongoDB does; the "
                "development server refuses it rather than acknowledge a change it never makes"
            )
            return msg.get("request_id", 0), {"ok": 0.0, "code": 2, "codeName": "BadValue", "errmsg": message}
        return command(self, msg)

    NeoSQLiteHandler.handle_command = handle_command


MAX_TIME_MS_EXPIRED = {
    "ok": 0.0,
    "code": 50,
    "codeName": "MaxTimeMSExpired",
    "errmsg": "operation exceeded time limit",
}


def _reads_the_whole_collection(body: dict[str, Any]) -> bool:
    """An ``aggregate`` on a collection whose pipeline does not start by narrowing it (a
    ``$group`` over everything, as doctor's look for shared numbers)."""
    pipeline = body.get("pipeline")
    if not isinstance(body.get("aggregate"), str) or not isinstance(pipeline, list) or not pipeline:
        return False
    first = pipeline[0]
    return isinstance(first, dict) and not ({"$match", "$changeStream", "$limit"} & set(first))


def _inner(handler: Any, command: Any, body: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
    """``inner`` run by the server's own handler (under the knobs), in the database of ``body``:
    what a knob asks of a collection before it answers for it."""
    request = {"request_id": 0, "sections": [("body", {**inner, "$db": body.get("$db", "test")})]}
    return dict(command(handler, request)[1])


def _timed_whole_read_over(handler: Any, command: Any, body: dict[str, Any], over: int) -> bool:
    if "maxTimeMS" not in body or not _reads_the_whole_collection(body):
        return False
    return int(_inner(handler, command, body, {"count": body["aggregate"]}).get("n") or 0) > over


def _add_scan_time_limit_knob() -> None:
    """Knob (off by default): ``NX_SCAN_TIME_LIMIT_OVER=N``. On a large collection a read of all
    of it outlasts its ``maxTimeMS`` and MongoDB stops it: 50 MaxTimeMSExpired, "operation
    exceeded time limit" (the manual's ``cursor.maxTimeMS()``; ``ErrorCodes::MaxTimeMSExpired``).
    Scaled down: an ``aggregate`` carrying ``maxTimeMS`` that reads a whole collection of more
    than N documents answers that, and reads nothing."""
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        over = os.environ.get("NX_SCAN_TIME_LIMIT_OVER", "").strip()
        body = _folded_body(msg)
        if over and body is not None and _timed_whole_read_over(self, original, body, int(over)):
            return msg.get("request_id", 0), dict(MAX_TIME_MS_EXPIRED)
        return original(self, msg)

    NeoSQLiteHandler.handle_command = handle_command


SORT_MEMORY_EXCEEDED = {
    "ok": 0.0,
    "code": 292,
    "codeName": "QueryExceededMemoryLimitNoDiskUseAllowed",
    "errmsg": "Executor error during find command :: caused by :: Sort exceeded memory limit of "
    "104857600 bytes, but did not opt in to external sorting.",
}


def _sort_served_by_an_index(sort: dict[str, Any], keys: list[list[tuple[str, Any]]]) -> bool:
    """Whether an index gives ``sort``'s order (its fields a prefix of the index's, every
    direction the same or every one reversed): then MongoDB sorts nothing in memory."""
    if "$natural" in sort:  # the collection's own order: nothing sorted
        return True
    wanted = [(field, 1 if direction > 0 else -1) for field, direction in sort.items()]
    for key in [[("_id", 1)], *keys]:
        prefix = [(field, 1 if direction > 0 else -1) for field, direction in key[: len(wanted)]]
        if len(prefix) == len(wanted) and (
            prefix == wanted or prefix == [(field, -direction) for field, direction in wanted]
        ):
            return True
    return False


def _add_sort_memory_knob() -> None:
    """Knob (off by default): ``NX_SORT_MEMORY_OVER=N``. A ``find`` whose sort no index gives is
    sorted in memory, and before 6.0 (``allowDiskUseByDefault`` came with it) a blocking sort over
    100 MB that did not ask for ``allowDiskUse`` (a find may since 4.4) fails: 292
    QueryExceededMemoryLimitNoDiskUseAllowed (the manual's ``cursor.allowDiskUse()``, "Blocking
    sort operations"; ``internalQueryMaxBlockingSortMemoryUsageBytes``). A top-k sort (a
    ``limit``) holds k documents only. Scaled down, on a server answering as a version before
    6.0: such a find over more than N documents (the collection's, or its limit if fewer)."""
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        over = os.environ.get("NX_SORT_MEMORY_OVER", "").strip()
        body = _folded_body(msg)
        if over and body is not None and _blocking_sort_over(self, original, body, int(over)):
            return msg.get("request_id", 0), dict(SORT_MEMORY_EXCEEDED)
        return original(self, msg)

    NeoSQLiteHandler.handle_command = handle_command


def _blocking_sort_over(handler: Any, command: Any, body: dict[str, Any], over: int) -> bool:
    collection, sort = body.get("find"), body.get("sort")
    if not isinstance(collection, str) or not isinstance(sort, dict) or not sort:
        return False
    if body.get("allowDiskUse") is True or server_version()[:2] >= (6, 0):
        return False
    listed = (
        (_inner(handler, command, body, {"listIndexes": collection}).get("cursor") or {}).get("firstBatch")
    ) or []
    keys = [list(dict(spec.get("key") or {}).items()) for spec in listed]
    if _sort_served_by_an_index(sort, keys):
        return False
    held = int(_inner(handler, command, body, {"count": collection}).get("n") or 0)
    limit = abs(int(body.get("limit") or 0))
    return (min(held, limit) if limit else held) > over


def apply_fixes() -> None:
    _fix_dates_set_by_updates()
    _fix_bools_set_by_updates()
    _fix_dotted_paths_in_python_updates()
    _fix_force_fallback_per_thread()
    _fix_lookup_drops_foreign_id()
    _fix_dotted_inclusion_projection()
    _fix_python_aggregation_full_load()
    _fix_indexed_objectid_selections()
    _fix_objectid_range_selections()
    _fix_id_walk_across_types()
    _fix_bson_types_and_order()
    comparisons.fix_comparisons_across_types()
    _wrap_handle_command()
    _fix_distinct()  # outside the rewrites of a find's filter: its find passes through them
    _fix_invalidate_on_drop()
    _fix_unknown_cursor_reads_as_exhausted()
    _fix_change_log_times()
    _fix_change_event_documents()
    _fix_change_stream_match()
    _fix_history_loss_detection()
    _fix_resume_token_validation()
    _fix_retention_knob()
    _fix_token_order()
    _fix_sql_sort_across_types()  # inside the natural order's: it sorts the fields beside $natural
    _fix_natural_order()
    stream_positions.fix_stream_positions()
    _fix_change_stream_project()  # on the events the positions' fix hands out
    stream_positions.fix_drops_in_history()
    resume_events.fix_resume_event_checks(server_version())  # on the positions' streams
    watched_collections.fix_watch_creates_collection()
    _fix_expr_root_equality()
    missing_collections.fix_reads_create_collections(_folded_body)  # outside what reads a collection
    index_catalog.fix_duplicate_keys(_folded_body)  # before the catalog: it reads the server's own names
    index_catalog.fix_index_catalog(server_version(), _folded_body)
    _refuse_paths_into_arrays()
    replica_status.fix_replica_set_status(server_version(), _folded_body)
    mongos.fix_mongos(server_version(), _folded_body)  # answers before the replica set's status
    _add_scan_time_limit_knob()  # inside the refusals: MongoDB parses a command before it runs it
    _add_sort_memory_knob()  # inside the refusals too
    _refuse_what_mongodb_refuses()  # it sees each command as the client sent it
    # Outermost: a command holding an object MongoDB cannot read is refused before it is parsed.
    document_sizes.fix_document_size_limit(_folded_body, insert_refusing)


# --- starting and stopping one -------------------------------------------------------------


PROJECT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevServer:
    """One nx-27017 process on a free port and its own temp data directory: the primary of a
    one-member replica set (``replica_set``, default rs0), or a standalone with
    ``replica_set=""`` (no change streams, as a standalone mongod); ``env``'s
    ``NX_REPLICA_SET`` names the set instead."""

    launcher = "teststand.devserver"  # the module run with -m from the project's folder (see the end)
    stop_timeout = 5.0  # seconds between SIGTERM and SIGKILL

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        replica_set: str = DEFAULT_REPLICA_SET,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or _free_port()
        self.env = env or {}
        self.replica_set = self.env.get("NX_REPLICA_SET", replica_set).strip()
        self.process: subprocess.Popen | None = None

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, "NX_HOST": f"127.0.0.1:{self.port}", **self.env}
        env.pop("NX_REPLICA_SET", None)  # a developer's own setting never changes what a test starts
        return env | ({"NX_REPLICA_SET": self.replica_set} if self.replica_set else {})

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> DevServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                self.launcher,
                "--data-dir",
                str(self.data_dir),
                "-p",
                str(self.port),
                "--pid-file",
                str(self.data_dir / "nx.pid"),
                "--log-file",
                str(self.data_dir / "nx.log"),
                *([] if self.replica_set else [STANDALONE_OPTION]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            cwd=PROJECT,  # where -m finds teststand/ (and the product it serves)
            start_new_session=True,  # its own process group: stop() signals all of it
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nx-27017 exited: {(self.data_dir / 'server.log').read_text()[-2000:]}")
            try:
                client: pymongo.MongoClient[dict[str, Any]]
                with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=300) as client:
                    client.admin.command("ping")
                return self
            except pymongo.errors.PyMongoError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("nx-27017 did not answer ping in time")

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL: a busy nx-27017 can ignore SIGTERM."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        except ProcessLookupError:
            pass


# --- the command line: python -m teststand.devserver (make dev-server) --------------------------

EXIT_PORT_TAKEN = 2  # bad usage: another port is the fix (make dev-server PORT=27018)


_STOPPING = (asyncio.CancelledError, SystemExit, KeyboardInterrupt)


class _NotInTheForeground(logging.Filter):
    """What goes to the log file only. neosqlite warns "SQL tier N aggregation fallback" each
    time a pipeline leaves its SQL tier for its Python engine, which the fixes above make
    every aggregate do (shared nx-27017.md): hundreds of lines in a few minutes' use, none of
    them news. And Ctrl+C with clients connected (a watcher) ends nx-27017's event loop by
    ``sys.exit`` in its signal handler: asyncio logs each connection's task, cancelled or
    interrupted by that exit, as an error with a traceback: the normal end of a connection at
    shutdown."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("neosqlite") and "aggregation fallback" in str(record.msg):
            return False
        stopping = record.exc_info is not None and isinstance(record.exc_info[1], _STOPPING)
        return not (record.name == "asyncio" and stopping)


def _console_logging(verbose: bool) -> None:
    """The terminal's handler, set before nx-27017's ``basicConfig`` (which then adds none):
    its format, without the engine's fallbacks. nx-27017 adds the log file's handler itself."""
    console = logging.StreamHandler()
    console.setFormatter(
        logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - [%(process)d] - %(message)s")
    )
    console.addFilter(_NotInTheForeground())
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)  # each command's INFO: the log file
    root = logging.getLogger()
    root.addHandler(console)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


# The data folder as each user gives it: make dev-server's DATA=, the module's --data-dir
# (a make user read "--data-dir /proc/nope" and "give another folder", and had typed DATA=).
DATA_DIR = "DATA= (--data-dir)"


class _Refused(Exception):
    """What the development server cannot start with, said in one line (exit 2)."""


def _command_line(argv: list[str]) -> tuple[list[str], argparse.Namespace]:
    """nx-27017's arguments, with its log and pid files in the data folder unless given: its
    defaults (``/tmp/nx_27017.log``, ``/tmp/nx_27017.pid``) are shared by every server on the
    machine."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--data-dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", default="27017")
    parser.add_argument("--log-file")
    parser.add_argument("--pid-file")
    parser.add_argument("-v", "--verbose", action="store_true")
    known, _ = parser.parse_known_args(argv)
    if not str(known.port).isdigit() or not 1 <= int(known.port) <= 65535:
        raise _Refused(f"-p {known.port}: expected a port from 1 to 65535")
    if known.data_dir and known.data_dir != "memory":
        try:
            Path(known.data_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _Refused(f"{DATA_DIR} {known.data_dir}: cannot make the folder: {exc.strerror}") from None
        for option, name in (("log_file", "nx.log"), ("pid_file", "nx.pid")):
            if getattr(known, option) is None:
                setattr(known, option, str(Path(known.data_dir) / name))
                argv = [*argv, f"--{option.replace('_', '-')}", getattr(known, option)]
    return argv, known


def serve(argv: list[str]) -> int:
    """Run nx-27017 in the foreground (the fixes applied by the caller). A port in use is one
    line and exit 2, not a traceback."""
    from nx_27017.nx_27017 import main

    if _asks_for_help(argv):  # the help and nothing else: no folder made, no port tried, no "starting"
        sys.argv = [sys.argv[0], *argv]
        print(HELP_HEADER, flush=True)
        try:
            return int(main() or 0)
        finally:  # argparse's help ends with SystemExit
            print(f"\nthe development server adds:\n  {STANDALONE_OPTION:<22}{STANDALONE_HELP}")
    refused = _refused_arguments(main, argv)
    if refused is not None:  # a misspelt option: said first, before the folder, the port, "starting"
        sys.stderr.write(f"error: {refused} (python -m teststand.devserver --help lists them)\n")
        return EXIT_USAGE
    try:
        argv, known = _command_line(argv)
    except _Refused as refused:  # a port or a data folder it cannot use: one line, not a traceback
        sys.stderr.write(f"error: {refused}\n")
        return EXIT_USAGE
    _console_logging(known.verbose)
    address = f"{known.host}:{known.port}"
    # With NX_REPLICA_SET, hello's member list: the address it serves (a new user's server on
    # another port advertised 127.0.0.1:27017, and every client then went there).
    os.environ.setdefault("NX_HOST", address)
    refusal = _cannot_start(known, address)
    if refusal is not None:  # one line, before anything else is said
        sys.stderr.write(f"error: {refusal}\n")
        return EXIT_PORT_TAKEN
    log_file = known.log_file or "nx-27017's default"
    replica_set = os.environ.get("NX_REPLICA_SET", "")
    topology = f"replica set {replica_set}" if replica_set else "a standalone: no change streams"
    print(
        f"starting the development server on mongodb://{address}/ ({topology}; log {log_file}); "
        "Ctrl+C stops it",
        file=sys.stderr,
    )
    sys.argv = [sys.argv[0], *argv]
    try:
        return int(main() or 0)
    except OSError as exc:
        reason = _unusable_address(exc)
        if reason is None:
            raise
        sys.stderr.write(f"error: {address} {reason}: choose another port, e.g. make dev-server PORT=27018\n")
        return EXIT_PORT_TAKEN


EXIT_USAGE = 2
HELP_HEADER = (
    "python -m teststand.devserver: the development server, nx-27017 answering as MongoDB does "
    "(teststand/README.md),\nthe primary of replica set rs0 unless --standalone; nx-27017's own "
    "options follow.\n"
)
STANDALONE_HELP = "a standalone server (no change streams, as a standalone mongod) instead of replica set rs0"


class _Parsed(Exception):
    """Raised from nx-27017's own parser once it has parsed: its arguments checked, not run."""


def _refused_arguments(nx_main: Any, argv: list[str]) -> str | None:
    """Why nx-27017's own parser refuses ``argv`` (its last words, one line), or None. Asked of
    its parser before anything starts: a misspelt option was said after "starting the
    development server", or as a port in use when the port was."""
    original = argparse.ArgumentParser.parse_args

    def parse_only(parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Parsed(original(parser, *args, **kwargs))

    said = io.StringIO()
    saved = sys.argv
    sys.argv = [saved[0], *[arg for arg in argv if arg != STANDALONE_OPTION]]
    argparse.ArgumentParser.parse_args = parse_only  # type: ignore[method-assign,assignment]
    try:
        with contextlib.redirect_stderr(said):
            nx_main()
    except _Parsed:
        return None
    except SystemExit:
        lines = [line for line in said.getvalue().splitlines() if line.strip()]
        return lines[-1].split("error: ", 1)[-1] if lines else "unknown arguments"
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
        sys.argv = saved
    return None


def _asks_for_help(argv: list[str]) -> bool:
    """``-h``, ``--help`` or an abbreviation argparse takes for it (``--he``; ``--h`` is also
    ``--host``'s)."""
    return any(arg == "-h" or (len(arg) > 3 and "--help".startswith(arg)) for arg in argv)


def _cannot_start(known: argparse.Namespace, address: str) -> str | None:
    """Why the server cannot start, said before it tries: another server of this data folder
    runs (its pid file names a live process), or the port is taken."""
    pid_file = Path(known.pid_file) if known.pid_file else None
    if pid_file is not None and pid_file.is_file():
        text = pid_file.read_text().strip()
        if text.isdigit() and _alive(int(text)):
            return (
                f"a development server already runs from this data folder (pid {text}): stop it, "
                f"or give another folder ({DATA_DIR}) and port, e.g. make dev-server DATA=.dev-server-2 PORT=27018"
            )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a listener refuses
        try:
            probe.bind((known.host, int(known.port)))
        except OSError as exc:
            reason = _unusable_address(exc)
            if reason is not None:
                return f"{address} {reason}: choose another port, e.g. make dev-server PORT=27018"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unusable_address(exc: OSError) -> str | None:
    """Why the server could not listen, or None for any other failure (raised as it is)."""
    if exc.errno == errno.EADDRINUSE:  # only a bind says this
        return "is in use (another MongoDB or development server?)"
    if exc.errno in (errno.EACCES, errno.EADDRNOTAVAIL) and "bind" in str(exc):  # asyncio's words
        return f"cannot be listened on ({os.strerror(exc.errno)})"
    return None


if __name__ == "__main__":
    arguments = choose_topology(sys.argv[1:])
    apply_fixes()
    sys.exit(serve(arguments))
