"""Every command the product sends is allowed by the roles the docs tell an operator to grant.

Each command of the CLI runs in this process against the test server (or TEST_MONGODB_URI)
while a command listener records what the product sends (the tests' own set-up does not count:
``command_shapes.sent_by_the_product``). Each command sent becomes the privileges MongoDB
checks for it (``tests/privileges.py``: the server's authorization checks, the manual's
"Privilege Actions"); each must be granted by the roles docs/deployment.md names for that
command, as deploy/mongodb-roles.js creates them. A command the product starts to send without
its privilege in those roles fails here, not with 13 Unauthorized on a user's server; a command
with no privilege rule fails too (``privileges.NoRule``).

Neither nx-27017 nor most test deployments enforce access control, so the comparison is made
against MongoDB's rules, not the test server's answers.
"""

from __future__ import annotations

import contextlib
import io
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo import monitoring

from order_archiver.context import RunContext
from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.settings import ENV_VARS, Settings
from tests import conftest
from tests.command_shapes import sent_by_the_product
from tests.helpers import PROJECT, deliver, pending_ids, seed_database, token_saved, wait_for
from tests.privileges import (
    CLUSTER,
    CLUSTER_ACTION,
    Privilege,
    documented_roles,
    grants,
    required,
    shipped_roles,
)

pytestmark = pytest.mark.integration

ROLES_FILE = PROJECT / "deploy" / "mongodb-roles.js"
DOCS = PROJECT / "docs" / "deployment.md"
ROLES_FILE_DATABASE = "livraison"  # its SOURCE_DB (ARCHIVE_DB = SOURCE_DB): this test's database


