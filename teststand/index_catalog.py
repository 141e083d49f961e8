"""Indexes as MongoDB keeps them, on the development server (a fix of ``devserver.py``).

Fault: nx-27017 builds an index under a name of its own (``idx_<collection>_<fields>``),
lists it under that name with every direction as ``1``, builds a second index whose key or
name conflicts with an existing one (MongoDB refuses: 85 IndexOptionsConflict, 86
IndexKeySpecsConflict), drops nothing and says ``ok`` when asked to drop an index by the name
it was created with or by a name that does not exist (MongoDB: 27 IndexNotFound), and answers
``collMod: {index: {name, expireAfterSeconds}}`` with ``ok`` and changes nothing (MongoDB
changes the TTL index's age, or refuses: 27 for an unknown index, 72 InvalidOptions "no
expireAfterSeconds field to update" for a plain index before 5.1). A product that manages a
TTL index (ARCHIVE_RETENTION) would pass every test there and fail on MongoDB.

Fix: each database keeps, in a hidden table, every index specification as it was sent; the
server's own index list says which exist (a dropped collection takes its indexes along), the
table says what they are called and hold. ``createIndexes``, ``listIndexes``, ``dropIndexes``
and ``collMod`` of an index are answered the way MongoDB's index catalog answers them
(``index_catalog_impl.cpp``, ``coll_mod.cpp``); a TTL age changed by ``collMod`` is written
where neosqlite's own TTL expiry reads it (it expires documents on reads, not once a minute).

Fault: an insert refused by a unique index answers 11000 with SQLite's message ("UNIQUE
constraint failed: index 'idx_orders_numero'") and no ``keyPattern``/``keyValue``; MongoDB
(4.4+, ``DuplicateKeyErrorInfo``) names the index's key and the duplicate value, which is the
only way a client tells a duplicate ``_id`` from a duplicate on another unique index. Fix: each
such write error gets MongoDB's ``keyPattern``, ``keyValue`` and message; a document that
duplicates both its ``_id`` and another unique key is refused on ``_id``, as MongoDB, which
inserts the ``_id`` index's key first, refuses it (SQLite named the other index).

Index builds take no time on the development server; on MongoDB a build on a large collection
takes minutes to hours, and a ``createIndexes`` carrying ``maxTimeMS`` that expires first is
aborted, build included (``create_indexes_cmd.cpp``: "defensively abort the index build"). Two
knobs scale that down (off by default), for a collection holding more than
``NX_INDEX_BUILD_ABORT_OVER`` documents:

- a ``createIndexes`` carrying ``maxTimeMS`` answers ``50 MaxTimeMSExpired`` and builds nothing,
  as MongoDB answers one that a build outlasts;
- with ``NX_INDEX_BUILD_SECONDS=S``, a build (without ``maxTimeMS``) takes S seconds, at most
  ``NX_MAX_ACTIVE_INDEX_BUILDS`` (3, as MongoDB's ``maxNumActiveUserIndexBuilds``) at once, during
  which the index is in progress: ``listIndexes`` lists it as if ready, or as
  ``{spec, buildUUID}`` with ``includeBuildUUIDs`` (list_indexes.cpp); an identical
  ``createIndexes`` waits until it is done (IndexBuildAlreadyInProgress, then
  ``waitUntilAnIndexBuildFinishes``); the client closing its connection does not stop it
  (createIndexes is not killed on disconnect: SERVER-101507)."""

from __future__ import annotations

import functools
import os
import re
import threading
import time
import uuid
from typing import Any

from bson import Binary, json_util
from neosqlite.collection import index_manager
from nx_27017.handler import NeoSQLiteHandler

from teststand import mongodb_definitions as definitions

TABLE = "_neosqlite_devserver_indexes"  # "_neosqlite_": hidden from listCollections
NOT_COMPARED = ("v", "name", "ns", "background", "key")  # what two equal specifications may differ in
IDENTIFYING = ("collation", "partialFilterExpression")  # what lets two indexes share a key
TTL_CONVERSION_SINCE: definitions.Version = (5, 1)  # collMod makes a plain index a TTL one


