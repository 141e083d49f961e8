"""The cold tier's move across an election, at the wire (``NX_FAULT_ELECTION``,
teststand/election.py): the orders it says it moved are those that left the archive.

What it stands for (MongoDB's manual, "Replica Set Elections" and "Retryable Writes";
replSetStepDown, "Behavior"): a primary stepping down kills the write in flight (11602
``InterruptedDueToReplStateChange``), and the statements of a bulk applied before the kill stay
applied (each statement commits alone). The move's delete of a file's orders is a bulk of
``DeleteOne`` (a retryable write): pymongo retries it once, and while no primary is elected that
retry fails too; the archiver's own retry after the election is a new write (another
``txnNumber``), whose answer counts only the statements it applied itself. Scaled down in time
as tests/integration/test_cold_marks_election_nx.py is: an election of 3 s against a server
selection of 1 s (12 s against 5 s)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from bson import ObjectId

from order_archiver.cold import files
from order_archiver.cold.move import ColdMove
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdStore
from teststand.election import STEPPED_DOWN
from teststand.nx_server import running_server

pytestmark = [pytest.mark.integration, pytest.mark.test_server_only("the test server's election knob")]

ARCHIVE, CHECKPOINTS = "orders_archive", "archiver_checkpoints"
DELIVERED = datetime(2026, 3, 2, 12, tzinfo=UTC)


def archived_order(n: int) -> dict[str, object]:
    return {
        "_id": ObjectId(),
        "numero_commande": f"CMD-{n:04d}",
        "status": "DELIVERED",
        "date_livraison": DELIVERED + timedelta(hours=n),
        "montant_total": 10.0 + n,
        "revised_at": DELIVERED + timedelta(days=1),
        "source_hash": f"hash-{n}",
    }


def test_the_orders_a_move_deletes_across_an_election_are_counted_once_each(db_name, tmp_path):
    """Six archived orders of March, moved into one file. The move's delete of them (the second
    write on the archive, after the orders' insert) is killed by the stepdown after deleting
    three; the retry after the election deletes the other three. Its count said 3 (the last
    try's ``deleted_count``): 6, every order the file holds and the archive no longer does."""
    (tmp_path / "cold").mkdir()
    store = ColdStore(f"file://{tmp_path}/cold")
    with running_server({"NX_FAULT_ELECTION": f"{ARCHIVE}:1:3"}, prefix="nx-election-move-") as server:
        with pymongo.MongoClient(server.uri, tz_aware=True, serverSelectionTimeoutMS=1000) as client:
            archive, journal = client[db_name][ARCHIVE], client[db_name][CHECKPOINTS]
            archive.insert_many([archived_order(n) for n in range(6)])
            report = ColdMove(store, archive, journal, cutoff=datetime(2026, 5, 1, tzinfo=UTC)).run()
            left = archive.count_documents({})
        assert STEPPED_DOWN in (server.data_dir / "server.log").read_text()  # the kill took place
    [published] = store.files()
    held = [document_of(t) for b in files.batches(store, published.path, ["document"]) for t in b["document"]]
    assert (len(held), left) == (6, 0)  # every order in the file, none left in the archive
    assert report.moved == 6
    assert report.kept_revised == 0
    assert report.line() == "cold tier: 6 orders moved into 1 file (2026-03)"
