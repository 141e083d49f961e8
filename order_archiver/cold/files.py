"""One cold file: written a row group at a time, read back and checked, read in batches.

Memory stays flat with a month's size: the writer holds one row group (``ROW_GROUP_ROWS``
rows) at a time; the checks and the readers go through a file a batch at a time.

With ``store``, the cold tier's edge with its storage: every read or write of a file's bytes
goes through here (no other module opens one), inside ``store.storage_edge`` (a fault of the
storage leaves as an ``errors.ColdStorageError``), and only the requests do: never the rows a
writer is handed, nor the code that reads what a reader yields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from order_archiver.cold.schema import (
    META_DOCUMENTS_SHA256,
    META_IDS_SHA256,
    META_ROWS,
    Digest,
    Row,
    arrow_schema,
    row_of,
)
from order_archiver.cold.store import storage_edge
from order_archiver.errors import ColdStorageError, FatalError
from order_archiver.logs import plural

if TYPE_CHECKING:
    from pyarrow import Table
    from pyarrow.dataset import Expression
    from pyarrow.parquet import ParquetFile, RowGroupMetaData

    from order_archiver.cold.store import ColdStore

ROW_GROUP_ROWS = 2_000  # rows a writer holds before it writes them out (a row group): the memory bound
# A move's file ends after the row group that takes it past this size, and the month goes on in
# another file: far below S3's 5 GB ceiling of one CopyObject (the publication's copy, see
# ``store.ColdStore.publish``), whatever a month holds; a file DuckDB or pandas reads whole.
FILE_MAX_BYTES = 1 << 30
READ_BATCH_ROWS = 2_000  # rows a reader holds at a time


@dataclass(frozen=True)
class FileSummary:
    """What a file holds, as its writer counted it and its footer says."""

    rows: int
    ids_sha256: str
    documents_sha256: str

    @classmethod
    def of(cls, metadata: Mapping[bytes, bytes]) -> FileSummary:
        return cls(
            int(metadata.get(META_ROWS, b"-1")),
            metadata.get(META_IDS_SHA256, b"").decode(),
            metadata.get(META_DOCUMENTS_SHA256, b"").decode(),
        )


class ColdFileWriter:
    """Rows into one Parquet file (zstd), a row group at a time; ``close`` writes the footer
    with the count and checksums and returns them."""

    def __init__(
        self, store: ColdStore, path: str, row_group_rows: int | None = None, *, capped: bool = False
    ) -> None:
        import pyarrow.parquet as pq

        self.store, self.path = store, path
        self.row_group_rows = row_group_rows or ROW_GROUP_ROWS
        # ``capped`` (a move): ``add`` stops taking rows once the file is past FILE_MAX_BYTES
        # (``full``); a rewrite takes every row of the file it replaces.
        self.max_bytes = FILE_MAX_BYTES if capped else None
        self.full = False
        self.schema = arrow_schema()
        self._out = store.create_file(path)  # owner-only on a local disk
        with storage_edge():
            self._writer = pq.ParquetWriter(self._out, self.schema, compression="zstd")
        self._rows: list[Row] = []
        self.digest = Digest()

    def add(self, documents: Iterable[Mapping[str, object]]) -> None:
        for document in documents:
            self._rows.append(row_of(document))
            if len(self._rows) >= self.row_group_rows:
                self._flush()
                if self.max_bytes is not None and self._written() >= self.max_bytes:
                    self.full = True
                    return  # the rest in the next file

    def _written(self) -> int:
        with storage_edge():
            return int(self._out.tell())

    def _flush(self) -> None:
        if not self._rows:
            return
        import pyarrow as pa

        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        self.digest.add(table.column("_id").to_pylist(), table.column("document").to_pylist())
        with storage_edge():
            self._writer.write_table(table, row_group_size=len(self._rows))
        self._rows = []

    def close(self, extra: Mapping[bytes, bytes] | None = None) -> FileSummary:
        """The footer: the count and checksums, and ``extra`` (what a rewrite records)."""
        self._flush()
        metadata = {**(extra or {}), **self.digest.metadata()}
        self._writer.add_key_value_metadata(metadata)
        with storage_edge():
            self._writer.close()
            self._out.close()
        return FileSummary.of(metadata)

    def abandon(self) -> None:
        """Close without publishing: the partial file is removed."""
        try:
            with storage_edge():
                self._writer.close()
                self._out.close()
        finally:
            self.store.remove(self.path)


def _open(store: ColdStore, path: str) -> ParquetFile:
    import pyarrow.parquet as pq

    with storage_edge():
        return pq.ParquetFile(store.fs.open_input_file(path))


def batches(store: ColdStore, path: str, columns: list[str]) -> Iterator[dict[str, list[str | None]]]:
    """The file's text ``columns``, ``READ_BATCH_ROWS`` rows at a time."""
    parquet = _open(store, path)
    with storage_edge():  # the reads only: the caller's code between two batches runs outside
        for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
            yield {name: batch.column(name).to_pylist() for name in columns}


