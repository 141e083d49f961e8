"""What a sharded cluster allows, checked once at start-up with one clear line, instead of a
failure on the first aggregate or upsert.

Through ``mongos`` (``hello`` answers ``msg: "isdbgrid"``), from the cluster's own metadata
(``config.collections``, the balancer's list of sharded collections):

- the orders collection may be sharded (it is read by equality and ranges);
- before MongoDB 5.1, ``$lookup`` cannot read a sharded collection: the four reference
  collections, and the archive when it lives in the source database (the "already archived"
  step joins it), must then be unsharded;
- the archive cannot be sharded as the archiver writes it, on any version: its unique index
  on ``numero_commande`` needs the shard key as its prefix, and its upserts select by ``_id``
  alone (which needs ``_id`` as the shard key before 7.0);
- the checkpoint and rejects collections are written by ``_id``: unsharded, or sharded on
  ``_id``.

A replica set or a standalone server has nothing to check. A user who may not read
``config.collections`` gets a warning and no check.
"""

from __future__ import annotations

from typing import Any

from pymongo import errors as pymongo_errors

from config import Settings, collection_roles
from errors import ConfigError
from logger import get_logger

log = get_logger("deployment")

LOOKUP_SHARDED_FROM = (5, 1)  # $lookup reads a sharded "from" collection from 5.1 on


def server_version(client: Any) -> tuple[int, ...]:
    text = str(client.admin.command("buildInfo").get("version", "0"))
    return tuple(int(part) for part in text.split("-")[0].split(".")[:3] if part.isdigit())


def sharded_collections(client: Any, namespaces: list[str]) -> dict[str, dict[str, Any]]:
    """The shard key of each of ``namespaces`` that is sharded (``config.collections``)."""
    found = client["config"]["collections"].find(
        {"_id": {"$in": namespaces}, "dropped": {"$ne": True}}, {"key": 1}
    )
    return {doc["_id"]: dict(doc.get("key") or {}) for doc in found}


def sharding_problems(
    settings: Settings, version: tuple[int, ...], sharded: dict[str, dict[str, Any]]
) -> list[str]:
    """What this configuration cannot do on a cluster of ``version`` with these sharded
    collections (namespace -> shard key). Pure: the rules of the module docstring."""
    source, archive_db = settings.mongodb_database, settings.archive_db_name
    problems = []
    references = [
        settings.clients_collection,
        settings.couriers_collection,
        settings.restaurants_collection,
        settings.menu_collection,
    ]
    joined = [f"{source}.{name}" for name in references]
    if archive_db == source:
        joined.append(f"{source}.{settings.archive_collection}")
    if version < LOOKUP_SHARDED_FROM:
        for namespace in joined:
            if namespace in sharded:
                problems.append(
                    f"{namespace} is sharded: $lookup reads a sharded collection from MongoDB 5.1 on "
                    f"(this cluster: {'.'.join(map(str, version))}); unshard it or upgrade"
                )
    archive = f"{archive_db}.{settings.archive_collection}"
    if archive in sharded:
        problems.append(
            f"{archive} is sharded (key {sharded[archive]}): the archive must not be, its unique "
            "numero_commande index and its upserts by _id need different shard keys; keep it unsharded"
        )
    for setting, name in (
        ("CHECKPOINT_COLLECTION", settings.checkpoint_collection),
        ("REJECTS_COLLECTION", settings.rejects_collection),
    ):
        namespace = f"{archive_db}.{name}"
        key = sharded.get(namespace)
        if key is not None and list(key) != ["_id"]:
            problems.append(
                f"{namespace} ({setting}) is sharded on {key}: written by _id, it must be unsharded or sharded on _id"
            )
    return problems


def check_deployment(client: Any, settings: Settings) -> None:
    """Raise ``ConfigError`` (exit 2, one line) when the cluster cannot serve this configuration."""
    try:
        hello = client.admin.command("hello")
    except (pymongo_errors.PyMongoError, NotImplementedError):
        return
    if not isinstance(hello, dict) or hello.get("msg") != "isdbgrid":
        return  # a replica set or a standalone server: nothing is sharded
    namespaces = [f"{database}.{name}" for _, database, name in collection_roles(settings)]
    try:
        sharded = sharded_collections(client, namespaces)
        version = server_version(client)
    except pymongo_errors.OperationFailure as exc:
        log.warning(
            "cannot read config.collections (%s): which collections are sharded is not checked", exc.code
        )
        return
    problems = sharding_problems(settings, version, sharded)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"sharded cluster: {problems[0]}{more}")
    log.debug("sharded cluster %s: sharded here: %s", version, sorted(sharded) or "none")
