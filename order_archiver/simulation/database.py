"""The embedded database of ``--simulation``: mongomock, filled with generated or sample data.

mongomock is an in-process fake of pymongo. It is not MongoDB, and a few of its departures
matter here; the ``_patch_mongomock_*`` functions fix them (see ``shared/nx-27017.md``, "mongomock").
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import mongomock
import mongomock.aggregate
import mongomock.collection
import mongomock.filtering
import mongomock.helpers
from bson import Regex, json_util
from bson.timestamp import Timestamp
from pymongo.errors import OperationFailure

from order_archiver.documents import Document
from order_archiver.errors import ConfigError
from order_archiver.logs import get_logger, plural
from order_archiver.orders.pii import SIMULATE_MARK
from order_archiver.reporting.progress import Progress, ProgressMode
from order_archiver.settings import Settings
from order_archiver.simulation.generator import (
    DEFAULT_COUNT,
    DEFAULT_DAYS,
    DEFAULT_P_ANOMALIES,
    DEFAULT_P_DELIVERED,
    DEFAULT_SEED,
    Dataset,
    generate_dataset,
    strip_markers,
)

log = get_logger("simulation")

SAMPLES_FILE = "samples.json"
_JSON_OPTIONS = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC)


def _values_along_path(document: Any, path: list[str]) -> list[Any]:
    """Every value at ``path``, expanding arrays at each step as MongoDB's $lookup does."""
    nodes = [document]
    for part in path:
        following: list[Any] = []
        for node in nodes:
            candidates = node if isinstance(node, list) else [node]
            for candidate in candidates:
                if isinstance(candidate, dict) and part in candidate:
                    following.append(candidate[part])
        nodes = following
    values: list[Any] = []
    for node in nodes:
        values.extend(node if isinstance(node, list) else [node])
    return values


def _patch_mongomock_lookup() -> None:
    """Two departures of mongomock's ``$lookup`` from MongoDB, fixed in one wrapper.

    - A ``localField`` path through an array of subdocuments (``items.menu_id``), which
      MongoDB documents and the product uses, joins nothing. The wrapper gathers the path's
      values the way MongoDB does (expanding arrays at every step).
    - It runs one unindexed ``find`` per input document: quadratic, minutes for the
      simulation's few thousand orders, where MongoDB uses the foreign ``_id`` index. On
      ``foreignField: "_id"`` the wrapper reads the foreign collection once into a dict.

    The stage table holds the original handler (patching the function does nothing), so its
    entry is replaced; other ``$lookup`` forms go to the original.
    """
    if getattr(mongomock.aggregate, "_order_archiver_patched", False):
        return
    original: Any = mongomock.aggregate._PIPELINE_HANDLERS["$lookup"]

    def lookup(in_collection: list[dict[str, object]], database: Any, options: dict[str, object]) -> Any:
        local_field = options.get("localField")
        if (
            options.get("foreignField") != "_id"
            or not isinstance(local_field, str)
            or not isinstance(options.get("as"), str)
            or {"let", "pipeline"} & set(options)
        ):
            return original(in_collection, database, options)
        foreign = {_hash_key(doc["_id"]): doc for doc in database.get_collection(options["from"]).find()}
        path = local_field.split(".")
        for document in in_collection:
            joined, seen = [], set()
            for value in _values_along_path(document, path):
                key = _hash_key(value)
                if key in foreign and key not in seen:
                    seen.add(key)
                    joined.append(foreign[key])
            document[str(options["as"])] = joined
        return in_collection

    mongomock.aggregate._PIPELINE_HANDLERS["$lookup"] = lookup
    setattr(mongomock.aggregate, "_order_archiver_patched", True)  # noqa: B010 - a foreign module


def _hash_key(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))  # MongoDB compares 1 and 1.0 equal, True and 1 not
    return value


def _patch_mongomock_bulk_sort() -> None:
    """pymongo 4.20's ``UpdateOne``/``ReplaceOne`` hand mongomock 4.3's bulk builder a ``sort``
    argument (MongoDB 8's sorted update) that it does not know: every ``bulk_write`` of
    updates raises ``TypeError``. The archiver never sorts an update, so an unset ``sort`` is
    dropped; a set one still fails, loudly."""
    builder = mongomock.collection.BulkOperationBuilder
    if getattr(builder, "_order_archiver_patched", False):
        return
    for name in ("add_update", "add_replace"):
        original = getattr(builder, name)

        def without_sort(
            self: Any, *args: Any, _original: Any = original, sort: Any = None, **kwargs: Any
        ) -> Any:
            if sort is not None:
                raise NotImplementedError("mongomock: sorted updates are not supported")
            return _original(self, *args, **kwargs)

        setattr(builder, name, without_sort)
    setattr(builder, "_order_archiver_patched", True)  # noqa: B010 - a foreign class


