"""Logging: human lines on stderr, a size-rotated file, optional JSON lines; secrets masked.

The redaction filter sits on every handler, so a record is masked whoever logged it
(pymongo included): URIs lose their password, ``password=...`` pairs their value, and any
secret registered with ``register_secret`` (the configured password) disappears verbatim.
"""

from __future__ import annotations

import importlib
import logging
import logging.handlers
import os
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO, cast

from pythonjsonlogger.json import JsonFormatter

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range lock instead (``_exclusive``)
    fcntl = None  # type: ignore[assignment]

from order_archiver.settings import LOG_FILE_NAME, Settings, open_private, redact_uri, uri_password


class _ByteLocking(Protocol):
    """What the rotation's lock uses of Windows' ``msvcrt`` (absent elsewhere)."""

    LK_NBLCK: int
    LK_UNLCK: int

    def locking(self, fd: int, mode: int, nbytes: int, /) -> None: ...


def _windows_locking() -> _ByteLocking | None:
    try:
        return cast(_ByteLocking, importlib.import_module("msvcrt"))
    except ImportError:  # not Windows
        return None


msvcrt = _windows_locking()

LOGGER_NAME = "order_archiver"
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5

# ``extra={STATS: {...}}``: figures a message already states in words; JSON logs carry them as
# fields, text logs do not repeat them.
STATS = "stats"
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "file_only"}
# ``log.debug(..., exc_info=True, extra=FILE_ONLY)``: tracebacks go to the log file, never the console.
FILE_ONLY = {"file_only": True}
_secrets: set[str] = set()


def plural(count: float, word: str, many: str | None = None) -> str:
    """``1 order``, ``2 orders``, ``0 orders`` (a rate is rounded as it is printed); ``many``:
    the plural when it is not the word and an s (``plural(n, "dish", "dishes")``)."""
    return f"{count:.0f} " + (word if round(count) == 1 else many or f"{word}s")


def get_logger(name: str | None = None) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def register_secret(secret: str | None) -> None:
    """Mask this exact string (and its URL-decoded form) in every record from now on."""
    if secret and len(secret) >= 3:
        _secrets.add(secret)
        _secrets.add(urllib.parse.unquote(secret))


