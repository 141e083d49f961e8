"""The indexes a batch run relies on, built in a step of their own, without a time limit.

MongoDB aborts an index build whose ``createIndexes`` is interrupted while it waits for it
(``create_indexes_cmd.cpp``: it "defensively abort[s] the index build", on every member for a
two-phase build), and ``maxTimeMS`` expiring is such an interruption: on a collection that
already holds millions of documents a build carrying ``maxTimeMS`` never completes, on every
run. So a build here carries no ``maxTimeMS`` (and runs under ``pymongo.timeout(0)``, so that
a ``timeoutMS`` in the URI adds none), only ``commitQuorum`` where there is a quorum
(``deployment.index_build_options``).

The run does not wait for ever either: each build (one per collection, ``IndexBuild``) waits on
a thread of its own, the run at most ``INDEX_BUILD_WAIT_S`` for all of them; a build still running then is *pending* and left
to the server. Closing the connection does not abort it: ``createIndexes`` does not ask to be
killed when its client disconnects (only some reads do, through
``CommandHelpers::handleMarkKillOnClientDisconnect``; SERVER-101507 "Operations running index
builds are not killed if clients disconnect"). The next run reads which builds are in progress
from ``listIndexes`` with ``includeBuildUUIDs`` (4.4+: an unfinished index comes as
``{spec, buildUUID}``; without the flag it is listed as if it were ready) and neither starts
them again nor aborts them (an identical ``createIndexes`` would only wait for the build:
IndexBuildAlreadyInProgress, 276, then ``waitUntilAnIndexBuildFinishes``).

Every index but one only spares runs a scan (``COSTS`` says which): a run goes on without it
and says what it costs. The archive's unique index on ``numero_commande`` is required: without
it two source orders sharing a numero would both be archived; a run whose archive does not
have it ready archives nothing (``require_unique``)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

import pymongo
from pymongo import ASCENDING, IndexModel
from pymongo.errors import OperationFailure

from order_archiver.context import UNLIMITED, ChunkGate, RunContext
from order_archiver.documents import mapping_or_empty
from order_archiver.errors import ArchiverError, ConfigError, FatalError
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.deployment import hello, index_build_options
from order_archiver.mongodb.forgotten import ARCHIVE_PENDING, COLD_PENDING
from order_archiver.mongodb.storage import DUPLICATE_KEY, MongoCollection
from order_archiver.retry import Retry, retrying
from order_archiver.settings import Settings

log = get_logger("batch")

Keys = list[tuple[str, int]]
IndexState = Literal["ready", "pending", "missing", "unknown"]  # unknown: its indexes cannot be listed

NAMESPACE_NOT_FOUND = 26  # listIndexes of a collection that does not exist: no index at all
POLL_S = 0.05  # how often the run looks at its builds while it waits (a stop ends the wait)

SOURCE_INDEXES: list[tuple[Keys, dict[str, object]]] = [
    ([("status", ASCENDING), ("date_commande", ASCENDING)], {}),
    ([("status", ASCENDING), ("_id", ASCENDING)], {}),
    ([("status", ASCENDING), ("date_livraison", ASCENDING)], {}),  # incremental passes
    ([("numero_commande", ASCENDING)], {}),
]
ARCHIVE_INDEXES: list[tuple[Keys, dict[str, object]]] = [
    ([("numero_commande", ASCENDING)], {"unique": True}),
    ([("date_commande", ASCENDING)], {}),
    ([("archived_at", ASCENDING)], {}),
    ([("pii_policy", ASCENDING)], {}),  # status: one distinct scan
    ([("forgotten_by", ASCENDING), ("date_livraison", ASCENDING)], {}),  # ARCHIVE_PII_RETENTION's range
    # A person's orders (forget, restore --client): ``forgotten.orders_of`` is an $or of the
    # reference's and the source copy's id, which MongoDB serves from both indexes (an index
    # union) only when every branch has one; without them each request reads the whole archive.
    ([("client.id", ASCENDING)], {}),
    ([("source.client_id", ASCENDING)], {}),
    ([("livreur.id", ASCENDING)], {}),  # a courier's orders (forget --courier)
    ([("source.livreur_id", ASCENDING)], {}),  # theirs with a dangling reference
    # The orders restore put back lately (status's next purge leaves those within RESTORE_HOLD):
    # sparse, it holds the restored documents alone, a few, however large the archive.
    ([("restored_at", ASCENDING)], {"sparse": True}),
]
# With a cold tier only (ARCHIVE_COLD_URL): a month of the archive as one index range, in the
# move's read order. Not {date_livraison} alone: ARCHIVE_RETENTION's TTL index has that key (85
# on a second one). An archive without a cold tier does not pay for it (disk, every write).
COLD_TIER_INDEXES: list[tuple[Keys, dict[str, object]]] = [
    ([("date_livraison", ASCENDING), ("_id", ASCENDING)], {}),
]
# On the record of forgotten persons (FORGOTTEN_COLLECTION): the erasures a forget left
# unfinished, found by status and batch --run however many persons were forgotten after them, one
# partial index per mark (``forgotten.ARCHIVE_PENDING``, always; ``COLD_PENDING``, with a cold
# tier): each holds the marked persons alone (an equality filter, which MongoDB takes from 3.2
# on; one index over either mark would need $or, which a partialFilterExpression takes from 6.0
# only), a few, however long the record.
FORGOTTEN_INDEXES: list[tuple[Keys, dict[str, object]]] = [
    ([(ARCHIVE_PENDING, ASCENDING)], {"partialFilterExpression": {ARCHIVE_PENDING: True}}),
]
COLD_FORGOTTEN_INDEXES: list[tuple[Keys, dict[str, object]]] = [
    ([(COLD_PENDING, ASCENDING)], {"partialFilterExpression": {COLD_PENDING: True}}),
]

# What runs pay while an index is not ready, by (side, its fields).
COSTS: dict[tuple[str, ...], str] = {
    ("source", "status", "date_commande"): "a date window and status's counts scan the orders",
    (
        "source",
        "status",
        "_id",
    ): "a full pass sorts the delivered orders in memory instead of walking an index",
    ("source", "status", "date_livraison"): "incremental passes and status's backlog scan the source",
    ("source", "numero_commande"): "a look-up by numero_commande scans the orders",
    ("archive", "numero_commande"): "nothing is archived (required: without it two orders sharing a "
    "numero_commande would both be archived)",
    ("archive", "date_commande"): "restore --date-from/--date-to scans the archive",
    ("archive", "archived_at"): "status's newest archived order scans the archive",
    ("archive", "pii_policy"): "status's personal-data policies scan the archive",
    ("archive", "forgotten_by", "date_livraison"): "ARCHIVE_PII_RETENTION scans the archive on every run",
    ("archive", "client.id"): "forget --client and restore --client scan the archive",
    ("archive", "source.client_id"): "forget --client and restore --client scan the archive",
    ("archive", "livreur.id"): "forget --courier scans the archive",
    ("archive", "source.livreur_id"): "forget --courier scans the archive",
    ("archive", "restored_at"): "status's next purge figure scans the archive for restored orders",
    ("archive", "date_livraison", "_id"): "a move to the cold tier scans the archive for each month",
    ("archive", ARCHIVE_PENDING): "status and batch --run read the whole record of forgotten persons "
    "for the erasures a forget left unfinished in the archive (each is still found)",
    ("archive", COLD_PENDING): "status and batch --run read the whole record of forgotten persons for "
    "the erasures a forget left unfinished in the cold tier (each is still found)",
}


def default_name(keys: Keys) -> str:
    """The name MongoDB gives an index it is not told one for (``numero_commande_1``)."""
    return "_".join(f"{name}_{direction}" for name, direction in keys)


class PlanReport(Protocol):
    """Where a run reports the indexes not ready (``batch.report.BatchReport``)."""

    indexes: list[dict[str, object]]
    indexes_built: list[dict[str, object]]
    warnings: list[str]


@dataclass(frozen=True)
class WantedIndex:
    """One index a run relies on, on one collection."""

    collection: MongoCollection
    side: str  # "source" or "archive"
    keys: Keys
    options: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.options.get("name") or default_name(self.keys))

    @property
    def cost(self) -> str:
        fields = tuple(name for name, _ in self.keys)
        return COSTS.get((self.side, *fields), "queries on it scan the collection")

    @property
    def key(self) -> tuple[str, str]:
        """Which index of which collection (source and archive may share a collection name)."""
        return self.collection.full_name, self.name

    def model(self) -> IndexModel:
        return IndexModel(self.keys, **self.options)

    def status(self, state: IndexState, problem: str | None = None) -> IndexStatus:
        return IndexStatus(
            self.collection.name, self.name, state, self.cost, problem, self.collection.database.name
        )

    def matches(self, spec: dict[str, object]) -> bool:
        """Whether a listed index is this one: its key, and as unique as this one (an index on
        ``numero_commande`` that is not unique is not the archive's unique index: its build is
        then refused, 85, and the run says so)."""
        same_key = list(dict(mapping_or_empty(spec.get("key"))).items()) == self.keys
        return same_key and bool(spec.get("unique")) == bool(self.options.get("unique"))


@dataclass
class IndexStatus:
    """Where one wanted index stands after the step (or, in a dry run or ``status``, now)."""

    collection: str
    index: str
    state: IndexState
    cost: str
    problem: str | None = None  # why a build the run started did not complete
    database: str | None = None  # the collection's (source and archive may share a name)
    built: bool = False  # ready because this run built it (the summary says so: not in ``as_dict``)

    def line(self) -> str:
        what = {
            "pending": "being built on the server (never restarted nor aborted by the archiver)",
            "missing": "missing (the next batch --run builds it)",
            "unknown": "not known (this user may not list the collection's indexes: listIndexes)",
            "ready": "ready",
        }[self.state]
        problem = f": {self.problem}" if self.problem else ""
        return f"index {self.index} on {self.collection}: {what}{problem}; until it is ready, {self.cost}"

    def as_dict(self) -> dict[str, object]:
        return {name: value for name, value in asdict(self).items() if name != "built"}

    def named(self) -> dict[str, object]:
        """Which index (``--json``'s ``indexes_built``)."""
        return {"database": self.database, "collection": self.collection, "index": self.index}


def wanted_indexes(
    orders: MongoCollection,
    archive: MongoCollection,
    *,
    source_exists: bool,
    cold_tier: bool = False,
    forgotten: MongoCollection | None = None,
) -> list[WantedIndex]:
    """The archive's indexes (with ``cold_tier``, the move's too, and the record of
    ``forgotten`` persons' when given) and, when the orders collection exists, the source's (a
    build would create the collection a typo names)."""
    archive_indexes = ARCHIVE_INDEXES + (COLD_TIER_INDEXES if cold_tier else [])
    wanted = [WantedIndex(archive, "archive", keys, extra) for keys, extra in archive_indexes]
    if forgotten is not None:
        on_record = FORGOTTEN_INDEXES + (COLD_FORGOTTEN_INDEXES if cold_tier else [])
        wanted += [WantedIndex(forgotten, "archive", keys, extra) for keys, extra in on_record]
    if source_exists:
        wanted = [WantedIndex(orders, "source", keys, extra) for keys, extra in SOURCE_INDEXES] + wanted
    return wanted


def listed_indexes(collection: MongoCollection) -> list[tuple[dict[str, object], bool]]:
    """Each index of ``collection`` and whether it is ready (False: being built). A collection
    holds at most 64 indexes: the first batch (101) holds them all."""
    try:
        reply = collection.database.command(
            {"listIndexes": collection.name, "includeBuildUUIDs": True, "cursor": {}}
        )
    except NotImplementedError:  # the in-process simulation: every build completes at once
        return [(dict(index), True) for index in collection.list_indexes()]
    except OperationFailure as exc:
        if exc.code == NAMESPACE_NOT_FOUND:
            return []
        raise
    batch = (reply.get("cursor") or {}).get("firstBatch") or []
    return [(dict(e["spec"]), False) if "buildUUID" in e else (dict(e), True) for e in batch]


def state_in(wanted: WantedIndex, listed: list[tuple[dict[str, object], bool]]) -> IndexState:
    for spec, ready in listed:
        if wanted.matches(spec):
            return "ready" if ready else "pending"
    return "missing"


def read_states(wanted: list[WantedIndex], stop_event: threading.Event | None) -> list[IndexState]:
    """Each wanted index's state: one ``listIndexes`` per collection. A collection whose indexes
    cannot be listed (a user without ``listIndexes``) has them all "unknown"; a run builds them
    as if missing (a build of one in progress then only waits for it, which is safe)."""
    listings: dict[str, list[tuple[dict[str, object], bool]] | None] = {}
    states: list[IndexState] = []
    for one in wanted:
        key = one.collection.full_name
        if key not in listings:
            try:
                listings[key] = retrying(
                    functools.partial(listed_indexes, one.collection), stop_event=stop_event
                )
            except FatalError as exc:
                log.debug("the indexes of %s cannot be listed (%s)", key, exc)
                listings[key] = None
        found = listings[key]
        states.append("unknown" if found is None else state_in(one, found))
    return states


def index_states(wanted: list[WantedIndex], stop_event: threading.Event | None) -> list[IndexStatus]:
    """Where each wanted index stands, without building anything (a dry run, ``status``, ``doctor``)."""
    return [one.status(state) for one, state in zip(wanted, read_states(wanted, stop_event), strict=True)]


class IndexBuild:
    """One ``createIndexes`` of the indexes one collection lacks, on a thread of its own, so that
    the run can stop waiting for it while the server goes on (a daemon thread: a process that
    ends does not wait for it). One command per collection: MongoDB builds its indexes in one
    scan of the collection, and counts it as one of the 3 index builds a primary runs at once
    (``maxNumActiveUserIndexBuilds``, 4.4+: a build over it waits, and so would the
    application's own). A command refused whole (a conflicting index, 85 or 86) is tried again
    one index at a time, so that the others are built and the refusal is named."""

    def __init__(
        self, wanted: list[WantedIndex], command: dict[str, Any], stop_event: threading.Event | None
    ) -> None:
        self.wanted, self.command, self.stop_event = wanted, command, stop_event
        self.done = threading.Event()
        self.errors: dict[str, BaseException] = {}  # by index name: the builds that failed
        names = "-".join(w.name for w in wanted)
        self.thread = threading.Thread(target=self._build, name=f"index-build-{names}", daemon=True)

    @property
    def error(self) -> BaseException | None:
        """The first failure, if any (a build of one index: its failure)."""
        return next(iter(self.errors.values()), None)

    def start(self) -> IndexBuild:
        self.thread.start()
        return self

    def _build(self) -> None:
        try:
            try:
                self._create(self.wanted)
            except ArchiverError as exc:
                if len(self.wanted) == 1:
                    raise
                log.debug(
                    "building %s at once failed (%s): one at a time",
                    plural(len(self.wanted), "index", "indexes"),
                    exc,
                )
                self._one_by_one()
        except BaseException as exc:  # handed to the run, which says it
            self.errors = {w.name: exc for w in self.wanted if w.name not in self.errors} | self.errors
        finally:
            self.done.set()

    def _one_by_one(self) -> None:
        for one in self.wanted:
            try:
                self._create([one])
            except ArchiverError as exc:
                self.errors[one.name] = exc

    def _create(self, wanted: list[WantedIndex]) -> None:
        collection = wanted[0].collection
        models = [one.model() for one in wanted]
        # No maxTimeMS, whatever timeoutMS the URI sets: 0 is "no limit" (CSOT); None would
        # inherit the client's timeoutMS, sent as maxTimeMS, and MongoDB aborts a build past it.
        with pymongo.timeout(0):
            retrying(
                lambda: collection.create_indexes(models, **self.command),
                purpose=Retry.COMMAND,
                stop_event=self.stop_event,
            )

    def statuses(self) -> list[IndexStatus]:
        return [self._status(one) for one in self.wanted]

    def _status(self, wanted: WantedIndex) -> IndexStatus:
        if not self.done.is_set():
            return wanted.status("pending")
        error = self.errors.get(wanted.name)
        if error is None:
            return replace(wanted.status("ready"), built=True)
        problem = str(error) if isinstance(error, ArchiverError) else repr(error)
        return wanted.status("missing", shared_key(error) or problem)


def wait_for(
    builds: list[IndexBuild],
    seconds: float,
    stop_event: threading.Event | None,
    ended: Callable[[], bool] = lambda: False,
) -> None:
    """Until every build is done, ``seconds`` have passed, the run is stopped or a limit of the
    run has come (``ended``: --max-runtime, --stop-file, #34; INDEX_BUILD_WAIT_S may be longer
    than the run's time); a build not done is left running on the server, pending."""
    deadline = time.monotonic() + seconds
    stop = stop_event or threading.Event()
    while not all(b.done.is_set() for b in builds) and not stop.is_set() and not ended():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        stop.wait(min(POLL_S, remaining))


def build_indexes(
    wanted: list[WantedIndex],
    *,
    wait_s: float,
    stop_event: threading.Event | None,
    options_of: Callable[[MongoCollection], dict[str, object]] | None = None,
    ended: Callable[[], bool] = lambda: False,
) -> list[IndexStatus]:
    """The step: start one build per collection of the indexes that are neither ready nor being
    built, wait for them at most ``wait_s``; what is still running is left pending on the server."""
    options_of = options_of or (lambda collection: build_options(collection, stop_event))
    ready: dict[tuple[str, str], IndexStatus] = {}
    to_build: dict[str, list[WantedIndex]] = {}  # by collection, in the order wanted
    for one, state in zip(wanted, read_states(wanted, stop_event), strict=True):
        if state in ("missing", "unknown"):
            to_build.setdefault(one.collection.full_name, []).append(one)
        else:
            ready[one.key] = one.status(state)
    command_of: dict[int, dict[str, object]] = {}  # one hello per deployment
    builds = []
    for group in to_build.values():
        client = id(group[0].collection.database.client)
        if client not in command_of:
            command_of[client] = options_of(group[0].collection)
        builds.append(IndexBuild(group, command_of[client], stop_event).start())
    wait_for(builds, wait_s, stop_event, ended)
    built = {one.key: status for b in builds for one, status in zip(b.wanted, b.statuses(), strict=True)}
    return [ready.get(one.key) or built[one.key] for one in wanted]


def build_options(collection: MongoCollection, stop_event: threading.Event | None) -> dict[str, object]:
    """What this collection's deployment lets an index build name (its ``hello``; an
    in-process simulation answers none: a standalone)."""
    try:
        reply = retrying(lambda: hello(collection.database.client), stop_event=stop_event)
    except NotImplementedError:
        reply = {}
    return index_build_options(reply)


def shared_key(error: BaseException) -> str | None:
    """What to do about a unique index MongoDB refused to build over documents sharing a key
    (11000, its ``keyValue``): which value, and the repair."""
    cause = error.__cause__ if isinstance(error, ArchiverError) else error
    if not isinstance(cause, OperationFailure) or cause.code != DUPLICATE_KEY:
        return None
    shared = mapping_or_empty((cause.details or {}).get("keyValue"))
    if not shared:
        return None
    return twins_repair(", ".join(f"{field} {value!r}" for field, value in shared.items()))


def twins_repair(shared: str) -> str:
    """Which value archive documents share (``shared``: "numero_commande 'CMD-1'") and the
    repair that keeps each of those orders: the same words for a refused build and ``doctor``."""
    return (
        f"two or more archive documents share {shared}: different orders (their _id differ), "
        "archived while this index was missing; main.py find lists them by that number; for each "
        "but the first archived, restore --id ID --run (it puts the order back in the source if a "
        "purge took it), then delete its archive document: batch --run then builds the index and "
        "lists that order as rejected (a reused number) instead of losing it"
    )


TWINS_SHOWN = 5  # doctor names the first few numbers shared, not every one
TWINS_LOOK_MS = 60_000  # and looks for them one minute at most (the server stops there: 50)


def shared_numbers(
    archive: MongoCollection, stop_event: threading.Event | None = None, shown: int = TWINS_SHOWN
) -> list[object]:
    """The first ``shown`` (and one more: "more") numbers two or more archive documents share,
    in order: what would make MongoDB refuse the unique index (11000). Asked only while that
    index is missing (with it, none can be shared): one aggregation that reads the whole archive
    once (it has no index on the number to read instead), stopped by the server after
    ``TWINS_LOOK_MS`` (50 MaxTimeMSExpired), spilling to disk rather than failing past
    ``$group``'s 100 MB (``allowDiskUse``, 4.4+), returning at most ``shown + 1`` numbers. It needs
    ``find`` on the archive only, which every command's user holds (doctor checks it)."""
    pipeline: list[dict[str, object]] = [
        {"$group": {"_id": "$numero_commande", "documents": {"$sum": 1}}},
        {"$match": {"documents": {"$gt": 1}}},
        {"$sort": {"_id": 1}},
        {"$limit": shown + 1},
    ]
    found = retrying(  # it only informs: tried twice at most (a connection cut reads it all again)
        lambda: list(archive.aggregate(pipeline, allowDiskUse=True, maxTimeMS=TWINS_LOOK_MS)),
        purpose=Retry.INFORM,
        stop_event=stop_event,
    )
    return [one["_id"] for one in found]


def unique_status(statuses: list[IndexStatus], archive: MongoCollection) -> IndexStatus | None:
    """The archive's unique index among ``statuses`` (None: not among them)."""
    name = default_name(ARCHIVE_INDEXES[0][0])
    where = (archive.database.name, archive.name)
    return next((s for s in statuses if (s.database, s.collection) == where and s.index == name), None)


def require_unique(statuses: list[IndexStatus], archive: MongoCollection) -> None:
    """Raise unless the archive's unique index is ready: without it no write is safe."""
    unique = unique_status(statuses, archive)
    if unique is None or unique.state in ("ready", "unknown"):
        return
    if unique.state == "pending":
        raise ArchiverError(
            f"the archive's unique index {unique.index} is being built on the server (a large archive "
            "takes a while; the build goes on without this run): nothing is archived until it is "
            "ready, run batch again later"
        )
    raise ArchiverError(
        f"cannot create the archive's unique index {unique.index}: {unique.problem or 'not built'}"
    )


UNIQUE_INDEX_POLL_S = 5.0  # how often a watcher looks at the archive's unique index
UNIQUE_INDEX_REMINDER_S = 600.0  # and how often, waiting for it, it says so again


class UniqueIndexMissing(ArchiverError):
    """The archive's unique index went missing under a running watcher: back to waiting."""

    @classmethod
    def of(cls, name: str, state: IndexState) -> UniqueIndexMissing:
        return cls(
            f"the archive's unique index {name} is {_not_ready(state)}: nothing is archived until "
            "it is ready again (batch --run builds it)"
        )


def _not_ready(state: IndexState) -> str:
    return "being built" if state == "pending" else "missing"


class UniqueIndexCheck:
    """The watcher's hold on the archive's unique index, which its user cannot build: nothing is
    written until it is ready (``ready``), and a running watcher looks again every ``every_s``
    before a write (``still_there``). Without it two orders sharing a ``numero_commande`` would
    both be archived, and no ``batch --run`` after that could build it (11000). A user who may
    not list the archive's indexes cannot tell: refused (exit 2), where a batch run, which
    builds the index, goes on."""

    def __init__(
        self,
        archive: MongoCollection,
        stop_event: threading.Event,
        every_s: float = UNIQUE_INDEX_POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wanted = WantedIndex(archive, "archive", *ARCHIVE_INDEXES[0])
        self.stop_event, self.every_s, self.clock = stop_event, every_s, clock
        self.seen_at: float | None = None  # when last seen ready; None: to wait for

    def ready(self) -> bool:
        """True once the index is ready (at once when seen less than ``every_s`` ago); False:
        stopped. A standby taking over, a catch-up after a lost token: looked at again."""
        if not self._fresh():
            self.seen_at = None
        said_at: float | None = None
        while self.seen_at is None:
            state = self._state()
            if state == "ready":
                self.seen_at = self.clock()
                if said_at is not None:
                    log.info("the archive's unique index %s is ready: archiving", self.wanted.name)
                break
            if said_at is None or self.clock() - said_at >= UNIQUE_INDEX_REMINDER_S:
                self._say_waiting(state)
                said_at = self.clock()
            if self.stop_event.wait(self.every_s):
                return False
        return True

    def still_there(self) -> None:
        """Before a write: look again when the last look is ``every_s`` old; gone, raise
        ``UniqueIndexMissing`` (the write not made, its events replayed once it is back)."""
        if self._fresh():
            return
        state = self._state()
        if state != "ready":
            self.seen_at = None
            raise UniqueIndexMissing.of(self.wanted.name, state)
        self.seen_at = self.clock()

    def forget(self) -> None:
        """After a failure: look again before the next write."""
        self.seen_at = None

    def _fresh(self) -> bool:
        """Seen ready less than ``every_s`` ago."""
        return self.seen_at is not None and self.clock() - self.seen_at < self.every_s

    def _state(self) -> IndexState:
        state = read_states([self.wanted], self.stop_event)[0]
        if state == "unknown":
            raise ConfigError(
                f"watch: this user may not list the indexes of {self.wanted.collection.full_name} "
                "(listIndexes): the watcher cannot see the archive's unique index on numero_commande, "
                "without which two orders sharing a number would both be archived; grant it "
                "(deploy/mongodb-roles.js: orderArchiverRead)"
            )
        return state

    def _say_waiting(self, state: IndexState) -> None:
        log.warning(
            "nothing is archived until the archive's unique index %s on %s is ready (%s): run batch "
            "--run with the batch user, it builds it (if it cannot, doctor names why: archived "
            "orders sharing a number); looking again every %gs",
            self.wanted.name,
            self.wanted.collection.full_name,
            _not_ready(state),
            self.every_s,
        )


@dataclass(frozen=True)
class IndexStep:
    """The indexes' step of one batch run: ``build`` before its writes, ``plan`` for a dry run;
    each fills the run's report (``indexes``: those not ready; a warning each)."""

    orders: MongoCollection
    archive: MongoCollection
    wait_s: float
    stop_event: threading.Event
    create: bool = True  # False: check only (``require``)
    cold_tier: bool = False  # ARCHIVE_COLD_URL set: the move's index too
    gate: ChunkGate = UNLIMITED  # the run's limits (#34): they end the wait for the builds too
    forgotten: MongoCollection | None = None  # the record of forgotten persons (with a cold tier)

    @classmethod
    def of(
        cls,
        orders: MongoCollection,
        archive: MongoCollection,
        settings: Settings,
        context: RunContext,
        create: bool,
        forgotten: MongoCollection | None = None,
    ) -> IndexStep:
        cold_tier = settings.archive_cold_url is not None
        wait_s = settings.index_build_wait_s
        return cls(orders, archive, wait_s, context.stop, create, cold_tier, context.gate, forgotten)

    def build(self, report: PlanReport, *, source_exists: bool) -> None:
        """Build; refuse to go on without the archive's unique index (``require_unique``). A
        limit of the run (#34) ends the wait for the builds: those not done are left running on
        the server, said pending, and the run ends there, cleanly (``gate.check``)."""
        if not self.create:
            self.require(report, source_exists=source_exists)
            return
        statuses = ensure_indexes(
            self.orders,
            self.archive,
            stop_event=self.stop_event,
            source_exists=source_exists,
            wait_s=self.wait_s,
            cold_tier=self.cold_tier,
            ended=self.gate.ended,
            forgotten=self.forgotten,
        )
        self._report(report, statuses)
        if self.gate.ended() and any(s.state == "pending" for s in statuses):
            log.info(
                "index builds left running on the server (the run ended at its limit): %s", _pending(statuses)
            )
        self.gate.check()
        require_unique(statuses, self.archive)

    def require(self, report: PlanReport, *, source_exists: bool) -> None:
        """Check, build nothing (the watcher's catch-up: its role cannot create indexes). Each index
        not ready is said, naming batch --run, which builds it; a missing one costs speed only (an
        order is archived once by its _id), but the archive's unique index missing or being
        built stops the catch-up (``UniqueIndexMissing``: the watcher waits for it again)."""
        wanted = wanted_indexes(
            self.orders,
            self.archive,
            source_exists=source_exists,
            cold_tier=self.cold_tier,
            forgotten=self.forgotten,
        )
        statuses = index_states(wanted, self.stop_event)
        for status in statuses:
            if status.state != "ready":
                log.warning(status.line())
        self._report(report, statuses)
        unique = unique_status(statuses, self.archive)
        if unique is not None and unique.state in ("missing", "pending"):  # the watcher waits again
            raise UniqueIndexMissing.of(unique.index, unique.state)

    def plan(self, report: PlanReport, *, source_exists: bool) -> None:
        """Where each index stands, nothing built."""
        wanted = wanted_indexes(
            self.orders,
            self.archive,
            source_exists=source_exists,
            cold_tier=self.cold_tier,
            forgotten=self.forgotten,
        )
        self._report(report, index_states(wanted, self.stop_event))

    @staticmethod
    def _report(report: PlanReport, statuses: list[IndexStatus]) -> None:
        waiting = [s for s in statuses if s.state != "ready"]
        report.indexes = [s.as_dict() for s in waiting]
        report.indexes_built = [s.named() for s in statuses if s.built]
        report.warnings += [s.line() for s in waiting]


def _pending(statuses: list[IndexStatus]) -> str:
    return ", ".join(s.index for s in statuses if s.state == "pending")


def ensure_indexes(
    orders: MongoCollection,
    archive: MongoCollection,
    *,
    stop_event: threading.Event,
    source_exists: bool = True,
    wait_s: float,
    cold_tier: bool = False,
    ended: Callable[[], bool] = lambda: False,
    forgotten: MongoCollection | None = None,
) -> list[IndexStatus]:
    """The step for one batch run: build (``build_indexes``), log what is not ready and what
    it costs (the caller then refuses to write without the unique index: ``require_unique``)."""
    statuses = build_indexes(
        wanted_indexes(
            orders, archive, source_exists=source_exists, cold_tier=cold_tier, forgotten=forgotten
        ),
        wait_s=wait_s,
        stop_event=stop_event,
        ended=ended,
    )
    for status in statuses:
        if status.state != "ready":
            log.warning(status.line())
    return statuses
