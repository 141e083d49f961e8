"""tests/unit/test_watcher_units.py's -v lines and latency at the wire: what happened to each
order is the server's answer (a duplicate `_id` with its `keyPattern` on the insert path, which
mongomock, without it, sends through the upsert), told apart from the orders written."""

import pytest

from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from tests.unit.test_watcher_units import each_order_said

pytestmark = pytest.mark.integration


def test_each_order_archived_replayed_or_revised_is_said_as_such(nx_client, nx_settings, caplog):
    keys, options = ARCHIVE_INDEXES[0]  # the unique numero_commande: the insert path's duplicates named
    nx_client[nx_settings.mongodb_database][nx_settings.archive_collection].create_index(keys, **options)
    each_order_said(nx_client, nx_settings, caplog)
