"""Where the cold files live: a folder (``file://``) or a bucket and prefix (``s3://``), through
Arrow's own file systems (S3: the AWS SDK's settings, ``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3`` for an S3-compatible store, ``AWS_DEFAULT_REGION``, the standard
credential chain).

A file is written under a name no reader takes (``.NAME.parquet.partial``: DuckDB's
``*.parquet`` glob and pyarrow's datasets skip it), checked, then published under its final
name in one step: a rename on a local disk, a copy on S3 (an object appears whole or not at
all), then the partial one removed.

What a move then deletes from the archive (and the purge from the source) on the strength of a
file is on the disk first: on a local disk (``file://``, an NFS mount) the file's data is synced
before the rename and its folder after it (``durable``: a power cut or a kernel panic within the
writeback delay would otherwise leave the name on an empty or cut-short file, the orders
nowhere), a folder created on the way is synced in its parent, and a removal (a rewrite's old
file: a person's data ``forget`` erased) and a file set aside are synced in their folder too. On
S3 nothing is: an object is stored durably once its PUT or copy is acknowledged, there is no
page cache of ours in between.

On a local disk (``file://``) what the archiver creates is its user's alone, as its log folder:
each file created owner-only (0600) before a byte is written, each folder (``year=YYYY``,
``month=MM``) 0700; the files hold names, e-mails and addresses. The folder of
``ARCHIVE_COLD_URL`` is the user's own (created first, its mode left as it is); a rename keeps a
file's mode. S3 has no modes: its bucket policy decides.

A fault of the storage is never an answer about the files: a listing or a look that finds
nothing is believed only once the place itself (the bucket, the folder) is seen there (a 404
NoSuchBucket, a wrong endpoint or an unmounted folder read as "no file" would make a settlement
forget a published file, or ``forget`` skip the files that hold a person); any other error
(403, 503, a reset) is raised, and the idempotent requests here (list, look, remove) are
retried first (``Retry.STORAGE``, interruptible by ``stop``).

This module and ``files`` are the cold tier's edge with its storage: every request to the folder
or the bucket goes through them (``ColdStore``'s methods, ``files``' readers and writer; no other
module touches ``ColdStore.fs``), and an ``OSError`` the storage raises leaves them typed
(``storage_edge``: ``errors.ColdStorageError``, with what it says of the storage), so that the one
classification (``errors.storage_fault``) knows it by its type, never by where it passed.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from order_archiver.durable import sync_file, sync_folder
from order_archiver.errors import (
    ArchiverError,
    ColdStorageError,
    ConfigError,
    FatalError,
    TransientError,
    storage_fault,
    storage_words,
)
from order_archiver.logs import plural
from order_archiver.retry import Purpose, Retry, retrying

if TYPE_CHECKING:
    from pyarrow import NativeFile
    from pyarrow.fs import FileSystem

PARTIAL_SUFFIX = ".parquet.partial"
# S3 copies at most 5 GB in one CopyObject (AWS S3 API Reference, CopyObject: "You can store
# individual objects of up to 5 TB in Amazon S3. You create a copy of your object up to 5 GB in
# size in a single atomic action using this API"), and Arrow's S3 move is one CopyObject then a
# DeleteObject (arrow/filesystem/s3fs.cc): a move's files stop near ``files.FILE_MAX_BYTES``.
S3_COPY_MAX_BYTES = 5 * 1024**3
# The AWS SDK's own tries of one S3 request: its standard mode's (exponential backoff with
# jitter, AWS SDKs and Tools Reference Guide, "Retry behavior": max_attempts 3), under the
# product's own (``Retry.STORAGE``). ``FileSystem.from_uri`` leaves Arrow's C++ default instead
# (arrow/filesystem/s3fs.cc ``ConnectRetryStrategy``): a retryable answer tried again every
# 200 ms for 6 s, 31 requests, fixed interval, where S3 answers 503 SlowDown "reduce your request
# rate"; four tries of the product's each made 31 (measured, pyarrow 26).
S3_SDK_ATTEMPTS = 3
# What a versioned bucket does to what an erasure replaced or a retention removed: one wording,
# doctor's, forget's, batch's (ARCHIVE_PII_RETENTION) and status's (``versions_kept_words``).
STAY_READABLE = "stay readable as noncurrent versions until a lifecycle rule expires them"
OWNER_ONLY_FILE = 0o600  # on a local disk: the archiver's user alone (see the module docstring)
OWNER_ONLY_FOLDER = 0o700
T = TypeVar("T")


@dataclass(frozen=True)
class Month:
    """A delivery month: one partition, ``year=YYYY/month=MM``."""

    year: int
    month: int

    @classmethod
    def of(cls, moment: datetime) -> Month:
        return cls(moment.year, moment.month)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    @property
    def folder(self) -> str:
        return f"year={self.year:04d}/month={self.month:02d}"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True)
class ColdFile:
    path: str  # in the store's file system (no scheme)
    size: int

    @property
    def month(self) -> Month | None:
        """The partition the file lies in, read from its path."""
        parts = dict(p.split("=", 1) for p in self.path.split("/") if p.count("=") == 1)
        try:
            return Month(int(parts["year"]), int(parts["month"]))
        except (KeyError, ValueError):
            return None


@contextmanager
def storage_edge() -> Iterator[None]:
    """Around requests to the storage (``pyarrow.fs``, ``os`` on a local folder, a Parquet
    file's reads and writes): an ``OSError`` raised inside that says something of the storage
    leaves as a ``ColdStorageError`` of its kind (the original as its cause); the Parquet
    reader's own (a file's bytes) and every other error as they are. Only requests go inside:
    never a caller's code (an iterator handed in, a callback), whose errors are not the storage's."""
    try:
        yield
    except ColdStorageError:
        raise
    except OSError as exc:
        typed = ColdStorageError.of(exc)
        if typed is None:
            raise
        raise typed from exc


def _with_standard_retries(filesystem: FileSystem) -> FileSystem:
    """An S3 file system made by ``from_uri``, with the SDK's standard retries
    (``S3_SDK_ATTEMPTS``); its other options (the URL's region, endpoint, scheme, the resolved
    region) as they were: ``__reduce__`` gives them as the constructor takes them."""
    from pyarrow.fs import AwsStandardS3RetryStrategy, S3FileSystem

    if not isinstance(filesystem, S3FileSystem):
        return filesystem
    _rebuild, (options,) = filesystem.__reduce__()
    strategy = AwsStandardS3RetryStrategy(max_attempts=S3_SDK_ATTEMPTS)
    return S3FileSystem(**options, retry_strategy=strategy)


class ColdStore:
    """The cold tier's files at ``ARCHIVE_COLD_URL``."""

    def __init__(
        self,
        url: str,
        filesystem: FileSystem | None = None,
        root: str | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.url = url
        self.stop = stop or threading.Event()  # the run's: ends a retry's wait
        if filesystem is None or root is None:
            from pyarrow.fs import FileSystem

            try:
                filesystem, root = FileSystem.from_uri(_as_uri(url))
                filesystem = _with_standard_retries(filesystem)
            except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError: a bucket's region, a URI
                raise ConfigError(
                    f"ARCHIVE_COLD_URL {url}: cannot be reached: {storage_words(exc)}"
                ) from None
        self.fs: FileSystem = filesystem
        self.root: str = str(root).rstrip("/")

    # -- checked before anything is written (exit 2)

    def check(self, *, writable: bool = True) -> None:
        """The folder exists and takes a file, the bucket exists and takes an object: a
        ``ConfigError`` naming it otherwise (before the run writes anything). ``writable=False``
        (``doctor``, which writes nothing): that it exists only. A transient fault (S3's 503, a
        reset) is retried, then a ``TransientError`` (exit 1: a re-run may pass), never taken
        for a place that cannot be used."""
        from pyarrow.fs import FileType

        found = self._checked("cannot be reached", lambda: self.fs.get_file_info(self._top).type)
        if found == FileType.NotFound:
            raise self._not_there()
        if found != FileType.Directory:
            raise ConfigError(f"ARCHIVE_COLD_URL {self.url}: not a folder")
        if writable:
            self._checked("cannot write there", self._probe)

    def _probe(self) -> None:
        probe = f"{self.root}/.order-archiver-probe-{uuid.uuid4().hex}"
        self.fs.create_dir(self.root, recursive=True)
        with self.create_file(probe) as out:
            out.write(b"probe")
        self.fs.delete_file(probe)

    def _checked(self, what: str, func: Callable[[], T]) -> T:
        """``check``'s request, retried while transient; any other refusal is the settings'."""
        try:
            return self.retrying(func)
        except TransientError:
            raise
        except ArchiverError as exc:
            cause = exc.__cause__ or exc
            raise ConfigError(f"ARCHIVE_COLD_URL {self.url}: {what}: {storage_words(cause)}") from None

    @property
    def _top(self) -> str:
        """The place itself: the bucket (S3), the folder (a local disk)."""
        return self.root.split("/", 1)[0] if self._on_s3 else self.root

    @property
    def _on_s3(self) -> bool:
        return bool(self.fs.type_name == "s3")

    @property
    def _on_local_disk(self) -> bool:
        return bool(self.fs.type_name == "local")

    def _not_there(self) -> ConfigError:
        what = f"the bucket {self._top!r} does not exist" if self._on_s3 else "no such folder"
        return ConfigError(f"ARCHIVE_COLD_URL {self.url}: {what}; create it first")

    def _confirm_place(self) -> None:
        """The place is there (a request that found nothing is believed only then): a
        ``ConfigError`` naming it otherwise, the storage's other errors raised as they are."""
        from pyarrow.fs import FileType

        if self.fs.get_file_info(self._top).type == FileType.NotFound:
            raise self._not_there()

    def retrying(self, func: Callable[[], T]) -> T:
        """``func`` (an idempotent request, at the storage's edge) retried on a transient storage
        fault (``Retry.STORAGE``), briefly when nothing answers at the endpoint (``STORAGE_UNREACHABLE``)."""

        def at_edge() -> T:
            with storage_edge():
                return func()

        def purpose_of(exc: BaseException) -> Purpose | None:
            return Retry.STORAGE_UNREACHABLE if storage_fault(exc) == "unreachable" else None

        return retrying(at_edge, purpose=Retry.STORAGE, stop_event=self.stop, purpose_of=purpose_of)

    # -- names

    def new_file(self, month: Month) -> tuple[str, str]:
        """(partial path, final path) of a new file of ``month``: a name no other run picks."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{stamp}-{uuid.uuid4().hex[:12]}"
        folder = f"{self.root}/{month.folder}"
        return f"{folder}/.{name}{PARTIAL_SUFFIX}", f"{folder}/{name}.parquet"

    def url_of(self, path: str) -> str:
        """A path as the user reads it: under ARCHIVE_COLD_URL."""
        return f"{self.url}{path[len(self.root) :]}" if path.startswith(self.root) else path

    # -- files

    def files(self, month: Month | None = None) -> list[ColdFile]:
        """The published files (partial ones never), of one month or all, in path order. None
        found: only once the place is seen there (``_confirm_place``)."""
        return self.retrying(lambda: self._listed(month))

    def _listed(self, month: Month | None) -> list[ColdFile]:
        from pyarrow.fs import FileSelector, FileType

        base = f"{self.root}/{month.folder}" if month else self.root
        # Not ``allow_not_found``: with it Arrow answers a 404 NoSuchBucket with an empty list.
        try:
            infos = self.fs.get_file_info(FileSelector(base, recursive=True))
        except FileNotFoundError:  # no such prefix, or no such folder: is the place there?
            self._confirm_place()
            infos = []
        found = [
            ColdFile(info.path, int(info.size or 0))
            for info in infos
            if info.type == FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith(".")
        ]
        return sorted(found, key=lambda f: f.path)

    def exists(self, path: str) -> bool:
        """Whether the file is there; "no" only once the place is seen there (on S3 a key in a
        bucket that does not exist reads as not found)."""
        return self.retrying(lambda: self._exists(path))

    def _exists(self, path: str) -> bool:
        from pyarrow.fs import FileType

        found = self.fs.get_file_info(path).type
        if found == FileType.NotFound:
            self._confirm_place()
        return bool(found == FileType.File)

    def prepare(self, month: Month) -> None:
        """The month's folders; on a local disk each one created is 0700."""
        with storage_edge():
            self._prepare(month)

    def _prepare(self, month: Month) -> None:
        if not self._on_local_disk:
            self.fs.create_dir(f"{self.root}/{month.folder}", recursive=True)
            return
        folder = self.root
        for part in month.folder.split("/"):
            parent, folder = folder, f"{folder}/{part}"
            try:
                os.mkdir(folder, OWNER_ONLY_FOLDER)  # less the umask: never wider
            except FileExistsError:
                continue  # made by an earlier move (or by the user): its mode is left as it is
            sync_folder(parent)  # the new folder's name on the disk, as a published file's

    def create_file(self, path: str) -> NativeFile:
        """A new file opened for writing. On a local disk it is created owner-only before Arrow
        opens it (Arrow creates 0666 less the umask: 0644, world-readable, by default), so no
        byte written is ever readable by another user; ``O_EXCL``: a new name, never a link."""
        with storage_edge():
            if self._on_local_disk:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE))
            return self.fs.open_output_stream(path)

    def publish(self, partial: str, final: str) -> None:
        """The checked file under its final name, in one step (a rename; on S3 a copy, atomic
        per object, then the partial object removed). On S3 a file over one copy's ceiling is
        refused before the copy, named (``FatalError``): the copy would fail after the work."""
        if self.url.startswith("s3://"):
            size = self.size(partial)
            if size > S3_COPY_MAX_BYTES:
                raise FatalError(
                    f"cold file {self.url_of(partial)}: {size} bytes, over the 5 GB S3 copies in one "
                    "step: not published; the archive keeps its orders (a move's files stop near 1 GiB)"
                )
        with storage_edge():
            if self._on_local_disk:
                sync_file(partial)  # its bytes on the disk before its name is
            self.fs.move(partial, final)
            self._synced_folder_of(final)  # the rename itself: before anything trusts the file

    def _synced_folder_of(self, path: str) -> None:
        """On a local disk, the folder holding ``path`` synced: a rename or a removal in it
        survives a power cut. Not on S3 (the module's docstring: an acknowledged request is
        stored), nor on another of Arrow's file systems, which has no folder to open here."""
        if self._on_local_disk:
            sync_folder(os.path.dirname(path))

    def size(self, path: str) -> int:
        """A file's size in bytes (0: the storage gives none)."""
        with storage_edge():
            return int(self.fs.get_file_info(path).size or 0)

    def set_aside(self, path: str, suffix: str) -> None:
        """A published file renamed ``NAME.SUFFIX`` (``.damaged``): out of every reader's way
        (``*.parquet``), kept for a person to look at."""
        with storage_edge():
            self.fs.move(path, path.replace(".parquet", f".{suffix}"))
            self._synced_folder_of(path)

    def keeps_versions(self, path: str) -> bool | None:
        """On S3, whether the bucket kept a version of the object ``path`` when it was written:
        its ``VersionId`` (HeadObject's, which Arrow hands back in the file's metadata; a bucket
        never versioned gives none, one suspended "null"). Arrow cannot ask GetBucketVersioning:
        an object's version id is what it can read. A versioned bucket keeps every file a rewrite
        replaced, and every file removed, as a noncurrent version until a lifecycle rule expires
        it. None off S3 (a local disk keeps no versions; its snapshots are the deployment's)."""
        if not self._on_s3:
            return None

        def head() -> dict[str, bytes]:
            with self.fs.open_input_file(path) as stream:  # one HeadObject, nothing read
                return {str(k): bytes(v) for k, v in (stream.metadata() or {}).items()}

        version = self.retrying(head).get("VersionId")
        return version is not None and version not in (b"", b"null")

    def remove(self, path: str) -> None:
        """Remove a file if it is there (a partial one a crash left, a file replaced)."""

        def remove_if_there() -> None:
            if self._exists(path):
                self.fs.delete_file(path)
                self._synced_folder_of(path)  # a replaced file's data (an erasure's) gone for good

        self.retrying(remove_if_there)


