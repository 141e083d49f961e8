"""The indexes a batch run relies on, built once per run (creating an existing index is a
no-op on the server).

Each is one ``createIndexes``: the specification's fields in the ``IndexModel`` (``key``,
``name``, ``unique``), the command's own fields on the command (``commitQuorum`` where there
is a quorum, ``maxTimeMS``), as ``deployment.index_build_options`` decides from each
deployment's own ``hello``: source and archive can be different deployments."""

from __future__ import annotations

import functools
import threading
from typing import Any

from pymongo import ASCENDING, IndexModel

from logger import get_logger
from order_archiver.errors import ArchiverError
from order_archiver.mongodb.deployment import hello, index_build_options
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.retry import retrying

log = get_logger("batch")

Keys = list[tuple[str, int]]

SOURCE_INDEXES: list[tuple[Keys, dict[str, Any]]] = [
    ([("status", ASCENDING), ("date_commande", ASCENDING)], {}),
    ([("status", ASCENDING), ("_id", ASCENDING)], {}),
    ([("status", ASCENDING), ("date_livraison", ASCENDING)], {}),  # incremental passes
    ([("numero_commande", ASCENDING)], {}),
]
ARCHIVE_INDEXES: list[tuple[Keys, dict[str, Any]]] = [
    ([("numero_commande", ASCENDING)], {"unique": True}),
    ([("date_commande", ASCENDING)], {}),
    ([("archived_at", ASCENDING)], {}),
    ([("pii_policy", ASCENDING)], {}),  # status: one distinct scan
    ([("forgotten_at", ASCENDING), ("date_livraison", ASCENDING)], {}),  # ARCHIVE_PII_RETENTION's range
]


def ensure_indexes(
    orders: MongoCollection,
    archive: MongoCollection,
    *,
    stop_event: threading.Event,
    source_exists: bool = True,
) -> None:
    """Build the indexes; only the archive's unique index is required (without it a
    concurrent writer could archive one numero twice): the others only speed runs up, and a
    failed build is tried again by the next run. Nothing is built on a source collection that
    does not exist (a build would create the collection a typo names)."""
    source_options = build_options(orders, stop_event)
    same_deployment = archive.database.client is orders.database.client
    archive_options = source_options if same_deployment else build_options(archive, stop_event)
    specs = [(archive, keys, extra, archive_options) for keys, extra in ARCHIVE_INDEXES]
    if source_exists:
        specs = [(orders, keys, extra, source_options) for keys, extra in SOURCE_INDEXES] + specs
    for collection, keys, extra, command in specs:
        build = functools.partial(collection.create_indexes, [IndexModel(keys, **extra)], **command)
        try:
            retrying(build, stop_event=stop_event)
        except ArchiverError as exc:
            if collection is archive and extra.get("unique"):
                raise type(exc)(f"cannot create the archive's unique index: {exc}") from exc
            log.warning("index %s on %s not created (%s); continuing", keys, collection.name, exc)


def build_options(collection: MongoCollection, stop_event: threading.Event | None) -> dict[str, Any]:
    """What this collection's deployment lets an index build name (its ``hello``; an
    in-process simulation answers none: a standalone)."""
    try:
        reply = retrying(lambda: hello(collection.database.client), stop_event=stop_event)
    except NotImplementedError:
        reply = {}
    return index_build_options(reply)
