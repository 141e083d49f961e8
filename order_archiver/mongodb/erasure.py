"""Erasing personal data from archived orders.

``erase_personal_data``: the one walk ``forget`` (a person's request) and ARCHIVE_PII_RETENTION
(age) erase with. In chunks of ``CHUNK`` documents read whole, each document erased in memory
(``erasing.Erasure``: pure) and updated with what changed, only if it still holds the version
read (its ``source_hash`` in the filter): a document replaced meanwhile (a correction archived
again) is left to the writer, which erases a forgotten person's orders itself. Every update is
idempotent and may be retried whole; a walk cut by a transient error starts again; a stop ends
it between chunks, and each chunk meets the run's limits (``context.gate``: #34's rate, lag,
time and stop file; a limit ends the walk before a chunk, the next run erases the rest).

An erasure is a state, not a one-off update: ``forget`` records the person first
(``forgotten.ForgottenPersons``), and every write of the archive respects the record."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple

from bson import ObjectId

from order_archiver.context import RunContext
from order_archiver.documents import moment_or_none, text_or_none
from order_archiver.mongodb.forgotten import (
    ARCHIVE_PENDING,
    UNFINISHED_READ_AT_MOST,
    ForgottenPersons,
    orders_of,
)
from order_archiver.mongodb.source import chunked
from order_archiver.mongodb.storage import ArchiveWriter, MongoCollection
from order_archiver.orders.erasing import BY_AGE, BY_REQUEST, CLIENT, COURIER, Erasure, person_ids
from order_archiver.orders.pii import OrderFields
from order_archiver.retry import Retry

CHUNK = 500


class Erased(NamedTuple):
    changed: int  # documents erased
    unerased: list[str]  # the orders (numbers) too large to take their erasure: left as they are
    # The orders (numbers) too large to take the erasure's marks: their personal data erased, unmarked.
    unmarked: list[str]


def erase_personal_data(
    archive: MongoCollection,
    selection: dict[str, object],
    erasure: Erasure,
    *,
    context: RunContext,
    counted: Callable[[int], None] = lambda _: None,
) -> Erased:
    """Erase the documents of ``selection`` (``erasure``): how many were changed (and each
    chunk's to ``counted``, as it is erased: a walk a limit ends has said what it did), and the
    orders whose document was too large to take it, or only its marks (``ArchiveWriter.erase``)."""
    changed = 0
    writer = ArchiveWriter(archive, context)

    def walk() -> None:
        nonlocal changed
        with archive.find(selection, batch_size=CHUNK) as cursor:
            for chunk in chunked(cursor, CHUNK):
                context.gate.before()  # the run's limits (#34): a chunk boundary, --max-lag's hold
                erased = writer.erase(chunk, lambda _: erasure)
                changed += erased
                counted(erased)
                context.gate.after(len(chunk))  # --max-rate
                if context.stopped:
                    return

    context.retrying(walk, purpose=Retry.WRITE)
    return Erased(changed, list(dict.fromkeys(writer.unerased)), list(dict.fromkeys(writer.unmarked)))


def finish_in_archive(
    archive: MongoCollection,
    record: ForgottenPersons,
    kind: str,
    person: ObjectId,
    fields: OrderFields,
    context: RunContext,
) -> bool:
    """A forgotten person's erasure in the archive made to its end, as ``forget`` makes it (the
    same walk of their orders, ``erase_personal_data``, under the run's limits: a limit raises
    at a chunk boundary), then the record's ``ARCHIVE_PENDING`` cleared: only after that walk
    ran to its end and every order took its erasure (False: the mark kept, the next run's)."""
    erasure = Erasure(kind == CLIENT, kind == COURIER, BY_REQUEST, datetime.now(UTC), fields)
    erased = erase_personal_data(archive, orders_of(kind, person), erasure, context=context)
    if context.stopped or erased.unerased:
        return False
    record.archive_finished(kind, person)
    return True


def finish_unfinished_in_archive(
    archive: MongoCollection, record: ForgottenPersons, fields: OrderFields, context: RunContext
) -> int:
    """batch --run: the archive's erasure of each person whose record says it unfinished
    (``ARCHIVE_PENDING``: a forget a limit or a signal ended midway), however many persons were
    forgotten after them, finished (``finish_in_archive``); how many. One read of the record
    on its partial index, ``UNFINISHED_READ_AT_MOST`` at most (more: the next run's)."""
    finished = 0
    for kind, person in record.unfinished(UNFINISHED_READ_AT_MOST, [ARCHIVE_PENDING]):
        if not isinstance(person, ObjectId):
            continue  # forget records an ObjectId
        if context.stopped:
            break
        if finish_in_archive(archive, record, kind, person, fields, context):
            finished += 1
    return finished


def count_holding(
    archive: MongoCollection,
    selection: dict[str, object],
    erasure: Erasure,
    context: RunContext,
) -> tuple[int, int]:
    """The selected orders, and those still holding personal data ``erasure`` would remove:
    one indexed read (the data tested here, never logged)."""

    def count() -> tuple[int, int]:
        orders = holding = 0
        with archive.find(selection, batch_size=CHUNK) as cursor:
            for document in cursor:
                orders += 1
                holding += erasure.holds(document)
        return orders, holding

    return context.retrying(count)


UPGRADE_DONE = "upgrade:erasures-hold"  # the record's note that upgrade_erasures ran to its end


def upgrade_erasures(
    archive: MongoCollection,
    record: ForgottenPersons,
    fields: OrderFields,
    context: RunContext,
) -> int:
    """Once per archive, what an erasure made by an earlier version lacks: its client recorded
    (``forget`` did not record them: a correction would write their data back) and the erasure
    made again as it is now (the fingerprint of the erased copy, not of the order before it,
    from which an erased value could be guessed back; the source copy's undeclared fields). One
    walk of the erased documents (the ``{forgotten_by, date_livraison}`` index), then a note in
    the record: later runs read one document. Idempotent: cut short, it starts again."""
    if record.noted(UPGRADE_DONE):
        return 0
    writer = ArchiveWriter(archive, context)
    now = datetime.now(UTC)
    changed = 0

    def erasure_of(document: Mapping[str, object]) -> Erasure:
        by = text_or_none(document.get("forgotten_by")) or BY_REQUEST
        return Erasure(True, by == BY_AGE, by, moment_or_none(document.get("forgotten_at")) or now, fields)

    erased = {"forgotten_by": {"$in": [BY_REQUEST, BY_AGE]}}

    def walk() -> None:
        nonlocal changed
        with archive.find(erased, batch_size=CHUNK) as cursor:
            for chunk in chunked(cursor, CHUNK):
                context.gate.before()  # the run's limits (#34): a chunk boundary, --max-lag's hold
                _record_clients(record, chunk, now)
                changed += writer.erase(chunk, erasure_of)
                context.gate.after(len(chunk))  # --max-rate
                if context.stopped:
                    return

    context.retrying(walk, purpose=Retry.WRITE)
    if not context.stopped:
        record.note(UPGRADE_DONE)
    return changed


def _record_clients(record: ForgottenPersons, documents: list[dict[str, object]], now: datetime) -> None:
    """The clients of these documents erased on request, in the record (idempotent)."""
    for document in documents:
        if document.get("forgotten_by") != BY_REQUEST:
            continue
        for client_id in person_ids(document, CLIENT):
            if isinstance(client_id, ObjectId):
                record.record(CLIENT, client_id, moment_or_none(document.get("forgotten_at")) or now)
