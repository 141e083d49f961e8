"""`restore`: archived orders put back into the source collection, as the source held them.

Each archive document keeps ``source``: the order exactly as the source held it when it was
last archived (every field, the same BSON types: a dangling reference's id, a date stored as
a string, a missing courier). ``restore`` inserts that copy under its ``_id``; it never
deletes from the archive, and the archive document records ``restored_at``: no purge deletes
the order again before ``RESTORE_HOLD`` has passed (a support agent's dispute takes days).

- dry run unless ``run``; a selection is required (``--numero``, ``--id``, ``--client``, a
  date window on ``date_commande``; given together, all must hold);
- idempotent: an order already in the source as the archive keeps it is left alone, counted;
- an order in the source with other content is left alone and reported (exit 3);
- a document without a source copy (written by an early version), or one whose copy lost its
  personal data (``forget``, ``ARCHIVE_PII`` hash or drop), is reported: the first cannot be
  restored, the second is restored as the archive holds it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, MongoClient
from pymongo import errors as pymongo_errors

from config import Settings
from logger import get_logger
from order_archiver.errors import ConfigError, as_archiver_error, without_documents
from order_archiver.mongodb.deployment import check_deployments
from order_archiver.mongodb.source import chunked, scan_by_id
from order_archiver.mongodb.storage import Collections, Document, MongoCollection
from order_archiver.operations.forget import archived_orders_of
from order_archiver.orders.selection import date_range, ids_after
from order_archiver.retry import Retry, retrying

log = get_logger("restore")

CHUNK = 500
EXAMPLES = 5
DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class RestoreSelection:
    numeros: tuple[str, ...] = ()
    order_id: Any = None
    client_id: ObjectId | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None

    def archive_filter(self) -> dict[str, Any]:
        """The archive documents selected; ConfigError when nothing selects."""
        clauses: list[dict[str, Any]] = []
        if self.numeros:
            clauses.append({"numero_commande": {"$in": list(self.numeros)}})
        if self.order_id is not None:
            clauses.append({"_id": self.order_id})
        if self.client_id is not None:
            clauses.append(archived_orders_of(self.client_id))
        bounds = date_range(self.date_from, self.date_to)
        if bounds:
            clauses.append({"date_commande": bounds})
        if not clauses:
            raise ConfigError("restore needs a selection: --numero, --id, --client or --date-from/--date-to")
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def parse_order_id(text: str) -> Any:
    """An order's ``_id``: an ObjectId when it is 24 hexadecimal digits, else the text itself
    (dirty data has string ids)."""
    return ObjectId(text) if ObjectId.is_valid(text) and len(text) == 24 else text


@dataclass
class RestoreReport:
    run: bool
    selected: int = 0
    restored: int = 0  # inserted into the source (dry run: would be)
    already_there: int = 0  # in the source as the archive keeps it
    conflicts: int = 0  # in the source with other content: left alone
    unrestorable: int = 0  # no source copy in the archive document
    without_personal_data: int = 0  # restored as kept: forgotten, or written under hash/drop
    conflict_examples: list[str] = field(default_factory=list)
    unrestorable_examples: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.conflicts and not self.unrestorable

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}

    def lines(self) -> list[str]:
        verb = "restored" if self.run else "would restore (dry run: --run to restore)"
        out = [
            f"{self.selected} archived orders selected; {verb} {self.restored}; "
            f"{self.already_there} already in the source as archived"
        ]
        if self.without_personal_data:
            out.append(
                f"{self.without_personal_data} without their personal data (forgotten, or ARCHIVE_PII)"
            )
        if self.conflicts:
            out.append(
                f"{self.conflicts} in the source with other content, left alone: {', '.join(self.conflict_examples)}"
            )
        if self.unrestorable:
            out.append(
                f"{self.unrestorable} archived without a copy of the source order (an early version): "
                f"{', '.join(self.unrestorable_examples)}"
            )
        return out


def restore(
    client: MongoClient[Document],
    settings: Settings,
    selection: RestoreSelection,
    *,
    run: bool = False,
    stop_event: threading.Event | None = None,
    archive_client: MongoClient[Document] | None = None,
) -> RestoreReport:
    wanted = selection.archive_filter()  # refused before anything is read
    check_deployments(client, settings, archive_client)
    collections = Collections.of(client, settings, archive_client)
    report = RestoreReport(run)
    for chunk in _chunks(collections.archive, wanted, stop_event):
        report.selected += len(chunk)
        copies = _copies(chunk, report)
        present = _present(collections.orders_primary, copies, stop_event)
        missing = [copy for copy in copies if copy["_id"] not in present]
        for copy in copies:
            if copy["_id"] in present:
                _compare(copy, present[copy["_id"]], report)
        if run and missing:
            _insert(collections.orders_primary, missing, report, stop_event)
            _mark_restored(collections.archive, [c["_id"] for c in missing], stop_event)
        elif missing:
            report.restored += len(missing)
    log.info(
        "restore: %d selected, %d %s, %d already in the source, %d conflicts",
        report.selected,
        report.restored,
        "restored" if run else "to restore (dry run)",
        report.already_there,
        report.conflicts,
    )
    return report


def _chunks(
    archive: MongoCollection, wanted: dict[str, Any], stop: threading.Event | None
) -> Iterator[list[Document]]:
    """The selected archive documents in ``_id`` order, a chunk at a time, through cuts
    (``scan_by_id``), across ``_id`` types (``ids_after``: dirty data has string ids)."""
    fields = {"source": 1, "numero_commande": 1, "pii_policy": 1, "forgotten_at": 1}

    def selected_after(after_id: Any) -> Any:
        page = {"$and": [wanted, ids_after(after_id)]} if after_id is not None else wanted
        # A sort on _id after a filter on something else may be done in memory: allowed to spill.
        return archive.find(page, fields, batch_size=CHUNK, allow_disk_use=True).sort("_id", ASCENDING)

    return chunked(scan_by_id(selected_after, stop_event=stop), CHUNK)


def _copies(chunk: list[Document], report: RestoreReport) -> list[dict[str, Any]]:
    copies = []
    for document in chunk:
        source = document.get("source")
        if not isinstance(source, dict) or source.get("_id") != document["_id"]:
            report.unrestorable += 1
            if len(report.unrestorable_examples) < EXAMPLES:
                report.unrestorable_examples.append(str(document.get("numero_commande") or document["_id"]))
            continue
        if document.get("forgotten_at") is not None or document.get("pii_policy", "keep") != "keep":
            report.without_personal_data += 1
        copies.append(source)
    return copies


def _present(
    orders: MongoCollection, copies: list[dict[str, Any]], stop: threading.Event | None
) -> dict[Any, Document]:
    ids = [copy["_id"] for copy in copies]
    if not ids:
        return {}
    return {d["_id"]: d for d in retrying(lambda: list(orders.find({"_id": {"$in": ids}})), stop_event=stop)}


def _compare(copy: dict[str, Any], found: Document, report: RestoreReport) -> None:
    if dict(found) == copy:
        report.already_there += 1
        return
    report.conflicts += 1
    if len(report.conflict_examples) < EXAMPLES:
        report.conflict_examples.append(str(copy.get("numero_commande") or copy["_id"]))


def _insert(
    orders: MongoCollection,
    missing: list[dict[str, Any]],
    report: RestoreReport,
    stop: threading.Event | None,
) -> None:
    """Insert the copies as they are; one the application (or another restore) inserted
    meanwhile is a duplicate key: counted as present, never overwritten."""
    try:
        retrying(
            functools.partial(orders.insert_many, missing, ordered=False),
            purpose=Retry.WRITE,
            stop_event=stop,
        )
        report.restored += len(missing)
    except Exception as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        if not isinstance(cause, pymongo_errors.BulkWriteError):
            raise
        errors = cause.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise as_archiver_error(cause) from without_documents(cause)
        report.restored += len(missing) - len(errors)
        report.already_there += len(errors)


def _mark_restored(archive: MongoCollection, ids: list[Any], stop: threading.Event | None) -> None:
    """``restored_at``: the purge holds these orders for RESTORE_HOLD (``purge.SourcePurge``)."""
    now = datetime.now(UTC)
    retrying(
        functools.partial(archive.update_many, {"_id": {"$in": ids}}, {"$set": {"restored_at": now}}),
        purpose=Retry.WRITE,
        stop_event=stop,
    )
