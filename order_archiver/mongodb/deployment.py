"""What the deployment is and allows: its ``hello`` (``isMaster`` before 4.4.2), the options an
index build may name there, and what a sharded cluster allows, checked once at start-up with
one clear line, instead of a failure on the first aggregate or upsert.

Through ``mongos`` (``hello`` answers ``msg: "isdbgrid"``), from the cluster's own metadata
(``config.collections``, the balancer's list of sharded collections; from 8.0 it lists
unsharded collections moved by ``moveCollection`` too, ``unsplittable``: not sharded):

- the orders collection may be sharded (it is read by equality and ranges);
- before MongoDB 5.1, ``$lookup`` cannot read a sharded collection: the four reference
  collections, and the archive when it lives in the source database (the "already archived"
  step joins it), must then be unsharded;
- the archive cannot be sharded as the archiver writes it, on any version: its unique index
  on ``numero_commande`` needs the shard key as its prefix, and its upserts select by ``_id``
  alone (which needs ``_id`` as the shard key before 7.0);
- the checkpoint, rejects and forgotten-persons collections are upserted by ``_id`` alone:
  unsharded, or sharded on ``_id`` (mongos cannot target an upsert whose filter lacks the shard
  key: 61 ShardKeyNotFound, "Failed to target upsert by query").

A replica set or a standalone server has nothing to check. A user who may not read
``config.collections`` gets a warning and no check.
"""

from __future__ import annotations

from pymongo import MongoClient
from pymongo import errors as pymongo_errors
from pymongo.server_type import SERVER_TYPE

from order_archiver.documents import Document, mapping_or_empty
from order_archiver.errors import ConfigError
from order_archiver.logs import get_logger
from order_archiver.retry import ARCHIVE_SIDE, SOURCE_SIDE
from order_archiver.settings import ARCHIVE_SIDE_ROLES, Settings, collection_roles

log = get_logger("deployment")

LOOKUP_SHARDED_FROM = (5, 1)  # $lookup reads a sharded "from" collection from 5.1 on
COMMAND_NOT_FOUND = 59  # what 4.4.0 and 4.4.1 answer "hello" (added in 4.4.2)


HELLO_FROM = (4, 4, 2)

# What the archiver uses from a version after the 4.4 floor, each gated on the server's
# version, and what it does below it (doctor says which are off).
GATED_FEATURES = (
    (HELLO_FROM, "hello", "isMaster answers instead"),
    (
        LOOKUP_SHARDED_FROM,
        "$lookup from a sharded collection",
        "the reference collections must stay unsharded",
    ),
)


def features_off(version: tuple[int, ...]) -> list[str]:
    """The gated features a server of ``version`` lacks, each with what the archiver does instead."""
    return [
        f"{name} (from {'.'.join(map(str, since))}): {instead}"
        for since, name, instead in GATED_FEATURES
        if version < since
    ]


def hello(client: MongoClient[Document]) -> dict[str, object]:
    """The server's ``hello`` reply; ``isMaster`` (same reply) on 4.4.0 and 4.4.1, which
    answer ``hello`` CommandNotFound."""
    try:
        return dict(client.admin.command("hello"))
    except pymongo_errors.OperationFailure as exc:
        if exc.code != COMMAND_NOT_FOUND:
            raise
    return dict(client.admin.command("isMaster"))


def replicated(reply: dict[str, object]) -> bool:
    """A replica set member (``setName``) or a ``mongos``: where an index build has a quorum."""
    return bool(reply.get("setName")) or reply.get("msg") == "isdbgrid"


def is_standalone(client: MongoClient[Document]) -> bool:
    """Whether the deployment is one standalone server (which has no change streams), as the
    driver classified the servers it has heard from, by its own rules (pymongo's ``hello.py``:
    no set name, not a member before ``rs.initiate()`` (``isreplicaset``), not a ``mongos``, not
    behind a load balancer); no command sent. Nothing heard yet: False."""
    description = getattr(client, "topology_description", None)
    servers = list(description.server_descriptions().values()) if description is not None else []
    return bool(servers) and all(server.server_type == SERVER_TYPE.Standalone for server in servers)


