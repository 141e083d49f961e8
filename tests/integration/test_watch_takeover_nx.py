"""tests/unit/test_watch_takeover.py's and test_catch_up_takeover.py's scenarios at the wire: the archive's duplicate `_id` comes
back from the server with its `keyPattern` (the insert path; mongomock's, without it, goes
through the upsert), the lease and the token store are the server's documents."""

import pytest

from tests.unit.test_catch_up_takeover import CATCH_UP_SCENARIOS, catch_up_paused_after_a_takeover
from tests.unit.test_watch_takeover import CORRECTED, SCENARIOS, paused_leader_after_a_takeover

pytestmark = pytest.mark.integration


@SCENARIOS
def test_a_leader_paused_after_its_fence_never_writes_back_an_older_version(
    nx_client, nx_settings, archived_before, purged
):
    held = paused_leader_after_a_takeover(
        nx_client, nx_settings, archived_before=archived_before, purged=purged
    )
    assert held["source"]["adresse_livraison"] == CORRECTED


@CATCH_UP_SCENARIOS
def test_a_catch_up_paused_past_its_lease_never_writes_back_an_older_version(
    nx_client, nx_settings, purged, noticed
):
    """tests/unit/test_catch_up_takeover.py's scenario at the wire: the catch-up's scan is the
    server's aggregation, its chunk's write meets the successor's copy on the `_id` (keyPattern)."""
    held = catch_up_paused_after_a_takeover(nx_client, nx_settings, purged=purged, noticed=noticed)
    assert held["source"]["adresse_livraison"] == CORRECTED
    assert held["revised_at"] is None
