"""tests/unit/test_watch_line_totals.py at the wire: the periodic line's totals add up when
the server decides what each order ended as (the insert refused on a reused number, 11000 with
its keyPattern, rejects the order; a replay's insert refused on its `_id` is compared)."""

import pytest

from tests.unit.test_watch_line_totals import a_watcher_that_caught_up_then_streamed, the_line

pytestmark = pytest.mark.integration


def test_the_line_says_each_event_once_and_the_catch_up_apart(nx_client, nx_settings, caplog):
    watcher = a_watcher_that_caught_up_then_streamed(nx_client, nx_settings)
    message = the_line(watcher, caplog).getMessage()
    assert message.endswith(
        "in all 6 events: 0 archived, 1 already archived, 1 revised, 1 rejected, 3 skipped; "
        "catch-up: 24 orders: 24 archived, 0 already archived, 0 revised, 0 rejected"
    ), message
