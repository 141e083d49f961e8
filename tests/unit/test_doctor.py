"""`main.py doctor`: each branch from the server replies it would get (nx-27017 shows only a
single server without authentication; tests/integration has it end to end)."""

from types import SimpleNamespace

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from order_archiver.operations.doctor import granted_actions, required_privileges, run_doctor
from order_archiver.settings import Settings, parse_duration
from tests.helpers import FakeChangeStream

SETTINGS = Settings(mongodb_uri="mongodb://x/", mongodb_database="livraison", log_dir="")


class FakeCollection:
    def __init__(self, client, full_name):
        self.client, self.full_name = client, full_name
        self.name = full_name.split(".", 1)[1]
        self.database = FakeDatabase(client, full_name.split(".", 1)[0])

    def watch(self, **_):
        if self.client.stream_error is not None:
            raise self.client.stream_error
        return FakeChangeStream()  # change streams work: nothing happens on them

    def list_indexes(self):
        return list(self.client.indexes)

    def aggregate(self, pipeline, **options):
        """The archive's numbers shared by two documents or more (indexes.shared_numbers)."""
        self.client.aggregated.append((pipeline, options))
        if isinstance(self.client.twins, Exception):
            raise self.client.twins
        return [{"_id": number, "documents": 2} for number in self.client.twins]

    def find_one(self, *_):
        return None  # the checkpoints' cold-tier record (cold/record.py): none, no move ever ran

    def distinct(self, key):
        """The orders' status values (mongodb/statuses.py): the delivered one only."""
        return ["livrée"] if key == "status" else []

    def find(self, query, *_):
        return [
            {"_id": ns, "key": key} for ns, key in self.client.sharded.items() if ns in query["_id"]["$in"]
        ]


class FakeDatabase:
    def __init__(self, client, name):
        self.client, self.name = client, name

    def __getitem__(self, collection):
        return FakeCollection(self.client, f"{self.name}.{collection}")

    def command(self, name, **_):
        if isinstance(name, dict) and "listIndexes" in name:  # what listIndexes answers
            return {"cursor": {"id": 0, "firstBatch": list(self.client.indexes)}}
        return self.client.replies[name]

    def list_collection_names(self):
        return list(self.client.collections)


class FakeClient:
    """The replies of one deployment."""

    def __init__(
        self, hello, version="7.0.2", privileges=None, sharded=None, stream_error=None, collections=None
    ):
        self.collections = (
            collections
            if collections is not None
            else ["Commande", "Client", "Livreur", "Restaurants", "Menu"]
        )
        users = [] if privileges is None else [{"user": "archiver", "db": "admin"}]
        self.replies = {
            "hello": hello,
            "buildInfo": {"version": version},
            "connectionStatus": {
                "authInfo": {"authenticatedUsers": users, "authenticatedUserPrivileges": privileges or []}
            },
        }
        self.sharded = sharded or {}
        self.indexes: list[dict] = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]
        self.stream_error = stream_error
        self.twins: list[str] | Exception = []  # what the archive's numbers shared read answers
        self.aggregated: list[tuple] = []
        self.admin = FakeDatabase(self, "admin")
        self.write_concern = SimpleNamespace(document={"w": 1})
        self.read_preference = SimpleNamespace(name="secondaryPreferred")

    def __getitem__(self, name):
        return FakeDatabase(self, name)


def outcomes(report):
    return {check.name: check.outcome for check in report.checks}


def everything_needed():
    return [
        {"resource": {"db": db, "collection": coll}, "actions": sorted(actions | {"remove"})}
        for (db, coll), actions in required_privileges(SETTINGS).items()
    ]


