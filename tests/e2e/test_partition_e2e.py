"""`batch --run --partition K/4` (#34 item 5) as a user runs it: four CLI processes started
together on one test server make, document for document, the archive one process makes of
the same data; one of them killed (SIGKILL) midway and started again goes on from its own
checkpoint (after its lease, left behind, expires), and the result is still exact; then the
purge by each share deletes from the source only that share's orders; bad partitions are
refused before anything is written. The CLI runs as a subprocess on nx-27017."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from order_archiver.batch.partition import batch_checkpoint_key
from order_archiver.batch.report import BatchOptions
from order_archiver.orders.partition import Partition, share_of
from tests.conftest import ROOT, run_cli
from tests.helpers import assert_no_duplicates, expected_archive_ids, seed_database, wait_for

pytestmark = pytest.mark.e2e

N = 4
RUN_SPECIFIC = ("archived_at", "archived_by")  # when and by what a document was first written
# A killed process's lease expires within WATCH_LEASE_TTL_S: short here, so the restart waits little.
LEASE = {"WATCH_LEASE_TTL_S": "4", "WATCH_LEASE_RENEW_S": "2"}


class Share:
    """``main.py batch --run --json --partition K/4`` as a subprocess, its output in a file."""

    def __init__(self, env: dict[str, str], cwd: Path, k: int, *extra: str) -> None:
        self.path = cwd / f"share-{k}-{os.urandom(3).hex()}.out"
        with self.path.open("w") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "main.py"),
                    "batch",
                    "--run",
                    "--json",
                    "--partition",
                    f"{k}/{N}",
                    *extra,
                ],
                env={**os.environ, **env},
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self, timeout: float = 180) -> tuple[int, str]:
        return self.process.wait(timeout=timeout), self.path.read_text()

    def end(self) -> None:
        """At the test's end whatever happened: no process left behind."""
        if self.running():
            self.process.kill()
            self.process.wait(timeout=30)


def report_of(output: str) -> dict:
    """The --json report: the one line of the output that is a JSON object (logs go to stderr)."""
    (line,) = [line for line in output.splitlines() if line.startswith("{")]
    return json.loads(line)


def documents(collection) -> dict:
    return {d["_id"]: {k: v for k, v in d.items() if k not in RUN_SPECIFIC} for d in collection.find({})}


