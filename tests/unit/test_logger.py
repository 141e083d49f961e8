import errno
import gc
import json
import logging
import os
import subprocess
import sys
import warnings

import pytest

from order_archiver.logs import LOG_FILE_MAX_BYTES, LOG_FILE_NAME, get_logger, setup_logging
from order_archiver.settings import Settings

SECRET = "Sup3r-Secret_pw"
URI = f"mongodb://archiver:{SECRET}@db.example.net:27017/?authSource=admin"


@pytest.fixture
def configure(tmp_path):
    def configure(**changes):
        settings = Settings(mongodb_uri=URI, log_dir=str(tmp_path / "logs"), **changes)
        return setup_logging(settings)

    yield configure
    for handler in list(logging.getLogger().handlers):
        if getattr(handler, "_order_archiver", False):
            logging.getLogger().removeHandler(handler)
            handler.close()


def log_everything_dangerous():
    log = get_logger("test")
    log.info("connecting to %s", URI)
    log.warning("config says password=%s and pwd: %s", SECRET, SECRET)
    logging.getLogger("pymongo.connection").error("raw driver text with %s inside", SECRET)
    try:
        raise RuntimeError(f"failure talking to {URI}")
    except RuntimeError:
        log.exception("it failed")
    log.info("structured", extra={"uri": URI, "orders": 3})


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_never_reach_stderr_or_the_log_file(configure, capsys, tmp_path, log_format):
    configure(log_format=log_format, log_level="DEBUG")
    log_everything_dangerous()
    stderr = capsys.readouterr().err
    log_file = (tmp_path / "logs" / LOG_FILE_NAME).read_text()
    for output in (stderr, log_file):
        assert "it failed" in output  # the records are there...
        assert SECRET not in output  # ...without the secret
        assert "archiver:***@db.example.net" in output


def test_json_lines_have_the_standard_fields_and_extras(configure, capsys, tmp_path):
    configure(log_format="json")
    get_logger("batch").info("chunk written", extra={"orders": 100})
    lines = (tmp_path / "logs" / LOG_FILE_NAME).read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["message"] == "chunk written"
    assert record["level"] == "INFO"
    assert record["logger"] == "order_archiver.batch"
    assert record["orders"] == 100
    assert "time" in record
    assert record["pid"] == os.getpid()  # the units share one log folder (text lines: [pid])


def test_log_file_rotates_by_size(configure, tmp_path):
    configure()
    handler = next(h for h in logging.getLogger().handlers if hasattr(h, "maxBytes"))
    assert handler.maxBytes > 0
    assert handler.backupCount > 0


def test_quiet_keeps_warnings_only_on_console(tmp_path, capsys):
    settings = Settings(mongodb_uri=URI, log_dir="")
    setup_logging(settings, verbosity=-1)
    get_logger().info("chatty")
    get_logger().warning("important")
    err = capsys.readouterr().err
    assert "important" in err
    assert "chatty" not in err


FORGED = "6553f1c2\n2026-12-06T10:00:00+00:00 ERROR   archive DELETED by admin"
ANSI = "CMD-\x1b[2J\x1b[31m000042\u202e"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_data_in_a_log_line_cannot_forge_a_line_nor_drive_the_terminal(
    configure, capsys, tmp_path, log_format
):
    """#31 item 5: a string ``_id`` holding a newline wrote a whole log line of its own; a
    numero holding ANSI escapes (clear the screen, red) or a right-to-left override reached the
    terminal raw. Each is written as its escape, one record one line."""
    configure(log_format=log_format)
    get_logger("batch").warning("order %s rejected: numero %s", FORGED, ANSI)
    stderr = capsys.readouterr().err
    log_file = (tmp_path / "logs" / LOG_FILE_NAME).read_text()
    for output in (stderr, log_file):
        (line,) = [one for one in output.splitlines() if "rejected" in one]
        assert "archive DELETED by admin" in line  # on the record's own line, not one of its own
        assert not any(one.startswith("2026-12-06T10:00:00") for one in output.splitlines())
        assert "\x1b" not in output
        assert "\u202e" not in output
    text = stderr if log_format == "text" else json.loads(log_file.splitlines()[-1])["message"]
    assert "6553f1c2\\n2026" in text
    assert "CMD-\\x1b[2J\\x1b[31m000042\\u202e" in text


