"""The development server answering as a ``mongos``, the router of a sharded cluster (knob, off by
default): ``NX_MONGOS=1``, and ``NX_SHARDED_COLLECTIONS=NAME[:FIELD],...`` the collections it says
are sharded (see ``devserver.py``; shown in ``teststand/tests/test_mongos.py`` and, for the
archiver's commands, ``tests/e2e/test_mongos_e2e.py``).

MongoDB (its source, ``src/mongo/s/commands/``, and the manual), what a client sees through
``mongos`` that differs from a replica set's primary:

- ``hello`` (``cluster_hello_cmd.cpp``): ``isWritablePrimary: true`` and ``msg: "isdbgrid"``,
  no ``setName``, ``hosts``, ``primary``, ``me`` or ``secondary``; a driver's topology is then
  Sharded (the SDAM specification, pymongo's ``hello.py``: ``msg == "isdbgrid"`` is a Mongos);
- ``replSetGetStatus`` (``cluster_repl_set_get_status_cmd.cpp``, the same from 2.x to 8.0):
  ``{ok: 0, errmsg: "replSetGetStatus is not supported through mongos", info: "mongos"}``, no
  ``code``, and no privilege asked ("Require no auth since this command isn't supported in
  mongos"); ``replSetGetConfig`` is not a mongos command at all: ``59 CommandNotFound``, "no such
  command: 'replSetGetConfig'";
- ``config.collections``: the cluster's list of sharded collections, one document per
  collection, ``_id`` its namespace, ``key`` its shard key (read with ``find``);
- an upsert (``update`` statement with ``upsert: true``) on a sharded collection whose filter does
  not hold an equality on every field of the shard key: that statement's write error
  ``61 ShardKeyNotFound``, "Failed to target upsert by query :: could not extract exact shard
  key" (``chunk_manager_targeter.cpp``: "If this is an upsert, then the query must contain an
  exact match on the shard key"); an ordered update stops there, an unordered one applies the
  others;
- an aggregate whose pipeline reads a sharded collection through ``$lookup`` or ``$graphLookup``
  (the "involved namespaces" of ``lite_parsed_pipeline.cpp``), before 5.1: ``28769``,
  "<db>.<collection> cannot be sharded" (5.1 lifted it for ``$lookup``, SERVER-58580; 4.4 already
  allows ``$unionWith``).

Here a collection named in ``NX_SHARDED_COLLECTIONS`` is sharded in every database (tests use a
database each), on ``FIELD`` (``{FIELD: 1}``) or, without one, on ``{_id: "hashed"}``; sharding a
collection creates it, so ``config.collections`` lists it for a namespace asked by ``_id`` (an
equality or ``$in``, what the archiver sends) whether or not documents were written; a read of
``config.collections`` that selects no ``_id`` gets none (not needed: say so if a test does).

What stays a replica set's underneath: change streams, ``commitQuorum`` and ``majority`` writes
(a sharded cluster's shards are replica sets, and mongos accepts all three); the writes
themselves, targeted by ``_id`` as the archiver does, behave as on one shard.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from bson import Int64
from nx_27017.handler import NeoSQLiteHandler

from teststand import mongodb_definitions as definitions

LOOKUP_SHARDED_FROM: definitions.Version = (5, 1)
NOT_THROUGH_MONGOS = {
    "ok": 0.0,
    "errmsg": "replSetGetStatus is not supported through mongos",
    "info": "mongos",
}
_JOINING_STAGES = ("$lookup", "$graphLookup")


def enabled() -> bool:
    """``NX_MONGOS``: whether this server answers as a mongos."""
    return os.environ.get("NX_MONGOS", "").strip().lower() not in ("", "0", "false", "no")


def sharded_keys() -> dict[str, dict[str, Any]]:
    """``NX_SHARDED_COLLECTIONS``: each sharded collection's name and shard key."""
    keys: dict[str, dict[str, Any]] = {}
    for entry in os.environ.get("NX_SHARDED_COLLECTIONS", "").split(","):
        name, _, field = entry.strip().partition(":")
        if name:
            keys[name] = {field: 1} if field else {"_id": "hashed"}
    return keys


def hello_fields() -> dict[str, Any]:
    """What a mongos's ``hello`` says of the topology (no replica-set field at all)."""
    return {"isWritablePrimary": True, "msg": "isdbgrid"}


REPLICA_SET_FIELDS = ("setName", "setVersion", "hosts", "primary", "me", "secondary", "arbiterOnly")


def _asked_namespaces(selection: Any) -> list[str]:
    if isinstance(selection, str):
        return [selection]
    if isinstance(selection, dict) and isinstance(selection.get("$in"), list):
        return [n for n in selection["$in"] if isinstance(n, str)]
    if isinstance(selection, dict) and isinstance(selection.get("$eq"), str):
        return [selection["$eq"]]
    return []


def config_collections(body: dict[str, Any]) -> dict[str, Any]:
    """A ``find`` on ``config.collections``: the asked namespaces that are sharded."""
    keys = sharded_keys()
    documents = [
        {"_id": namespace, "key": keys[namespace.partition(".")[2]], "unique": False}
        for namespace in _asked_namespaces((body.get("filter") or {}).get("_id"))
        if namespace.partition(".")[2] in keys
    ]
    projection = body.get("projection") or {}
    if projection and all(value in (1, True) for value in projection.values()):
        documents = [{k: v for k, v in d.items() if k == "_id" or k in projection} for d in documents]
    cursor = {"id": Int64(0), "ns": "config.collections", "firstBatch": documents}
    return {"cursor": cursor, "ok": 1.0}


