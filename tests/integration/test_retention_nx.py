"""ARCHIVE_PII_RETENTION at the wire, where only a replicated deployment fails this way."""

from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from bson import ObjectId

from order_archiver.context import RunContext
from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.mongodb.retention import PiiRetention
from order_archiver.settings import Duration
from tests.conftest import NxServer

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def rolled_back_marks(tmp_path_factory):
    """Every 4th update of the archive is applied and answered with writeConcernError 64: in an
    erasure of one chunk, the 4th update is the mark."""
    server = NxServer(
        tmp_path_factory.mktemp("wc-erasure"), env={"NX_FAULT_WRITE_CONCERN": "Commande_archive:4"}
    ).start()
    yield server
    server.stop()


@pytest.mark.test_server_only("the test server's write-concern fault knob")
def test_an_erasure_whose_mark_meets_a_write_concern_error_is_retried_and_counted_once(
    rolled_back_marks, db_name
):
    """A write-concern error (64) on the mark is no success: the update is retried (it is
    idempotent). The retry finds the documents marked already: the run still reports each
    erased order once, not zero."""
    with pymongo.MongoClient(rolled_back_marks.uri, tz_aware=True) as client:
        archive = client[db_name]["Commande_archive"]
        for keys, extra in ARCHIVE_INDEXES:
            archive.create_index(keys, **extra)
        delivered = NOW - timedelta(days=400)
        archive.insert_many(
            [
                {
                    "_id": ObjectId(),
                    "numero_commande": f"CMD-{n}",
                    "date_livraison": delivered,
                    "client": {"id": ObjectId(), "nom": "Martin", "email": f"{n}@example.org"},
                    "adresse_livraison": f"{n} rue de la Paix",
                    "source": {"adresse_livraison": f"{n} rue de la Paix"},
                }
                for n in range(40)
            ]
        )
        erased = PiiRetention(archive, Duration(days=365), lambda: NOW, RunContext()).erase()
        assert erased == 40
        assert archive.count_documents({"forgotten_by": "ARCHIVE_PII_RETENTION"}) == 40
        assert archive.count_documents({"client.email": {"$ne": None}}) == 0
