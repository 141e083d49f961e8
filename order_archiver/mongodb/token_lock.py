"""One watcher per token file: an advisory lock on ``<token file>.lock``, held for the watcher's life.

The file store has no lease (``lease.py`` is the mongo store's): two watchers on one file
would each archive every delivery and overwrite each other's token. The second one refuses
instead (exit 2), naming the first one's pid, which the holder writes into the lock file.
It refuses rather than waits as a mongo standby does: a standby on the same host, sharing a
local file, covers no failure that the service manager's restart does not, and the kernel
releases a dead process's lock (kill -9 included), so a restarted watcher finds it free.

The lock is on a file of its own because the token file is replaced (renamed over) at each
save: a lock on it would hold the old file. The lock file is never deleted (deleting one
that is held would let a second watcher lock a new file of the same name).

POSIX: ``fcntl.flock`` (LOCK_EX | LOCK_NB), which belongs to the open file, not the process:
two locks in one process conflict as well. Windows: ``msvcrt.locking`` (LK_NBLCK) on one
byte far past the pid, so that the pid stays readable (Windows locks are mandatory). A file
system that refuses locks (some network or FUSE mounts) leaves the file unguarded, with a
warning: on a network share, use ``--token-store mongo`` rather than one shared file.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from order_archiver.errors import ConfigError
from order_archiver.logs import get_logger

log = get_logger("tokens")

LOCK_SUFFIX = ".lock"


def lock_path(token_file: str | Path) -> Path:
    """The lock file of a token file: next to it, ``token.json.lock``."""
    path = Path(token_file)
    return path.with_name(path.name + LOCK_SUFFIX)


class TokenFileBusy(ConfigError):
    """Another process holds the token file's lock: a second watcher is a misconfiguration."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


if sys.platform == "win32":
    import msvcrt

    _WINDOWS_LOCK_OFFSET = 1 << 30  # past any pid: the locked byte is never read

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError:  # EACCES: locked by another handle
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # EWOULDBLOCK: another open file holds it
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class TokenFileLock:
    """The lock of one token file, taken by ``holder`` (``watch``, ``retire-watcher``).

    ``acquire`` never waits: it takes the lock or raises ``TokenFileBusy``. It returns False
    (and holds nothing) only where the file system refuses locks."""

    def __init__(self, token_file: str | Path, holder: str) -> None:
        self.token_file = Path(token_file)
        self.path = lock_path(token_file)
        self.holder = holder
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the token file's lock {self.path}: {exc.strerror}") from None
        try:
            locked = _try_lock(fd)
        except OSError as exc:  # ENOLCK, EOPNOTSUPP...: a file system without locks
            os.close(fd)
            log.warning(
                "cannot lock %s (%s): nothing stops a second watcher on %s",
                self.path,
                exc.strerror,
                self.token_file,
            )
            return False
        if not locked:
            holder = _read_holder(fd)
            os.close(fd)
            raise TokenFileBusy(
                f"resume token file {self.token_file} is in use by {holder}, which holds {self.path}: "
                "one watcher per token file; stop that one first, or give this one another --token-file",
                holder,
            )
        self._fd = fd
        _write_holder(fd, self.holder)
        return True

    def release(self) -> None:
        """Unlock and close; the lock file stays (see the module docstring), emptied: only a
        crashed holder leaves its pid behind, for the instant before the next one writes its own."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> TokenFileLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def _write_holder(fd: int, holder: str) -> None:
    """``PID COMMAND HOST``: what a refused second process names."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()} {holder} {socket.gethostname()}\n".encode())


def _read_holder(fd: int) -> str:
    """The holder as a person reads it: ``watch (pid 4242 on host-a)``."""
    os.lseek(fd, 0, os.SEEK_SET)
    fields = os.read(fd, 512).decode("utf-8", "replace").split()
    if len(fields) < 3 or not fields[0].isdigit():
        return "another process (pid not recorded yet)"
    return f"{fields[1]} (pid {fields[0]} on {fields[2]})"
