"""tests/unit/test_watch_takeover.py's scenario at the wire: the archive's duplicate `_id` comes
back from the server with its `keyPattern` (the insert path; mongomock's, without it, goes
through the upsert), the lease and the token store are the server's documents."""

import pytest

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