def test_a_report_line_holding_control_characters_is_printed_escaped(capsys):
    """``rejects`` printed a numero holding ANSI escape codes as it was."""
    from order_archiver.cli.main import _print_report

    class Report:
        def lines(self) -> list[str]:
            return [f"{ANSI}: numero_commande missing"]

    _print_report(Report(), as_json=False)
    out = capsys.readouterr().out
    assert out == "CMD-\\x1b[2J\\x1b[31m000042\\u202e: numero_commande missing\n"


# Another process logging into the same LOG_DIR (a batch, a status, beside the watcher).
OTHER_PROCESS = """
import sys
import warnings
from order_archiver.logs import get_logger, setup_logging
from order_archiver.settings import Settings
setup_logging(Settings(log_dir=sys.argv[1]))
get_logger("batch").info(sys.argv[2])
"""


def test_processes_sharing_the_log_file_rotate_it_once_and_follow_the_rotation(configure, tmp_path):
    """RotatingFileHandler is not safe across processes: a watcher (this process) that a batch
    rotated under it wrote into the renamed file and rotated it again, leaving the batch's
    lines in a tiny backup. One rotation, and every process's next line in the current file."""
    configure()
    folder = tmp_path / "logs"
    current = folder / LOG_FILE_NAME
    get_logger("watch").info("watcher started")
    with current.open("a") as padding:  # the file at its size limit
        padding.write(("x" * 99 + "\n") * (LOG_FILE_MAX_BYTES // 100))
    for line in ("batch ran", "status ran"):
        other = subprocess.run(
            [sys.executable, "-c", OTHER_PROCESS, str(folder), line],
            capture_output=True,
            text=True,
            check=False,
        )
        assert other.returncode == 0, other.stderr
    get_logger("watch").info("delivery archived")
    assert not (folder / f"{LOG_FILE_NAME}.2").exists()  # one rotation
    assert (folder / f"{LOG_FILE_NAME}.1").stat().st_size > LOG_FILE_MAX_BYTES - 1000
    text = current.read_text()
    assert "batch ran" in text
    assert "status ran" in text
    assert "delivery archived" in text


def test_the_log_file_is_written_where_the_os_has_no_nofollow_nor_fchmod(configure, tmp_path, monkeypatch):
    """Windows (deploy/windows/NSSM.md sets LOG_DIR): no ``os.O_NOFOLLOW``, no ``os.fchmod``
    before Python 3.13, no ``fcntl``. Every command with a LOG_DIR failed there on the
    AttributeError, before its first line; the log file, the samples and --metrics-file are
    written as they are (the folder's rights their guard)."""
    import order_archiver.logs as logs
    from order_archiver.reporting.metrics import write_batch_metrics
    from order_archiver.settings import write_private

    monkeypatch.delattr(os, "O_NOFOLLOW")
    monkeypatch.delattr(os, "fchmod")
    monkeypatch.setattr(logs, "fcntl", None)
    configure()
    get_logger("test").warning("written on Windows")
    assert "written on Windows" in (tmp_path / "logs" / LOG_FILE_NAME).read_text()
    write_private(tmp_path / "samples.json", "[]")
    assert (tmp_path / "samples.json").read_text() == "[]"
    from order_archiver.batch.report import BatchReport

    write_batch_metrics(str(tmp_path / "batch.prom"), BatchReport(dry_run=False), True)
    assert "order_archiver_batch_last_success 1.0" in (tmp_path / "batch.prom").read_text()


class StandInMsvcrt:
    """Windows' ``msvcrt`` as far as the rotation's lock uses it, as the UCRT's ``_locking`` does
    (ucrt/lowio/locking.cpp): ``LockFileEx`` on ``nbytes`` from the file's position, once for
    ``LK_NBLCK`` (a lock violation, ERROR_LOCK_VIOLATION, is EACCES), up to 10 times a second
    apart for ``LK_LOCK``, which then says EDEADLOCK whatever the OS said. Each call recorded with
    the lock file's position and whether the record was in the log file yet. ``busy``: the next
    ``LockFileEx`` calls find another process holding the byte; ``refuses``: the folder takes no
    lock (a share whose server refuses them: ERROR_NOT_SUPPORTED, EINVAL). ``slept_s``: the
    seconds ``LK_LOCK`` slept between its tries. ``calls_at_most``: a loop that never ends is
    stopped there (``Looping``)."""

    LK_UNLCK, LK_LOCK, LK_NBLCK = 0, 1, 2

    def __init__(self, log_file, busy=0, refuses=False, calls_at_most=1000):
        self.log_file, self.busy, self.refuses, self.calls = log_file, busy, refuses, []
        self.slept_s, self.calls_at_most = 0, calls_at_most

    def locking(self, fd, mode, nbytes):
        written = self.log_file.exists() and "written on Windows" in self.log_file.read_text()
        self.calls.append((mode, os.lseek(fd, 0, os.SEEK_CUR), nbytes, written))
        if len(self.calls) > self.calls_at_most:
            raise Looping(f"{len(self.calls)} calls to msvcrt.locking for one record")
        if mode == self.LK_UNLCK:
            return
        for attempt in range(10 if mode == self.LK_LOCK else 1):
            if attempt:
                self.slept_s += 1
            if self.refuses:
                error = errno.EINVAL
            elif self.busy:
                self.busy -= 1
                error = errno.EACCES
            else:
                return
        if mode == self.LK_LOCK:
            error = errno.EDEADLK
        raise OSError(error, os.strerror(error))


class Looping(Exception):
    """The stand-in's way out of a lock tried forever."""


def test_the_rotation_lock_on_windows_locks_and_unlocks_the_same_byte_around_each_write(
    configure, tmp_path, monkeypatch
):
    """Review: the lock that makes processes sharing LOG_DIR rotate the file once was a no-op on
    Windows (no ``fcntl``), where the token file's lock uses ``msvcrt.locking``. Windows is not
    tested here: a stand-in ``msvcrt`` (the branch Windows takes: no ``fcntl``, an ``msvcrt``)
    shows the byte locked before the record is written and unlocked after, the same byte (a
    range starts at the file's position), and a byte another process holds tried again rather
    than written unlocked, without LK_LOCK's whole second between tries (a watcher's loop logging
    beside a batch run would stop a second at each collision). Two processes on Linux rotating
    once: test_processes_sharing_the_log_file_rotate_it_once_and_follow_the_rotation."""
    import order_archiver.logs as logs

    stand_in = StandInMsvcrt(tmp_path / "logs" / LOG_FILE_NAME)
    monkeypatch.setattr(logs, "fcntl", None)
    monkeypatch.setattr(logs, "msvcrt", stand_in, raising=False)
    configure()
    stand_in.calls.clear()  # the set-up's own try of the lock (a folder that takes none is said then)
    stand_in.busy = 3
    get_logger("test").warning("written on Windows")
    *tries, last = stand_in.calls
    assert last == (StandInMsvcrt.LK_UNLCK, 0, 1, True)
    assert tries
    assert all(call[1:] == (0, 1, False) for call in tries)
    assert stand_in.busy == 0
    assert stand_in.slept_s == 0
    assert "written on Windows" in (tmp_path / "logs" / LOG_FILE_NAME).read_text()


def test_a_log_folder_on_windows_that_takes_no_lock_is_written_without_it(
    configure, tmp_path, monkeypatch, capsys
):
    """Review: ``LK_LOCK`` says EDEADLOCK after its 10 tries whatever the OS said (ucrt's
    locking.cpp), and the rotation's lock took EDEADLOCK for "another process holds it" and
    tried again, forever: a LOG_DIR on a share that takes no lock (ERROR_NOT_SUPPORTED) hung
    every command at its first log line, 10 s a try (here: stopped after 1,000 calls). Said once
    and written without the lock, as on Linux (ENOLCK)."""
    import order_archiver.logs as logs

    stand_in = StandInMsvcrt(tmp_path / "logs" / LOG_FILE_NAME, refuses=True)
    monkeypatch.setattr(logs, "fcntl", None)
    monkeypatch.setattr(logs, "msvcrt", stand_in, raising=False)
    configure()
    get_logger("test").warning("written on Windows")
    assert "written on Windows" in (tmp_path / "logs" / LOG_FILE_NAME).read_text()
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "written without its lock" in line]
    assert len(said) == 1
    assert "(Invalid argument)" in said[0]
    assert len(stand_in.calls) == 1  # tried once, at the set-up


def test_a_lock_file_that_cannot_be_opened_leaves_no_log_file_open(configure, tmp_path, capsys):
    """Review: the log file was opened before its lock file; a lock file that cannot be opened
    (here a folder in its place: EISDIR) raised out of the handler's constructor with the log
    file's stream still open, left to the garbage collector (a ResourceWarning; a leaked
    descriptor until then). The commands go on without a log file, said in one line."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / f"{LOG_FILE_NAME}.lock").mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        configure()
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []
    assert f"warning: no log file in {tmp_path / 'logs'}: Is a directory" in capsys.readouterr().err
    assert not any(hasattr(h, "maxBytes") for h in logging.getLogger().handlers)


class NoLocksFcntl:
    """``fcntl`` on a folder that takes no lock (NFS whose lock service, lockd/statd, is not
    running: flock fails with ENOLCK, "No locks available"), from the ``fail_after``-th
    ``LOCK_EX`` on (0: from the first)."""

    LOCK_EX, LOCK_UN = 2, 8

    def __init__(self, fail_after=0):
        self.fail_after = fail_after

    def flock(self, fd, operation):
        if operation == self.LOCK_EX:
            if self.fail_after <= 0:
                raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
            self.fail_after -= 1


@pytest.mark.parametrize("fail_after", [0, 3], ids=["from-the-start", "lost-midway"])
def test_a_log_folder_that_takes_no_lock_is_written_without_it_and_said_once(
    configure, tmp_path, monkeypatch, capsys, fail_after
):
    """Review: the rotation's lock raised out of the handler's emit (no ``handleError`` around
    it): on a LOG_DIR that takes no lock (an NFS volume whose lock service is not running),
    every log call of every command raised ENOLCK into the code that logged, from the first. The records are written (a run never fails on its log file), the
    rotation no longer agreed between processes, said once on stderr in one line."""
    import order_archiver.logs as logs

    monkeypatch.setattr(logs, "fcntl", NoLocksFcntl(fail_after))
    configure()
    for n in range(5):
        get_logger("test").warning("line %d on NFS", n)
    text = (tmp_path / "logs" / LOG_FILE_NAME).read_text()
    assert all(f"line {n} on NFS" in text for n in range(5))
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "written without its lock" in line]
    assert said == [
        f"warning: the log file {tmp_path / 'logs' / LOG_FILE_NAME} is written without its lock "
        "(No locks available): processes sharing its folder may each rotate it; give each its own "
        "LOG_DIR, or a folder on a file system that takes locks"
    ]
    assert "Traceback" not in err


def test_a_pymongo_background_error_is_one_warning_line_without_traceback_nor_topology(
    configure, capsys, tmp_path
):
    """pymongo's periodic executor logs ``MongoClient background task encountered an error:``
    with ``logger.exception`` (pymongo/logger.py ``_log_client_error``) each time its background
    check fails in an outage: here a real server selection's timeout (a port nothing listens
    on), whose text ends with the topology description. The product's rule: one line, no
    traceback, no topology dump; the driver's message kept."""
    from pymongo import MongoClient
    from pymongo.errors import ServerSelectionTimeoutError
    from pymongo.logger import _log_client_error

    configure()
    client = MongoClient("mongodb://127.0.0.1:9/", serverSelectionTimeoutMS=50, connect=False)
    try:
        client.admin.command("ping")
    except ServerSelectionTimeoutError as exc:
        failure = str(exc)
        _log_client_error()
    finally:
        client.close()
    assert "Topology Description" in failure  # what must not be dumped
    logged = (tmp_path / "logs" / LOG_FILE_NAME).read_text()
    console = capsys.readouterr().err
    for text in (logged, console):
        lines = [line for line in text.splitlines() if "background task" in line]
        assert len(lines) == 1, text
        assert "WARNING" in lines[0]
        assert "ServerSelectionTimeoutError: 127.0.0.1:9" in lines[0]
        assert "Traceback" not in text
        assert "Topology" not in text
        assert "configured timeouts" not in text
        assert len(text.splitlines()) == 1
