"""A full pass of ``batch --run`` reads the orders the change history names (corrected or delivered
since the last pass) from the primary, whatever the URI's ``readPreference``, at the wire.

What it stands for (MongoDB manual, "Read Preference"): with ``secondaryPreferred`` a read goes
to a secondary when one is available, and a secondary replicates asynchronously: it may return
data that does not reflect the most recent writes. The pass saves, as its change-history
position, the primary's position when it began: a correction committed just before it is past
that position. Read from a secondary that has not applied it yet, the order looks unchanged
(archived as it is), and no later pass reads it again (the next runs read the history after
the position; a full sweep skips what the archive holds): the archive keeps the old version for
ever, and the purge keeps the order (its fingerprint differs) for ever.

The test server has no secondary that lags: a one-member replica set answers every read. What
can be seen is where the driver sends each read: in a replica set (``replicaSet=`` in the URI),
pymongo puts a read preference other than primary on the wire as ``$readPreference`` (Server
Selection spec; OP_MSG), and no ``$readPreference`` (the primary) on a read for the primary; a
``mongos`` routes by the same field. So: every read of the changed orders (a ``$in`` naming them:
the ids' query and the enrichment) carries no ``$readPreference``, while the pass's scan of the
window still follows the URI (``secondaryPreferred`` on the wire: the listener does see it)."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest
from pymongo import monitoring

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.settings import Settings
from tests.helpers import expected_archive_ids, seed_database

pytestmark = pytest.mark.integration


class Reads(monitoring.CommandListener):
    """The reads sent to the orders collection, each with the ``$readPreference`` it carried."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = dict(event.command)
        if event.command_name in ("find", "aggregate") and command.get(event.command_name) == "Commande":
            self.commands.append(command)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def ids_in(value: Any) -> set[Any]:
    """Every value of every ``$in`` list the command holds, wherever it nests."""
    found: set[Any] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$in" and isinstance(item, list):
                found.update(one for one in item if not isinstance(one, (dict, list)))
            found |= ids_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= ids_in(item)
    return found


def mode(command: dict[str, Any]) -> str:
    preference = command.get("$readPreference")
    return preference.get("mode", "primary") if isinstance(preference, dict) else "primary"


@pytest.mark.parametrize(
    "archive_database",
    [
        None,  # the archive in the source database: the pass skips archived orders, in pages
        "elsewhere",  # in another database: one streaming aggregation, merged with the changes' reads
    ],
)
def test_a_full_pass_reads_the_changed_orders_from_the_primary(nx_server, db_name, archive_database):
    with pymongo.MongoClient(nx_server.uri, serverSelectionTimeoutMS=5000) as plain:
        replica_set = plain.admin.command("hello").get("setName")
    if not replica_set:
        pytest.skip("a standalone has no read preference: every read is the one server's")
    settings = Settings(
        mongodb_uri=nx_server.uri,
        mongodb_database=db_name,
        archive_database=f"{db_name}_{archive_database}" if archive_database else None,
        log_dir="",
    )
    reads = Reads()
    with pymongo.MongoClient(
        nx_server.uri,
        tz_aware=True,
        replicaSet=replica_set,
        readPreference="secondaryPreferred",
        event_listeners=[reads],
        serverSelectionTimeoutMS=5000,
    ) as client:
        database = client[db_name]
        dataset = seed_database(database, settings, 300, seed=83, p_anomalies=0.0)
        first = BatchArchiver(client, settings, BatchOptions(run=True)).run()
        assert first.mode == "full"  # a first run: its start is the change-history position saved
        corrected = sorted(expected_archive_ids(dataset))[:3]
        for order_id in corrected:  # corrected after archiving, still delivered (the primary's write)
            database["Commande"].update_one({"_id": order_id}, {"$set": {"remboursement": 7.5}})
        reads.commands.clear()
        report = BatchArchiver(client, settings, BatchOptions(run=True, full=True)).run()
        assert (report.mode, report.changes_read, report.revised) == ("full", 3, 3)
        naming = [command for command in reads.commands if ids_in(command) & set(corrected)]
        assert naming, "no read named the changed orders"
        assert [mode(command) for command in naming] == ["primary"] * len(naming)
        # The scan of the window still follows the URI: the preference is on the wire.
        assert "secondaryPreferred" in {mode(command) for command in reads.commands}