def _joined(pipeline: Any) -> list[str]:
    """The collections a pipeline joins (``from`` of ``$lookup``/``$graphLookup``, nested too)."""
    names: list[str] = []
    for stage in pipeline if isinstance(pipeline, list) else []:
        for name, spec in stage.items() if isinstance(stage, dict) else []:
            if name in _JOINING_STAGES and isinstance(spec, dict):
                if isinstance(spec.get("from"), str):
                    names.append(spec["from"])
                names += _joined(spec.get("pipeline"))
            elif name == "$facet" and isinstance(spec, dict):
                names += [n for sub in spec.values() for n in _joined(sub)]
    return names


def lookup_refusal(body: dict[str, Any], version: definitions.Version) -> dict[str, Any] | None:
    """28769 for an aggregate joining a sharded collection, before 5.1."""
    if version[:2] >= LOOKUP_SHARDED_FROM or definitions.command_name(body) != "aggregate":
        return None
    sharded = sharded_keys()
    for name in _joined(body.get("pipeline")):
        if name in sharded:
            namespace = f"{body.get('$db')}.{name}"
            return {
                "ok": 0.0,
                "code": 28769,
                "codeName": "Location28769",
                "errmsg": f"{namespace} cannot be sharded",
            }
    return None


UPSERT_UNTARGETED = {
    "code": 61,
    "codeName": "ShardKeyNotFound",
    "errmsg": "Failed to target upsert by query :: could not extract exact shard key",
}


def _targets_one_shard(statement: Any, key: dict[str, Any]) -> bool:
    """Whether an upsert's filter names every shard key field by equality (a value, or ``$eq``)."""
    query = statement.get("q") if isinstance(statement, dict) else None
    if not isinstance(query, dict):
        return False
    for field in key:
        value = query.get(field)
        if value is None or (
            isinstance(value, dict) and any(k.startswith("$") for k in value) and "$eq" not in value
        ):
            return False
    return True


def untargeted_upserts(body: dict[str, Any]) -> list[int]:
    """The indexes of an update's upserts mongos cannot target (see the module docstring)."""
    key = sharded_keys().get(str(body.get("update")))
    if definitions.command_name(body) != "update" or key is None:
        return []
    statements = body.get("updates") or []
    refused = [
        i
        for i, st in enumerate(statements)
        if isinstance(st, dict) and st.get("upsert") and not _targets_one_shard(st, key)
    ]
    return refused[:1] if refused and body.get("ordered", True) else refused


def _without(msg: dict[str, Any], dropped: list[int], ordered: bool) -> tuple[dict[str, Any], list[int]]:
    """``msg`` without the update statements at ``dropped`` (and, ordered, those after the first),
    and the indexes of those kept."""
    sections = list(msg.get("sections", []))
    for index, (kind, doc) in enumerate(sections):
        if isinstance(doc, dict) and isinstance(doc.get("updates"), list):
            statements = doc["updates"]
            last = dropped[0] if ordered else len(statements)
            kept = [i for i in range(last) if i not in dropped]
            sections[index] = (kind, {**doc, "updates": [statements[i] for i in kept]})
            return {**msg, "sections": sections}, kept
    return msg, []


def refuse_untargeted_upserts(
    handler: Any, command: Any, msg: dict[str, Any], body: dict[str, Any], refused: list[int]
) -> tuple[int, dict[str, Any]]:
    """The update applied without the refused upserts, their write errors added at their indexes."""
    sent, kept = _without(msg, refused, bool(body.get("ordered", True)))
    reply: dict[str, Any] = {"ok": 1.0, "n": 0, "nModified": 0}
    request_id = msg.get("request_id", 0)
    if kept:
        request_id, reply = command(handler, sent)
        reply = dict(reply)
        for field in ("upserted", "writeErrors"):
            if reply.get(field):
                reply[field] = [{**e, "index": kept[e["index"]]} for e in reply[field]]
    errors = list(reply.get("writeErrors") or []) + [{"index": i, **UPSERT_UNTARGETED} for i in refused]
    return request_id, {**reply, "writeErrors": sorted(errors, key=lambda e: e["index"])}


def answer(body: dict[str, Any], version: definitions.Version) -> dict[str, Any] | None:
    """What mongos answers itself, where it differs from a replica set's primary; None: as one."""
    name = definitions.command_name(body)
    if name == "replSetGetStatus":
        return dict(NOT_THROUGH_MONGOS)
    if name == "replSetGetConfig":
        return {
            "ok": 0.0,
            "code": 59,
            "codeName": "CommandNotFound",
            "errmsg": "no such command: 'replSetGetConfig'",
        }
    if name == "find" and body.get("$db") == "config" and body.get("find") == "collections":
        return config_collections(body)
    return lookup_refusal(body, version)


def fix_mongos(
    version: definitions.Version, folded_body: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> None:
    """With ``NX_MONGOS``, answer as the module docstring says (``hello``: ``devserver``)."""
    if not enabled():
        return
    command = NeoSQLiteHandler.handle_command

    @functools.wraps(command)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = folded_body(msg) or {}
        reply = answer(body, version) if body else None
        if reply is None and (refused := untargeted_upserts(body)):
            return refuse_untargeted_upserts(self, command, msg, body, refused)
        if reply is None:
            return command(self, msg)
        return msg.get("request_id", 0), reply

    NeoSQLiteHandler.handle_command = handle_command
