"""A person's erasure reaching the cold tier (``forget``): every cold file holding their orders
with personal data is rewritten without it: a new file written, read back and checked,
published, then the old one removed. A journal entry (``replaces``) makes a crash in between
harmless: the next run (``ColdMove.settle``) removes the old file once the new one reads back
whole, or the partial one otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from order_archiver.cold.files import ColdFileWriter, batches, check_file
from order_archiver.cold.move import JOURNAL_KIND
from order_archiver.cold.schema import document_of
from order_archiver.cold.search import ColdQuery
from order_archiver.cold.store import ColdFile, ColdStore
from order_archiver.context import RunContext
from order_archiver.documents import Document, MongoCollection
from order_archiver.logs import get_logger, plural
from order_archiver.orders.erasing import Erasure
from order_archiver.retry import Retry

log = get_logger("cold")


@dataclass
class ColdErasure:
    files: int = 0  # cold files holding the person's orders
    orders: int = 0  # their orders in the cold tier
    erased: int = 0  # of which held personal data (erased, or would be)
    rewritten: int = 0  # files rewritten by this run


def _holding(
    store: ColdStore, cold_file: ColdFile, query: ColdQuery, erasure: Erasure
) -> tuple[int, set[str]]:
    """The person's orders in one file, and the ids of those still holding personal data."""
    import pyarrow.dataset as ds

    table = ds.dataset(cold_file.path, filesystem=store.fs, format="parquet").to_table(
        filter=query.expression(), columns=["document"]
    )
    documents = [document_of(text) for text in table.column("document").to_pylist()]
    return len(documents), {str(d["_id"]) for d in documents if erasure.holds(d)}


def erase_in_cold(
    store: ColdStore,
    journal: MongoCollection,
    query: ColdQuery,
    erasure: Erasure,
    *,
    run: bool,
    context: RunContext,
) -> ColdErasure:
    """Count (and with ``run`` erase) the person's personal data in every cold file."""
    report = ColdErasure()
    for cold_file in store.files():
        orders, holding = _holding(store, cold_file, query, erasure)
        report.files += bool(orders)
        report.orders += orders
        report.erased += len(holding)
        if run and holding:
            ColdRewrite(store, journal, context).rewrite(cold_file, holding, erasure)
            report.rewritten += 1
    return report


Change = Callable[[Mapping[str, object]], Mapping[str, object] | None]  # None: the order leaves


class ColdRewrite:
    """One cold file replaced by a copy with some orders erased."""

    def __init__(self, store: ColdStore, journal: MongoCollection, context: RunContext) -> None:
        self.store, self.journal, self.context = store, journal, context

    def _write(self, func: Callable[[], object]) -> None:
        self.context.retrying(func, purpose=Retry.WRITE)

    def _documents(self, path: str, change: Change) -> Iterator[Mapping[str, object]]:
        for batch in batches(self.store, path, ["document"]):
            for text in batch["document"]:
                if text is not None:
                    document = change(document_of(text))
                    if document is not None:
                        yield document

    def rewrite(
        self, old: ColdFile, ids: set[str], erasure: Erasure, metadata: Mapping[bytes, bytes] | None = None
    ) -> None:
        """``old`` with the orders of ``ids`` erased."""
        self._replace(old, lambda d: erasure(d) if str(d["_id"]) in ids else d, metadata)
        log.info(
            "cold tier: %s rewritten without %s's personal data",
            self.store.url_of(old.path),
            plural(len(ids), "order"),
        )

    def without(self, old: ColdFile, ids: set[str]) -> None:
        """``old`` without the orders of ``ids`` (copies the archive holds newer versions of)."""
        self._replace(old, lambda d: None if str(d["_id"]) in ids else d, None)
        log.info(
            "cold tier: %s rewritten without %s corrected meanwhile (the archive holds them)",
            self.store.url_of(old.path),
            plural(len(ids), "order"),
        )

    def _replace(self, old: ColdFile, change: Change, metadata: Mapping[bytes, bytes] | None) -> None:
        month = old.month
        if month is None:
            raise ValueError(f"{old.path} lies in no year=/month= folder")
        partial, final = self.store.new_file(month)
        key = f"{JOURNAL_KIND}:{final}"
        entry: Document = {"_id": key, "kind": JOURNAL_KIND, "state": "writing", "month": str(month)}
        entry.update(partial=partial, final=final, replaces=old.path)
        self._write(lambda: self.journal.insert_one(entry))
        writer = ColdFileWriter(self.store, partial)
        try:
            writer.add(self._documents(old.path, change))
            summary = writer.close(metadata)
            if summary.rows:
                check_file(self.store, partial, summary)
        except BaseException:
            writer.abandon()
            self._write(lambda: self.journal.delete_one({"_id": key}))
            raise
        if summary.rows:
            self.store.publish(partial, final)
        else:  # nothing left: no file
            self.store.remove(partial)
        self._write(lambda: self.journal.update_one({"_id": key}, {"$set": {"state": "published"}}))
        self.store.remove(old.path)
        self._write(lambda: self.journal.delete_one({"_id": key}))
