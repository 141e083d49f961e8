"""Where the cold files live: a folder (``file://``) or a bucket and prefix (``s3://``), through
Arrow's own file systems (S3: the AWS SDK's settings, ``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3`` for an S3-compatible store, ``AWS_DEFAULT_REGION``, the standard
credential chain).

A file is written under a name no reader takes (``.NAME.parquet.partial``: DuckDB's
``*.parquet`` glob and pyarrow's datasets skip it), checked, then published under its final
name in one step: a rename on a local disk, a copy on S3 (an object appears whole or not at
all), then the partial one removed.
"""

from __future__ import annotations

import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from order_archiver.errors import ConfigError, FatalError

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

PARTIAL_SUFFIX = ".parquet.partial"
# S3 copies at most 5 GB in one CopyObject (AWS S3 API Reference, CopyObject: "You can store
# individual objects of up to 5 TB in Amazon S3. You create a copy of your object up to 5 GB in
# size in a single atomic action using this API"), and Arrow's S3 move is one CopyObject then a
# DeleteObject (arrow/filesystem/s3fs.cc): a move's files stop near ``files.FILE_MAX_BYTES``.
S3_COPY_MAX_BYTES = 5 * 1024**3


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


class ColdStore:
    """The cold tier's files at ``ARCHIVE_COLD_URL``."""

    def __init__(self, url: str, filesystem: FileSystem | None = None, root: str | None = None) -> None:
        self.url = url
        if filesystem is None or root is None:
            from pyarrow.fs import FileSystem

            try:
                filesystem, root = FileSystem.from_uri(_as_uri(url))
            except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError: a bucket's region, a URI
                raise ConfigError(f"ARCHIVE_COLD_URL {url}: cannot be reached: {_first_line(exc)}") from None
        self.fs: FileSystem = filesystem
        self.root: str = str(root).rstrip("/")

    # -- checked before anything is written (exit 2)

    def check(self, *, writable: bool = True) -> None:
        """The folder exists and takes a file, the bucket exists and takes an object: a
        ``ConfigError`` naming it otherwise (before the run writes anything). ``writable=False``
        (``doctor``, which writes nothing): that it exists only."""
        from pyarrow.fs import FileType

        top = self.root.split("/", 1)[0] if self.url.startswith("s3://") else self.root
        try:
            found = self.fs.get_file_info(top).type
        except OSError as exc:
            raise ConfigError(f"ARCHIVE_COLD_URL {self.url}: cannot be reached: {_first_line(exc)}") from None
        if found == FileType.NotFound:
            what = f"the bucket {top!r} does not exist" if self.url.startswith("s3://") else "no such folder"
            raise ConfigError(f"ARCHIVE_COLD_URL {self.url}: {what}; create it first")
        if found != FileType.Directory:
            raise ConfigError(f"ARCHIVE_COLD_URL {self.url}: not a folder")
        if not writable:
            return
        probe = f"{self.root}/.order-archiver-probe-{uuid.uuid4().hex}"
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"probe")
            self.fs.delete_file(probe)
        except OSError as exc:
            raise ConfigError(
                f"ARCHIVE_COLD_URL {self.url}: cannot write there: {_first_line(exc)}"
            ) from None

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
        """The published files (partial ones never), of one month or all, in path order."""
        from pyarrow.fs import FileSelector, FileType

        base = f"{self.root}/{month.folder}" if month else self.root
        selector = FileSelector(base, recursive=True, allow_not_found=True)
        found = [
            ColdFile(info.path, int(info.size or 0))
            for info in self.fs.get_file_info(selector)
            if info.type == FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith(".")
        ]
        return sorted(found, key=lambda f: f.path)

    def exists(self, path: str) -> bool:
        from pyarrow.fs import FileType

        return bool(self.fs.get_file_info(path).type == FileType.File)

    def prepare(self, month: Month) -> None:
        self.fs.create_dir(f"{self.root}/{month.folder}", recursive=True)

    def publish(self, partial: str, final: str) -> None:
        """The checked file under its final name, in one step (a rename; on S3 a copy, atomic
        per object, then the partial object removed). On S3 a file over one copy's ceiling is
        refused before the copy, named (``FatalError``): the copy would fail after the work."""
        if self.url.startswith("s3://"):
            size = self.fs.get_file_info(partial).size or 0
            if size > S3_COPY_MAX_BYTES:
                raise FatalError(
                    f"cold file {self.url_of(partial)}: {size} bytes, over the 5 GB S3 copies in one "
                    "step: not published; the archive keeps its orders (a move's files stop near 1 GiB)"
                )
        self.fs.move(partial, final)

    def remove(self, path: str) -> None:
        """Remove a file if it is there (a partial one a crash left, a file replaced)."""
        if self.exists(path):
            self.fs.delete_file(path)


def _as_uri(url: str) -> str:
    """``url`` as pyarrow parses it: a space or a non-ASCII letter in a folder's name
    (``file:///srv/cold tier``, ``archivé``) percent-encoded (pyarrow decodes it back); what
    is encoded already, and the URL's own syntax, as given."""
    return urllib.parse.quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
