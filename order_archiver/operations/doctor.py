"""`main.py doctor`: what a user checks first on their own cluster, one line each.

It connects as the archiver would and reports the server version (4.4 or later), the
topology (standalone, replica set, sharded cluster through ``mongos``), whether change
streams can be opened on the orders collection (what ``watch`` needs), what is sharded and
whether the configuration can work with it (``deployment.sharding_problems``), the write
concern and read preference the URI gives and the ones the archiver uses, and whether the
user holds each privilege the commands need (``connectionStatus`` with ``showPrivileges``).
Each line passes, warns or fails; any failure makes exit 3. Nothing is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pymongo import MongoClient
from pymongo import errors as pymongo_errors

from order_archiver.cold.record import check_place, read_record
from order_archiver.cold.store import STAY_READABLE, ColdStore, newest_keeps_versions
from order_archiver.cold.tier import PII_COUNTED_ROWS_AT_MOST, cold_store, past_retention_in, pii_pending_in
from order_archiver.context import RunContext
from order_archiver.documents import Document, MongoCollection, list_or_empty, mapping_or_empty
from order_archiver.errors import (
    NO_CHANGE_STREAMS_CODES,
    ArchiverError,
    ConfigError,
    cold_fault_line,
    is_authorisation_error,
    storage_words,
)
from order_archiver.logs import plural
from order_archiver.mongodb.deployment import (
    LOOKUP_SHARDED_FROM,
    features_off,
    hello,
    server_version,
    sharded_collections,
    sharding_problems,
)
from order_archiver.mongodb.indexes import (
    TWINS_SHOWN,
    IndexStatus,
    index_states,
    shared_numbers,
    twins_repair,
    unique_status,
    wanted_indexes,
)
from order_archiver.mongodb.lease import server_time
from order_archiver.mongodb.replication_lag import lag_actions_missing
from order_archiver.mongodb.retention import PiiRetention, earlier_erasures, retention_state
from order_archiver.mongodb.statuses import (
    STATUS_VALUES_LOOKED_AT,
    NewestArchived,
    StatusIndexMissing,
    delivered_absent,
    near_misses,
    read_status_values,
)
from order_archiver.settings import (
    ARCHIVE_SIDE_ROLES,
    Settings,
    collection_roles,
    in_clear,
    remote_hosts,
    uses_tls,
)

MIN_VERSION = (4, 4)
MISSING_NAMED = 4  # missing indexes named on doctor's line; past it, counted (a first doctor: 14)
Outcome = Literal["pass", "warn", "fail"]


@dataclass
class Check:
    name: str
    outcome: Outcome
    detail: str


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(check.outcome != "fail" for check in self.checks)

    def add(self, name: str, outcome: Outcome, detail: str) -> None:
        self.checks.append(Check(name, outcome, detail))

    def as_dict(self) -> dict[str, object]:
        return {"checks": [asdict(check) for check in self.checks], "healthy": self.healthy}

    def lines(self) -> list[str]:
        marks = {"pass": "ok  ", "warn": "warn", "fail": "FAIL"}
        out = [f"{marks[c.outcome]} {c.name}: {c.detail}" for c in self.checks]
        failed = [c.name for c in self.checks if c.outcome == "fail"]
        out.append("ready" if not failed else "NOT READY: " + ", ".join(failed))
        return out


Side = Literal["both", "source", "archive"]


Process = Literal["all", "watch"]  # doctor --for: whose privileges are checked

# What the watcher writes on the archive's side (deploy/mongodb-roles.js, orderArchiverWatch on
# top of orderArchiverRead): never an index, a collMod, a delete of an archived order, nor the
# record of forgotten persons (batch --run records an earlier version's erasures).
WATCH_ARCHIVE_ACTIONS = {"find", "insert", "update", "listIndexes"}
WATCH_LISTS_ACTIONS = {"find", "insert", "update"}  # its token and lease
WATCH_REJECTS_ACTIONS = {"find", "insert", "update", "remove"}  # the catch-up prunes fixed ones


def required_privileges(
    settings: Settings, side: Side = "both", ttl_index_to_drop: bool = False, process: Process = "all"
) -> dict[tuple[str, str], set[str]]:
    """(database, collection) -> the actions the archiver's commands need there, on one side
    when the archive has its own deployment. ``remove`` on the orders is only for
    ``--purge-source``; ``createIndex`` on them only speeds runs up. ``ttl_index_to_drop``:
    ARCHIVE_RETENTION is unset and its TTL index is still there (the next batch --run drops it).
    ``process`` ``watch``: what the watcher's own user needs (its catch-up included), less than
    batch's (``doctor --for watch``, run with the watcher's URI)."""
    needs = _every_commands_privileges(settings, side, ttl_index_to_drop)
    if process == "watch" and side != "source":
        archive = settings.archive_db_name
        needs[(archive, settings.archive_collection)] = set(WATCH_ARCHIVE_ACTIONS)
        needs[(archive, settings.checkpoint_collection)] = set(WATCH_LISTS_ACTIONS)
        needs[(archive, settings.rejects_collection)] = set(WATCH_REJECTS_ACTIONS)
        # Its catch-up checks the record's partial indexes too (indexes.FORGOTTEN_INDEXES).
        needs[(archive, settings.forgotten_collection)] = {"find", "listIndexes"}
    return needs


def _every_commands_privileges(
    settings: Settings, side: Side, ttl_index_to_drop: bool
) -> dict[tuple[str, str], set[str]]:
    source, archive = settings.mongodb_database, settings.archive_db_name
    needs: dict[tuple[str, str], set[str]] = {}
    if side != "archive":
        # listIndexes: which source indexes are ready or being built (indexes.py)
        needs[(source, settings.orders_collection)] = {"find", "changeStream", "listIndexes"}
        for name in (
            settings.clients_collection,
            settings.couriers_collection,
            settings.restaurants_collection,
            settings.menu_collection,
        ):
            needs[(source, name)] = {"find"}
    if side != "source":
        # listIndexes: which indexes are ready or being built (indexes.py), the TTL index's state
        needs[(archive, settings.archive_collection)] = {
            "find",
            "insert",
            "update",
            "createIndex",
            "listIndexes",
        }
        if settings.archive_retention is not None:
            # Its TTL index changed in place (collMod), and dropped once the setting is unset
            # (dropIndex): both checked while it is set, before an unset needs the drop; the
            # orders without date_livraison past it deleted by the run (remove).
            needs[(archive, settings.archive_collection)] |= {"collMod", "dropIndex", "remove"}
        elif ttl_index_to_drop:  # without dropIndex the index goes on expiring archived orders
            needs[(archive, settings.archive_collection)] |= {"dropIndex"}
        if settings.archive_cold_url is not None:  # the orders moved to the cold tier, deleted
            needs[(archive, settings.archive_collection)] |= {"remove"}
        needs[(archive, settings.checkpoint_collection)] = {"find", "insert", "update", "remove"}
        needs[(archive, settings.rejects_collection)] = {"find", "insert", "update", "remove"}
        # The record of forgotten persons, read before every archive write (forget --run writes it).
        # (insert, update: batch --run records once the persons an earlier version's forget erased)
        # Its partial indexes of the erasures a forget left unfinished (in the archive, in the cold
        # tier): listed (batch, status, doctor), built by batch --run (indexes.FORGOTTEN_INDEXES).
        needs[(archive, settings.forgotten_collection)] = {"find", "insert", "update"}
        needs[(archive, settings.forgotten_collection)] |= {"listIndexes", "createIndex"}
    return needs


def granted_actions(privileges: list[dict[str, object]], database: str, collection: str) -> set[str]:
    """The actions ``privileges`` (``connectionStatus``'s ``authenticatedUserPrivileges``)
    grant on one collection: exact, whole database, every database, any resource."""
    actions: set[str] = set()
    for privilege in privileges:
        resource = mapping_or_empty(privilege.get("resource"))
        granted = {str(action) for action in list_or_empty(privilege.get("actions"))}
        if resource.get("anyResource"):
            actions |= granted
            continue
        db, coll = resource.get("db"), resource.get("collection")
        if db is None or coll is None:
            continue  # a cluster resource
        if db in ("", database) and coll in ("", collection):
            actions |= granted
    return actions


def privilege_checks(
    report: DoctorReport,
    settings: Settings,
    status: dict[str, object],
    side: Side = "both",
    ttl_index_to_drop: bool = False,
    process: Process = "all",
    lag_measurable: bool = True,
) -> None:
    info = status.get("authInfo")
    if not isinstance(info, dict):
        report.add("privileges", "warn", "the server does not say (no authInfo in connectionStatus)")
        return
    if not info.get("authenticatedUsers"):
        report.add("privileges", "pass", "authentication is off on this server: every action is allowed")
        return
    privileges = info.get("authenticatedUserPrivileges") or []
    missing = []
    needs = required_privileges(settings, side, ttl_index_to_drop, process)
    for (database, collection), actions in sorted(needs.items()):
        lacking = actions - granted_actions(privileges, database, collection)
        if lacking:
            missing.append(f"{database}.{collection}: {', '.join(sorted(lacking))}")
    if missing:
        report.add(
            "privileges",
            "fail",
            "missing " + "; ".join(missing) + " (deploy/mongodb-roles.js grants them)",
        )
    elif process == "watch":
        report.add("privileges", "pass", "every action watch (and its catch-up) needs")
    else:
        report.add("privileges", "pass", "every action batch, watch, status and verify need")
    orders = (settings.mongodb_database, settings.orders_collection)
    purges = process != "watch"  # --purge-source is batch's
    if purges and side != "archive" and "remove" not in granted_actions(privileges, *orders):
        report.add("purge", "warn", f"no remove on {'.'.join(orders)}: batch --purge-source would fail")
    if settings.batch_max_lag is not None and lag_measurable and (lacking := lag_actions_missing(privileges)):
        report.add(
            "max lag",
            "warn",
            f"no {', '.join(sorted(lacking))} on the cluster (the clusterMonitor role): BATCH_MAX_LAG "
            "cannot measure the secondaries' lag, batch warns and does not wait",
        )


# Where --max-lag has nothing to measure (replication_lag.py): said by doctor before a run finds out.
LAG_UNMEASURABLE = {
    "sharded": "mongos does not report its shards' members (replSetGetStatus is not supported through mongos)",
    "standalone": "a standalone server has no secondaries",
}


def max_lag_check(report: DoctorReport, settings: Settings, topology: str) -> bool:
    """Whether BATCH_MAX_LAG can be measured on ``topology``; where it cannot, one warning (a
    run is never refused for a limit it cannot watch, and no privilege would change that)."""
    why = LAG_UNMEASURABLE.get(topology)
    if settings.batch_max_lag is None or why is None:
        return True
    report.add(
        "max lag",
        "warn",
        f"BATCH_MAX_LAG {settings.batch_max_lag} cannot be watched here: {why}; batch warns once and does not wait",
    )
    return False


def topology_check(report: DoctorReport, hello: dict[str, object]) -> str:
    if hello.get("msg") == "isdbgrid":
        report.add("topology", "pass", "sharded cluster (connected to mongos)")
        return "sharded"
    if hello.get("setName"):
        report.add("topology", "pass", f"replica set {hello['setName']!r}")
        return "replica set"
    # Whether watch can run is the change streams line's to say (it opens one).
    report.add("topology", "warn", "standalone server: no replication (a failover or a lost disk loses data)")
    return "standalone"


def tls_check(report: DoctorReport, settings: Settings, side: Side) -> None:
    """Whether the connection is encrypted: TLS (certificates checked: a URI that switches the
    check off is refused at start unless MONGODB_ALLOW_INSECURE_TLS), none on this machine, or
    none towards a remote host (a warning: the orders, and the URI's password if it holds one,
    cross the network in clear)."""
    uri = (settings.archive_mongodb_uri if side == "archive" else settings.mongodb_uri) or ""
    remote = remote_hosts(uri)
    if uses_tls(uri, settings):
        checked = (
            "not checked (MONGODB_ALLOW_INSECURE_TLS)" if settings.mongodb_allow_insecure_tls else "checked"
        )
        report.add("tls", "pass", f"TLS on, the server's certificate {checked}")
    elif remote:
        report.add(
            "tls",
            "warn",
            f"no TLS towards {remote[0]}: {in_clear(uri)} cross the network in clear",
        )
    else:
        report.add("tls", "pass", "no TLS, on this machine only")


def collections_check(report: DoctorReport, client: MongoClient[Document], settings: Settings) -> None:
    """The orders and the four reference collections exist: a typo in a name otherwise reads as
    "nothing to archive" (and a batch would be "ready" to archive nothing)."""
    database = client[settings.mongodb_database]
    try:
        present = set(database.list_collection_names())
    except pymongo_errors.OperationFailure as exc:
        report.add("collections", "warn", f"listCollections refused ({exc.code}): not checked")
        return
    missing = [
        f"{setting}={name}"
        for setting, _, name in collection_roles(settings)
        if setting not in ARCHIVE_SIDE_ROLES and name not in present
    ]
    if not missing:
        report.add("collections", "pass", f"orders and references found in {database.name}")
        return
    shown = ", ".join(sorted(n for n in present if not n.startswith("system."))[:12]) or "none"
    report.add(
        "collections",
        "fail",
        f"not found in {database.name}: {', '.join(missing)} (collections there: {shown}); "
        "check the names, or MONGODB_DATABASE",
    )


def delivered_status_check(
    report: DoctorReport,
    client: MongoClient[Document],
    settings: Settings,
    context: RunContext,
    archive_client: MongoClient[Document] | None = None,
) -> None:
    """DELIVERED_STATUS against the source's status values (one distinct scan of the status
    index, mongodb/statuses.py). No order holding it while delivered orders hold another value
    (a date_livraison, or a near miss): a failure, as nothing is ever archived; none and nothing
    delivered yet (a first day) passes, said. Values that read as it but are not it (``Livrée``
    for ``livrée``): a warning naming each and its orders, a bounded count per near miss."""
    orders = client[settings.mongodb_database][settings.orders_collection]
    try:
        values = read_status_values(orders, context)
        found = near_misses(orders, settings.delivered_status, values, context)
        # The archive, on this deployment or its own: its newest order tells a purged source.
        archive = (archive_client or client)[settings.archive_db_name][settings.archive_collection]
        newest = NewestArchived(archive, context)
        absent = delivered_absent(orders, settings.delivered_status, values, context, newest)
    except StatusIndexMissing as exc:  # a first doctor, before batch --run: said as it is
        report.add("delivered status", "warn", str(exc))
        return
    except ArchiverError as exc:
        report.add(
            "delivered status", "warn", f"the orders' status values cannot be read ({exc}): not checked"
        )
        return
    line = found.line()
    if absent is not None and absent.alarm:
        report.add("delivered status", "fail", absent.line())
    elif line is not None:
        report.add("delivered status", "warn", line)
    elif absent is not None:
        report.add("delivered status", "pass", absent.line())
    else:
        among = f" (among the first {STATUS_VALUES_LOOKED_AT})" if found.values_more else ""
        report.add(
            "delivered status",
            "pass",
            f"no status value{among} differs from DELIVERED_STATUS {settings.delivered_status!r} "
            "only by case, accents or spaces",
        )


def change_stream_check(
    report: DoctorReport, client: MongoClient[Document], settings: Settings, process: Process = "all"
) -> None:
    """Whether a change stream opens on the orders (what watch needs). A standalone server has
    none: a warning for the whole product (batch, status, verify run there), a failure for
    ``--for watch``."""
    orders = client[settings.mongodb_database][settings.orders_collection]
    try:
        with orders.watch(max_await_time_ms=1) as stream:
            stream.try_next()
        report.add("change streams", "pass", f"a change stream opens on {orders.full_name} (watch can run)")
    except pymongo_errors.OperationFailure as exc:
        if exc.code in NO_CHANGE_STREAMS_CODES:
            detail = "not available (a standalone server): watch cannot run"
            if process == "watch":
                report.add("change streams", "fail", detail)
            else:
                report.add("change streams", "warn", f"{detail}; batch can")
        elif is_authorisation_error(exc):
            report.add(
                "change streams", "fail", f"refused: the user lacks changeStream on {orders.full_name}"
            )
        else:
            report.add("change streams", "fail", f"cannot open one: {exc.details or exc}")


def sharding_check(
    report: DoctorReport, client: MongoClient[Document], settings: Settings, version: tuple[int, ...]
) -> None:
    namespaces = sorted({f"{db}.{coll}" for db, coll in required_privileges(settings)})
    try:
        sharded = sharded_collections(client, namespaces)
    except pymongo_errors.OperationFailure as exc:
        report.add(
            "sharding",
            "warn",
            f"config.collections cannot be read ({exc.code}): the layout is not checked at start-up, and "
            "one that cannot work fails mid-run; grant find on config.collections (orderArchiverRead "
            "in deploy/mongodb-roles.js holds it)",
        )
        return
    problems = sharding_problems(settings, version, sharded)
    listed = ", ".join(f"{ns} {key}" for ns, key in sorted(sharded.items())) or "none of the archiver's"
    if problems:
        report.add("sharding", "fail", "; ".join(problems))
    else:
        note = (
            ""
            if version >= LOOKUP_SHARDED_FROM
            else " (before 5.1: reference collections must stay unsharded)"
        )
        report.add("sharding", "pass", f"sharded: {listed}{note}")


def retention_check(
    report: DoctorReport, client: MongoClient[Document], settings: Settings, context: RunContext
) -> bool:
    """ARCHIVE_RETENTION against the archive's TTL index (``retention.py``); whether the next
    batch --run drops that index (the setting unset, the index still there)."""
    archive = client[settings.archive_db_name][settings.archive_collection]
    try:
        state = retention_state(archive, settings, context)
    except ConfigError as exc:
        report.add("retention", "fail", str(exc))
        return False
    outcome: Outcome = "pass" if state.action in ("none", "keep") else "warn"
    report.add("retention", outcome, state.line().removeprefix("archive retention: "))
    return state.action == "drop"


def cold_tier_check(
    report: DoctorReport,
    settings: Settings,
    context: RunContext,
    client: MongoClient[Document] | None = None,
) -> None:
    """ARCHIVE_COLD_URL: the folder or bucket is there (not written to: doctor writes nothing;
    ``batch --run`` also checks that it takes a file, before it writes anything); with
    ARCHIVE_RETENTION and ``client`` (the archive's), the cold files the next batch --run removes."""
    store = None
    try:
        store = cold_store(settings, context)
        if store is not None:
            store.check(writable=False)
    except ArchiverError as exc:  # a storage that did not answer, or refused: a fail line, the rest goes on
        if context.stopped:
            raise
        report.add("cold tier", "fail", cold_fault_line(settings.archive_cold_url or "", exc))
        return
    if store is not None:
        going = _cold_past_retention(client, settings, context) if client is not None else ""
        report.add(
            "cold tier", "pass", f"{store.url} is there; moved after {settings.archive_cold_after}{going}"
        )
        cold_versions_check(report, store)


# What a versioned bucket does to an erasure (doctor's, forget's and the docs' words alike).
VERSIONS_KEEP = (
    "what forget and ARCHIVE_PII_RETENTION erase, and the files ARCHIVE_RETENTION removes, "
    f"{STAY_READABLE} (NoncurrentVersionExpiration)"
)


def cold_versions_check(report: DoctorReport, store: ColdStore) -> None:
    """On S3: whether the bucket keeps object versions, from the newest cold file's version id
    (``ColdStore.keeps_versions``: Arrow cannot ask GetBucketVersioning, nor read lifecycle
    rules). One listing and one HeadObject; nothing said of a local folder."""
    if not store.url.startswith("s3://"):
        return
    try:
        keeps = newest_keeps_versions(store, store.files())
    except (ArchiverError, OSError) as exc:
        report.add("cold tier versions", "warn", f"not checked ({storage_words(exc)})")
        return
    bucket = store.url.removeprefix("s3://").split("/", 1)[0]
    ask = f"aws s3api get-bucket-versioning --bucket {bucket}"
    if keeps is None:
        report.add(
            "cold tier versions",
            "pass",
            f"no cold file yet: cannot tell whether the bucket keeps versions ({ask}); if it does, {VERSIONS_KEEP}",
        )
    elif keeps:
        report.add(
            "cold tier versions",
            "warn",
            f"the bucket keeps object versions (the newest cold file has a version id): {VERSIONS_KEEP}; "
            f"doctor cannot read the rules ({ask}, get-bucket-lifecycle-configuration): expire noncurrent "
            "versions of the prefix within your erasure deadline, or turn versioning off",
        )
    else:
        report.add(
            "cold tier versions",
            "pass",
            "the newest cold file has no version id: the bucket kept no versions when it was written "
            f"(versioning turned on since keeps the files written after: doctor looks again each time; {ask})",
        )


def _cold_past_retention(client: MongoClient[Document], settings: Settings, context: RunContext) -> str:
    """ARCHIVE_RETENTION in the cold tier: the files of months wholly past it (removed for good
    by the next batch --run), from the list of files: no file opened."""
    checkpoints = client[settings.archive_db_name][settings.checkpoint_collection]
    try:
        now = context.retrying(lambda: server_time(client))
        summary = past_retention_in(settings, checkpoints, now, context)
    except (ArchiverError, pymongo_errors.PyMongoError) as exc:
        return f"; ARCHIVE_RETENTION: not counted ({storage_words(exc)})"
    if summary is None or summary.expired is None:
        return ""
    expired = summary.expired
    if not expired.files:
        return f"; no cold file past ARCHIVE_RETENTION {summary.retention}"
    return (
        f"; {plural(expired.orders, 'cold order')} in {plural(expired.files, 'file')} past ARCHIVE_RETENTION "
        f"{summary.retention} ({', '.join(expired.months)}): the next batch --run removes them for good"
    )


def cold_record_check(
    report: DoctorReport, client: MongoClient[Document], settings: Settings, context: RunContext
) -> None:
    """The cold tier the archive records (``cold/record.py``) against ARCHIVE_COLD_URL: the
    other commands refuse to run when it is unset or names another place."""
    checkpoints = client[settings.archive_db_name][settings.checkpoint_collection]
    record = read_record(checkpoints, context)
    if record is None:
        if settings.archive_cold_url is not None:
            report.add(
                "cold tier record", "pass", "none yet (the first batch --run that moves orders writes it)"
            )
        return
    try:
        check_place(record, settings.archive_cold_url)
    except ConfigError as exc:
        report.add("cold tier record", "fail", str(exc))
        return
    report.add("cold tier record", "pass", f"ARCHIVE_COLD_URL is the recorded place: {record.line()}")


def personal_data_check(
    report: DoctorReport, client: MongoClient[Document], settings: Settings, context: RunContext
) -> None:
    """ARCHIVE_PII and ARCHIVE_PII_RETENTION: what the archive keeps of a person, for how long,
    and how many archived orders past the retention still hold personal data (one count on the
    ``{forgotten_by, date_livraison}`` range: the next batch --run erases them)."""
    policy = f"ARCHIVE_PII {settings.pii_policy.tag}"
    length = settings.archive_pii_retention
    if length is None:
        report.add(
            "personal data", "pass", f"{policy}; ARCHIVE_PII_RETENTION unset: kept as long as the archive"
        )
        return
    archive = client[settings.archive_db_name][settings.archive_collection]
    try:
        pending = PiiRetention(archive, length, lambda: server_time(client), context).pending()
        forgotten = client[settings.archive_db_name][settings.forgotten_collection]
        earlier = earlier_erasures(archive, forgotten, context)
    except pymongo_errors.OperationFailure as exc:
        report.add(
            "personal data", "warn", f"{policy}; ARCHIVE_PII_RETENTION {length}: not counted ({exc.code})"
        )
        return
    among = f"; {plural(earlier, 'archived order')} erased by an earlier version among them (couriers' names kept)"
    left = (
        f"{plural(pending + earlier, 'archived order')} past it still hold personal data (the next batch --run erases it)"
        + (among if earlier else "")
        if pending + earlier
        else "no archived order past it holds any"
    )
    outcome, cold = _cold_pii(client, settings, context)
    report.add("personal data", outcome, f"{policy}; ARCHIVE_PII_RETENTION {length}: {left}{cold}")


def _cold_pii(client: MongoClient[Document], settings: Settings, context: RunContext) -> tuple[Outcome, str]:
    """The cold tier's orders past ARCHIVE_PII_RETENTION still holding personal data, said after
    the archive's (``tier.pii_pending``: bounded reads); a place that cannot be read: a warning
    here (``cold tier`` fails for it)."""
    checkpoints = client[settings.archive_db_name][settings.checkpoint_collection]
    try:
        now = context.retrying(lambda: server_time(client))
        counted = pii_pending_in(settings, checkpoints, now, context)
    except (ArchiverError, pymongo_errors.PyMongoError) as exc:
        return "warn", f"; cold tier: not counted ({cold_fault_line(settings.archive_cold_url or '', exc)})"
    if counted is None:
        return "pass", ""
    if counted.unread:
        return "pass", (
            f"; cold tier: at least {counted.orders}, at most {plural(counted.at_most, 'cold order')} past it "
            f"still hold personal data ({counted.unread} not read: doctor reads {PII_COUNTED_ROWS_AT_MOST} at most; "
            "batch without --run counts them all)"
        )
    if counted.orders:
        held = plural(counted.orders, "cold order")
        return "pass", f"; {held} past it still hold personal data (the next batch --run erases it)"
    return "pass", "; no cold order past it holds any"


def index_check(
    report: DoctorReport,
    client: MongoClient[Document],
    settings: Settings,
    side: Side,
    context: RunContext | None = None,
) -> None:
    """The indexes batch relies on, on this deployment's side: ready, or what their absence costs;
    the archive's unique index that no batch --run can build said apart (``twins_check``)."""
    orders = client[settings.mongodb_database][settings.orders_collection]
    archive = client[settings.archive_db_name][settings.archive_collection]
    wanted = [
        w
        for w in wanted_indexes(
            orders,
            archive,
            source_exists=True,
            cold_tier=settings.archive_cold_url is not None,
            forgotten=client[settings.archive_db_name][settings.forgotten_collection],
        )
        if side == "both" or w.side == side
    ]
    try:
        statuses = index_states(wanted, None)
    except ArchiverError as exc:
        report.add("indexes", "warn", f"cannot be listed ({exc})")
        return
    unbuildable = twins_check(report, archive, statuses, context or RunContext())
    waiting = [s for s in statuses if s.state != "ready" and s is not unbuildable]
    missing = [f"{s.collection}.{s.index}" for s in waiting if s.state == "missing"]
    lines = [s.line() for s in waiting if s.state != "missing"]
    if len(missing) > MISSING_NAMED:  # a new deployment's every index: counted (status names each)
        lines.append(
            f"{len(missing)} missing, the next batch --run builds them (status names each, "
            "with what its absence costs)"
        )
    elif missing:  # a few: named, not each with its cost
        lines.append(f"missing, the next batch --run builds them: {', '.join(missing)}")
    if lines:
        report.add("indexes", "warn", "; ".join(lines))
    elif unbuildable is None:
        report.add("indexes", "pass", "every index batch relies on is ready")


def twins_check(
    report: DoctorReport, archive: MongoCollection, statuses: list[IndexStatus], context: RunContext
) -> IndexStatus | None:
    """The archive's unique index missing over archive documents that share a number (an earlier
    version's watcher archived them before any batch --run built it): MongoDB refuses its build
    (11000), so batch --run archives nothing and watch waits for it for ever. Not ready, the
    first numbers named with the repair; the index's status returned (no batch --run builds
    it). Looked for only while it is missing (``shared_numbers``: one read of the archive)."""
    unique = unique_status(statuses, archive)
    if unique is None or unique.state != "missing":
        return None
    try:
        numbers = shared_numbers(archive, context.stop)
    except ArchiverError as exc:
        report.add(
            "unique index",
            "warn",
            f"{unique.index} on {unique.collection} missing; whether archive documents share a "
            f"numero_commande (its build would then be refused) is not known: {exc}",
        )
        return None
    if not numbers:
        return None
    shown = ", ".join(repr(n) for n in numbers[:TWINS_SHOWN])
    more = " and more" if len(numbers) > TWINS_SHOWN else ""
    report.add(
        "unique index",
        "fail",
        f"{unique.index} on {unique.collection} is missing and batch --run cannot build it, so "
        f"nothing is archived and watch waits for it: {twins_repair(f'numero_commande {shown}{more}')}",
    )
    return unique


def run_doctor(
    client: MongoClient[Document],
    settings: Settings,
    context: RunContext | None = None,
    archive_client: MongoClient[Document] | None = None,
    process: Process = "all",
) -> DoctorReport:
    """The source's checks; with ARCHIVE_MONGODB_URI, the archive deployment's version,
    topology and privileges after them, each line named "archive ...". ``process``: whose
    privileges (``--for watch``: the watcher's user, which needs less than batch's)."""
    context = context or RunContext()
    if archive_client is None:
        return check_deployment_of(client, settings, context, "both", process)
    report = check_deployment_of(client, settings, context, "source", process, archive_client)
    archive = check_deployment_of(archive_client, settings, context, "archive", process)
    for check in archive.checks:
        check.name = f"archive {check.name}"
    report.checks += archive.checks
    return report


def check_deployment_of(
    client: MongoClient[Document],
    settings: Settings,
    context: RunContext,
    side: Side,
    process: Process = "all",
    archive_client: MongoClient[Document] | None = None,
) -> DoctorReport:
    report = DoctorReport()

    def ask(command: str, **options: Any) -> dict[str, object]:
        return dict(context.retrying(lambda: client.admin.command(command, **options)))

    reply = dict(context.retrying(lambda: hello(client)))  # isMaster before 4.4.2
    version = server_version(client)
    text = ".".join(map(str, version))
    if version >= MIN_VERSION:
        report.add("version", "pass", f"MongoDB {text}")
    else:
        report.add("version", "fail", f"MongoDB {text}: 4.4 or later is needed")
    off = features_off(version)
    report.add(
        "features",
        "pass",
        "off on this version: " + "; ".join(off) if off else "everything the archiver uses is on",
    )
    topology = topology_check(report, reply)
    lag_measurable = max_lag_check(report, settings, topology)
    if side != "archive":  # the source's collections, and change streams on its orders
        collections_check(report, client, settings)
        delivered_status_check(report, client, settings, context, archive_client)
        change_stream_check(report, client, settings, process)
    if topology == "sharded":
        sharding_check(report, client, settings, version)
    ttl_index_to_drop = side != "source" and retention_check(report, client, settings, context)
    if side != "source":
        personal_data_check(report, client, settings, context)
        cold_tier_check(report, settings, context, client)
        cold_record_check(report, client, settings, context)
    index_check(report, client, settings, side, context)
    tls_check(report, settings, side)
    report.add(
        "write concern",
        "pass",
        f"the URI's default {client.write_concern.document or '{} (server default)'}; the archiver's "
        'writes use w: "majority" (MONGODB_WRITE_TIMEOUT_MS '
        f"{settings.mongodb_write_timeout_ms} ms)",
    )
    report.add(
        "read preference",
        "pass",
        f"the URI's {client.read_preference.name}; the reads that decide go to the primary",
    )
    try:
        status = ask("connectionStatus", showPrivileges=True)
    except pymongo_errors.OperationFailure as exc:
        report.add("privileges", "warn", f"connectionStatus refused ({exc.code}): not checked")
    else:
        privilege_checks(report, settings, status, side, ttl_index_to_drop, process, lag_measurable)
    return report