def matching(
    store: ColdStore, paths: Sequence[str], where: Expression, columns: list[str]
) -> Iterator[tuple[str, Table]]:
    """(a file's path, its rows that match ``where``, ``columns`` only) for each of ``paths``,
    through pyarrow's dataset: a row group whose statistics rule ``where`` out is not read."""
    import pyarrow.dataset as ds

    if not paths:
        return
    with storage_edge():  # the reads only, as ``batches``
        dataset = ds.dataset(list(paths), filesystem=store.fs, format="parquet")
        for fragment in dataset.get_fragments():
            yield fragment.path, fragment.to_table(filter=where, columns=columns)


def dated_documents(
    store: ColdStore, path: str, groups: list[int]
) -> Iterator[tuple[datetime | None, str | None]]:
    """Each row's typed ``date_livraison`` (null when the document's is not a date) and its
    ``document``, of the row groups ``groups`` only, ``READ_BATCH_ROWS`` rows at a time."""
    if not groups:
        return
    columns = ["date_livraison", "document"]
    parquet = _open(store, path)
    with storage_edge():  # the reads only, as ``batches``
        for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns, row_groups=groups):
            yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)


def row_groups(store: ColdStore, path: str) -> list[RowGroupMetaData]:
    """The file's row groups as its footer describes them (rows, each column's statistics)."""
    metadata = _open(store, path).metadata
    return [metadata.row_group(index) for index in range(metadata.num_row_groups)]


def read_back(store: ColdStore, path: str) -> FileSummary:
    """What a file really holds: its rows counted and both checksums recomputed from its
    columns, a batch at a time (a half-written file does not open: no footer)."""
    digest = Digest()
    for batch in batches(store, path, ["_id", "document"]):
        digest.add(batch["_id"], batch["document"])
    return FileSummary.of(digest.metadata())


def footer(store: ColdStore, path: str) -> FileSummary:
    """What a file's footer says it holds."""
    return FileSummary.of(footer_metadata(store, path))


def footer_metadata(store: ColdStore, path: str) -> dict[bytes, bytes]:
    return dict(_open(store, path).metadata.metadata or {})


def check_file(store: ColdStore, path: str, expected: FileSummary) -> None:
    """The file read back holds exactly what was written (count, ids, documents), and its
    footer says so: a ``FatalError`` otherwise (the caller removes it, nothing is deleted)."""
    try:
        found, said = read_back(store, path), footer(store, path)
    except ColdStorageError:
        raise  # the storage's, not the file's: sorted as such (errors.storage_error)
    except (OSError, ValueError) as exc:  # pyarrow: ArrowInvalid is a ValueError
        raise FatalError(f"cold file {store.url_of(path)} cannot be read back: {exc}") from None
    if found != expected or said != expected:
        raise FatalError(
            f"cold file {store.url_of(path)} read back does not hold what was written "
            f"({plural(found.rows, 'row')} read, {expected.rows} written): nothing was deleted from the archive"
        )


def is_complete(store: ColdStore, path: str) -> bool:
    """A published file that reads back as its footer says (a crash's leftovers are checked so).
    Only its bytes can say "no": a fault of the storage (403, 503, a reset, a file gone) is
    retried, then raised (``errors.ColdStorageError``), never taken for a damaged file, which a
    settlement would put aside (``.damaged``) with the only copy of its orders."""

    def reads_back() -> bool:
        try:
            said = footer(store, path)
            return said.rows >= 0 and read_back(store, path) == said
        except ColdStorageError:
            raise
        except (OSError, ValueError):
            return False

    return store.retrying(reads_back)
