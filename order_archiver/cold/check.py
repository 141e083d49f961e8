"""``verify`` in the cold tier: every file reads back as its footer says, each order is in
one place only (not also in the archive, not in two cold files of its month), and no order
holds personal data an erasure removed (``unerased``: verify's test, on the documents this
check reads anyway). Memory stays flat
with a month's size: ids are compared a month at a time, asked of the archive a chunk at a time."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby

from order_archiver.cold.files import batches, footer, is_complete
from order_archiver.cold.manifest import ColdManifest, Listed
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdFile, ColdStore
from order_archiver.context import RunContext
from order_archiver.documents import Document, MongoCollection
from order_archiver.logs import plural
from order_archiver.mongodb.source import chunked
from order_archiver.retry import Retry

EXAMPLES = 5
CHUNK = 1_000  # ids asked of the archive at a time


@dataclass
class ColdCheck:
    files: int = 0
    orders: int = 0
    damaged: list[str] = field(default_factory=list)  # files that do not read back as their footer says
    also_in_archive: int = 0  # orders in a cold file and in the archive: two places
    in_two_files: int = 0  # orders in two cold files of their month
    missing: int = 0  # orders of the files published and gone (removed by hand, lost): in no place
    missing_files: list[str] = field(default_factory=list)  # those files (their URLs)
    # orders marked erased, or of a recorded forgotten person, that still hold personal data
    unerased: int = 0
    examples: list[str] = field(default_factory=list)
    # Files a move published whose journal entry is left (``tier.unsettled_moves``): the orders
    # also in the archive are theirs, perhaps (a move interrupted after its publication)
    unsettled: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        two_places = self.also_in_archive or self.in_two_files
        return not self.damaged and not two_places and not self.missing and not self.unerased

    def line(self) -> str:
        text = (
            f"cold tier: {plural(self.orders, 'order')} in {plural(self.files, 'file')}; also in the archive: "
            f"{self.also_in_archive}; in two cold files: {self.in_two_files}; "
            f"missing (their file gone): {self.missing}"
        )
        if self.missing_files:
            shown = self.missing_files[:EXAMPLES]
            more = (
                f" and {len(self.missing_files) - EXAMPLES} more"
                if len(self.missing_files) > EXAMPLES
                else ""
            )
            text += f"; files published and gone: {', '.join(shown)}{more}"
        if self.unsettled:
            text += (
                f"; a move interrupted after publishing {', '.join(self.unsettled)} (its orders not all "
                "out of the archive yet): the next batch --run settles it first"
            )
        if self.damaged:
            text += f"; files that do not read back whole: {', '.join(self.damaged)}"
        if self.unerased:
            text += f"; erased yet holding personal data: {self.unerased}"
        return text + (f" {self.examples}" if self.examples else "")


# The ids of those documents that hold personal data an erasure removed (verify's test).
Unerased = Callable[[list[Document]], list[object]]


def check_cold(
    store: ColdStore,
    archive: MongoCollection,
    context: RunContext,
    manifest: ColdManifest | None = None,
    unerased: Unerased | None = None,
) -> ColdCheck:
    check = ColdCheck()
    listed = list(manifest.entries()) if manifest is not None else []  # read before the files: see _lost
    found = store.files()
    check.files = len(found)
    if manifest is not None:
        _lost(store, manifest, listed, {f.path for f in found}, check)
    for _, month_files in groupby(found, key=lambda f: f.month):
        seen: dict[str, int] = {}  # one month's ids, how many times: an order lies in its delivery month
        for cold_file in month_files:
            _check_file(store, cold_file, archive, check, seen, context, unerased)
    return check


def _check_file(
    store: ColdStore,
    cold_file: ColdFile,
    archive: MongoCollection,
    check: ColdCheck,
    seen: dict[str, int],
    context: RunContext,
    unerased: Unerased | None = None,
) -> None:
    if not is_complete(store, cold_file.path):
        check.damaged.append(store.url_of(cold_file.path))
        return
    check.orders += footer(store, cold_file.path).rows
    for batch in batches(store, cold_file.path, ["document"]):
        for texts in chunked([t for t in batch["document"] if t is not None], CHUNK):
            documents = [document_of(text) for text in texts]
            ids = [d["_id"] for d in documents]
            if unerased is not None:
                _note_unerased(check, unerased(documents), store.url_of(cold_file.path))
            for order_id in ids:
                key = repr(order_id)
                if key in seen:
                    check.in_two_files += 1
                    if seen[key] == 1:  # named once, however many more files hold it
                        _note(check, f"{order_id} (two files or more)")
                seen[key] = seen.get(key, 0) + 1
            both = context.retrying(functools.partial(_in_archive, archive, ids), purpose=Retry.READ)
            check.also_in_archive += len(both)
            for order_id in both:
                _note(check, f"{order_id} (archive and {store.url_of(cold_file.path)})")


def _note_unerased(check: ColdCheck, found: list[object], url: str) -> None:
    check.unerased += len(found)
    for order_id in found:
        _note(check, f"{order_id} (personal data erased yet in {url})")


def _lost(
    store: ColdStore, manifest: ColdManifest, listed: list[Listed], there: set[str], check: ColdCheck
) -> None:
    """The files published (listed) that are not there: their orders are in no place. A file
    replaced meanwhile (a rewrite, a retention) is unlisted before it is removed: asked again,
    it is no longer listed."""
    for entry in listed:
        if entry.path in there or store.exists(entry.path) or not manifest.still_listed(entry.path):
            continue
        check.missing += entry.rows
        check.missing_files.append(entry.url)


def _in_archive(archive: MongoCollection, ids: list[object]) -> list[object]:
    return [d["_id"] for d in archive.find({"_id": {"$in": ids}}, {"_id": 1})]


def _note(check: ColdCheck, example: str) -> None:
    if len(check.examples) < EXAMPLES:
        check.examples.append(example)


def lost_files(
    store: ColdStore, manifest: ColdManifest, listed: list[Listed], found: list[ColdFile]
) -> ColdCheck:
    """Only the files published and gone (``missing``, ``missing_files``): what ``status`` asks
    of the cold tier, from the list it read (``listed``, read before the files: see ``_lost``)
    and the listing of the place it made for its summary (``found``); no file read."""
    check = ColdCheck()
    _lost(store, manifest, listed, {f.path for f in found}, check)
    return check


LOST_NAMED = (
    3  # published cold files gone, named in find's and restore's line at most (verify names them all)
)


def lost_now(store: ColdStore, checkpoints: MongoCollection, context: RunContext) -> ColdCheck:
    """What ``status`` reads of the cold tier's lost files (``lost_files``: the list of files
    published, in the archive, against one listing of the place; no file opened), for a command
    that did not find all it was asked (``find``, ``restore``): an order in a file gone is in no
    place. ``context`` is the archive's (the list is kept there)."""
    manifest = ColdManifest(store, checkpoints, context)
    listed = list(manifest.entries())  # read before the files: see ``_lost``
    return lost_files(store, manifest, listed, store.files())


def lost_line(files: list[str], orders: int) -> str:
    """The one line ``find`` and ``restore`` say of published files gone: which (the first
    ``LOST_NAMED``), how many orders they held, that those are in no place, and what to do."""
    named = files[:LOST_NAMED]
    more = len(files) - len(named)
    where = "it" if len(files) == 1 else "one of them"
    return (
        f"cold tier: {plural(len(files), 'published file')} gone ({plural(orders, 'order')} in no place): "
        f"what was not found may have been in {where} (status and verify name it too); nothing else "
        "holds those orders: put the file back from a backup of the bucket or folder, then run again: "
        + ", ".join(named)
        + (f" and {more} more" if more else "")
    )