def _failure(code: int, name: str, message: str) -> dict[str, Any]:
    return {"ok": 0.0, "code": code, "codeName": name, "errmsg": message}


def _key(spec: dict[str, Any]) -> list[tuple[str, Any]]:
    return list(dict(spec.get("key") or {}).items())


def _fields(spec: dict[str, Any]) -> list[str]:
    """The key's fields without their directions (the server keeps none)."""
    return [name for name, _ in _key(spec)]


def _options(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in NOT_COMPARED and v is not False}


def _identifying(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: spec.get(k) for k in IDENTIFYING}


class Builds:
    """The index builds in progress, server-wide: (database, collection, name) -> the spec, its
    build UUID and an event set when it is done. Only the slow-build knob makes any."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[tuple[str, str, str], tuple[dict[str, Any], Binary, threading.Event]] = {}

    def of(self, db_name: str, collection: str) -> list[tuple[dict[str, Any], Binary]]:
        with self.lock:
            return [
                (spec, build)
                for (d, c, _), (spec, build, _) in self.running.items()
                if (d, c) == (db_name, collection)
            ]

    def waiting_on(
        self, db_name: str, collection: str, specs: list[dict[str, Any]]
    ) -> threading.Event | None:
        """The event of a build in progress of one of ``specs`` (by name), if any."""
        with self.lock:
            for spec in specs:
                running = self.running.get((db_name, collection, str(spec.get("name"))))
                if running is not None:
                    return running[2]
        return None

    def begin(self, db_name: str, collection: str, specs: list[dict[str, Any]]) -> threading.Event:
        done = threading.Event()
        build = Binary.from_uuid(uuid.uuid4())
        with self.lock:
            for spec in specs:
                self.running[(db_name, collection, str(spec["name"]))] = (spec, build, done)
        return done

    def end(self, db_name: str, collection: str, specs: list[dict[str, Any]], done: threading.Event) -> None:
        with self.lock:
            for spec in specs:
                self.running.pop((db_name, collection, str(spec["name"])), None)
        done.set()


BUILDS = Builds()
# A primary runs at most 3 index builds started by users at once (one createIndexes, however
# many indexes it holds, is one build); a build over it is registered, then waits for a slot
# ("Too many index builds running simultaneously", maxNumActiveUserIndexBuilds, 4.4+:
# SERVER-47155). Only slow builds (the knob below) take a slot long enough to matter.
ACTIVE_BUILDS = threading.BoundedSemaphore(int(os.environ.get("NX_MAX_ACTIVE_INDEX_BUILDS", "3")))


def _knob(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    return float(value) if value else None


MAX_TIME_EXPIRED = _failure(50, "MaxTimeMSExpired", "operation exceeded time limit")


class Catalog:
    """The specifications of one database's indexes, as they were sent."""

    def __init__(self, connection: Any) -> None:
        self.sql = connection.db
        self.sql.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (collection TEXT, name TEXT, spec TEXT, PRIMARY KEY (collection, name))"
        )

    def specs(self, collection: str) -> list[dict[str, Any]]:
        rows = self.sql.execute(f"SELECT spec FROM {TABLE} WHERE collection = ?", (collection,)).fetchall()
        return [json_util.loads(row[0]) for row in rows]

    def put(self, collection: str, spec: dict[str, Any]) -> None:
        """Keep ``spec``; a row left on its key's fields by a dropped collection goes (a live
        index there would have conflicted with this one)."""
        for stale in self.specs(collection):
            if stale["name"] != spec["name"] and _fields(stale) == _fields(spec):
                self.remove(collection, str(stale["name"]))
        kept = {k: v for k, v in spec.items() if k != "ns"}
        self.sql.execute(
            f"INSERT OR REPLACE INTO {TABLE} (collection, name, spec) VALUES (?, ?, ?)",
            (collection, spec["name"], json_util.dumps(kept)),
        )

    def remove(self, collection: str, name: str) -> None:
        self.sql.execute(f"DELETE FROM {TABLE} WHERE collection = ? AND name = ?", (collection, name))