def newest_keeps_versions(store: ColdStore, found: list[ColdFile]) -> bool | None:
    """``ColdStore.keeps_versions`` of the newest of ``found`` (a listing: names start with their
    time), what the bucket does now (versioning turned on since keeps the files written after);
    None without a file, or off S3. One HeadObject."""
    newest = max(found, key=lambda f: f.path.rsplit("/", 1)[-1], default=None)
    return store.keeps_versions(newest.path) if newest is not None else None


def versions_kept_words(replaced: int | None = None) -> str:
    """What a bucket that keeps object versions (``ColdStore.keeps_versions``) does to the files an
    erasure's rewrites replaced (``replaced`` of them; None: not counted here): forget's, the
    ARCHIVE_PII_RETENTION's in batch --run, status's words alike."""
    files = "files" if replaced is None else plural(replaced, "file")
    return (
        f"the bucket keeps object versions: the {files} replaced, with their personal data, "
        f"{STAY_READABLE} (NoncurrentVersionExpiration; doctor's cold tier versions)"
    )


def _as_uri(url: str) -> str:
    """``url`` as pyarrow parses it: a space or a non-ASCII letter in a folder's name
    (``file:///srv/cold tier``, ``archivé``) percent-encoded (pyarrow decodes it back); what
    is encoded already, and the URL's own syntax, as given."""
    return urllib.parse.quote(url, safe=":/?#[]@!$&'()*+,;=%~")
