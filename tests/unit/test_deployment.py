"""A sharded cluster through mongos, as the archiver sees it at start-up: the replies of
``hello``, ``buildInfo`` and ``config.collections`` that no test server gives."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import mongomock
import pytest
from bson import Binary, ObjectId, Timestamp

from order_archiver.errors import ConfigError
from order_archiver.mongodb.deployment import check_deployment, check_deployments, sharding_problems
from order_archiver.settings import Settings


class Mongos:
    """A client whose admin commands answer as mongos does; config.collections from mongomock."""

    def __init__(
        self, version: str, sharded: dict[str, dict], hello_msg: str = "isdbgrid", moved: tuple[str, ...] = ()
    ) -> None:
        self.store = mongomock.MongoClient()
        self.store["config"]["collections"].insert_many(
            [{"_id": ns, "key": key, "unique": False} for ns, key in sharded.items()]
            + [{"_id": "livraison.Old", "key": {"_id": 1}, "dropped": True}]
            + [MOVED_ENTRY | {"_id": ns} for ns in moved]
        )
        replies = {
            "hello": {"ok": 1, "msg": hello_msg, "isWritablePrimary": True},
            "buildInfo": {"version": version},
        }
        self.asked: list[str] = []  # what the check read: commands and databases

        def command(_self, name):
            self.asked.append(name)
            return replies[name]

        self.admin = type("Admin", (), {"command": command})()

    def __getitem__(self, name: str):
        self.asked.append(name)
        return self.store[name]


SETTINGS = Settings(mongodb_uri="mongodb://mongos:27017")

# A collection moved to another shard by MongoDB 8.0's moveCollection, as config.collections
# lists it: tracked, one chunk, key {_id: 1}, ``unsplittable: true`` (SERVER-78755, -78763;
# the 8.0 manual, "Moveable Collections"). It is not sharded.
MOVED_ENTRY = {
    "key": {"_id": 1},
    "unique": False,
    "unsplittable": True,
    "lastmodEpoch": ObjectId(),
    "lastmod": datetime(2025, 3, 1, tzinfo=UTC),
    "timestamp": Timestamp(1740787200, 1),
    "uuid": Binary.from_uuid(uuid.uuid4()),
}


def test_a_replica_set_is_not_checked():
    """Only mongos has config.collections to read: a replica set is asked hello, nothing more
    (its Menu "sharded" in a stale config database would otherwise fail a 4.4 check)."""
    replica_set = Mongos("4.4.0", {"livraison.Menu": {"_id": "hashed"}}, hello_msg="")
    check_deployment(replica_set, SETTINGS)
    assert replica_set.asked == ["hello"]


def test_sharded_orders_are_fine_on_any_version():
    mongos = Mongos("4.4.29", {"livraison.Commande": {"client_id": 1}})
    check_deployment(mongos, SETTINGS)
    assert mongos.asked == ["hello", "config", "buildInfo"]  # it did look: and found nothing wrong


@pytest.mark.parametrize("name", ["Menu", "Client", "Commande_archive"])
def test_lookup_from_a_sharded_collection_needs_5_1(name):
    with pytest.raises(
        ConfigError,
        match=f"livraison.{name} is sharded: \\$lookup reads a sharded collection from MongoDB 5.1",
    ):
        check_deployment(Mongos("5.0.14", {f"livraison.{name}": {"_id": "hashed"}}), SETTINGS)
    if name != "Commande_archive":
        check_deployment(Mongos("5.1.0", {f"livraison.{name}": {"_id": "hashed"}}), SETTINGS)


def test_the_archive_must_not_be_sharded_on_any_version():
    other_db = Settings(mongodb_uri="mongodb://m", archive_database="archives")
    with pytest.raises(ConfigError, match=r"archives\.Commande_archive is sharded"):
        check_deployment(Mongos("8.0.4", {"archives.Commande_archive": {"numero_commande": 1}}), other_db)


def test_collections_moved_by_move_collection_are_not_sharded():
    """8.0 lists an unsharded collection moved with moveCollection in config.collections; the
    archive and the references moved so (to balance shards) are still unsharded: no refusal."""
    moved = ("livraison.Commande_archive", "livraison.Menu", "livraison.archiver_rejects")
    check_deployment(Mongos("8.0.4", {}, moved=moved), SETTINGS)
    check_deployment(Mongos("5.0.14", {}, moved=moved), SETTINGS)  # no such entry before 8.0: same rule


def test_checkpoints_and_rejects_may_be_sharded_on_id_only():
    check_deployment(Mongos("7.0.2", {"livraison.archiver_checkpoints": {"_id": 1}}), SETTINGS)
    problems = sharding_problems(
        SETTINGS, (7, 0, 2), {"livraison.archiver_rejects": {"first_seen": 1}, "livraison.Menu": {"_id": 1}}
    )
    assert problems == [
        "livraison.archiver_rejects (REJECTS_COLLECTION) is sharded on {'first_seen': 1}: written by _id, it "
        "must be unsharded or sharded on _id"
    ]


def test_the_forgotten_record_may_be_sharded_on_id_only():
    """Its upserts select by ``_id`` alone (``forgotten.record``): through mongos, an upsert whose
    filter lacks the shard key cannot be targeted (61 ShardKeyNotFound, "Failed to target upsert
    by query"), as the checkpoints' and the rejects'."""
    check_deployment(Mongos("7.0.2", {"livraison.archiver_forgotten": {"_id": "hashed"}}), SETTINGS)
    with pytest.raises(ConfigError, match=r"archiver_forgotten \(FORGOTTEN_COLLECTION\) is sharded on"):
        check_deployment(Mongos("8.0.4", {"livraison.archiver_forgotten": {"kind": 1}}), SETTINGS)


ELSEWHERE = Settings(mongodb_uri="mongodb://source:27017", archive_mongodb_uri="mongodb://archive:27017")
REPLICA_SET = Mongos("7.0.2", {}, hello_msg="")


@pytest.mark.parametrize(
    ("sharded", "problem"),
    [
        ({"livraison.Commande_archive": {"numero_commande": 1}}, r"livraison\.Commande_archive is sharded"),
        ({"livraison.archiver_checkpoints": {"kind": 1}}, r"CHECKPOINT_COLLECTION\) is sharded on"),
        ({"livraison.archiver_rejects": {"numero": 1}}, r"REJECTS_COLLECTION\) is sharded on"),
    ],
)
def test_the_archive_deployment_is_checked_on_its_own_cluster(sharded, problem):
    """ARCHIVE_MONGODB_URI: the archive, checkpoints and rejects live on the archive's cluster;
    its own mongos says how they are sharded (the source's knows nothing of them)."""
    with pytest.raises(ConfigError, match=f"^archive deployment: sharded cluster: .*{problem}"):
        check_deployments(REPLICA_SET, ELSEWHERE, Mongos("7.0.2", sharded))
    check_deployments(REPLICA_SET, ELSEWHERE, Mongos("7.0.2", {"livraison.archiver_checkpoints": {"_id": 1}}))


def test_a_sharded_source_is_checked_for_its_own_collections_only():
    """The source's mongos is asked about the orders and references; an archive namespace it
    happens to hold (another application's) is not this archive."""
    source = Mongos("5.0.14", {"livraison.Menu": {"_id": "hashed"}, "livraison.Commande_archive": {"a": 1}})
    with pytest.raises(ConfigError, match=r"^source deployment: sharded cluster: livraison\.Menu is sharded"):
        check_deployments(source, ELSEWHERE, REPLICA_SET)
    check_deployments(Mongos("5.1.0", {"livraison.Commande_archive": {"a": 1}}), ELSEWHERE, REPLICA_SET)


def test_batch_and_watch_check_the_archive_deployment_before_anything_is_written(mongo):
    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.watch.watcher import Watcher, WatchOptions

    archive = Mongos("7.0.2", {"livraison.Commande_archive": {"numero_commande": 1}})
    settings = Settings(simulation=True, log_dir="", archive_mongodb_uri="mongodb://archive:27017")
    batch = BatchArchiver(mongo, settings, BatchOptions(run=True), archive_client=archive)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^archive deployment: sharded cluster"):
        batch.run()
    watcher = Watcher(mongo, settings, WatchOptions(), archive_client=archive)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^archive deployment: sharded cluster"):
        watcher.run()
    assert archive.store.list_database_names() == ["config"]  # nothing written on the archive side
