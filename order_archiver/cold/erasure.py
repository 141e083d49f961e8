"""A person's erasure reaching the cold tier (``forget``): every cold file holding their orders
with personal data is rewritten without it: a new file written, read back and checked,
published, then the old one removed. A journal entry (``replaces``) makes a crash in between
harmless: the next run (``ColdMove.settle``) removes the old file once the new one reads back
whole, or the partial one otherwise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from order_archiver.cold.files import matching
from order_archiver.cold.rewrite import ColdRewrite
from order_archiver.cold.schema import document_of
from order_archiver.cold.search import ColdQuery
from order_archiver.cold.store import ColdFile, ColdStore
from order_archiver.context import RunContext
from order_archiver.documents import MongoCollection
from order_archiver.logs import get_logger
from order_archiver.orders.erasing import Erasure

log = get_logger("cold")


@dataclass
class ColdErasure:
    files: int = 0  # cold files holding the person's orders
    orders: int = 0  # their orders in the cold tier
    erased: int = 0  # of which held personal data (erased, or would be)
    rewritten: int = 0  # files rewritten by this run
    to_rewrite: int = 0  # files holding personal data of theirs (those a run rewrites)
    # Whether every file was read (and, in a run, rewritten): False when a signal or a limit of
    # the run ended it between two files, the counts above then those of the files read so far
    complete: bool = False
    files_listed: int = 0  # the cold tier's files when it began
    files_read: int = 0  # of which read (the rest may hold more of their orders)
    # On S3, once a file is rewritten: whether the bucket keeps versions (the new file has a
    # version id, ``ColdStore.keeps_versions``): the replaced files then stay readable as
    # noncurrent versions until a lifecycle rule expires them. None: not known (no rewrite, not S3)
    versions_kept: bool | None = None


def _holding(
    store: ColdStore, cold_file: ColdFile, query: ColdQuery, erasure: Erasure
) -> tuple[int, set[str]]:
    """The person's orders in one file, and the ids of those still holding personal data."""
    documents = [
        document_of(text)
        for _path, table in matching(store, [cold_file.path], query.expression(), ["document"])
        for text in table.column("document").to_pylist()
    ]
    return len(documents), {str(d["_id"]) for d in documents if erasure.holds(d)}


def erase_in_cold(
    store: ColdStore,
    journal: MongoCollection,
    query: ColdQuery,
    erasure: Erasure,
    *,
    run: bool,
    context: RunContext,
    report: ColdErasure | None = None,
    boundary: Callable[[], object] = lambda: None,
) -> ColdErasure:
    """Count (and with ``run`` erase) the person's personal data in every cold file, into
    ``report`` as it goes: each rewrite is a file boundary (``rewrite.file_boundary``), where a
    signal or a limit of the run ends the erasure; forget again rewrites the files left.
    ``boundary`` is called before each file is read (``rewrite.read_boundary``: the reads end
    there too)."""
    report = report if report is not None else ColdErasure()
    found = store.files()
    report.files_listed = len(found)
    for cold_file in found:
        boundary()
        orders, holding = _holding(store, cold_file, query, erasure)
        report.files_read += 1
        report.files += bool(orders)
        report.orders += orders
        report.erased += len(holding)
        report.to_rewrite += bool(holding)
        if run and holding:
            new = ColdRewrite(store, journal, context).rewrite(cold_file, holding, erasure)
            report.rewritten += 1
            if report.versions_kept is None and new is not None:
                report.versions_kept = store.keeps_versions(new)
    report.complete = True
    return report
