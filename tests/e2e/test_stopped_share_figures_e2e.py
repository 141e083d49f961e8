"""A paced ``--partition`` share ended by its stop file: its figures add up.

What it stands for: a batch run reads its chunks on a thread a few ahead of its writes
(``source.read_ahead``); where the writes are slower than the reads (a busy primary, a slow
disk: MongoDB answers each read of the record of forgotten persons, which every write of a
chunk makes, late), chunks read are waiting when the stop file ends the run at a chunk
boundary. Those are never written: the next run reads them again. A new operator's share
reported "scanned 3040, archived 2833, already archived 0, rejected 7": 200 orders (one chunk)
in no count. Scaled down: the test server answers each read of the forgotten record
``SLOW_S`` late (``NX_SLOW_READS_FILE``), longer than a chunk's time at ``--max-rate``, so
the reader is ahead when the stop file appears. The report's ``scanned`` is what this run went
through: ``archived + already_archived + revised + rejected`` (docs/commands.md), and the next
run, resumed from the checkpoint, archives the rest: the two runs' scanned add up to the share."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pymongo
import pytest

from order_archiver.orders.partition import share_of
from order_archiver.settings import Settings
from tests.conftest import ROOT, run_cli
from tests.helpers import expected_archive_ids, seed_database, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.test_server_only("reads answered late: the test server's NX_SLOW_READS_FILE"),
]

SLOW_S = 1.5  # each read of the forgotten record: longer than a chunk's second at --max-rate
RATE = 40  # --max-rate, and the batch size: a chunk a second
ORDERS = 700  # ~300 delivered in share 0 of 2: several chunks


def report_of(output: str) -> dict:
    (line,) = [line for line in output.splitlines() if line.startswith("{")]
    return json.loads(line)


def adds_up(report: dict) -> int:
    return report["archived"] + report["already_archived"] + report["revised"] + report["rejected"]


def test_a_paced_share_stopped_by_its_stop_file_counts_only_what_it_wrote(
    slow_server, slow_file, db_name, tmp_path
):
    settings = Settings(mongodb_uri=slow_server.uri, mongodb_database=db_name, log_dir="")
    with pymongo.MongoClient(slow_server.uri, tz_aware=True, serverSelectionTimeoutMS=5000) as client:
        dataset = seed_database(client[db_name], settings, ORDERS, seed=41, p_anomalies=0.0)
        share = {i for i in expected_archive_ids(dataset) if share_of(i, 2) == 0}
        assert len(share) > 5 * RATE
        env = {
            "MONGODB_URI": slow_server.uri,
            "MONGODB_DATABASE": db_name,
            "LOG_DIR": "",
            "MONGODB_TIMEOUT_MS": "10000",
        }
        stop = tmp_path / "stop"
        args = [
            "--partition",
            "0/2",
            "--max-rate",
            str(RATE),
            "--batch-size",
            str(RATE),
            "--stop-file",
            str(stop),
        ]
        slow_file.write_text(f"{settings.forgotten_collection}={SLOW_S}\n")
        out = tmp_path / "first.out"
        with out.open("w") as sink:
            first = subprocess.Popen(
                [sys.executable, str(ROOT / "main.py"), "batch", "--run", "--json", *args],
                env={**os.environ, **env},
                cwd=tmp_path,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )
        try:
            archive = client[db_name][settings.archive_collection]
            wait_for(lambda: archive.count_documents({}) > 0, timeout=120, what="a first chunk written")
            stop.touch()  # the writer is at its next chunk; the reader ahead of it
            assert first.wait(timeout=120) == 0, out.read_text()
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(timeout=30)
        stopped = report_of(out.read_text())
        assert stopped["ended"] == "stop_file"
        written = archive.count_documents({})
        assert 0 < written < len(share), "the stop did not come midway"
        assert stopped["archived"] == written
        assert stopped["scanned"] == adds_up(stopped), stopped  # no chunk read and left unwritten counted

        slow_file.write_text("")
        stop.unlink()
        rest = run_cli("batch", "--run", "--json", *args, env=env, cwd=tmp_path)
        assert rest.returncode == 0, rest.stdout + rest.stderr
        resumed = report_of(rest.stdout)
        assert resumed["resumed_from"] is not None
        assert resumed["scanned"] == adds_up(resumed)
        assert stopped["scanned"] + resumed["scanned"] == len(share)
        assert archive.count_documents({}) == len(share)
