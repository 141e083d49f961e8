"""Files and folders forced onto the disk (``fsync``), for what the archiver writes on a local
file system and then trusts: the watcher's token file (``mongodb.tokens``), the cold tier's
files in a folder (``cold.store``).

A write, a rename or a removal returns once the kernel's page cache holds it; the disk gets it
within the writeback delay (about 30 s on Linux), and a power cut or a kernel panic before that
loses it: a file renamed but not yet written reads back empty or cut short after the restart.
So a file that anything will be deleted on the strength of is published as: its data synced
(``sync_file``), renamed, then its folder synced (``sync_folder``: the name itself, which lives
in the folder); and a folder created on the way is synced in its parent the same way.

Linux (fsync(2)): an ``fsync`` writes back the file's data and metadata, whatever descriptor of
it is used (one opened read-only here), and waits for the device; on a folder, its entries (a
rename, a removal). On NFS the client writes the file's pages to the server and sends a COMMIT:
the server has them on stable storage when ``fsync`` returns (RFC 1813, 3.3.21 COMMIT, 4.8); a
rename, a removal, a folder made are synchronous requests the server commits before it answers
(RFC 1813, 4.7), and the folder's ``fsync`` costs nothing more. Neither holds for a server that
answers before its disk has it (Linux's ``exportfs`` option ``async``; ``sync``, the default,
keeps it).
"""

from __future__ import annotations

import os

StrPath = str | os.PathLike[str]


def sync_file(path: StrPath) -> None:
    """The file's data and metadata on the disk (an ``OSError`` raised as it is)."""
    _sync(path)


def sync_folder(folder: StrPath) -> None:
    """The folder's entries (a rename into it, a removal, a folder created in it) on the disk."""
    _sync(folder)


def _sync(path: StrPath) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