def test_a_replica_set_with_a_least_privilege_user_is_ready():
    client = FakeClient({"setName": "rs0"}, privileges=everything_needed())
    report = run_doctor(client, SETTINGS)
    assert outcomes(report) == {
        "version": "pass",
        "features": "pass",
        "topology": "pass",
        "collections": "pass",
        # Not checked: no index on the orders is led by status yet (batch --run builds it), and a
        # distinct without one would read every order (mongodb/statuses.py).
        "delivered status": "warn",
        "change streams": "pass",
        "retention": "pass",
        "personal data": "pass",
        "indexes": "warn",  # the fake lists only _id_: batch has yet to build them
        "tls": "warn",  # SETTINGS reach mongodb://x/ without TLS
        "write concern": "pass",
        "read preference": "pass",
        "privileges": "pass",
    }
    assert report.healthy
    assert report.lines()[-1] == "ready"
    assert "secondaryPreferred" in report.lines()[11]
    assert "everything the archiver uses is on" in report.lines()[1]
    indexes = next(c.detail for c in report.checks if c.name == "indexes")
    # A new deployment's every index (15, archive_pending_1 on the record of forgotten persons
    # among them): counted, not named in a 900-character line (a new user's try: doctor is the
    # first command); status names each with what its absence costs.
    assert indexes == (
        "15 missing, the next batch --run builds them (status names each, with what its absence costs)"
    )


def test_doctor_says_what_is_off_below_the_version_that_brought_it():
    """4.4.0-4.4.1 have no ``hello`` (isMaster answers: the fake answers hello as isMaster
    would, its replies are one dictionary); before 5.1 ``$lookup`` cannot read a sharded
    collection."""
    report = run_doctor(
        FakeClient({"setName": "rs0"}, version="4.4.1", privileges=everything_needed()), SETTINGS
    )
    features = next(c for c in report.checks if c.name == "features")
    assert features.detail == (
        "off on this version: hello (from 4.4.2): isMaster answers instead; "
        "$lookup from a sharded collection (from 5.1): the reference collections must stay unsharded"
    )
    assert report.healthy  # informative: the archiver works around both


def test_a_missing_privilege_is_named_with_its_collection():
    privileges = [p for p in everything_needed() if p["resource"]["collection"] != "archiver_rejects"]
    report = run_doctor(FakeClient({"setName": "rs0"}, privileges=privileges), SETTINGS)
    check = next(c for c in report.checks if c.name == "privileges")
    assert check.outcome == "fail"
    assert "livraison.archiver_rejects: find, insert, remove, update" in check.detail
    assert not report.healthy
    assert report.lines()[-1] == "NOT READY: privileges"


def test_database_wide_and_any_resource_grants_count():
    assert granted_actions(
        [{"resource": {"db": "livraison", "collection": ""}, "actions": ["find"]}], "livraison", "Menu"
    ) == {"find"}
    assert granted_actions([{"resource": {"db": "", "collection": ""}, "actions": ["find"]}], "x", "y") == {
        "find"
    }
    assert granted_actions([{"resource": {"anyResource": True}, "actions": ["find"]}], "x", "y") == {"find"}
    assert granted_actions([{"resource": {"cluster": True}, "actions": ["find"]}], "x", "y") == set()
    assert (
        granted_actions([{"resource": {"db": "other", "collection": ""}, "actions": ["find"]}], "x", "y")
        == set()
    )


def test_no_remove_on_the_orders_only_warns_about_purge():
    privileges = [
        {
            **p,
            "actions": [
                a for a in p["actions"] if a != "remove" or "Commande" not in p["resource"]["collection"]
            ],
        }
        for p in everything_needed()
    ]
    privileges = [p for p in privileges if p["resource"]["collection"] != "Commande"] + [
        {
            "resource": {"db": "livraison", "collection": "Commande"},
            "actions": ["find", "changeStream", "listIndexes"],
        }
    ]
    report = run_doctor(FakeClient({"setName": "rs0"}, privileges=privileges), SETTINGS)
    assert outcomes(report)["purge"] == "warn"
    assert report.healthy