class Recorder(monitoring.CommandListener):
    """The commands the product sends while ``recording`` is set: (database, body)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.recording = False
        self.lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.recording and sent_by_the_product():
            # pymongo hides the body of authentication commands: their name is enough.
            with self.lock:
                self.records.append((event.database_name, dict(event.command or {event.command_name: 1})))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


RECORDER = Recorder()
monitoring.register(RECORDER)  # the product's clients, made in each run from now on


@dataclass
class Run:
    """One documented command: the privileges its commands needed, and which command needed each."""

    command: str
    code: int
    output: str
    settings: dict[str, str] = field(default_factory=dict)  # beyond the URI and database
    needs: dict[Privilege, set[str]] = field(default_factory=dict)


class Product:
    """Runs the CLI in this process with a user's environment, recording what it sends."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd
        self.database = env["MONGODB_DATABASE"]
        self.runs: list[Run] = []

    @contextlib.contextmanager
    def recording(self, command: str, extra: dict[str, str]) -> Iterator[Run]:
        run = Run(command, 0, "", extra)
        RECORDER.records.clear()
        with pytest.MonkeyPatch.context() as patch:
            for var in ENV_VARS:
                patch.delenv(var, raising=False)
            for key, value in {**self.env, **extra}.items():
                patch.setenv(key, value)
            patch.chdir(self.cwd)
            RECORDER.recording = True
            try:
                yield run
            finally:
                RECORDER.recording = False
        for database, body in list(RECORDER.records):
            for need in required(database, body):
                if need.db == self.database:  # the test's database plays the script's SOURCE_DB
                    need = need._replace(db=ROLES_FILE_DATABASE)
                run.needs.setdefault(need, set()).add(next(iter(body)))
        self.runs.append(run)

    def run(self, command: str, *argv: str, **extra: str) -> Run:
        from order_archiver.cli.main import main

        out = io.StringIO()
        with (
            self.recording(command, extra) as run,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            run.code = main(list(argv))
        run.output = out.getvalue()
        assert run.code in (0, 3), f"{' '.join(argv)} exited {run.code}: {run.output}"
        return run

    def watch(self, until: Any, name: str = "eu-1", **extra: str) -> Run:
        """watch as the service runs it (a mongo token store, its lease), stopped as SIGTERM does
        once ``until`` holds."""
        from order_archiver.cli.main import build_parser

        args = build_parser().parse_args(["watch", "--token-store", "mongo", "--name", name])
        stop = threading.Event()
        with self.recording("watch", extra) as run:
            result: list[int] = []
            thread = threading.Thread(
                target=lambda: result.append(args.func(args, RunContext(stop=stop))), daemon=True
            )
            thread.start()
            try:
                until()
            finally:
                stop.set()
                thread.join(30)
            run.code = result[0] if result else -1
        assert run.code == 0, f"watch exited {run.code}"
        return run


@contextlib.contextmanager
def replica_set(server: Any) -> Iterator[str]:
    """A server that answers as a replica set: TEST_MONGODB_URI's (CI's are), else a test server
    with NX_REPLICA_SET (``teststand/replica_status.py``: replSetGetStatus, replSetGetConfig)."""
    if conftest.TEST_MONGODB_URI:
        yield server.uri
        return
    from teststand.nx_server import running_server

    with running_server({"NX_REPLICA_SET": "rs0"}, prefix="nx-privileges-rs-") as started:
        yield started.uri


@contextlib.contextmanager
def router() -> Iterator[str | None]:
    """A server that answers as a sharded cluster's mongos (``teststand/mongos.py``: the
    commands read ``config.collections`` there), or None against TEST_MONGODB_URI (a replica set)."""
    if conftest.TEST_MONGODB_URI:
        yield None
        return
    from teststand.nx_server import running_server

    with running_server({"NX_MONGOS": "1"}, prefix="nx-privileges-mongos-") as started:
        yield started.uri


@pytest.fixture(scope="module")
def every_command(nx_server, tmp_path_factory) -> list[Run]:
    """Each command of docs/deployment.md's table, on one database, in the order an operator
    meets them: doctor, the first dry run and run, watch, the checks, corrections, a purge, a
    restore, an erasure, the archive's retention set, changed and unset."""
    db_name = f"t_{uuid.uuid4().hex[:12]}"
    conftest._DATABASES.append(db_name)
    cwd = tmp_path_factory.mktemp("privileges")
    env = {"MONGODB_URI": nx_server.uri, "MONGODB_DATABASE": db_name, "LOG_DIR": "logs"}
    with pymongo.MongoClient(nx_server.uri, tz_aware=True) as client:
        database = client[db_name]
        dataset = seed_database(database, Settings(mongodb_database=db_name, log_dir=""), 120)
        product = Product(env, cwd)
        product.run("doctor", "doctor")
        product.run("batch", "batch")
        # A watcher started before any batch --run had built the other indexes or applied the
        # retentions, both set: its catch-up archives without building an index nor touching
        # ARCHIVE_RETENTION's TTL index or the archived orders it would delete (batch --run's):
        # its role holds none of that (#31 item 9). The archive's unique index alone is there (a
        # watcher waits for it: tests/e2e/test_watch_e2e.py), built as the batch user would.
        archive = database["Commande_archive"]
        archive.create_index(ARCHIVE_INDEXES[0][0], **ARCHIVE_INDEXES[0][1])

        def caught_up_first() -> None:
            wait_for(lambda: token_saved(database, cwd, "mongo", "eu-0"), what="the first catch-up")

        product.watch(
            until=caught_up_first, name="eu-0", ARCHIVE_RETENTION="20000d", ARCHIVE_PII_RETENTION="20000d"
        )
        assert archive.count_documents({}) > 0, "the first watcher archived nothing"
        assert set(archive.index_information()) == {"_id_", "numero_commande_1"}, "the watcher built an index"
        # An order that cannot be archived (no numero_commande): listed as rejected, then fixed.
        invalid = (
            database["Commande"]
            .insert_one(
                {"status": "livrée", "date_commande": datetime.now(UTC), "date_livraison": datetime.now(UTC)}
            )
            .inserted_id
        )
        product.run("batch --run", "batch", "--run")
        assert database["archiver_rejects"].count_documents({}) == 1, "the invalid order was not listed"
        later = pending_ids(dataset, 2)
        deliver(database["Commande"], later[:1])

        def caught_up_then_one_event() -> None:
            # The catch-up archives the first; the change stream, the one delivered after it.
            wait_for(lambda: archive.find_one({"_id": later[0]}) is not None, what="the catch-up")
            deliver(database["Commande"], later[1:])
            wait_for(lambda: archive.find_one({"_id": later[1]}) is not None, what="the event")

        product.watch(until=caught_up_then_one_event)
        product.run("retire-watcher", "retire-watcher", "eu-0")
        product.run("retire-watcher", "retire-watcher", "eu-1")
        product.run("status", "status")
        product.run("rejects", "rejects")
        product.run("verify", "verify")
        database["Commande"].update_one({"_id": invalid}, {"$set": {"numero_commande": "CMD-FIXED"}})
        database["Commande_archive"].delete_one({"_id": later[0]})
        product.run("verify --repair", "verify", "--repair")
        archived = database["Commande_archive"].find_one({"client": {"$ne": None}})
        product.run("batch --run --purge-source", "batch", "--run", "--purge-source")
        assert database["Commande"].find_one({"_id": archived["_id"]}) is None, "the purge left the order"
        assert database["archiver_rejects"].count_documents({}) == 0, "the fixed order is still listed"
        numero = archived["numero_commande"]
        product.run("restore", "restore", "--numero", numero)
        product.run("restore --run", "restore", "--numero", numero, "--run")
        assert database["Commande"].find_one({"_id": archived["_id"]}) is not None, "nothing was restored"
        client_id = str(archived["client"]["id"])
        product.run("forget", "forget", "--client", client_id)
        product.run("forget --run", "forget", "--client", client_id, "--run")
        # ARCHIVE_RETENTION: the TTL index created, changed in place (collMod), dropped once unset.
        product.run("batch --run (ARCHIVE_RETENTION)", "batch", "--run", ARCHIVE_RETENTION="20000d")
        product.run("batch --run (ARCHIVE_RETENTION)", "batch", "--run", ARCHIVE_RETENTION="19000d")
        product.run("batch --run (ARCHIVE_RETENTION)", "batch", "--run")
        indexes = database["Commande_archive"].index_information()
        assert "archive_retention" not in indexes, "the unset retention's TTL index was not dropped"
        # A cold tier: the archived orders delivered over a year ago moved to Parquet files, then
        # deleted from the archive (remove: orderArchiverColdTier).
        cold = cwd / "cold"
        cold.mkdir()
        old = [document["_id"] for document in archive.find({}, {"_id": 1}).limit(3)]
        long_ago = datetime.now(UTC) - timedelta(days=430)
        archive.update_many({"_id": {"$in": old}}, {"$set": {"date_livraison": long_ago}})
        before = archive.count_documents({})
        product.run(
            "batch --run (ARCHIVE_COLD_URL)",
            "batch",
            "--run",
            ARCHIVE_COLD_URL=cold.as_uri(),
            ARCHIVE_COLD_AFTER="365d",
        )
        assert archive.count_documents({}) < before, "the cold tier moved nothing"
        # forget --run with a cold tier settles first a move killed after its publication, before
        # its deletes: the entry such a move leaves (here for a file whose move did finish: the
        # settle sends the same deletes) makes it delete the file's orders from the archive
        # (remove: orderArchiverColdTier, as the batch's), then drop the entry.
        published = str(next(cold.rglob("*.parquet")))
        journal = database["archiver_checkpoints"]
        journal.insert_one(
            {
                "_id": f"cold-move:{published}",
                "kind": "cold-move",
                "state": "published",
                "partial": published + ".partial",
                "final": published,
            }
        )
        forgotten = product.run(
            "forget --run (ARCHIVE_COLD_URL)",
            "forget",
            "--client",
            client_id,
            "--run",
            ARCHIVE_COLD_URL=cold.as_uri(),
            ARCHIVE_COLD_AFTER="365d",
        )
        assert journal.find_one({"kind": "cold-move"}) is None, "forget left the interrupted move"
        assert any(
            need.action == "remove" and need.collection == "Commande_archive" for need in forgotten.needs
        )
        # --max-lag on a replica set: replSetGetStatus, then replSetGetConfig (the members' delays).
        with replica_set(nx_server) as uri:
            with pymongo.MongoClient(uri, tz_aware=True) as set_client:
                seed_database(set_client[db_name], Settings(mongodb_database=db_name, log_dir=""), 40)
            lagged = product.run(
                "batch --run (BATCH_MAX_LAG)", "batch", "--run", MONGODB_URI=uri, BATCH_MAX_LAG="30s"
            )
        assert {need.action for need in lagged.needs if need.db == CLUSTER} == set(CLUSTER_ACTION)
        # Through mongos every command first reads which collections are sharded
        # (config.collections: deployment.check_deployments), with the same roles.
        with router() as uri:
            if uri is not None:
                with pymongo.MongoClient(uri, tz_aware=True) as routed:
                    seed_database(routed[db_name], Settings(mongodb_database=db_name, log_dir=""), 40)
                for command, argv in (
                    ("doctor", ["doctor"]),
                    ("batch", ["batch"]),
                    ("batch --run", ["batch", "--run"]),
                    ("status", ["status"]),
                    ("verify", ["verify"]),
                    ("restore --run", ["restore", "--numero", numero, "--run"]),
                    ("forget --run", ["forget", "--client", client_id, "--run"]),
                ):
                    routed_run = product.run(command, *argv, MONGODB_URI=uri)
                    assert "cannot read config.collections" not in routed_run.output
        yield product.runs
        client.drop_database(db_name)


def test_the_roles_file_names_the_collections_the_product_uses_by_default():
    """The roles are compared under the product's default names (the script's constants)."""
    defaults = Settings()
    text = ROLES_FILE.read_text()
    for constant, value in {
        "SOURCE_DB": ROLES_FILE_DATABASE,
        "ORDERS": defaults.orders_collection,
        "ARCHIVE": defaults.archive_collection,
        "CHECKPOINTS": defaults.checkpoint_collection,
        "REJECTS": defaults.rejects_collection,
        "FORGOTTEN": defaults.forgotten_collection,
    }.items():
        assert f'const {constant} = "{value}";' in text
    references = [
        defaults.clients_collection,
        defaults.couriers_collection,
        defaults.restaurants_collection,
        defaults.menu_collection,
    ]
    assert "const REFERENCES = [" + ", ".join(f'"{r}"' for r in references) + "];" in text


def test_every_command_sends_only_what_its_documented_roles_grant(every_command):
    """For each command, each privilege MongoDB checks on what it sent is in one of the roles
    docs/deployment.md names for it (restore --run inserts into the orders collection:
    orderArchiverRestore; the retention's drop needs dropIndex: orderArchiverRetention)."""
    roles = shipped_roles(ROLES_FILE)
    table = documented_roles(DOCS)
    missing = []
    for run in every_command:
        assert run.command in table, f"docs/deployment.md names no role for {run.command!r}"
        named = table[run.command]
        assert set(named) <= set(roles), (
            f"{run.command}: {sorted(set(named) - set(roles))} not in the roles file"
        )
        privileges = [privilege for role in named for privilege in roles[role]]
        for need, commands in sorted(run.needs.items()):
            if not grants(privileges, need):
                missing.append(
                    f"{run.command}: {need.action} on {where(need)} "
                    f"for {', '.join(sorted(commands))}, not in {', '.join(named)}"
                )
    assert not missing, "\n".join(missing)


def where(need: Privilege) -> str:
    return "the cluster" if need.db == CLUSTER else need.collection or "(database)"


# What a TTL index made with them could do: delete the archive (createIndex with
# expireAfterSeconds, collMod changing one's age); dropIndex drops its unique index.
INDEX_ACTIONS = {"createIndex", "collMod", "dropIndex"}


def test_the_watcher_needs_and_holds_no_index_action_on_the_archive(every_command):
    """watch, a first start with both retentions set included, sent nothing that needs an index
    action or a delete on the archive, and the roles docs/deployment.md names for it grant none:
    a watcher's credentials cannot make a TTL index (#31 item 9)."""
    watches = [run for run in every_command if run.command == "watch"]
    assert [run.settings.get("ARCHIVE_RETENTION") for run in watches] == ["20000d", None]
    archive = (ROLES_FILE_DATABASE, "Commande_archive")
    for run in watches:
        sent = {need.action for need in run.needs if (need.db, need.collection) == archive}
        assert "insert" in sent  # it archived (an insert first: an update only to revise)
        assert not sent & (INDEX_ACTIONS | {"remove"}), sorted(sent)
    roles = shipped_roles(ROLES_FILE)
    held = {
        action
        for role in documented_roles(DOCS)["watch"]
        for db, collection, actions in roles[role]
        if (db, collection) == archive or collection == ""
        for action in actions
    }
    assert not held & (INDEX_ACTIONS | {"remove"}), sorted(held)


def test_every_documented_command_was_run(every_command):
    """The table names no command this test does not check."""
    assert set(documented_roles(DOCS)) == {run.command for run in every_command}


# What doctor does not fail on, each with the line it says instead: the source's indexes
# (batch warns once and reads without them), listCollections (its "collections" check warns),
# remove on the orders (its "purge" warning) and insert on them (restore --run, a support
# agent's task, not the service's).
DOCTOR_WARNS_ONLY = {
    Privilege(ROLES_FILE_DATABASE, "Commande", "createIndex"),
    Privilege(ROLES_FILE_DATABASE, "", "listCollections"),
    Privilege(ROLES_FILE_DATABASE, "Commande", "remove"),
    Privilege(ROLES_FILE_DATABASE, "Commande", "insert"),
    # Through mongos: refused, the layout is not checked; doctor's "sharding" line warns, naming
    # the privilege and the role that grants it (on a replica set nothing reads it).
    Privilege("config", "collections", "find"),
}


def test_doctor_asks_for_every_privilege_the_commands_used(every_command):
    """doctor's list (``required_privileges``, for each run's settings) holds every privilege
    each command needed: ARCHIVE_RETENTION's collMod while set, and the dropIndex of the run
    after it was unset, with its TTL index still there."""
    from order_archiver.mongodb.replication_lag import LAG_ACTIONS
    from order_archiver.operations.doctor import required_privileges
    from order_archiver.settings import parse_duration

    missing = []
    for run in every_command:
        retention, lag = run.settings.get("ARCHIVE_RETENTION"), run.settings.get("BATCH_MAX_LAG")
        cold_after = run.settings.get("ARCHIVE_COLD_AFTER")
        settings = Settings(
            mongodb_database=ROLES_FILE_DATABASE,
            archive_retention=parse_duration(retention) if retention else None,
            batch_max_lag=parse_duration(lag) if lag else None,
            archive_cold_url=run.settings.get("ARCHIVE_COLD_URL"),
            archive_cold_after=parse_duration(cold_after) if cold_after else None,
        )
        # The retention's last run is the one after it was unset, its TTL index still there.
        to_drop = run.command == "batch --run (ARCHIVE_RETENTION)" and retention is None
        asked = required_privileges(settings, ttl_index_to_drop=to_drop)
        # Without ARCHIVE_RETENTION, listIndexes on the archive only looks for a TTL index left
        # behind; refused, the retention is "none" and the run goes on (retention_state).
        asked.setdefault((ROLES_FILE_DATABASE, "Commande_archive"), set()).add("listIndexes")
        if settings.batch_max_lag is not None:  # its "max lag" line: the cluster's actions
            asked[(CLUSTER, "")] = set(LAG_ACTIONS)
        for need in set(run.needs) - DOCTOR_WARNS_ONLY:
            if need.action not in asked.get((need.db, need.collection), set()):
                missing.append(f"{run.command}: {need.action} on {need.collection or '(database)'}")
    assert not missing, "doctor does not check:\n" + "\n".join(sorted(set(missing)))


def test_doctor_for_watch_asks_for_every_privilege_the_watcher_used(every_command):
    """``doctor --for watch`` checks less than batch's list: still every privilege watch (its
    catch-up, its lease and token, the rejects it prunes) sent a command needing."""
    from order_archiver.operations.doctor import required_privileges

    asked = required_privileges(Settings(mongodb_database=ROLES_FILE_DATABASE), process="watch")
    missing = [
        f"{need.action} on {need.collection or '(database)'}"
        for run in every_command
        if run.command == "watch"
        for need in set(run.needs) - DOCTOR_WARNS_ONLY
        if need.action not in asked.get((need.db, need.collection), set())
    ]
    assert not missing, "doctor --for watch does not check:\n" + "\n".join(sorted(set(missing)))