def redact(text: str) -> str:
    text = redact_uri(text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


# Characters a line must not carry as they are: control characters (a newline forges a log line
# of its own, ANSI escape sequences drive the terminal that shows it) and the bidirectional
# formatting ones (they reorder what a reader sees).
_UNPRINTABLE = {chr(code) for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]} | {
    chr(code) for code in [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` as one line a terminal shows as it is: each character of ``_UNPRINTABLE``
    written as its escape (``\\n``, ``\\x1b``, ``\\u202e``), the rest untouched. Data (an order's
    ``_id``, its ``numero_commande``) reaches logs and reports; it must not write them."""
    if not any(char in _UNPRINTABLE for char in text):
        return text
    return "".join(_escaped(char) if char in _UNPRINTABLE else char for char in text)


def _escaped(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# The driver's own loggers (``pymongo``, ``pymongo.client``, ...): their records are kept, as one line.
DRIVER_LOGGER = "pymongo"
# An exception's text, said in a driver's line, cut here: a ServerSelectionTimeoutError ends
# with its topology description (every server, its last error: long), and before it the
# timeouts; what failed is said before them.
_DRIVER_TEXT_ENDS = (", Timeout:", ", Topology Description:", " (configured timeouts:")
_DRIVER_TEXT_MAX = 300


def driver_error_text(exc: BaseException) -> str:
    """``exc`` as the driver's one line says it: its type and its first line, without the
    topology description a server selection's timeout appends (nor the timeouts)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    for end in _DRIVER_TEXT_ENDS:
        text = text.split(end, 1)[0]
    return f"{type(exc).__name__}: {text[:_DRIVER_TEXT_MAX]}".rstrip(": ")


def _fold_driver_record(record: logging.LogRecord, message: str) -> str:
    """A driver's record (pymongo's periodic executor logs ``MongoClient background task
    encountered an error:`` at ERROR with its traceback, each time a background check fails in
    an outage) made the product's one line: the exception's text after the message, no
    traceback; an ERROR of its own background tasks a WARNING (the watcher says the outage, and
    what it does about it, itself: ``change stream interrupted``)."""
    if record.exc_info and record.exc_info[1] is not None:
        message = f"{message.rstrip(': ')}: {driver_error_text(record.exc_info[1])}"
    if record.exc_info or record.exc_text:
        record.exc_info, record.exc_text = None, None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
    record.stack_info = None
    return message


class RedactingFilter(logging.Filter):
    """Render the message, mask it, and keep the masked text (args are consumed). A driver's
    record (pymongo's) becomes one line first (``_fold_driver_record``): never a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        if record.name == DRIVER_LOGGER or record.name.startswith(f"{DRIVER_LOGGER}."):
            message = _fold_driver_record(record, message)
        record.msg = printable(redact(message))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None  # formatters would otherwise print it unmasked again
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def iso_time(record: logging.LogRecord) -> str:
    """ISO-8601 in UTC with its offset, to the millisecond: ``2026-11-26T14:31:08.123+00:00``."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``: extras shown, not lost; ISO-8601 times."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and k != STATS}
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


class _IsoJsonFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record)


def _json_formatter() -> logging.Formatter:
    return _IsoJsonFormatter(
        "{asctime}{levelname}{name}{process}{message}",
        style="{",
        # pid: the units share one log folder (the text lines say [pid] too).
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
    )


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """The log file and its backups: readable by this user alone (0600; the log names orders
    and may name people), never written through a symbolic link (``O_NOFOLLOW``)."""

    def _open(self) -> Any:
        descriptor = open_private(self.baseFilename, os.O_WRONLY | os.O_APPEND)
        return os.fdopen(descriptor, "a", encoding=self.encoding, errors=self.errors)


class SharedRotatingFileHandler(PrivateRotatingFileHandler):
    """One log file shared by every process that logs into LOG_DIR (watch, batch, status...).

    RotatingFileHandler alone is not safe across processes (its documentation says so): a
    process that another one rotated under it keeps writing into the renamed file, and rotates
    it again by its size, leaving a few lines in a backup slot. So each record is written under
    a lock on ``<file>.lock`` (POSIX ``flock``; ``msvcrt.locking`` on Windows), after reopening the
    file if it is no longer the one at the path: the size looked at is the current file's, one
    process rotates it once, the others write into the new one."""

    def __init__(self, filename: Path, max_bytes: int, backups: int) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        try:
            lock = open_private(f"{self.baseFilename}.lock", os.O_WRONLY)
        except OSError:  # no handler comes of it: the log file opened above is closed
            super().close()
            raise
        self.lock_file: TextIO | None = os.fdopen(lock, "w")
        self.unlocked_because = ""  # why the file is written without the lock (said once)
        try:
            with _exclusive(lock):  # a folder that takes no lock (NFS without its lock service) said now
                pass
        except LockUnavailable as exc:
            self._write_unlocked(exc)

    def emit(self, record: logging.LogRecord) -> None:
        if self.lock_file is not None:
            try:
                with _exclusive(self.lock_file.fileno()):
                    self._follow_rotation()
                    super().emit(record)
                return
            except LockUnavailable as exc:  # lost since (an NFS server's lock daemon gone)
                self._write_unlocked(exc)
                sys.stderr.write(f"warning: {self.unlocked_line()}\n")
        super().emit(record)

    def _write_unlocked(self, exc: LockUnavailable) -> None:
        """No lock to be had: the records are still written (a run never fails on its log file);
        only the rotation is no longer agreed between processes sharing the folder."""
        if self.lock_file is not None:
            self.lock_file.close()
        self.lock_file, self.unlocked_because = None, exc.strerror or type(exc).__name__

    def unlocked_line(self) -> str:
        return (
            f"the log file {self.baseFilename} is written without its lock ({self.unlocked_because}): "
            "processes sharing its folder may each rotate it; give each its own LOG_DIR, or a "
            "folder on a file system that takes locks"
        )

    def _follow_rotation(self) -> None:
        """Reopen when the open file is no longer the one at the path (another process rotated)."""
        if self.stream is None:
            return
        try:
            current = os.stat(self.baseFilename)
        except FileNotFoundError:
            current = None
        mine = os.fstat(self.stream.fileno())
        if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
            self.stream.close()
            self.stream = self._open()

    def close(self) -> None:
        if self.lock_file is not None:
            self.lock_file.close()
        super().close()


class LockUnavailable(OSError):
    """The lock file's lock could not be taken (ENOLCK: an NFS folder whose lock service, lockd/statd, is not running)."""


@contextmanager
def _exclusive(descriptor: int) -> Iterator[None]:
    """The lock file held for one write (by the other processes' emits only: short). POSIX:
    ``flock``. Windows: ``msvcrt.locking`` on the file's first byte (the file holds nothing;
    a byte range is locked from the file's position, set before the lock and the unlock alike),
    as the token file's lock (``mongodb/token_lock.py``). A lock that cannot be taken is a
    ``LockUnavailable``, told from what the write inside raises."""
    if fcntl is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError as exc:
            raise LockUnavailable(exc.errno, exc.strerror) from exc
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    elif msvcrt is not None:
        try:
            _lock_windows(msvcrt, descriptor)
        except OSError as exc:
            raise LockUnavailable(exc.errno, exc.strerror) from exc
        try:
            yield
        finally:
            os.lseek(descriptor, 0, os.SEEK_SET)
            msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
    else:
        yield


# Another process's hold of the rotation's lock is one write: looked at again this soon.
WINDOWS_LOCK_RETRY_S = 0.01


def _lock_windows(locking: _ByteLocking, descriptor: int) -> None:
    """``LK_NBLCK`` tried until it holds, as ``flock`` waits: a byte another process holds fails
    with EACCES (ERROR_LOCK_VIOLATION), tried again 10 ms later; any other error (a share that
    takes no lock) is raised. Not ``LK_LOCK``: it sleeps a whole second between its 10 tries, and
    after them says EDEADLOCK whatever the OS said (ucrt's ``locking.cpp``), so a folder taking no
    lock could not be told from a busy one."""
    while True:
        os.lseek(descriptor, 0, os.SEEK_SET)
        try:
            locking.locking(descriptor, locking.LK_NBLCK, 1)
        except PermissionError:  # EACCES: another process holds the byte
            time.sleep(WINDOWS_LOCK_RETRY_S)
            continue
        return


def setup_logging(settings: Settings, verbosity: int = 0) -> logging.Logger:
    """Configure the root logger once per process (tests call it again: handlers are replaced).

    ``verbosity``: -1 for ``-q`` (warnings only on the console), 0 default, 1 for ``-v``.
    The file always gets ``LOG_LEVEL`` (DEBUG with ``-v``).
    """
    register_secret(uri_password(settings.mongodb_uri))
    register_secret(uri_password(settings.archive_mongodb_uri))
    register_secret(settings.archive_pii_key)
    level = logging.DEBUG if verbosity > 0 else getattr(logging, settings.log_level)
    console_level = logging.WARNING if verbosity < 0 else level
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_order_archiver", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(min(level, console_level))
    redacting = RedactingFilter()

    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    console.addFilter(lambda record: not getattr(record, "file_only", False))
    if settings.log_format == "json":
        console.setFormatter(_json_formatter())
    else:
        console.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(message)s"))
    handlers: list[logging.Handler] = [console]

    if settings.log_dir:
        try:
            Path(settings.log_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            file_handler = SharedRotatingFileHandler(
                Path(settings.log_dir) / LOG_FILE_NAME, LOG_FILE_MAX_BYTES, LOG_FILE_BACKUPS
            )
        except OSError as exc:
            file_handler = None
            sys.stderr.write(f"warning: no log file in {settings.log_dir}: {exc.strerror}\n")
        if file_handler is not None and file_handler.unlocked_because:
            sys.stderr.write(f"warning: {file_handler.unlocked_line()}\n")
        if file_handler is not None:
            file_handler.setLevel(level)
            if settings.log_format == "json":
                file_handler.setFormatter(_json_formatter())
            else:
                file_handler.setFormatter(
                    TextFormatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
                )
            handlers.append(file_handler)

    for handler in handlers:
        handler.addFilter(redacting)
        handler._order_archiver = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # pymongo's own DEBUG logs are command-level noise (and carry documents).
    logging.getLogger("pymongo").setLevel(max(level, logging.INFO))
    logging.getLogger("faker").setLevel(logging.WARNING)
    return get_logger()