def listed(
    server_entries: list[dict[str, Any]], specs: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], str]]:
    """Each index the server has, as MongoDB lists it, with the server's own name for it. The
    server keeps no directions: an index is matched on its key's fields."""
    entries = []
    for entry in server_entries:
        spec = next((s for s in specs if _fields(s) == _fields(entry)), None)
        shown = entry if spec is None or entry.get("name") == "_id_" else {"v": 2, **spec}
        entries.append((shown, str(entry.get("name"))))
    # nx-27017 cannot build a compound key with _id (the development server answers its build
    # "ok" with nothing built): listed from the catalog as MongoDB would list it, or a client
    # that reads listIndexes sees it missing after every build.
    built = {tuple(_fields(entry)) for entry, _ in entries}
    for spec in specs:
        if _compound_with_id(spec) and tuple(_fields(spec)) not in built:
            entries.append(({"v": 2, **spec}, str(spec["name"])))
    return entries


def _compound_with_id(spec: dict[str, Any]) -> bool:
    fields = _fields(spec)
    return "_id" in fields and len(fields) > 1


def conflict(spec: dict[str, Any], existing: list[dict[str, Any]]) -> dict[str, Any] | None:
    """MongoDB's answer to building ``spec`` beside ``existing``: a refusal, ``{}`` (an
    identical index exists: nothing to build) or None (build it)."""
    same_name = next((e for e in existing if e.get("name") == spec.get("name")), None)
    if same_name is not None:
        if _key(same_name) != _key(spec):
            return _failure(
                86,
                "IndexKeySpecsConflict",
                "An existing index has the same name as the requested index. "
                f"Requested index: {spec}, existing index: {same_name}",
            )
        if _options(same_name) != _options(spec):
            return _failure(
                85,
                "IndexOptionsConflict",
                "An equivalent index already exists with the same name but different options. "
                f"Requested index: {spec}, existing index: {same_name}",
            )
        return {}
    same_key = next(
        (e for e in existing if _key(e) == _key(spec) and _identifying(e) == _identifying(spec)), None
    )
    if same_key is None:
        return None
    if _options(same_key) != _options(spec):
        return _failure(
            85,
            "IndexOptionsConflict",
            "An equivalent index already exists with a different name and options. "
            f"Requested index: {spec}, existing index: {same_key}",
        )
    return _failure(
        85, "IndexOptionsConflict", f"Index already exists with a different name: {same_key['name']}"
    )