def test_a_standalone_server_cannot_watch_and_is_ready_for_batch():
    """A standalone has no change streams (40573): watch cannot run there, batch, status and
    verify can (docs/test-servers.md). doctor warns, and is ready; ``--for watch`` fails. A new
    user's standalone got "NOT READY: change streams" before its first batch."""
    error = OperationFailure("The $changeStream stage is only supported on replica sets", code=40573)
    report = run_doctor(FakeClient({}, stream_error=error), SETTINGS)
    assert outcomes(report)["topology"] == "warn"
    assert outcomes(report)["change streams"] == "warn"
    detail = next(c.detail for c in report.checks if c.name == "change streams")
    assert detail == "not available (a standalone server): watch cannot run; batch can"
    # One line says whether watch can run (it opened a stream or not); the topology line
    # does not guess (it said "watch needs change streams" beside "a change stream opens").
    assert "watch" not in next(c.detail for c in report.checks if c.name == "topology")
    assert outcomes(report)["privileges"] == "pass"  # authentication off
    assert report.healthy

    for_watch = run_doctor(FakeClient({}, stream_error=error), SETTINGS, process="watch")
    assert outcomes(for_watch)["change streams"] == "fail"
    assert not for_watch.healthy


@pytest.mark.parametrize(
    ("version", "sharded", "outcome"),
    [
        ("7.0.2", {"livraison.Commande": {"_id": "hashed"}}, "pass"),
        ("5.0.9", {"livraison.Menu": {"_id": 1}}, "fail"),  # $lookup from a sharded collection: 5.1+
        ("7.0.2", {"livraison.Commande_archive": {"date_commande": 1}}, "fail"),  # never the archive
    ],
)
def test_sharded_cluster_layouts(version, sharded, outcome):
    client = FakeClient({"msg": "isdbgrid"}, version=version, privileges=everything_needed(), sharded=sharded)
    report = run_doctor(client, SETTINGS)
    assert outcomes(report)["topology"] == "pass"
    assert outcomes(report)["sharding"] == outcome


def test_an_old_server_fails_the_version_check():
    report = run_doctor(FakeClient({"setName": "rs0"}, version="4.2.8"), SETTINGS)
    assert outcomes(report)["version"] == "fail"


def test_the_change_stream_privilege_is_named_when_refused():
    error = OperationFailure("not authorized on livraison to execute command", code=13)
    report = run_doctor(FakeClient({"setName": "rs0"}, stream_error=error), SETTINGS)
    check = next(c for c in report.checks if c.name == "change streams")
    assert check.outcome == "fail"
    assert "changeStream on livraison.Commande" in check.detail


def test_a_misspelt_orders_or_reference_collection_is_not_ready():
    """ORDERS_COLLECTION=Commandes: doctor said "ready" and a batch archived nothing."""
    client = FakeClient(
        {"setName": "rs0"}, privileges=everything_needed(), collections=["Commande", "Client", "Menu"]
    )
    settings = Settings(mongodb_uri="mongodb://h/", orders_collection="Commandes")
    report = run_doctor(client, settings)
    check = next(c for c in report.checks if c.name == "collections")
    assert check.outcome == "fail"
    assert check.detail.startswith(
        "not found in livraison: ORDERS_COLLECTION=Commandes, COURIERS_COLLECTION=Livreur, "
        "RESTAURANTS_COLLECTION=Restaurants (collections there: Client, Commande, Menu)"
    )
    assert not report.healthy


@pytest.mark.parametrize(
    ("uri", "extra", "outcome", "detail"),
    [
        (
            "mongodb://db.example/",
            {},
            "warn",
            "no TLS towards db.example: the orders cross the network in clear",
        ),
        ("mongodb://db.example/?tls=true", {}, "pass", "TLS on, the server's certificate checked"),
        ("mongodb+srv://c.example.net/", {}, "pass", "TLS on, the server's certificate checked"),
        (
            "mongodb://db.example/?tls=true&tlsInsecure=true",
            {"mongodb_allow_insecure_tls": True},
            "pass",
            "TLS on, the server's certificate not checked (MONGODB_ALLOW_INSECURE_TLS)",
        ),
        ("mongodb://localhost/", {}, "pass", "no TLS, on this machine only"),
    ],
)
def test_doctor_says_whether_the_connection_is_encrypted(uri, extra, outcome, detail):
    settings = Settings(mongodb_uri=uri, mongodb_database="livraison", log_dir="", **extra)
    report = run_doctor(FakeClient({"setName": "rs0"}, privileges=everything_needed()), settings)
    check = next(c for c in report.checks if c.name == "tls")
    assert (check.outcome, check.detail[: len(detail)]) == (outcome, detail)


