"""#34 items 3 and 4: a batch run ends cleanly at a chunk boundary when its time is up
(--max-runtime) or its stop file exists (--stop-file, checked between chunks, as pt-archiver's
sentinel); it saves where it is, exit 0, and the next run goes on from there. Every report says
why the run ended."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

from order_archiver.batch.job import BatchArchiver
from order_archiver.batch.limits import RunLimits
from order_archiver.batch.report import BatchOptions
from order_archiver.settings import Settings
from tests.helpers import assert_no_duplicates, expected_archive_ids, seed_database

BASE = Settings(simulation=True, log_dir="")


def stopping_after_its_first_chunk(archiver: BatchArchiver, stop: Path) -> BatchArchiver:
    """``archiver``, its stop file put there after its first chunk is written (between chunks:
    the run ends after that one)."""
    write_chunk = archiver.write_chunk

    def write_then_stop(*chunks):
        write_chunk(*chunks)
        stop.touch()

    archiver.write_chunk = write_then_stop  # type: ignore[method-assign]
    return archiver


def test_a_stop_file_ends_the_run_at_a_chunk_boundary_and_the_next_run_goes_on(mongo, tmp_path):
    dataset = seed_database(mongo[BASE.mongodb_database], BASE, 400, seed=9, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    stop = tmp_path / "stop"
    options = BatchOptions(run=True, batch_size=50, stop_file=str(stop))
    first = stopping_after_its_first_chunk(BatchArchiver(mongo, BASE, options), stop).run()
    archive = mongo[BASE.mongodb_database][BASE.archive_collection]
    assert (first.ended, first.completed) == ("stop_file", False)
    assert 0 < archive.count_documents({}) < len(expected)
    assert "ended on its stop file (--stop-file), the next run goes on from there" in first.summary_line()
    assert json.loads(json.dumps(first.as_dict(), default=str))["ended"] == "stop_file"
    stop.unlink()
    second = BatchArchiver(mongo, BASE, BatchOptions(run=True, batch_size=50, stop_file=str(stop))).run()
    assert (second.ended, second.completed) == ("completed", True)
    assert second.resumed_from is not None  # from where the first one ended, not from the start
    assert {d["_id"] for d in archive.find({}, {"_id": 1})} == expected
    assert_no_duplicates(archive)


def test_the_time_limit_is_the_processs_run_time():
    limits = RunLimits(timedelta(seconds=30), None, started=time.monotonic() - 31)
    assert limits.reached() == "max_runtime"
    assert RunLimits(timedelta(hours=1), None).reached() is None
    assert RunLimits(None, None).reached() is None


def test_a_completed_run_says_so(mongo):
    seed_database(mongo[BASE.mongodb_database], BASE, 60, seed=9, p_anomalies=0.0)
    report = BatchArchiver(mongo, BASE, BatchOptions(run=True)).run()
    assert report.ended == "completed"


@pytest.mark.parametrize(
    ("argument", "said"),
    [
        (["--max-runtime", "0s"], "argument --max-runtime: must be longer than 0"),
        (["--stop-file", "/nowhere/stop"], "--stop-file /nowhere/stop: the folder /nowhere does not exist"),
        (
            ["--stop-file", "/tmp"],
            "--stop-file /tmp: a folder; name a file in it",
        ),  # it exists: every run would stop
    ],
)
def test_a_limit_that_cannot_work_is_refused_before_anything_runs(argument, said, capsys, tmp_path: Path):
    from order_archiver.cli.main import main

    try:
        code = main(["batch", "--simulation", "--count", "10", *argument])
    except SystemExit as exc:  # argparse's own refusal: one line, exit 2
        code = int(exc.code or 0)
    assert code == 2
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--max-runtime", "--max-lag"])
def test_a_zero_limit_is_refused_in_the_same_words_with_or_without_a_unit(flag, capsys):
    """A new user's try: `--max-runtime 0` said "expected a duration like 90s, 15m, 24h or 7d;
    got '0'", `--max-runtime 0s` "must be longer than 0 (leave it out for no limit)". Zero is
    refused (docs/commands.md: "`0` ... refused (exit 2)"), in one line, the same for each."""
    from order_archiver.cli.main import main

    said = {}
    for value in ("0", "0s", "0m", "0d"):
        with pytest.raises(SystemExit) as refused:
            main(["batch", "--simulation", "--count", "10", flag, value])
        assert refused.value.code == 2
        said[value] = capsys.readouterr().err.strip().splitlines()
    assert said["0"] == said["0s"] == said["0m"] == said["0d"]
    [line] = said["0"]
    assert line.endswith(f"argument {flag}: must be longer than 0 (leave it out for no limit) (see --help)")


def test_a_zero_setting_reads_as_zero_with_or_without_a_unit(tmp_path):
    """The settings alike: BATCH_MAX_LAG=0 refused as 0s is; PURGE_AFTER=0 is 0d."""
    from order_archiver.errors import ConfigError
    from order_archiver.settings import load_settings

    no_file = tmp_path / "empty.env"
    no_file.write_text("")
    no_file.chmod(0o600)
    uri = {"MONGODB_URI": "mongodb://localhost/"}
    said = []
    for value in ("0", "0s"):
        with pytest.raises(ConfigError) as refused:
            load_settings(str(no_file), environ={**uri, "BATCH_MAX_LAG": value})
        said.append(str(refused.value))
    assert said[0] == said[1]
    settings, _ = load_settings(str(no_file), environ={**uri, "PURGE_AFTER": "0"})
    assert str(settings.purge_after) == "0d"


def test_a_stop_file_there_at_the_start_stops_the_run_before_it_writes_anything(mongo, tmp_path):
    """As pt-archiver's sentinel: a run does not start while it exists (it archived a first
    chunk, 100 orders, before it looked)."""
    seed_database(mongo[BASE.mongodb_database], BASE, 200, seed=9, p_anomalies=0.0)
    stop = tmp_path / "stop"
    stop.touch()
    report = BatchArchiver(mongo, BASE, BatchOptions(run=True, batch_size=50, stop_file=str(stop))).run()
    assert (report.ended, report.completed, report.archived) == ("stop_file", False, 0)
    database = mongo[BASE.mongodb_database]
    assert BASE.archive_collection not in database.list_collection_names()  # not even an index


def test_a_stop_file_there_at_the_start_stops_a_share_before_it_takes_its_lease(mongo, tmp_path):
    """--partition K/N as without it: the share's lease (a write in the checkpoints) was taken
    before the stop file was looked for."""
    from order_archiver.orders.partition import Partition

    seed_database(mongo[BASE.mongodb_database], BASE, 200, seed=9, p_anomalies=0.0)
    database = mongo[BASE.mongodb_database]
    before = set(database.list_collection_names())
    stop = tmp_path / "stop"
    stop.touch()
    options = BatchOptions(run=True, batch_size=50, stop_file=str(stop), partition=Partition(1, 3))
    report = BatchArchiver(mongo, BASE, options).run()
    assert (report.ended, report.completed, report.archived) == ("stop_file", False, 0)
    assert set(database.list_collection_names()) == before  # no lease, no checkpoint, no index


def test_a_stop_file_left_behind_is_said_on_every_run(capsys, tmp_path: Path):
    """A new user's try: a stop file never removed cut every later `-q` run short, silently."""
    from order_archiver.cli.main import main

    stop = tmp_path / "stop"
    stop.touch()
    code = main(["batch", "--simulation", "--count", "10", "-q", "--stop-file", str(stop)])
    assert code in (0, 3)
    assert f"--stop-file {stop} exists already: this run writes nothing; remove it" in capsys.readouterr().err


