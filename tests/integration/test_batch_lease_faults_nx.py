"""At the wire, batch's lease threads (a ``--partition`` share's, the cold tier's writer's) that
meet a fault the wire cannot make (anything but a PyMongoError): the run learns of it, stops at
its next chunk boundary with its checkpoint saved, and fails through the one runner in one line,
exit 1; the next run goes on. In process (``main([...])``), as tests/integration/
test_watch_threads_nx.py does for watch's: the evidence is what a user sees."""

from __future__ import annotations

import pytest
from bson.errors import InvalidBSON

from order_archiver.cli.main import main
from tests.helpers import renewals_fail_in_their_thread, seed_database

pytestmark = pytest.mark.integration


def test_a_share_lease_renewal_that_meets_no_servers_answer_fails_the_run_in_one_line(
    nx_client, nx_settings, nx_env, db_name, tmp_path, monkeypatch, capsys
):
    """The renewal thread of a ``--partition`` share's lease ended on anything but a PyMongoError
    (a lease document the driver cannot decode: bson's InvalidBSON, no PyMongoError) with a
    Python traceback; the run went on unleased until the lapse fenced it. Now: one line naming
    the share, exit 1, the report saying it ended on an error (not "a signal"), its checkpoint
    saved: the next run archives the rest of the share. (Stands for MongoDB's findAndModify
    answering a document the client cannot decode.)"""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 80, seed=95, p_anomalies=0.0)
    env = {**nx_env, "WATCH_LEASE_TTL_S": "3", "WATCH_LEASE_RENEW_S": "1", "BATCH_SIZE": "4"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    failing = renewals_fail_in_their_thread(monkeypatch, InvalidBSON("year 10000 is out of range"))
    capsys.readouterr()
    # --max-rate: the share takes several renewals' time (its first renewal a second in).
    code = main(["batch", "--run", "--partition", "0/2", "--max-rate", "8"])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: batch --partition 0/2: the renewal of its share's lease failed: unexpected "
        "InvalidBSON: year 10000 is out of range"
    ], err
    assert "stopped by a signal" not in out + err
    archive = database[nx_settings.archive_collection]
    first = archive.count_documents({})

    failing.clear()
    assert main(["batch", "--run", "--partition", "0/2"]) == 0
    assert main(["batch", "--run", "--partition", "1/2"]) == 0
    assert main(["batch", "--run"]) == 0  # the two shares made the whole archive: nothing left
    out, err = capsys.readouterr()
    assert archive.count_documents({}) > first
    assert ", archived 0" in out + err or '"archived": 0' in out + err