class IndexCommands:
    """``createIndexes``, ``listIndexes``, ``dropIndexes`` and ``collMod`` of an index, answered
    as MongoDB does, on top of the server's own handler (``inner``)."""

    def __init__(self, handler: Any, inner: Any, version: definitions.Version) -> None:
        self.handler, self.inner, self.version = handler, inner, version

    def call(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.inner(self.handler, {"request_id": 0, "sections": [("body", body)]})[1])

    def indexes(self, db_name: str, collection: str) -> list[tuple[dict[str, Any], str]]:
        reply = self.call({"listIndexes": collection, "$db": db_name})
        batch = list(((reply.get("cursor") or {}).get("firstBatch")) or [])
        return listed(batch, self.catalog(db_name).specs(collection))

    def exists(self, db_name: str, collection: str) -> bool:
        # (nx-27017 ignores listCollections' filter: the names are compared here.)
        reply = self.call({"listCollections": 1, "nameOnly": True, "$db": db_name})
        return any(
            entry.get("name") == collection for entry in (reply.get("cursor") or {}).get("firstBatch") or []
        )

    def catalog(self, db_name: str) -> Catalog:
        return Catalog(self.handler.get_database(db_name))

    def list_indexes(self, body: dict[str, Any]) -> dict[str, Any]:
        db_name, collection = body.get("$db", "test"), body.get("listIndexes") or body.get("listindexes")
        if not self.exists(db_name, str(collection)):
            # MongoDB: code 26, and nothing created (jstests/core/list_indexes2.js); nx-27017
            # listed an _id index and created the collection, so a doctor "wrote nothing" there.
            return {
                "ok": 0.0,
                "code": 26,
                "codeName": "NamespaceNotFound",
                "errmsg": f"ns does not exist: {db_name}.{collection}",
            }
        reply = self.call({k: v for k, v in body.items() if k != "includeBuildUUIDs"})
        if not reply.get("ok"):
            return reply
        shown = [entry for entry, _ in self.indexes(db_name, str(collection))]
        for spec, build in BUILDS.of(db_name, str(collection)):
            entry = {"v": 2, **spec}
            shown.append({"spec": entry, "buildUUID": build} if body.get("includeBuildUUIDs") else entry)
        return {**reply, "cursor": {**reply["cursor"], "firstBatch": shown}}

    def create_indexes(self, body: dict[str, Any]) -> dict[str, Any]:
        """As MongoDB: wait for a build in progress of the same index, then build (at once, or
        slowly on a large collection under the knobs of the module docstring)."""
        db_name, collection = body.get("$db", "test"), str(body["createIndexes"])
        specs = [spec for spec in body.get("indexes") or [] if isinstance(spec, dict)]
        while (running := BUILDS.waiting_on(db_name, collection, specs)) is not None:
            running.wait()
        with self.handler._lock_for(db_name):
            todo = self.todo(body)
            if isinstance(todo, dict):
                return todo
            large = self.large(db_name, collection)
            if large and "maxTimeMS" in body:
                return dict(MAX_TIME_EXPIRED)  # the build aborted: nothing is left of it
            seconds = _knob("NX_INDEX_BUILD_SECONDS") if large else None
            if not seconds:
                return self.build(body, todo)
            done = BUILDS.begin(db_name, collection, todo)
        try:
            with ACTIVE_BUILDS:  # registered, listed in progress, and waiting for a slot meanwhile
                time.sleep(seconds)  # on the request's own thread: a client gone does not stop it
            with self.handler._lock_for(db_name):
                return self.build(body, todo)
        finally:
            BUILDS.end(db_name, collection, todo, done)

    def large(self, db_name: str, collection: str) -> bool:
        over = _knob("NX_INDEX_BUILD_ABORT_OVER")
        if over is None:
            return False
        return int(self.call({"count": collection, "$db": db_name}).get("n") or 0) > over

    def todo(self, body: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        """The specifications to build, or MongoDB's answer when there is none (a refusal, or
        every index already there)."""
        db_name, collection = body.get("$db", "test"), str(body["createIndexes"])
        existing = [entry for entry, _ in self.indexes(db_name, collection)]
        todo = []
        for spec in body.get("indexes") or []:
            answer = conflict(spec, existing)
            if answer:
                return answer
            if answer is None:
                todo.append(spec)
        if not todo:
            count = len(existing)
            return {
                "ok": 1.0,
                "numIndexesBefore": count,
                "numIndexesAfter": count,
                "note": "all indexes already exist",
            }
        return todo

    def build(self, body: dict[str, Any], todo: list[dict[str, Any]]) -> dict[str, Any]:
        db_name, collection = body.get("$db", "test"), str(body["createIndexes"])
        try:
            reply = self.call({**{k: v for k, v in body.items() if k != "maxTimeMS"}, "indexes": todo})
        except Exception as exc:  # neosqlite raises SQLite's refusal, the server answers its text
            duplicate = self.duplicate(db_name, collection, todo) if "UNIQUE constraint" in str(exc) else None
            if duplicate is None:
                raise
            return duplicate
        if reply.get("ok"):
            catalog = self.catalog(db_name)
            for spec in todo:
                catalog.put(collection, spec)
            own = {entry["name"]: name for entry, name in self.indexes(db_name, collection)}
            for spec in todo:  # neosqlite keeps a dropped collection's TTL ages under its own names
                if spec.get("expireAfterSeconds") is None and spec["name"] in own:
                    self.forget_ttl(db_name, collection, own[spec["name"]])
        return reply

    def duplicate(self, db_name: str, collection: str, todo: list[dict[str, Any]]) -> dict[str, Any] | None:
        """MongoDB's answer to a unique index built over duplicates (index_build_interceptor /
        duplicate_key_tracker: 11000 DuplicateKey, ``keyPattern``, ``keyValue``, "dup key"), where
        SQLite's says only "UNIQUE constraint failed": the first duplicated key of a unique spec."""
        for spec in (s for s in todo if s.get("unique") and len(s.get("key") or {}) == 1):
            key = dict(spec.get("key") or {})
            (field,) = key  # (nx-27017 groups by one field's path, not by a document of them)
            group = {"_id": f"${field}", "n": {"$sum": 1}}
            pipeline = [{"$group": group}, {"$match": {"n": {"$gt": 1}}}, {"$limit": 1}]
            reply = self.call({"aggregate": collection, "pipeline": pipeline, "cursor": {}, "$db": db_name})
            found = ((reply.get("cursor") or {}).get("firstBatch")) or []
            if not found:
                continue
            value = {field: found[0]["_id"]}
            shown = f"{field}: {_shown(found[0]['_id'])}"
            return {
                **_failure(
                    11000,
                    "DuplicateKey",
                    f"Index build failed: {uuid.uuid4()}: Collection {db_name}.{collection} :: caused by "
                    f":: E11000 duplicate key error collection: {db_name}.{collection} index: "
                    f"{spec.get('name')} dup key: {{ {shown} }}",
                ),
                "keyPattern": key,
                "keyValue": value,
            }
        return None

    def forget_ttl(self, db_name: str, collection: str, own: str) -> None:
        connection = self.handler.get_database(db_name)
        index_manager._delete_ttl_option(connection.db, own)
        connection[collection]._invalidate_ttl_cache()

    def drop_indexes(self, body: dict[str, Any]) -> dict[str, Any]:
        db_name, collection = body.get("$db", "test"), str(body["dropIndexes"])
        wanted = body.get("index", "*")
        entries = self.indexes(db_name, collection)
        if wanted == "*":
            reply = self.call(body)
            for entry, _ in entries:
                self.catalog(db_name).remove(collection, str(entry["name"]))
            return reply
        chosen = []
        for one in wanted if isinstance(wanted, list) else [wanted]:
            found = next(((e, own) for e, own in entries if e["name"] == one or e["key"] == one), None)
            if found is None:
                return _failure(27, "IndexNotFound", f"index not found with name [{one}]")
            if found[0]["name"] == "_id_":
                return _failure(72, "InvalidOptions", "cannot drop _id index")
            chosen.append(found)
        for entry, own in chosen:
            self.call({"dropIndexes": collection, "index": own, "$db": db_name})
            self.catalog(db_name).remove(collection, str(entry["name"]))
        return {"ok": 1.0, "nIndexesWas": len(entries)}

    def coll_mod_index(self, body: dict[str, Any]) -> dict[str, Any]:
        db_name, collection = body.get("$db", "test"), str(body["collMod"])
        change = dict(body["index"])
        named = change.get("name", change.get("keyPattern"))
        found = next(
            (
                (e, own)
                for e, own in self.indexes(db_name, collection)
                if e["name"] == named or e["key"] == named
            ),
            None,
        )
        if found is None:
            return _failure(27, "IndexNotFound", f"cannot find index {named} for ns {db_name}.{collection}")
        if set(change) - {"name", "keyPattern", "expireAfterSeconds"}:
            return _failure(
                2, "BadValue", "the development server applies only expireAfterSeconds of an index"
            )
        entry, own = found
        old, new = entry.get("expireAfterSeconds"), change.get("expireAfterSeconds")
        if old is None and self.version[:2] < TTL_CONVERSION_SINCE:
            return _failure(72, "InvalidOptions", "no expireAfterSeconds field to update")
        if new is None:
            return {"ok": 1.0}
        connection = self.handler.get_database(db_name)
        field = _key(entry)[0][0]
        index_manager._store_ttl_option(connection.db, own, collection, field, int(new))
        connection[collection]._invalidate_ttl_cache()
        self.catalog(db_name).put(
            collection, {**{k: v for k, v in entry.items() if k != "v"}, "expireAfterSeconds": new}
        )
        return {"ok": 1.0, "expireAfterSeconds_old": old, "expireAfterSeconds_new": new}


_UNIQUE_FAILED = re.compile(r"UNIQUE constraint failed: (?:index '(?P<index>[^']+)'|[^.]+\.(?P<field>\S+))")


def _shown(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


class DuplicateKeys:
    """11000 write errors of an insert, given what MongoDB says of them (module docstring)."""

    def __init__(self, commands: IndexCommands, body: dict[str, Any]) -> None:
        self.commands, self.body = commands, body
        self.db_name, self.collection = str(body.get("$db", "test")), str(body.get("insert"))

    def key_of(self, errmsg: str) -> tuple[str, dict[str, Any]] | None:
        """The index's MongoDB name and key, from SQLite's message."""
        found = _UNIQUE_FAILED.search(errmsg)
        if found is None:
            return None
        if found["field"] == "_id":
            return "_id_", {"_id": 1}
        entries = self.commands.indexes(self.db_name, self.collection)
        entry = next(
            (e for e, own in entries if own == found["index"] or e.get("name") == found["index"]), None
        )
        return None if entry is None else (str(entry.get("name")), dict(entry.get("key") or {}))

    def id_taken(self, document: dict[str, Any]) -> bool:
        """Whether a document with this one's ``_id`` is in the collection already."""
        reply = self.commands.call(
            {
                "find": self.collection,
                "filter": {"_id": document.get("_id")},
                "projection": {"_id": 1},
                "limit": 1,
                "$db": self.db_name,
            }
        )
        return bool((reply.get("cursor") or {}).get("firstBatch"))

    def error(self, error: dict[str, Any]) -> dict[str, Any]:
        documents = self.body.get("documents") or []
        known = self.key_of(str(error.get("errmsg", ""))) if error.get("code") == 11000 else None
        if known is None or not 0 <= int(error.get("index", -1)) < len(documents):
            return error
        if known[0] != "_id_" and self.id_taken(documents[error["index"]]):
            # SQLite may check another unique index first; MongoDB inserts the _id index's key
            # first (it is the catalog's first index): a document whose _id is taken is refused
            # on _id, whatever else it duplicates (the same order archived again, its number too).
            known = ("_id_", {"_id": 1})
        name, key = known
        value = {field: documents[error["index"]].get(field) for field in key}
        shown = ", ".join(f"{field}: {_shown(v)}" for field, v in value.items())
        return {
            "index": error["index"],
            "code": 11000,
            "keyPattern": key,
            "keyValue": value,
            "errmsg": f"E11000 duplicate key error collection: {self.db_name}.{self.collection} "
            f"index: {name} dup key: {{ {shown} }}",
        }


def fix_duplicate_keys(folded_body: Any) -> None:
    """Give an insert's 11000 write errors MongoDB's ``keyPattern``/``keyValue``/message."""
    command, insert = NeoSQLiteHandler.handle_command, NeoSQLiteHandler.handle_insert

    @functools.wraps(insert)
    def handle_insert(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = dict(folded_body(msg) or {})  # before the handler: it pops "$db" from the body
        request_id, reply = insert(self, msg)
        if not isinstance(reply, dict) or not any(
            e.get("code") == 11000 for e in reply.get("writeErrors") or []
        ):
            return request_id, reply
        keys = DuplicateKeys(IndexCommands(self, command, definitions.FLOOR), body)
        return request_id, {**reply, "writeErrors": [keys.error(e) for e in reply["writeErrors"]]}

    NeoSQLiteHandler.handle_insert = handle_insert


def fix_index_catalog(version: definitions.Version, folded_body: Any) -> None:
    """Route the index commands through ``IndexCommands`` (under the database's lock)."""
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = folded_body(msg) or {}
        name = definitions.command_name(body)
        commands = IndexCommands(self, original, version)
        route = {
            "createIndexes": commands.create_indexes,
            "listIndexes": commands.list_indexes,
            "listindexes": commands.list_indexes,
            "dropIndexes": commands.drop_indexes,
        }.get(name)
        if name == "collMod" and isinstance(body.get("index"), dict):
            route = commands.coll_mod_index
        if route is None:
            return original(self, msg)
        if route == commands.create_indexes:  # takes the lock itself: a slow build waits outside it
            return msg.get("request_id", 0), route(body)
        with self._lock_for(body.get("$db", "test")):
            return msg.get("request_id", 0), route(body)

    NeoSQLiteHandler.handle_command = handle_command