def test_a_run_ended_by_a_limit_claims_no_total_it_did_not_see(mongo, tmp_path):
    """A run stopped before the end of its pass saw part of it: it said "of 800 delivered in
    the window" (of 4,730), and a resumed one counted every order it did not reach as already
    archived (4,119 where 3,300 were). The pass's totals are known only when it completes."""
    seed_database(mongo[BASE.mongodb_database], BASE, 400, seed=9, p_anomalies=0.0)
    stop = tmp_path / "stop"
    options = BatchOptions(run=True, batch_size=50, stop_file=str(stop))
    first = stopping_after_its_first_chunk(BatchArchiver(mongo, BASE, options), stop).run()
    assert first.ended == "stop_file"
    assert first.delivered is None
    assert " delivered " not in first.summary_line()
    stop.unlink()
    second = stopping_after_its_first_chunk(BatchArchiver(mongo, BASE, options), stop).run()
    assert second.ended == "stop_file"
    assert (second.delivered, second.already_archived) == (None, 0)


def test_the_purge_stops_at_a_chunk_boundary_too(mongo, tmp_path):
    """The purge's chunks are chunk boundaries: a stop file (or the deadline) ends it before its
    next deletes, exit 0, the counts so far kept; the next run's purge deletes the rest."""
    settings = BASE
    seed_database(mongo[settings.mongodb_database], settings, 300, seed=11, p_anomalies=0.0)
    BatchArchiver(mongo, settings, BatchOptions(run=True, batch_size=50)).run()
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    delivered = orders.count_documents({"status": settings.delivered_status})
    stop = tmp_path / "stop"
    options = BatchOptions(run=True, batch_size=50, purge_source=True, stop_file=str(stop))
    stopping = BatchArchiver(mongo, settings, options)
    source_purge = stopping.source_purge

    def purge_then_stop():
        stop.touch()  # the pass is done (nothing new): the purge's first chunk meets it
        return source_purge()

    stopping.source_purge = purge_then_stop
    stopped = stopping.run()
    assert (stopped.ended, stopped.purge_ran, stopped.purged) == ("stop_file", True, 0)
    assert orders.count_documents({"status": settings.delivered_status}) == delivered
    stop.unlink()
    after = BatchArchiver(mongo, settings, options).run()
    assert (after.ended, after.purged) == ("completed", delivered)