@pytest.mark.parametrize(
    ("retention", "indexes", "outcome", "detail"),
    [
        (None, [], "pass", "none (ARCHIVE_RETENTION unset)"),
        ("30d", [], "warn", "ARCHIVE_RETENTION 30d, no TTL index archive_retention yet"),
        (
            "30d",
            [{"key": {"date_livraison": 1}, "name": "archive_retention", "expireAfterSeconds": 2592000}],
            "pass",
            "30d after delivery",
        ),
        (
            "90d",
            [{"key": {"date_livraison": 1}, "name": "archive_retention", "expireAfterSeconds": 2592000}],
            "warn",
            "says 30d",
        ),
        (
            None,
            [{"key": {"date_livraison": 1}, "name": "archive_retention", "expireAfterSeconds": 2592000}],
            "warn",
            "drops it",
        ),
        (
            "30d",
            [{"key": {"date_livraison": 1}, "name": "by_delivery"}],
            "fail",
            "'by_delivery' already holds that key",
        ),
        ("30d", [{"key": {"date_commande": 1}, "name": "archive_retention"}], "fail", "not the TTL index"),
    ],
)
def test_doctor_compares_archive_retention_with_the_ttl_index(retention, indexes, outcome, detail):
    client = FakeClient({"setName": "rs0"})
    client.indexes += indexes
    settings = Settings(mongodb_uri="mongodb://h", log_dir="")
    if retention:
        settings = settings.with_overrides(archive_retention=parse_duration(retention))
    check = next(c for c in run_doctor(client, settings).checks if c.name == "retention")
    assert check.outcome == outcome
    assert detail in check.detail


TTL_INDEX = {"key": {"date_livraison": 1}, "name": "archive_retention", "expireAfterSeconds": 2592000}
# orderArchiverRetention as it was before it granted dropIndex: its TTL index changed, never dropped.
WITHOUT_DROP_INDEX = {
    "resource": {"db": "livraison", "collection": "Commande_archive"},
    "actions": ["listIndexes", "collMod"],
}


@pytest.mark.parametrize(
    ("retention", "indexes", "outcome"),
    [
        ("30d", [TTL_INDEX], "fail"),  # set: unsetting it later needs the drop
        (None, [TTL_INDEX], "fail"),  # unset, the index still there: the next batch --run drops it
        (None, [], "pass"),  # unset, no index: nothing to drop, dropIndex not asked
    ],
)
def test_doctor_asks_for_drop_index_when_the_retention_would_drop_its_ttl_index(retention, indexes, outcome):
    """batch --run drops the TTL index once ARCHIVE_RETENTION is unset; without dropIndex the
    drop is a warning and the index goes on expiring archived orders. The user holds everything
    else (the base role, and collMod from the retention role)."""
    settings = SETTINGS
    if retention:
        settings = settings.with_overrides(archive_retention=parse_duration(retention))
    privileges = [*everything_needed(), WITHOUT_DROP_INDEX]
    client = FakeClient({"setName": "rs0"}, privileges=privileges)
    client.indexes += indexes
    check = next(c for c in run_doctor(client, settings).checks if c.name == "privileges")
    assert check.outcome == outcome
    if outcome == "fail":
        assert (
            check.detail
            == "missing livraison.Commande_archive: dropIndex (deploy/mongodb-roles.js grants them)"
        )


