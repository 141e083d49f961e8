"""What MongoDB asks of a user for each command the product sends, and what the shipped roles
(deploy/mongodb-roles.js) and the roles the docs tell an operator to grant (docs/deployment.md)
give: the test of tests/integration/test_privileges_nx.py compares them.

The privilege rules are MongoDB's authorization checks (``src/mongo/db/auth/
authorization_checks.cpp``: checkAuthForFind/Insert/Update/Delete/GetMore/KillCursors/CollMod,
``getPrivilegesForAggregate``; each command's ``checkAuthForOperation``, e.g. ``list_indexes.cpp``;
``document_source_change_stream.cpp``: ``changeStream`` and ``find``), as the manual's
"Privilege Actions" page and each command's "Access Control" section state them. A command
without a rule here fails the test: a new command cannot ship without its privilege.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple


# A privilege as MongoDB checks it: an action on a resource; collection "" is the database
# resource (listCollections), as in a role's {db, collection: ""}.
class Privilege(NamedTuple):
    db: str
    collection: str
    action: str


# The cluster resource ({cluster: true} in a role): a Privilege whose db is CLUSTER (and
# collection "") is an action on it; no database or collection resource grants it.
CLUSTER = "{cluster: true}"
# One action on the cluster resource, of the same name as the command (each command's
# getAuthActionSet in src/mongo/db/repl/repl_set_commands.cpp and replset_get_status_cmd.cpp;
# the manual's "Privilege Actions", Replication Actions: "apply this action to the cluster
# resource"). The built-in clusterMonitor role holds both.
CLUSTER_ACTION = {"replSetGetStatus": "replSetGetStatus", "replSetGetConfig": "replSetGetConfig"}
# One action on the command's own collection.
COLLECTION_ACTION = {
    "find": "find",
    "count": "find",
    "distinct": "find",
    "insert": "insert",
    "delete": "remove",
    "createIndexes": "createIndex",
    "dropIndexes": "dropIndex",
    "collMod": "collMod",
    "listIndexes": "listIndexes",
}
# No privilege: the handshake and diagnostics any authenticated (or unauthenticated) client may
# send (their checkAuthForOperation is empty), and killCursors on the client's own cursors
# (checkAuthForKillCursors: co-authorized with the cursor's owner).
NO_PRIVILEGE = frozenset(
    {
        "hello",
        "isMaster",
        "ismaster",
        "ping",
        "buildInfo",
        "buildinfo",
        "connectionStatus",
        "endSessions",
        "killCursors",
        "saslStart",
        "saslContinue",
        "authenticate",
    }
)


class NoRule(Exception):
    """A command (or stage) the product sends that this table does not know yet."""


def required(database: str, body: Mapping[str, Any]) -> set[Privilege]:
    """The privileges MongoDB checks before it runs ``body`` sent to ``database``."""
    name = next(iter(body))
    target = body[name]
    if name in NO_PRIVILEGE:
        return set()
    if name in CLUSTER_ACTION:
        return {Privilege(CLUSTER, "", CLUSTER_ACTION[name])}
    if name in COLLECTION_ACTION:
        return {Privilege(database, str(target), COLLECTION_ACTION[name])}
    if name == "update":
        upsert = any(s.get("upsert") for s in body.get("updates") or [])
        return {Privilege(database, target, a) for a in ("update", *(["insert"] if upsert else []))}
    if name in ("findAndModify", "findandmodify"):
        return _find_and_modify(database, target, body)
    if name == "aggregate" and isinstance(target, str):
        return _pipeline(database, target, list(body.get("pipeline") or []), reads_collection=True)
    if name == "listCollections":
        return {Privilege(database, "", "listCollections")}
    if name == "getMore":
        return _get_more(database, str(body.get("collection", "")))
    raise NoRule(f"no privilege rule for {name!r} (sent to {database}): add MongoDB's (Privilege Actions)")


def _find_and_modify(database: str, collection: str, body: Mapping[str, Any]) -> set[Privilege]:
    """find for the query; remove, or update (and insert with upsert) for the write."""
    upsert = ["insert"] if body.get("upsert") else []
    writes = ["remove"] if body.get("remove") else ["update", *upsert]
    return {Privilege(database, collection, a) for a in ("find", *writes)}


def _get_more(database: str, collection: str) -> set[Privilege]:
    """MongoDB 4.4 checks find on the cursor's collection (listIndexes, listCollections for
    those cursors); later versions check the privileges of the command that opened the cursor,
    which its own check covers already."""
    if collection.startswith("$cmd.listIndexes."):
        return {Privilege(database, collection.removeprefix("$cmd.listIndexes."), "listIndexes")}
    if collection.startswith("$cmd.listCollections"):
        return {Privilege(database, "", "listCollections")}
    return {Privilege(database, collection, "find")}


def _pipeline(database: str, collection: str, pipeline: list[Any], reads_collection: bool) -> set[Privilege]:
    """find on the collection read (changeStream and find for a change stream), and find on
    each collection a $lookup or $unionWith reads, inside sub-pipelines too."""
    needs: set[Privilege] = set()
    first = next(iter(pipeline[0]), "") if pipeline else ""
    if first == "$changeStream":
        needs |= {Privilege(database, collection, a) for a in ("changeStream", "find")}
    elif reads_collection:
        needs.add(Privilege(database, collection, "find"))
    for stage in pipeline:
        needs |= _stage(database, stage)
    return needs


def _stage(database: str, stage: Mapping[str, Any]) -> set[Privilege]:
    name, spec = next(iter(stage.items()))
    if name in ("$lookup", "$unionWith", "$graphLookup"):
        spec = {"coll": spec} if isinstance(spec, str) else spec
        foreign = spec.get("from") or spec.get("coll")
        sub = list(spec.get("pipeline") or [])
        if foreign is None:  # a $lookup on a pipeline of its own ($documents): no collection read
            return _pipeline(database, "", sub, reads_collection=False)
        return _pipeline(database, str(foreign), sub, reads_collection=True)
    if name == "$facet":
        return {p for sub in spec.values() for s in sub for p in _stage(database, s)}
    if name in ("$out", "$merge", "$currentOp", "$collStats", "$indexStats", "$listSessions"):
        raise NoRule(f"no privilege rule for the stage {name}: add MongoDB's (Privilege Actions)")
    return set()


# --- the shipped roles -------------------------------------------------------------------------

_CONST = re.compile(r"^const ([A-Z_]+) = (.+?);", re.MULTILINE)
_PRIVILEGE = re.compile(
    r"(?:(\w+)\.map\(\((\w+)\) => \(\s*)?"  # REFERENCES.map((name) => ({ ... }))
    r"\{\s*resource:\s*\{\s*db:\s*(\w+),\s*collection:\s*(\"[^\"]*\"|\w+)\s*\},\s*actions:\s*(\[[^\]]*\])\s*\}"
)
_CLUSTER_PRIVILEGE = re.compile(r"\{\s*resource:\s*\{\s*cluster:\s*true\s*\},\s*actions:\s*(\[[^\]]*\])\s*\}")


def shipped_roles(path: Path) -> dict[str, list[tuple[str, str, frozenset[str]]]]:
    """Each role ``path`` creates -> its privileges (database, collection, actions), with the
    script's constants resolved (SIDE "both": every privilege of every side)."""
    text = path.read_text()
    consts: dict[str, Any] = {}
    for name, value in _CONST.findall(text):
        value = value.split("//")[0].strip()
        consts[name] = consts[value] if value in consts else json.loads(value)

    def resolve(token: str, bound: Mapping[str, str]) -> str:
        return str(json.loads(token) if token.startswith('"') else bound.get(token, consts.get(token)))

    roles: dict[str, list[tuple[str, str, frozenset[str]]]] = {}
    chunks = text.split("admin.createRole(")[1:]
    for chunk in chunks:
        role = re.search(r'role:\s*"(\w+)"', chunk)
        assert role is not None, "a createRole without a role name"
        body = chunk.split("roles:")[0]
        privileges = roles.setdefault(role.group(1), [])
        for array, variable, db, collection, actions in _PRIVILEGE.findall(body):
            for value in consts[array] if array else [""]:
                bound = {variable: value} if array else {}
                privileges.append(
                    (resolve(db, bound), resolve(collection, bound), frozenset(json.loads(actions)))
                )
        for actions in _CLUSTER_PRIVILEGE.findall(body):
            privileges.append((CLUSTER, "", frozenset(json.loads(actions))))
        # Every privilege of the role was read: none in a form this parser does not know.
        parsed = len(_PRIVILEGE.findall(body)) + len(_CLUSTER_PRIVILEGE.findall(body))
        assert body.count("resource:") == parsed, f"unparsed privilege in {role.group(1)}"
    return roles


def grants(privileges: list[tuple[str, str, frozenset[str]]], need: Privilege) -> bool:
    """MongoDB's resource matching: a collection resource grants on that collection; a database
    resource ({db, collection: ""}) on the database and each of its normal collections; the
    cluster resource only on the cluster, and only it there."""
    for db, collection, actions in privileges:
        if need.action not in actions or (db == CLUSTER) != (need.db == CLUSTER):
            continue
        if db not in (need.db, ""):
            continue
        if collection == need.collection or (collection == "" and not need.collection.startswith("system.")):
            return True
    return False


# --- the roles the docs tell an operator to grant -----------------------------------------------

_ROW = re.compile(r"^\| (`[^|]+`(?:, `[^|]+`)*) \| (`\w+`(?:, `\w+`)*) \|", re.MULTILINE)


def documented_roles(path: Path) -> dict[str, list[str]]:
    """docs/deployment.md's table "command | roles": each command (as the first cell spells it)
    -> the roles of deploy/mongodb-roles.js it needs."""
    table: dict[str, list[str]] = {}
    for commands, roles in _ROW.findall(path.read_text()):
        for command in re.findall(r"`([^`]+)`", commands):
            table[command] = re.findall(r"`(\w+)`", roles)
    return table