def test_four_processes_make_the_archive_one_makes_one_killed_and_restarted(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    shared, single = nx_client[db_name], nx_client[f"{db_name}_one"]
    dataset = seed_database(shared, nx_settings, 1500, seed=34, p_anomalies=0.1)
    seed_database(single, nx_settings, 1500, seed=34, p_anomalies=0.1)  # the same orders, same _ids
    env = {**nx_env, **LEASE}

    one = run_cli("batch", "--run", "--json", env={**env, "MONGODB_DATABASE": f"{db_name}_one"}, cwd=tmp_path)
    assert one.returncode == 3, one.stderr  # the dirty data's invalid orders, listed
    # Four together, slowed (--max-rate) so that share 2 can be killed midway.
    processes = {k: Share(env, tmp_path, k, "--batch-size", "20", "--max-rate", "60") for k in range(N)}
    try:
        check_four(processes, nx_client, nx_settings, env, db_name, tmp_path, dataset)
    finally:
        for process in processes.values():
            process.end()
        nx_client.drop_database(f"{db_name}_one")


def check_four(processes, nx_client, nx_settings, env, db_name, tmp_path, dataset) -> None:
    shared, single = nx_client[db_name], nx_client[f"{db_name}_one"]
    expected = expected_archive_ids(dataset)
    share_2 = {one_id for one_id in expected if share_of(one_id, N) == 2}
    archive = shared["Commande_archive"]

    def archived_of_share_2() -> int:
        return archive.count_documents({"_id": {"$in": list(share_2)}})

    wait_for(lambda: archived_of_share_2() >= len(share_2) // 3, timeout=60, what="share 2 a third done")
    assert processes[2].running(), "share 2 ended before it could be killed"
    processes[2].process.send_signal(signal.SIGKILL)
    assert processes[2].finish()[0] == -signal.SIGKILL
    assert 0 < archived_of_share_2() < len(share_2), "the kill was not midway"
    key = batch_checkpoint_key(nx_settings, BatchOptions(partition=Partition(2, N)))
    assert shared["archiver_checkpoints"].find_one({"_id": key})["pass"]["last_id"] is not None

    processes[2] = Share(env, tmp_path, 2, "--batch-size", "50")  # started again
    code, output = processes[2].finish()
    assert code == 3, output
    again = report_of(output)
    assert again["partition"] == "2/4"
    assert again["resumed_from"] is not None  # its own checkpoint, not a new pass
    for k in (0, 1, 3):
        code, output = processes[k].finish()
        assert code in (0, 3), output  # 3: a share that met an invalid order
        assert report_of(output)["partition"] == f"{k}/{N}"

    # Document for document the archive one process made (less when and by what).
    assert documents(archive) == documents(single["Commande_archive"])
    assert set(documents(archive)) == expected
    assert_no_duplicates(archive)
    rejected = {d["_id"] for d in shared["archiver_rejects"].find({}, {"_id": 1})}
    assert rejected == {d["_id"] for d in single["archiver_rejects"].find({}, {"_id": 1})}
    assert rejected
    # Each share's own checkpoint, its pass complete; none without a partition.
    states = list(shared["archiver_checkpoints"].find({"kind": "batch"}))
    assert sorted(s["_id"].rsplit(":", 1)[1] for s in states) == [f"{k}-of-{N}" for k in range(N)]
    assert all(s["pass"] is None and s["high_water"] is not None for s in states)

    # The purge by each share deletes only that share's orders.
    orders = shared["Commande"]
    every = {d["_id"] for d in orders.find({}, {"_id": 1})}
    for k in range(N):
        purge = run_cli(
            "batch", "--run", "--json", "--purge-source", "--partition", f"{k}/{N}", env=env, cwd=tmp_path
        )
        assert purge.returncode == 0, purge.stderr
        gone = every - {d["_id"] for d in orders.find({}, {"_id": 1})}
        assert gone == {one_id for one_id in expected if share_of(one_id, N) <= k}
        assert report_of(purge.stdout)["purged"] == len({i for i in gone if share_of(i, N) == k})
    whole = run_cli(
        "batch", "--run", "--purge-source", env={**env, "MONGODB_DATABASE": f"{db_name}_one"}, cwd=tmp_path
    )
    assert whole.returncode == 0, whole.stderr
    assert {d["_id"] for d in orders.find({}, {"_id": 1})} == {
        d["_id"] for d in single["Commande"].find({}, {"_id": 1})
    }


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (["--partition", "4/4"], "argument --partition: expected K/N with 0 <= K < N, got '4/4'"),
        (["--partition=-1/3"], "argument --partition: expected K/N, share K of N"),
        (["--partition", "-1/3"], "argument --partition: expected K/N, share K of N"),  # a value, not a flag
        (["--partition", "a/b"], "argument --partition: expected K/N, share K of N"),
        (["--partition", "0/0"], "argument --partition: expected K/N with N at least 1"),
        ({"BATCH_PARTITION": "4/4"}, "BATCH_PARTITION"),
        ({"BATCH_PARTITION": "$(JOB_COMPLETION_INDEX)/4"}, "define JOB_COMPLETION_INDEX before it"),
    ],
)
def test_a_partition_outside_its_range_is_refused_before_anything_is_written(
    nx_client, nx_env, db_name, tmp_path, given, says
):
    args, env = (given, {}) if isinstance(given, list) else ([], given)
    refused = run_cli("batch", "--run", *args, env={**nx_env, **env}, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert says in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert nx_client[db_name].list_collection_names() == []  # nothing written


def test_a_second_process_given_a_share_already_running_is_refused(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """Two pods of one Job index at once (a retry while the first still runs): the second waits
    one lease life (WATCH_LEASE_TTL_S), then is refused (exit 2) rather than archive the share twice."""
    seed_database(nx_client[db_name], nx_settings, 2000, seed=35)  # ~300 orders in share 1
    env = {**nx_env, **LEASE}
    first = Share(
        env, tmp_path, 1, "--batch-size", "10", "--max-rate", "10"
    )  # ~30 s: killed once the second is refused
    key = batch_checkpoint_key(nx_settings, BatchOptions(partition=Partition(1, N)))
    wait_for(
        lambda: nx_client[db_name]["archiver_checkpoints"].find_one({"_id": f"lease:{key}"}) is not None,
        timeout=30,
        what="the first process's lease",
    )
    try:
        second = run_cli("batch", "--run", "--partition", f"1/{N}", env=env, cwd=tmp_path)
        assert first.running(), "the first process ended: the test proves nothing"
    finally:
        first.end()
    assert second.returncode == 2, second.stderr
    assert "another process is archiving this share" in second.stderr