def test_with_batch_max_lag_doctor_names_the_cluster_actions_it_needs():
    """#34 item 2: --max-lag reads replSetGetStatus (and replSetGetConfig once), the cluster
    resource's actions (the manual's "Privilege Actions"; clusterMonitor holds both). Without
    them batch warns and does not wait: a warning here, not a failure."""
    from dataclasses import replace

    from order_archiver.settings import Duration

    with_lag = replace(SETTINGS, batch_max_lag=Duration(seconds=10))
    report = run_doctor(FakeClient({"setName": "rs0"}, privileges=everything_needed()), with_lag)
    check = next(c for c in report.checks if c.name == "max lag")
    assert (check.outcome, report.healthy) == ("warn", True)
    assert check.detail.startswith(
        "no replSetGetConfig, replSetGetStatus on the cluster (the clusterMonitor role)"
    )
    monitor = {
        "resource": {"cluster": True},
        "actions": ["replSetGetConfig", "replSetGetStatus", "serverStatus"],
    }
    report = run_doctor(FakeClient({"setName": "rs0"}, privileges=[*everything_needed(), monitor]), with_lag)
    assert "max lag" not in {c.name for c in report.checks}
    report = run_doctor(FakeClient({"setName": "rs0"}, privileges=everything_needed()), SETTINGS)
    assert "max lag" not in {c.name for c in report.checks}  # not asked for


def test_doctor_checks_the_cold_tiers_place_without_writing_to_it(tmp_path):
    """A new user's try: a cold folder that does not exist passed doctor (it named no cold
    tier at all) and was found only by the nightly batch --run."""
    from order_archiver.settings import Duration

    cold = tmp_path / "cold"
    settings = SETTINGS.with_overrides(
        archive_cold_url=f"file://{cold}", archive_cold_after=Duration(days=730)
    )
    client = FakeClient({"setName": "rs0"}, privileges=everything_needed())
    missing = run_doctor(client, settings)
    assert outcomes(missing)["cold tier"] == "fail"
    assert not missing.healthy
    assert f"ARCHIVE_COLD_URL file://{cold}: no such folder; create it first" in missing.lines()[
        -1
    ] + " ".join(c.detail for c in missing.checks)
    cold.mkdir()
    there = run_doctor(client, settings)
    assert outcomes(there)["cold tier"] == "pass"
    assert list(cold.iterdir()) == []  # doctor writes nothing, not even a probe


def test_doctor_for_watch_checks_the_watchers_own_user_which_batchs_checks_would_fail(capsys):
    """The watcher's user (deploy/mongodb-roles.js: orderArchiverRead + orderArchiverWatch) holds
    no createIndex nor remove on the archive, by design: `doctor` with its URI said "missing"
    and exit 3, whatever was right. `--for watch` checks what the watcher needs."""
    from pathlib import Path

    from tests.privileges import shipped_roles

    roles = shipped_roles(Path(__file__).parents[2] / "deploy" / "mongodb-roles.js")
    watchers = [
        {"resource": {"db": db, "collection": coll}, "actions": sorted(actions)}
        for role in ("orderArchiverRead", "orderArchiverWatch")
        for db, coll, actions in roles[role]
    ]
    client = FakeClient({"setName": "rs0"}, privileges=watchers)
    assert outcomes(run_doctor(client, SETTINGS))["privileges"] == "fail"
    report = run_doctor(client, SETTINGS, process="watch")
    assert outcomes(report)["privileges"] == "pass"
    assert "purge" not in outcomes(report)  # --purge-source is batch's
    # And a watcher's user that lacks what it needs is still named.
    less = [p for p in watchers if p["resource"]["collection"] != "archiver_rejects"]
    lacking = run_doctor(FakeClient({"setName": "rs0"}, privileges=less), SETTINGS, process="watch")
    assert outcomes(lacking)["privileges"] == "fail"