def stale_after_first_chunk(monkeypatch, stop: Path, from_the_start: bool = False) -> None:
    """The stop file's folder on an NFS mount whose server restarted: every look at ``stop``
    answered ESTALE (errno 116, "Stale file handle": what stat(2) returns on such a mount), from
    the first chunk written on (or from the start)."""
    import errno
    import os

    stale = [from_the_start]
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if stale[0] and str(self) == str(stop):
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    write_chunk = BatchArchiver.write_chunk

    def written_then_stale(self, *chunks):
        written = write_chunk(self, *chunks)
        stale[0] = True
        return written

    monkeypatch.setattr(BatchArchiver, "write_chunk", written_then_stale)


def test_a_stop_file_that_cannot_be_looked_for_stops_the_run_in_one_line(monkeypatch, capsys, tmp_path):
    """Was: "error: unexpected OSError: [Errno 116] Stale file handle: '.../stop'" (exit 1). A
    stop file that cannot be looked for stops the run (whoever set it may have put it there):
    one line naming it and what to fix, exit 1; what was archived stays, the next run goes on."""
    from order_archiver.cli.main import main

    stop = tmp_path / "stop"
    stale_after_first_chunk(monkeypatch, stop)
    code = main(
        ["batch", "--simulation", "--count", "400", "--batch-size", "50", "--run", "--stop-file", str(stop)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == (
        f"error: --stop-file {stop}: cannot be looked for (Stale file handle): the run stops here, as if "
        "it were there; fix its folder (a stale NFS mount: remount it) or give a --stop-file on a local "
        "disk, then run again"
    )
    assert not [line for line in err if "unexpected" in line or "Traceback" in line]


def test_a_stop_file_that_cannot_be_looked_for_at_the_start_is_refused_before_anything(
    monkeypatch, capsys, tmp_path
):
    from order_archiver.cli.main import main

    stop = tmp_path / "stop"
    stale_after_first_chunk(monkeypatch, stop, from_the_start=True)
    code = main(["batch", "--simulation", "--count", "50", "--run", "--stop-file", str(stop)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        f"error: --stop-file {stop}: cannot be looked for (Stale file handle): refused before anything "
        "is written; fix its folder (a stale NFS mount: remount it) or give a --stop-file on a local "
        "disk, then run again"
    ]


def test_a_token_file_in_a_folder_that_does_not_exist_is_refused_and_nothing_made(tmp_path: Path, capsys):
    """A new operator's typo, RESUME_TOKEN_FILE=/nonexistent/dir/tok.json: the folder was made,
    and the watcher started a whole catch-up under a new token, the saved one elsewhere. Refused
    as a --stop-file in a missing folder is: one line, exit 2, before any connection (none here:
    nothing listens on the URI's port), nothing made."""
    from order_archiver.cli.main import main

    folder = tmp_path / "nonexistent" / "dir"
    env = {"MONGODB_URI": "mongodb://127.0.0.1:9/", "RESUME_TOKEN_FILE": str(folder / "tok.json")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.setenv("LOG_DIR", "")
        (tmp_path / "empty.env").write_text("")
        code = main(["watch", "--env-file", str(tmp_path / "empty.env")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        f"error: RESUME_TOKEN_FILE {folder / 'tok.json'}: the folder {folder} does not exist; "
        "create it or pick another path"
    ]
    assert not (tmp_path / "nonexistent").exists()