def _patch_mongomock_type_aliases() -> None:
    """mongomock 4.3 raises ``NotImplementedError`` for ``$type`` ``null``, ``symbol``,
    ``timestamp`` and ``regex``, which MongoDB matches; the keyset walks name them to cross
    BSON types (``selection.ids_after``). They get the test MongoDB applies."""
    types = mongomock.filtering.TYPE_MAP
    for alias, test in {
        "null": lambda v: v is None,
        "symbol": lambda v: False,  # deprecated: pymongo decodes a symbol as str
        "timestamp": lambda v: isinstance(v, Timestamp),
        "regex": lambda v: isinstance(v, (Regex, re.Pattern)),
    }.items():
        if types.get(alias) is None:
            types[alias] = test


def _patch_mongomock_index_command_options() -> None:
    """mongomock 4.3's ``create_indexes`` takes no command fields; pymongo's passes them to the
    ``createIndexes`` command. The in-process database answers as a standalone MongoDB does:
    ``maxTimeMS`` and ``comment`` accepted, ``commitQuorum`` refused (2 BadValue, "Standalones
    can't specify commitQuorum"), anything else refused as an unknown field (40415). Each index
    is built from its specification as it stands (mongomock's own version adds an
    ``expireAfterSeconds: None`` that makes an existing index "different")."""
    collection = mongomock.collection.Collection
    if getattr(collection, "_order_archiver_patched", False):
        return

    def create_indexes(self: Any, indexes: Any, session: Any = None, **command: Any) -> Any:
        if "commitQuorum" in command:
            raise OperationFailure("Standalones can't specify commitQuorum", code=2)
        for name in set(command) - {"maxTimeMS", "comment"}:
            raise OperationFailure(f"BSON field 'createIndexes.{name}' is an unknown field.", code=40415)
        specs = [dict(index.document) for index in indexes]
        return [self.create_index(list(spec.pop("key").items()), session=session, **spec) for spec in specs]

    collection.create_indexes = create_indexes  # type: ignore[method-assign]
    setattr(collection, "_order_archiver_patched", True)  # noqa: B010 - a foreign class


def new_client() -> mongomock.MongoClient[Document]:
    _patch_mongomock_lookup()
    _patch_mongomock_index_command_options()
    _patch_mongomock_bulk_sort()
    _patch_mongomock_type_aliases()
    return mongomock.MongoClient(tz_aware=True)


def write_samples(dataset: Dataset, path: str | Path, settings: Settings) -> int:
    """Write the dataset as Extended JSON: ``{collection name: [documents]}``."""
    payload = {
        name: [strip_markers(doc) for doc in documents] for name, documents in dataset.by_collection(settings)
    }
    Path(path).write_text(json_util.dumps(payload, json_options=_JSON_OPTIONS, ensure_ascii=False), "utf-8")
    return sum(len(docs) for docs in payload.values())


def read_samples(path: str | Path) -> dict[str, list[dict[str, object]]]:
    try:
        payload = json_util.loads(Path(path).read_text("utf-8"), json_options=_JSON_OPTIONS)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a samples file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or not all(isinstance(v, list) for v in payload.values()):
        raise ConfigError(f"{path}: expected {{collection: [documents]}}")
    return payload


def simulation_client(
    settings: Settings,
    *,
    count: int = DEFAULT_COUNT,
    seed: int | None = DEFAULT_SEED,
    samples: str | Path | None = SAMPLES_FILE,
) -> mongomock.MongoClient[Document]:
    """A mongomock client whose source database holds ``samples`` if that file exists, else
    ``count`` generated orders."""
    client = new_client()
    database = client[settings.mongodb_database]
    if samples and Path(samples).is_file():
        payload = read_samples(samples)
        for name, documents in payload.items():
            if documents:
                database[name].insert_many(documents)
        log.info(
            "simulation database filled from %s (%s)",
            samples,
            plural(len(payload.get(settings.orders_collection, [])), "order"),
        )
        return client
    dataset = generate_dataset(count, seed=seed)
    for name, generated in dataset.by_collection(settings):
        database[name].insert_many([strip_markers(doc) for doc in generated])
    log.info("simulation database filled with %s (seed %s)", plural(count, "generated order"), seed)
    return client


# On every document ``simulate`` writes: ``--reset`` drops only collections made of these.
GENERATED = SIMULATE_MARK