def index_build_options(reply: dict[str, object]) -> dict[str, object]:
    """The ``createIndexes`` command's own fields (never the index specification's, where every
    MongoDB since 3.4 refuses them: 197). On 4.4+ a replicated build waits for every voting
    member by default, so a member down would block the run: it asks a majority
    (``commitQuorum``), which a standalone refuses (2 BadValue) and does not need. Never
    ``maxTimeMS``: MongoDB aborts a build whose command outlasts it (``indexes.py``)."""
    return {"commitQuorum": "majority"} if replicated(reply) else {}


def server_version(client: MongoClient[Document]) -> tuple[int, ...]:
    text = str(client.admin.command("buildInfo").get("version", "0"))
    return tuple(int(part) for part in text.split("-")[0].split(".")[:3] if part.isdigit())


def sharded_collections(client: MongoClient[Document], namespaces: list[str]) -> dict[str, dict[str, object]]:
    """The shard key of each of ``namespaces`` that is sharded (``config.collections``). From
    8.0 the list also holds unsharded collections the cluster tracks, a collection moved to
    another shard by ``moveCollection`` among them: ``unsplittable: true``, key ``{_id: 1}``,
    one chunk, not sharded (SERVER-78755)."""
    found = client["config"]["collections"].find(
        {"_id": {"$in": namespaces}, "dropped": {"$ne": True}, "unsplittable": {"$ne": True}}, {"key": 1}
    )
    return {str(doc["_id"]): dict(mapping_or_empty(doc.get("key"))) for doc in found}


def sharding_problems(
    settings: Settings, version: tuple[int, ...], sharded: dict[str, dict[str, object]]
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
        ("FORGOTTEN_COLLECTION", settings.forgotten_collection),
    ):
        namespace = f"{archive_db}.{name}"
        key = sharded.get(namespace)
        if key is not None and list(key) != ["_id"]:
            problems.append(
                f"{namespace} ({setting}) is sharded on {key}: written by _id, it must be unsharded or sharded on _id"
            )
    return problems


def namespaces_of(settings: Settings, side: str = "both") -> list[str]:
    """The namespaces one deployment holds: ``"both"`` (one deployment), ``"source"`` (orders
    and references) or ``"archive"`` (archive, checkpoints, rejects: ARCHIVE_MONGODB_URI)."""
    return [
        f"{database}.{name}"
        for role, database, name in collection_roles(settings)
        if side == "both" or (role in ARCHIVE_SIDE_ROLES) == (side == "archive")
    ]


def check_deployment(client: MongoClient[Document], settings: Settings, side: str = "both") -> None:
    """Raise ``ConfigError`` (exit 2, one line) when the cluster cannot serve this configuration:
    the collections of ``side`` (see ``namespaces_of``), as that deployment's ``mongos`` knows them."""
    try:
        reply = hello(client)
    except (pymongo_errors.PyMongoError, NotImplementedError):
        return
    if reply.get("msg") != "isdbgrid":
        return  # a replica set or a standalone server: nothing is sharded
    try:
        sharded = sharded_collections(client, namespaces_of(settings, side))
        version = server_version(client)
    except pymongo_errors.OperationFailure as exc:
        log.warning(
            "cannot read config.collections (%s): which collections are sharded is not checked (grant "
            "find on config.collections: orderArchiverRead in deploy/mongodb-roles.js holds it)",
            exc.code,
        )
        return
    problems = sharding_problems(settings, version, sharded)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        where = {"archive": ARCHIVE_SIDE, "source": SOURCE_SIDE}.get(side, "")
        raise ConfigError(f"{where}sharded cluster: {problems[0]}{more}")
    log.debug("sharded cluster %s: sharded here: %s", version, sorted(sharded) or "none")


def check_deployments(
    client: MongoClient[Document], settings: Settings, archive_client: MongoClient[Document] | None = None
) -> None:
    """``check_deployment`` of the one deployment, or of each (ARCHIVE_MONGODB_URI: the archive,
    its checkpoints and rejects on their own cluster, checked there)."""
    if archive_client is None or archive_client is client:
        check_deployment(client, settings)
        return
    check_deployment(client, settings, "source")
    check_deployment(archive_client, settings, "archive")