def test_the_shared_numbers_are_looked_for_boundedly_and_a_refused_look_only_warns():
    """The unique index missing: doctor reads the archive for numbers two documents share, in
    one aggregation the server stops after a minute (maxTimeMS) and that returns six numbers at
    most (the first five named). A look that fails (50 MaxTimeMSExpired on a huge archive, a
    user refused) says so and fails nothing: the index may still build."""
    client = FakeClient({"setName": "rs0"}, privileges=everything_needed())
    client.twins = [f"CMD-{n}" for n in range(6)]
    report = run_doctor(client, SETTINGS)
    assert outcomes(report)["unique index"] == "fail"
    detail = next(c.detail for c in report.checks if c.name == "unique index")
    assert "numero_commande 'CMD-0', 'CMD-1', 'CMD-2', 'CMD-3', 'CMD-4' and more:" in detail
    ((pipeline, options),) = client.aggregated
    assert options == {"allowDiskUse": True, "maxTimeMS": 60_000}
    assert pipeline[-1] == {"$limit": 6}
    assert "Commande_archive.numero_commande_1" not in next(
        c.detail for c in report.checks if c.name == "indexes"
    )

    client.twins = OperationFailure("operation exceeded time limit", 50)
    report = run_doctor(client, SETTINGS)
    assert outcomes(report)["unique index"] == "warn"
    assert report.healthy
    assert "is not known" in next(c.detail for c in report.checks if c.name == "unique index")

    # A connection cut mid-look: read again once (Retry.INFORM), not five times (each a whole
    # read of the archive, up to a minute).
    client.twins, client.aggregated = AutoReconnect("connection closed"), []
    report = run_doctor(client, SETTINGS)
    assert outcomes(report)["unique index"] == "warn"
    assert len(client.aggregated) == 2

    client.indexes.append(
        {"v": 2, "key": {"numero_commande": 1}, "name": "numero_commande_1", "unique": True}
    )
    client.aggregated.clear()
    report = run_doctor(client, SETTINGS)
    assert "unique index" not in outcomes(report)
    assert not client.aggregated


def test_the_tls_warning_says_what_crosses_the_network():
    """A URI with no password: doctor said "the password and the orders cross the network in
    clear" all the same. It names the password only when the URI holds one."""
    client = FakeClient({"setName": "rs0"}, privileges=everything_needed())
    for uri, crossing in (
        ("mongodb://x/", "the orders"),
        ("mongodb://u:p@x/", "the password and the orders"),
    ):
        report = run_doctor(client, SETTINGS.with_overrides(mongodb_uri=uri))
        tls = next(c.detail for c in report.checks if c.name == "tls")
        assert tls == f"no TLS towards x: {crossing} cross the network in clear", uri


@pytest.mark.parametrize(
    ("hello", "why"),
    [
        ({"msg": "isdbgrid"}, "mongos does not report its shards' members"),
        ({}, "a standalone server has no secondaries"),
    ],
    ids=["mongos", "standalone"],
)
def test_with_batch_max_lag_where_nothing_can_be_measured_doctor_says_so_once(hello, why):
    """Through mongos (``replSetGetStatus is not supported through mongos``, info "mongos") or on a
    standalone (76) a run warns and never waits: doctor says it before, and does not advise a
    clusterMonitor grant that would change nothing."""
    from dataclasses import replace

    from order_archiver.settings import Duration

    with_lag = replace(SETTINGS, batch_max_lag=Duration(seconds=10))
    report = run_doctor(FakeClient(hello, privileges=everything_needed()), with_lag)
    lags = [c for c in report.checks if c.name == "max lag"]
    assert [c.outcome for c in lags] == ["warn"]
    assert lags[0].detail.startswith(f"BATCH_MAX_LAG 10s cannot be watched here: {why}")
    assert "clusterMonitor" not in lags[0].detail


def test_through_mongos_an_unreadable_config_collections_names_the_grant():
    """A user without find on config.collections (mongos: 13 Unauthorized): the layout is not
    checked at start-up; doctor names the privilege and the shipped role that holds it."""
    client = FakeClient({"msg": "isdbgrid"}, privileges=everything_needed())
    client.sharded = Unreadable()
    check = next(c for c in run_doctor(client, SETTINGS).checks if c.name == "sharding")
    assert check.outcome == "warn"
    assert check.detail == (
        "config.collections cannot be read (13): the layout is not checked at start-up, and one that "
        "cannot work fails mid-run; grant find on config.collections (orderArchiverRead in "
        "deploy/mongodb-roles.js holds it)"
    )


class Unreadable(dict):
    def items(self):
        raise OperationFailure("not authorized on config to execute command", code=13)