def _check_generated_only(database: Any, names: list[str], *, reset: bool) -> None:
    """``ConfigError`` (exit 2, nothing dropped nor written) when one of ``names`` holds a
    document that ``simulate`` did not write (its marker missing, or not ``true``): ``--reset``
    once dropped a database's real clients, and plain ``simulate`` mixed generated orders into
    real ones."""
    for name in names:
        found = database[name].find_one({GENERATED: {"$ne": True}}, {"_id": 1})
        if found is not None:
            done = "nothing was dropped" if reset else "nothing was written"
            raise ConfigError(
                f"{'--reset' if reset else 'simulate'}: {database.name}.{name} holds documents simulate "
                f"did not generate (_id {found['_id']}): {done}; point MONGODB_DATABASE at a "
                "development database"
            )


def fill_database(
    database: Any,
    dataset: Dataset,
    settings: Settings,
    *,
    reset: bool = False,
    chunk_size: int = 1000,
    progress: ProgressMode = "off",
    mark: bool = False,
) -> dict[str, int]:
    """Insert the dataset in bulk (references first), ``reset`` dropping the five collections
    first, but only when every document in them was generated (``mark`` puts ``GENERATED`` on
    each document written, for ``simulate``)."""
    if mark:  # simulate: only where nothing but its own documents are
        _check_generated_only(database, [name for name, _ in dataset.by_collection(settings)], reset=reset)
    if reset:
        for name, _ in dataset.by_collection(settings):
            database[name].drop()
    counts: dict[str, int] = {}
    marker = {GENERATED: True} if mark else {}
    total = sum(len(docs) for _, docs in dataset.by_collection(settings))
    bar = Progress("inserting", total=total, mode=progress, unit="documents")
    try:
        for name, documents in dataset.by_collection(settings):
            collection = database[name]
            for start in range(0, len(documents), chunk_size):
                batch = [strip_markers(doc) | marker for doc in documents[start : start + chunk_size]]
                collection.insert_many(batch, ordered=False)
                bar.update(len(batch))
            counts[name] = len(documents)
    finally:
        bar.close()
    return counts


def next_order_number(collections: list[Any]) -> int:
    """The number after the highest ``CMD-NNNNNN`` any of ``collections`` holds (1 if none)."""
    highest = 0
    for collection in collections:
        latest = collection.find_one(
            {"numero_commande": {"$regex": r"^CMD-\d+$"}},
            {"numero_commande": 1},
            sort=[("numero_commande", -1)],
        )
        if latest:
            highest = max(highest, int(latest["numero_commande"].split("-")[1]))
    return highest + 1


@dataclass(frozen=True)
class SimulateOptions:
    count: int = DEFAULT_COUNT
    seed: int | None = DEFAULT_SEED
    p_delivered: float = DEFAULT_P_DELIVERED
    p_anomalies: float = DEFAULT_P_ANOMALIES
    days: int = DEFAULT_DAYS
    reset: bool = False
    progress: ProgressMode = "off"


def _generate(options: SimulateOptions, first_number: int = 1) -> Dataset:
    return generate_dataset(
        options.count,
        seed=options.seed,
        p_delivered=options.p_delivered,
        p_anomalies=options.p_anomalies,
        days=options.days,
        first_number=first_number,
    )


def simulate_samples(settings: Settings, options: SimulateOptions, path: str) -> str:
    """Generate the data into an Extended JSON file; returns the summary line."""
    dataset = _generate(options)
    written = write_samples(dataset, path, settings)
    return (
        f"simulate: {plural(len(dataset.orders), 'order')} ({plural(written, 'document')}) written to {path}"
    )


def simulate_into(client: Any, settings: Settings, options: SimulateOptions) -> str:
    """Generate the data into the source database of ``client``; returns the summary line.
    (The caller opens the client: this module is what ``connection`` opens in simulation mode.)"""
    started = time.monotonic()
    database = client[settings.mongodb_database]
    # Past the archive's numbers too: after a purge (or --reset) the source no longer holds
    # them, and a number reused is "already archived for another order" forever. (An archive
    # on another deployment, ARCHIVE_MONGODB_URI, is not looked at.)
    numbered = [] if options.reset else [database[settings.orders_collection]]
    if not settings.archive_elsewhere:
        numbered.append(client[settings.archive_db_name][settings.archive_collection])
    dataset = _generate(options, first_number=next_order_number(numbered))
    fill_database(database, dataset, settings, reset=options.reset, progress=options.progress, mark=True)
    delivered = sum(1 for order in dataset.orders if order["status"] == settings.delivered_status)
    return (
        f"simulate: {plural(len(dataset.orders), 'order')} ({delivered} delivered), "
        f"{plural(len(dataset.clients), 'client')}, {plural(len(dataset.couriers), 'courier')}, "
        f"{plural(len(dataset.restaurants), 'restaurant')}, "
        f"{plural(len(dataset.menus), 'dish', 'dishes')} into {settings.mongodb_database} in {time.monotonic() - started:.1f}s"
    )
