"""A sharded cluster through mongos, as the archiver sees it at start-up: the replies of
``hello``, ``buildInfo`` and ``config.collections`` that no test server gives."""

from __future__ import annotations

import mongomock
import pytest

from config import Settings
from deployment import check_deployment, sharding_problems
from errors import ConfigError


class Mongos:
    """A client whose admin commands answer as mongos does; config.collections from mongomock."""

    def __init__(self, version: str, sharded: dict[str, dict], hello_msg: str = "isdbgrid") -> None:
        self.store = mongomock.MongoClient()
        self.store["config"]["collections"].insert_many(
            [{"_id": ns, "key": key, "unique": False} for ns, key in sharded.items()]
            + [{"_id": "livraison.Old", "key": {"_id": 1}, "dropped": True}]
        )
        replies = {
            "hello": {"ok": 1, "msg": hello_msg, "isWritablePrimary": True},
            "buildInfo": {"version": version},
        }
        self.admin = type("Admin", (), {"command": lambda _self, name: replies[name]})()

    def __getitem__(self, name: str):
        return self.store[name]


SETTINGS = Settings(mongodb_uri="mongodb://mongos:27017")


def test_a_replica_set_is_not_checked():
    check_deployment(Mongos("4.4.0", {"livraison.Menu": {"_id": "hashed"}}, hello_msg=""), SETTINGS)


def test_sharded_orders_are_fine_on_any_version():
    check_deployment(Mongos("4.4.29", {"livraison.Commande": {"client_id": 1}}), SETTINGS)


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


def test_checkpoints_and_rejects_may_be_sharded_on_id_only():
    check_deployment(Mongos("7.0.2", {"livraison.archiver_checkpoints": {"_id": 1}}), SETTINGS)
    problems = sharding_problems(
        SETTINGS, (7, 0, 2), {"livraison.archiver_rejects": {"first_seen": 1}, "livraison.Menu": {"_id": 1}}
    )
    assert problems == [
        "livraison.archiver_rejects (REJECTS_COLLECTION) is sharded on {'first_seen': 1}: written by _id, it "
        "must be unsharded or sharded on _id"
    ]
