"""The archive's storage, shared by batch, watch, status and verify: which collections a
run touches (with the write concern and read preference each needs), and the one way archive
documents are written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from bson.errors import InvalidDocument
from pymongo import InsertOne, MongoClient, ReadPreference, UpdateOne, WriteConcern
from pymongo import errors as pymongo_errors
from pymongo.read_concern import ReadConcern
from pymongo.results import BulkWriteResult

from order_archiver.context import RunContext
from order_archiver.documents import (
    ArchiveDocument,
    Document,
    OrderId,
    WriteError,
    moment_or_none,
    text_or_none,
    write_errors,
)
from order_archiver.documents import MongoCollection as MongoCollection
from order_archiver.errors import (
    INSERT_TOO_LARGE,
    TRANSIENT_CODES,
    ArchiverError,
    FatalError,
    TransientError,
    describe,
    is_document_too_large,
    without_documents,
)
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.forgotten import (
    NO_RECORD,
    ErasureOf,
    ForgottenPersons,
    RespectedErasures,
    erasure_updates,
)
from order_archiver.orders.enrichment import CollectionNames
from order_archiver.orders.erasing import ErasedDocument, Forgotten
from order_archiver.orders.rejection import Rejection
from order_archiver.retry import ARCHIVE_SIDE, SOURCE_SIDE, Retry
from order_archiver.settings import Settings

log = get_logger("storage")

DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class Collections:
    """The collections a run touches, from the settings' names."""

    orders: MongoCollection  # the source scan: the URI's read preference
    orders_primary: MongoCollection  # the re-reads that decide, and the purge: primary, majority
    archive: MongoCollection
    checkpoints: MongoCollection
    rejects: MongoCollection
    forgotten: MongoCollection  # the record of forgotten persons (forgotten.py)
    names: CollectionNames
    same_database: bool
    archive_side: str = ""  # ARCHIVE_SIDE with ARCHIVE_MONGODB_URI: errors name the side

    @property
    def source_side(self) -> str:
        """The source's prefix: named only when the archive has a deployment of its own."""
        return SOURCE_SIDE if self.archive_side else ""

    @classmethod
    def of(
        cls,
        client: MongoClient[Document],
        settings: Settings,
        archive_client: MongoClient[Document] | None = None,
    ) -> Collections:
        """Every write the archiver makes (archive, checkpoints, tokens, leases, rejects, the
        purge) waits for a majority: an acknowledged ``w: 1`` write can be rolled back by a
        failover, and a checkpoint, a token or a purge must never get ahead of an archive
        write that a rollback undid. Every read that decides correctness (already archived?,
        the order as it is now, checkpoints, tokens, leases) goes to the primary, whatever the
        URI's ``readPreference``: a lagging secondary would show a delivered order as not
        delivered yet. The batch's own scan of the source follows the URI."""
        # ARCHIVE_MONGODB_URI: the archive side on its own deployment; never joined on the
        # server with the source (same_database is False), asked by _id instead.
        archive_db = (archive_client or client)[settings.archive_db_name]
        majority = WriteConcern(w="majority", wtimeout=settings.mongodb_write_timeout_ms)

        def durable(collection: MongoCollection) -> MongoCollection:
            return collection.with_options(write_concern=majority, read_preference=ReadPreference.PRIMARY)

        orders = client[settings.mongodb_database][settings.orders_collection]
        return cls(
            orders=orders,
            orders_primary=durable(orders),
            archive=durable(archive_db[settings.archive_collection]),
            checkpoints=durable(archive_db[settings.checkpoint_collection]),
            rejects=durable(archive_db[settings.rejects_collection]),
            forgotten=durable(archive_db[settings.forgotten_collection]),
            names=CollectionNames.from_settings(settings),
            same_database=archive_client is None and settings.archive_db_name == settings.mongodb_database,
            archive_side=ARCHIVE_SIDE if archive_client is not None else "",
        )


@dataclass
class WriteOutcome:
    archived: int = 0
    already_archived: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    revised: int = 0  # archive documents replaced by a corrected version of their order
    existing: list[ArchiveDocument] = field(default_factory=list)  # found archived: compared next
    missed: list[ArchiveDocument] = field(default_factory=list)  # revisions that matched nothing: again
    # The record of forgotten persons as read after the write for the next write's documents
    # (``ArchiveWriter.write(upcoming=...)``): that write's ``known``. None: not read for them.
    known_upcoming: Forgotten | None = None
    retried: bool = False  # the upsert was sent again after a transient failure (see ArchiveWriter.revise)
    # With ``ArchiveWriter.write(expected=...)``: the orders whose archive document is not the
    # one expected: not written, to be read again.
    conflicts: set[OrderId] = field(default_factory=set)
    # Which orders, not only how many (the watcher's ``-v`` line says what happened to each):
    # those found archived as they are (not written), and those revised. The others written
    # (neither these, nor rejected, nor in ``conflicts``) were archived by this write.
    found: set[OrderId] = field(default_factory=set)
    replaced: set[OrderId] = field(default_factory=set)

    def plus(self, other: WriteOutcome) -> WriteOutcome:
        return WriteOutcome(
            self.archived + other.archived,
            self.already_archived + other.already_archived,
            self.rejections + other.rejections,
            self.revised + other.revised,
            self.existing + other.existing,
            self.missed + other.missed,
            retried=self.retried or other.retried,
            conflicts=self.conflicts | other.conflicts,
            found=self.found | other.found,
            replaced=self.replaced | other.replaced,
        )


class Unwritten(NamedTuple):
    """What a write has left to do (``ArchiveWriter.not_archived_as_they_are``): the documents the
    archive does not hold as they are, how many it does, and the record of forgotten persons
    as read for them (``ArchiveWriter.write(known=...)``: one read of it before the write)."""

    documents: list[ArchiveDocument]
    already_archived: int
    known: Forgotten | None  # None: not read (nothing asked)
    # Of ``documents``, those the archive holds in another version: a write revises them.
    revised: frozenset[OrderId] = frozenset()


class Held(NamedTuple):
    """What the archive holds of an order: the fingerprint of its source copy (None: written by
    an earlier version without it), who erased it (``forgotten_by``) and whether its courier was
    forgotten (the fingerprint is then the erased copy's), when ``restore`` last put it back."""

    source_hash: str | None
    forgotten_by: str | None = None
    restored_at: datetime | None = None
    courier_forgotten: bool = False
    pii_policy: str | None = None  # the ARCHIVE_PII tag it was written under
    archived_at: datetime | None = None  # when it was first archived

    @property
    def erased(self) -> bool:
        """Its source copy was erased (a client's erasure, by request or age, or a courier's)."""
        return self.forgotten_by is not None or self.courier_forgotten

    @classmethod
    def of(cls, document: Document) -> Held:
        courier = document.get("livreur")
        forgotten = isinstance(courier, dict) and courier.get("forgotten_at") is not None
        return cls(
            text_or_none(document.get("source_hash")),
            text_or_none(document.get("forgotten_by")),
            moment_or_none(document.get("restored_at")),
            forgotten,
            text_or_none(document.get("pii_policy")),
            moment_or_none(document.get("archived_at")),
        )


# What the archive held of some orders when read before them (``ArchiveWriter.write``); None:
# not read before them.
Expected = Mapping[OrderId, Held] | None

HELD_FIELDS = {
    "source_hash": 1,
    "forgotten_by": 1,
    "restored_at": 1,
    "livreur.forgotten_at": 1,
    "pii_policy": 1,
    "archived_at": 1,
}


def read_held(archive: MongoCollection, ids: list[OrderId], context: RunContext) -> dict[OrderId, Held]:
    """What the archive holds of each of ``ids`` it has (one read by ``_id``)."""
    found = context.retrying(
        lambda: list(archive.find({"_id": {"$in": ids}}, HELD_FIELDS)),
        purpose=Retry.WRITE,
    )
    return {document["_id"]: Held.of(document) for document in found}


def numbers_taken(
    archive: MongoCollection, context: RunContext, unwritten: Unwritten
) -> list[ArchiveDocument]:
    """The documents the archive's unique index on ``numero_commande`` would refuse if
    ``unwritten`` were written now (a dry run's prediction), met in ``ArchiveWriter.write``'s
    order: the new orders inserted, in their order, each refused when another order holds its
    number (in the archive or earlier in the write); then the orders the archive holds
    (``unwritten.revised``, as the read that set aside the unchanged ones found them) revised,
    each taking its new number unless another holds it, and giving up its old one; then, while a
    revision went through, the refused ones once more (``FreedNumbers``). One read: the numbers'
    holders."""
    documents, present = unwritten.documents, unwritten.revised
    numbers = list({str(d["numero_commande"]) for d in documents})
    holders = context.retrying(
        lambda: list(archive.find({"numero_commande": {"$in": numbers}}, {"numero_commande": 1})),
        purpose=Retry.READ,
    )
    claims = NumberClaims({h["numero_commande"]: h["_id"] for h in holders})
    inserts = claims.refused([d for d in documents if d["_id"] not in present])
    revisions = [d for d in documents if d["_id"] in present]
    refused_revisions = claims.refused(revisions)
    revised = len(refused_revisions) < len(revisions)
    while revised and (inserts or refused_revisions):
        inserts, before = claims.refused(inserts), len(refused_revisions)
        refused_revisions = claims.refused(refused_revisions)
        revised = len(refused_revisions) < before
    refused = {d["_id"] for d in inserts + refused_revisions}
    return [d for d in documents if d["_id"] in refused]


class NumberClaims:
    """Which order holds each ``numero_commande`` while a write is replayed (``numbers_taken``)."""

    def __init__(self, owners: dict[object, OrderId]) -> None:
        self.owner = dict(owners)
        self.number_of = {order: number for number, order in owners.items()}

    def refused(self, documents: list[ArchiveDocument]) -> list[ArchiveDocument]:
        """``documents`` written in turn: those refused, their number held by another order."""
        return [d for d in documents if not self._take(d["numero_commande"], d["_id"])]

    def _take(self, number: object, order: OrderId) -> bool:
        if self.owner.get(number, order) != order:
            return False
        previous = self.number_of.get(order)
        if previous is not None and previous != number:
            del self.owner[previous]  # a revision gives up its old number
        self.owner[number], self.number_of[order] = order, number
        return True


# What a revision keeps of the document it replaces: when and by what the order was archived.
_KEPT_BY_A_REVISION = ("_id", "archived_at", "archived_by")
# What a revision removes unless the new version has it: an erasure's mark says what the
# document holds, and a version written with personal data is not erased (ARCHIVE_PII_RETENTION
# then finds it again).
_MARKS = ("forgotten_at", "forgotten_by")


class ArchiveWriter:
    """The one way archive documents are written, by batch and watch alike: an unordered
    insert, retried on transient errors, in which an order already archived is refused on its
    ``_id`` (11000) and compared next, never rewritten, and a retried write cannot duplicate
    one. With the
    record of forgotten persons (``forgotten``), a forgotten client's or courier's orders are
    written erased, whatever path archives them (a correction, a restored order archived again,
    a repair), and an erasure recorded while they were written is applied after it."""

    def __init__(
        self,
        archive: MongoCollection,
        context: RunContext | None = None,
        on_retry: Callable[[BaseException], object] | None = None,
        erasures: RespectedErasures = NO_RECORD,
    ) -> None:
        self.archive = archive
        self.context = context or RunContext()  # on the archive's side: its errors name it
        self.on_retry = on_retry
        self.erasures = erasures  # the record of forgotten persons, respected
        self.retries = 0  # transient failures of this writer's bulks, each sent again
        self.unerased: list[str] = []  # orders too large to take an erasure (``erase``): their numbers
        self.unmarked: list[str] = []  # orders erased without the erasure's marks (``erase``): their numbers

    @classmethod
    def of(
        cls,
        collections: Collections,
        settings: Settings,
        context: RunContext | None = None,
        on_retry: Callable[[BaseException], object] | None = None,
    ) -> ArchiveWriter:
        """The writer of a run, respecting the record of forgotten persons."""
        on_archive = (context or RunContext()).on(collections.archive_side)
        erasures = RespectedErasures(
            ForgottenPersons(collections.forgotten, on_archive), settings.pii_policy.fields
        )
        return cls(collections.archive, on_archive, on_retry, erasures)

    # -- erasures

    def respecting_erasures(self, documents: list[ErasedDocument]) -> list[ErasedDocument]:
        """``documents``, a forgotten person's erased."""
        return self.erasures.before_write(documents)[0]

    def erase(self, documents: Sequence[Mapping[str, object]], erasure_of: ErasureOf) -> int:
        """Erase archived ``documents`` as ``erasure_of`` says, each only in the version read
        (``erasure_updates``); how many matched, or after a retry, erased (``erased_now``).
        A document too large to take its erasure (within bytes of 16 MB, the marks added: 17419)
        is erased without the marks (``erased_unmarked``): the others erased, the run goes on."""
        pairs = erasure_updates(documents, erasure_of)
        if not pairs:
            return 0
        retries = self.retries
        try:
            matched = int(self.bulk_write([update for _, update in pairs]).matched_count)
            return matched if self.retries == retries else erased_now(pairs, erasure_of, self.archived_hashes)
        except FatalError as error:
            refused = _too_large_only(error)
            if refused is None:
                raise
            details = cast(pymongo_errors.BulkWriteError, _pymongo_cause(error)).details or {}
            too_large = [pairs[refusal["index"]][0] for refusal in refused]
            return int(details.get("nMatched", 0)) + erased_unmarked(self, too_large, erasure_of)

    def archived_hashes(self, ids: list[OrderId]) -> dict[OrderId, Held]:
        """The ids among ``ids`` in the archive, each with what it holds (``Held``)."""
        return read_held(self.archive, ids, self.context)

    def not_archived_as_they_are(
        self, documents: list[ArchiveDocument], known: Forgotten | None = None
    ) -> Unwritten:
        """The documents the archive does not hold in this very version (by ``_id``, then
        ``source_hash``: one corrected since is written again, and revised), a forgotten
        person's erased, how many it does, and the record as read for them (``known``: read
        for them a moment ago, after the write before, and not read again)."""
        if not documents:
            return Unwritten(documents, 0, Forgotten())
        documents, known = self.erasures.before_write(documents, known)
        archived = self.archived_hashes([d["_id"] for d in documents])
        documents = [self.erasures.as_held(d, archived.get(d["_id"])) for d in documents]
        unchanged = {
            d["_id"]
            for d in documents
            if d["_id"] in archived and archived[d["_id"]].source_hash == d["source_hash"]
        }
        left = [d for d in documents if d["_id"] not in unchanged]
        revised = frozenset(d["_id"] for d in left if d["_id"] in archived)
        return Unwritten(left, len(unchanged), known, revised)

    def numbers_taken(self, unwritten: Unwritten) -> list[ArchiveDocument]:
        """What the unique index would refuse of ``unwritten`` (``numbers_taken``)."""
        return numbers_taken(self.archive, self.context, unwritten)

    def existing_ids(self, ids: list[OrderId]) -> set[OrderId]:
        found = self.context.retrying(
            lambda: list(self.archive.find({"_id": {"$in": ids}}, {"_id": 1})),
            purpose=Retry.WRITE,
        )
        return {doc["_id"] for doc in found}

    def confirmed_hashes(self, ids: list[OrderId]) -> dict[OrderId, Held]:
        """The ids among ``ids`` whose archive document a majority of the archive's replica set
        holds (read concern "majority"), each with what it holds: for the purge, which deletes
        only those, in that version. One a failover could still roll back is not archived yet."""
        durable = self.archive.with_options(read_concern=ReadConcern("majority"))
        return read_held(durable, ids, self.context)

    def write(
        self,
        documents: list[ArchiveDocument],
        *,
        again: bool = True,
        known: Forgotten | None = None,
        upcoming: list[ArchiveDocument] | None = None,
        expected: Expected = None,
    ) -> WriteOutcome:
        """Archive ``documents``: new orders inserted (``insert``), orders already archived
        compared by ``source_hash`` and, when their source changed since (a correction after
        delivery: a refund, a fixed address), their document replaced (``revise``). Idempotent:
        written again, nothing changes. A forgotten person's orders are written erased: the
        record is read before the write (``known``: read for them a moment ago, and not read
        again) and after it. That read after it also reads the record for ``upcoming`` (the
        next write's documents, when known already): ``known_upcoming``, the next write's
        ``known``, so that one read a write serves as the read after it and before the next.
        ``expected``: the archive's copies as read *before* the orders (absent, or ``{}``: none);
        a copy held in another version may be newer (a watcher that took over from this paused
        one) and is never replaced: its order is in ``conflicts``, to read again."""
        documents, known = self.erasures.before_write(documents, known)
        outcome = self.inserted_then_revised(documents, expected)
        if outcome.revised or outcome.conflicts:
            outcome = FreedNumbers(self, expected).written_again(documents, outcome)
        late, known_upcoming = self.erasures.since(documents, known, upcoming)  # recorded meanwhile
        if late is not None:
            self.erase(documents, late)
        missed, outcome.missed = outcome.missed, []
        if missed and again:
            # A revision that matched nothing: its document changed between the read and the
            # update (an erasure's walk recomputed its fingerprint, another writer): once more,
            # against what it holds now, with the record read again.
            outcome = outcome.plus(self.write(missed, again=False))
        outcome.known_upcoming = known_upcoming
        return outcome

    def inserted_then_revised(
        self, documents: list[ArchiveDocument], expected: Expected = None
    ) -> WriteOutcome:
        """``documents`` inserted, those the archive held compared and revised (``write``)."""
        outcome = self.insert(documents)
        if outcome.existing:
            outcome = outcome.plus(self.revise(outcome.existing, retried=outcome.retried, expected=expected))
        outcome.existing = []
        return outcome

    def revise(
        self, documents: list[ArchiveDocument], *, retried: bool = False, expected: Expected = None
    ) -> WriteOutcome:
        """Replace the archive documents whose order changed since they were written (``Revisions``);
        ``retried``: the upsert was sent again (see ``_written_by``); ``expected``: see ``write``."""
        return Revisions(self).revise(documents, retried=retried, expected=expected)

    def insert(self, documents: list[ArchiveDocument]) -> WriteOutcome:
        """Write ``documents`` as new orders: one unordered ``insert`` (on MongoDB no query stage
        per statement, unlike an upsert: the server's work of a first archive). An order the
        archive holds already (archived meanwhile by a watcher or another batch, or a correction
        of an archived order) is refused on its ``_id``, told by the write error's ``keyPattern``
        (MongoDB's ``DuplicateKeyErrorInfo``, 4.4+, passed through by mongos), and compared next
        (``existing``) as an upsert that matched; another order's ``numero_commande`` rejects it,
        as the upsert did. Never a read after the error to decide: an archive document that the
        cold move or the TTL index deleted meanwhile would read as another order's number. A
        duplicate whose ``keyPattern`` the server did not send goes through ``upsert``, which
        decides it as before. Refused whole for its size: in halves (``_in_halves``)."""
        return written_in_halves(documents, self._insert_once)

    def upsert(self, documents: list[ArchiveDocument]) -> WriteOutcome:
        """Write ``documents`` by ``$setOnInsert`` upserts keyed on ``_id`` (an order the archive
        holds is matched, never rewritten, and compared next): the way a duplicate key that the
        server did not name (no ``keyPattern``) is settled. Refused whole for its size: in halves."""
        return written_in_halves(documents, self._upsert_once)

    def _insert_once(self, documents: list[ArchiveDocument]) -> WriteOutcome:
        retries = self.retries
        try:
            result = self._sent([InsertOne(cast(Document, d)) for d in documents])
        except FatalError as error:
            refused = _refused_in_part(error)
            return Refusals(self).of_insert(refused, documents, retried=self.retries > retries)
        return WriteOutcome(result.inserted_count, 0, retried=self.retries > retries)

    def _upsert_once(self, documents: list[ArchiveDocument]) -> WriteOutcome:
        requests = [UpdateOne({"_id": d["_id"]}, {"$setOnInsert": d}, upsert=True) for d in documents]
        retries = self.retries
        try:
            result = self._sent(requests)
        except FatalError as error:
            refused = _refused_in_part(error)
            return Refusals(self).of_upsert(refused, documents, retried=self.retries > retries)
        inserted = set(result.upserted_ids or {})
        existing = [d for i, d in enumerate(documents) if i not in inserted]
        return WriteOutcome(result.upserted_count, 0, existing=existing, retried=self.retries > retries)

    def _sent(self, requests: Sequence[InsertOne[Document] | UpdateOne]) -> BulkWriteResult:
        """``bulk_write(requests)``; a write refused whole for its size raises ``_WriteTooLarge``."""
        try:
            return self.bulk_write(requests)
        except InvalidDocument as exc:  # pymongo's DocumentTooLarge, before anything is sent
            raise _WriteTooLarge(f"archive document too large: {type(exc).__name__}") from exc
        except FatalError as error:
            cause = _pymongo_cause(error)
            if isinstance(cause, pymongo_errors.OperationFailure) and cause.code in WHOLE_WRITE_TOO_LARGE:
                name = (cause.details or {}).get("codeName") or _CODE_NAMES.get(cause.code, "")
                raise _WriteTooLarge(
                    f"archive document too large: code {cause.code} {name}".rstrip()
                ) from error
            raise

    def bulk_write(self, requests: Sequence[InsertOne[Document] | UpdateOne]) -> BulkWriteResult:
        """One unordered bulk on the archive, retried on transient errors, its side named."""
        return self.context.retrying(
            lambda: self.archive.bulk_write(requests, ordered=False),
            purpose=Retry.WRITE,
            on_retry=self._retrying,
        )

    def _retrying(self, exc: BaseException, delay: float) -> None:
        self.retries += 1
        log.warning("archive write failed (%s); retrying in %.1fs", describe(exc), delay)
        if self.on_retry is not None:
            self.on_retry(exc)


def erased_now(
    pairs: list[tuple[Mapping[str, object], UpdateOne]],
    erasure_of: ErasureOf,
    archived_hashes: Callable[[list[OrderId]], dict[OrderId, Held]],
) -> int:
    """After a retried erasure, how many of its documents the archive holds erased, whichever
    try erased them: a try an election killed after some statements (MongoDB keeps those) left
    them in a version the retry's filter (the version read) no longer matches. Read back: the
    fingerprint each holds now is its erased copy's."""
    wanted: dict[OrderId, object] = {}
    for document, _ in pairs:
        erasure = erasure_of(document)
        done = erasure(document) if erasure is not None else document
        wanted[document["_id"]] = done.get("source_hash")
    held = archived_hashes(list(wanted))
    return sum(
        1 for key, now in held.items() if now.source_hash is not None and now.source_hash == wanted[key]
    )


def erased_unmarked(
    writer: ArchiveWriter, documents: list[Mapping[str, object]], erasure_of: ErasureOf
) -> int:
    """``documents``, refused their erasure for their size (17419: within bytes of 16 MB, the
    erasure's marks would take them past it), erased without the marks: each personal value
    made null and the fingerprint replaced by one of the same length, which cannot make a
    document larger. Each named in ``writer.unmarked`` (its personal data gone, the marks
    missing); one refused even that (a document an early version wrote without a fingerprint:
    the erased copy's adds one) in ``writer.unerased``, left as it is. How many were changed."""
    pairs = erasure_updates(documents, erasure_of, marked=False)
    refused: dict[int, WriteError] = {}
    matched = 0
    if pairs:
        try:
            matched = int(writer.bulk_write([update for _, update in pairs]).matched_count)
        except FatalError as error:
            again = _too_large_only(error)
            if again is None:
                raise
            refused = {id(pairs[r["index"]][0]): r for r in again}
            matched = int(
                (cast(pymongo_errors.BulkWriteError, _pymongo_cause(error)).details or {}).get("nMatched", 0)
            )
    cleared = {id(document) for document, _ in pairs}
    for document in documents:
        name = text_or_none(document.get("numero_commande")) or str(document["_id"])[:200]
        refusal = refused.get(id(document))
        if refusal is not None:
            writer.unerased.append(name)
            log.warning(
                "order %s: its archive document is too large to take its erasure, even without its marks "
                "(code %s: %s): its personal data is NOT erased",
                name,
                refusal.get("code"),
                str(refusal.get("errmsg", ""))[:200],
            )
            continue
        writer.unmarked.append(name)
        log.log(
            logging.WARNING if id(document) in cleared else logging.DEBUG,
            "order %s: its archive document is too large to take the erasure's marks (forgotten_at, "
            "forgotten_by): its personal data is erased, the marks left out",
            name,
        )
    return matched


def written_in_halves(
    documents: list[ArchiveDocument], once: Callable[[list[ArchiveDocument]], WriteOutcome]
) -> WriteOutcome:
    """``once(documents)``. A write the server (10334 BSONObjectTooLarge: the command past
    16 MB + 16 KB) or pymongo (``DocumentTooLarge``, a ``bson`` error, past 48 MB or one
    statement past the server's limit) refuses whole is split in halves, down to the one
    order that makes it too large: that order is rejected, the rest archived (those that an
    earlier batch of the refused bulk applied counted archived, not already archived).
    Without it, batch died at the same chunk on every run and watch replayed the same event
    forever."""
    try:
        return once(documents)
    except _WriteTooLarge as too_large:
        if len(documents) == 1:
            return WriteOutcome(rejections=[Rejection.of(documents[0], too_large.reason)])
        log.warning("%s for %d orders: writing them in halves", too_large.reason, len(documents))
        half = len(documents) // 2
        outcome = written_in_halves(documents[:half], once).plus(written_in_halves(documents[half:], once))
        # Refused whole, yet applied in part: pymongo sends a bulk in batches of 48 MB at
        # most, and those before the one refused were applied, their result lost with the
        # error. The halves meet their orders on the _id: written by this very write, told
        # as after a write sent again (``_written_by``), not counted already archived.
        outcome.retried = True
        return outcome


class Refusals:
    """A bulk write the archive refused in part, settled order by order: one job of the
    writer's, apart."""

    def __init__(self, writer: ArchiveWriter) -> None:
        self.writer = writer

    def per_document(
        self, exc: pymongo_errors.BulkWriteError, documents: list[ArchiveDocument]
    ) -> list[WriteError]:
        """Per-document refusals of a bulk whose write concern was met (``is_transient``
        retries any write-concern error first); a bulk refused alike for every order is the
        deployment (``refused_by_the_deployment``), one refused among others is that order."""
        details = exc.details or {}
        if details.get("writeConcernErrors"):
            raise FatalError(describe(exc)) from without_documents(exc)  # unsatisfiable: no write here counts
        errors = write_errors(details)
        if any(e.get("code") in TRANSIENT_CODES for e in errors):
            raise TransientError(f"archive write failed in part: {describe(exc)}") from without_documents(exc)
        refused_by_the_deployment(errors, documents, self.writer.archive)
        return errors

    def of_insert(
        self, exc: pymongo_errors.BulkWriteError, documents: list[ArchiveDocument], *, retried: bool
    ) -> WriteOutcome:
        """An insert refused in part (see ``ArchiveWriter.insert``): a duplicate ``_id`` is an order archived
        already, compared next; a duplicate on another key (``numero_commande``: another order's
        number) and any other refusal (2 BadValue "object to insert too large": over 16 MB, 121 a
        validator, ...) reject that order alone; a duplicate the server did not name its key
        for is written again by ``upsert``, never guessed."""
        errors = self.per_document(exc, documents)
        outcome = WriteOutcome(int((exc.details or {}).get("nInserted", 0)), 0, retried=retried)
        unnamed: list[ArchiveDocument] = []
        for error in errors:
            document = documents[error["index"]]
            key = duplicate_key(error)
            if key is not None and list(key) == ["_id"]:
                outcome.existing.append(document)  # archived already: compared like an upsert that matched
            elif error.get("code") == DUPLICATE_KEY and key is None:
                unnamed.append(document)
            else:
                outcome.rejections.append(Rejection.of(document, _refusal_reason(error)))
        return outcome.plus(self.writer.upsert(unnamed)) if unnamed else outcome

    def of_upsert(
        self, exc: pymongo_errors.BulkWriteError, documents: list[ArchiveDocument], *, retried: bool
    ) -> WriteOutcome:
        """Per-document refusals of an upsert (see ``per_document``). A duplicate key is not a
        failure: when the order's ``_id`` is in the archive it was archived meanwhile (a
        watcher, a concurrent run); otherwise another order holds its ``numero_commande``, and
        this one is rejected. Any other refusal of one document (17420 larger than 16 MB once
        enriched, 121 a validator, 52 a ``$`` field name on 4.4...) rejects that order alone: one
        bad document never stops a run, nor makes a watcher replay it forever."""
        errors = self.per_document(exc, documents)
        details = exc.details or {}
        inserted = {u["index"] for u in details.get("upserted", [])}
        failed = {e["index"] for e in errors}
        existing = [d for i, d in enumerate(documents) if i not in inserted and i not in failed]
        # retried: sent again after a lost reply, what its first attempt wrote is compared next
        # and counted as this run's (``_written_by``), as after an upsert that succeeded.
        outcome = WriteOutcome(details.get("nUpserted", 0), 0, existing=existing, retried=retried)
        duplicates = [documents[e["index"]] for e in errors if e.get("code") == DUPLICATE_KEY]
        present = self.writer.existing_ids([d["_id"] for d in duplicates]) if duplicates else set()
        for error in errors:
            document = documents[error["index"]]
            if error.get("code") == DUPLICATE_KEY and document["_id"] in present:
                outcome.existing.append(document)  # archived meanwhile: compared like the others
                continue
            outcome.rejections.append(Rejection.of(document, _refusal_reason(error)))
        return outcome


class FreedNumbers:
    """The orders of a write refused for a taken number, written once more after its revisions:
    a revision may have freed that number (order A archived as N, corrected to M; new order B
    numbered N, in the same chunk: B's insert, before A's revision, met A's N). One job of the
    writer's, apart."""

    def __init__(self, writer: ArchiveWriter, expected: Expected = None) -> None:
        self.writer = writer
        self.expected = expected

    def written_again(self, documents: list[ArchiveDocument], outcome: WriteOutcome) -> WriteOutcome:
        """``outcome`` of writing ``documents``, its orders refused for a taken number written
        again while a round revised something (a chain of corrections; each such round writes
        one refused order at least, so at most one round an order). Idempotent as any write: the
        insert never rewrites a document; a number still held (two live orders sharing it) is
        refused again and its order stays rejected, never archived twice nor lost."""
        by_id = {d["_id"]: d for d in documents}
        revised = outcome.revised
        while revised:
            taken = [by_id[r.order_id] for r in outcome.rejections if r.reason == TAKEN_NUMBER]
            if not taken:
                break
            log.debug("%s refused for a number this write freed: once more", plural(len(taken), "order"))
            again = self.writer.inserted_then_revised(taken, self.expected)
            refused = {d["_id"] for d in taken}
            outcome.rejections = [r for r in outcome.rejections if r.order_id not in refused]
            outcome, revised = outcome.plus(again), again.revised
        if outcome.conflicts:
            # Orders read again (``ArchiveWriter.write``'s ``expected``): their revision may free
            # a number, so the orders refused for one are read again with them, not rejected.
            deferred = {r.order_id for r in outcome.rejections if r.reason == TAKEN_NUMBER}
            outcome.conflicts |= deferred
            outcome.rejections = [r for r in outcome.rejections if r.order_id not in deferred]
        return outcome


class Revisions:
    """The archive documents whose order changed since they were written (a correction after
    delivery, a change of ARCHIVE_PII) replaced, each only in the version read: one job of the
    writer's, apart."""

    def __init__(self, writer: ArchiveWriter) -> None:
        self.writer = writer

    def revise(
        self,
        documents: list[ArchiveDocument],
        *,
        retried: bool = False,
        expected: Expected = None,
    ) -> WriteOutcome:
        """Replace the archive documents whose order changed since they were written, each only
        if it still holds the version read here (``source_hash`` in the filter: two writers at
        once revise once), keeping ``archived_at`` and setting ``revised_at``. A document an
        earlier version wrote without the source is completed, not counted as revised.
        ``retried``: the upsert that found them was sent again (see ``_written_by``).
        ``expected`` (``ArchiveWriter.write``): a document held in another version than expected
        is not replaced but returned in ``conflicts``, and so is one changed before its update."""
        archived = self.writer.archived_hashes([d["_id"] for d in documents])
        outcome = WriteOutcome()
        changed, completed = [], []
        for document in (self.writer.erasures.as_held(d, archived.get(d["_id"])) for d in documents):
            held = archived.get(document["_id"])
            if retried and held is not None and _written_by(held, document):
                outcome.archived += 1  # by this very write, in an attempt whose reply was lost
            elif held is None or held.source_hash == document["source_hash"]:
                outcome.already_archived += 1  # unchanged (or deleted from the archive meanwhile)
                outcome.found.add(document["_id"])
            elif expected is not None and not _as_expected(held, expected.get(document["_id"])):
                # Written since this order was read, maybe in a newer version: read it again.
                outcome.conflicts.add(document["_id"])
            elif held.source_hash is None:
                completed.append(document)
            else:
                changed.append((document, held.source_hash))
        revisions = [
            UpdateOne({"_id": d["_id"], "source_hash": old}, _revision(d, revised=True)) for d, old in changed
        ]
        completions = [
            UpdateOne({"_id": d["_id"], "source_hash": {"$exists": False}}, _revision(d, revised=False))
            for d in completed
        ]
        outcome.revised = self.apply(revisions, [d for d, _ in changed], outcome)
        outcome.already_archived += self.apply(completions, completed, outcome)
        if outcome.revised + len(outcome.rejections) < len(changed):
            now = self.writer.archived_hashes([d["_id"] for d, _ in changed])
            refused = {r.order_id for r in outcome.rejections}
            outcome.missed = [
                d
                for d, _ in changed
                if d["_id"] in now
                and now[d["_id"]].source_hash != d["source_hash"]
                and d["_id"] not in refused
            ]
            if expected is not None:  # changed after the order was read: read it again
                outcome.conflicts.update(d["_id"] for d in outcome.missed)
                outcome.missed = []
        _name_the_orders(outcome, [d for d, _ in changed], completed)
        if outcome.revised:
            _say_why_revised(outcome.revised, changed, archived)
        return outcome

    def apply(
        self, requests: list[UpdateOne], documents: list[ArchiveDocument], outcome: WriteOutcome
    ) -> int:
        """The revision statements sent; the number applied. A refused one rejects its order (a
        correction that gave it another order's numero: 11000)."""
        if not requests:
            return 0
        try:
            return int(self.writer.bulk_write(requests).modified_count)
        except FatalError as error:
            cause = _pymongo_cause(error)
            if not isinstance(cause, pymongo_errors.BulkWriteError):
                raise
            details = cause.details or {}
            if details.get("writeConcernErrors"):
                raise
            for refusal in write_errors(details):
                outcome.rejections.append(Rejection.of(documents[refusal["index"]], _refusal_reason(refusal)))
            return int(details.get("nModified", 0))


class Rewrites:
    """Archive documents that disagree with their source order (a hand edit, a corruption,
    found by ``verify``) replaced by the order as the source holds it now, finished as every
    write finishes it: ``verify --repair``'s one write. One job of the writer's, apart."""

    def __init__(self, writer: ArchiveWriter) -> None:
        self.writer = writer

    def rewrite(self, documents: list[ArchiveDocument]) -> WriteOutcome:
        """Replace the archive document of each of ``documents`` (orders finished from the source
        now) whatever its ``source_hash`` (a damaged document of the same version: a revision
        would leave it), each only in the version read here (``source_hash`` in the filter: a
        correction written meanwhile is not overwritten by this read), ``archived_at`` kept,
        ``revised_at`` set (``revised`` in the outcome: how many were replaced). An order the
        archive no longer holds is not written (archiving is batch's). Erasures hold as in every
        write: a forgotten person's orders are written erased (the record read before the write
        and after it), an erased document stays erased (``as_held``: by request or by age)."""
        writer = self.writer
        documents, known = writer.erasures.before_write(documents)
        held = writer.archived_hashes([d["_id"] for d in documents])
        present = [writer.erasures.as_held(d, held[d["_id"]]) for d in documents if d["_id"] in held]
        requests = [
            UpdateOne(
                {"_id": d["_id"], "source_hash": held[d["_id"]].source_hash}, _revision(d, revised=True)
            )
            for d in present
        ]
        outcome = WriteOutcome()
        outcome.revised = Revisions(writer).apply(requests, present, outcome)
        late, _ = writer.erasures.since(present, known)  # a forget that ran meanwhile
        if late is not None:
            writer.erase(present, late)
        return outcome


def _name_the_orders(
    outcome: WriteOutcome, changed: list[ArchiveDocument], completed: list[ArchiveDocument]
) -> None:
    """``outcome.replaced`` and ``outcome.found`` of a revision (``Revisions.revise``): the changed
    orders applied (neither refused nor to be written or read again) revised, the completed ones
    found (counted already archived). A bulk's reply counts what it applied, without naming it:
    a changed order that another writer revised to the same version at the same moment is
    named revised here, where the counts say it was not (only ever one of two writers at once)."""
    left = {r.order_id for r in outcome.rejections} | outcome.conflicts | {d["_id"] for d in outcome.missed}
    outcome.replaced |= {d["_id"] for d in changed if d["_id"] not in left}
    outcome.found |= {d["_id"] for d in completed if d["_id"] not in left}


def _as_expected(held: Held, before: Held | None) -> bool:
    """The archive holds the version read before the order was (``ArchiveWriter.write``'s
    ``expected``): nobody wrote it since, so the order as read is at least as new as it."""
    return before is not None and before.source_hash == held.source_hash


def _written_by(held: Held, document: ArchiveDocument) -> bool:
    """The archive's document is ``document`` as written by this very write: its source version,
    and its ``archived_at`` to the millisecond (BSON's precision; one per chunk, of this run).
    Asked after an upsert sent again after a transient failure: its first attempt may have been
    applied and its reply lost to a cut connection; what it wrote is then counted archived, not
    already archived (a 4-share backfill's reports summed 1,000 short of its archive)."""
    written = document.get("archived_at")
    if held.archived_at is None or not isinstance(written, datetime):
        return False
    return held.source_hash == document.get("source_hash") and _to_ms(held.archived_at) == _to_ms(written)


def _to_ms(moment: datetime) -> datetime:
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def refused_by_the_deployment(
    errors: list[WriteError], documents: Sequence[Mapping[str, object]], archive: MongoCollection
) -> None:
    """Every order of a write refused with the same code (a validator added to the
    archive: 121 for each) is the deployment, not the data: raise ``FatalError`` (exit 1,
    the code and the collection named), so that nothing is listed as rejected and no mark
    or token moves. One refused order among good ones stays a rejection; so does a write
    of one order refused (nothing tells its data from its deployment), and so does a document
    refused for its size (``is_document_too_large``): its data, whatever the orders beside it."""
    if any(is_document_too_large(e.get("code"), e.get("errmsg")) for e in errors):
        return
    refused = {e.get("code") for e in errors if e.get("code") != DUPLICATE_KEY}
    if len(documents) < 2 or len(refused) != 1:
        return
    if sum(1 for e in errors if e.get("code") != DUPLICATE_KEY) < len(documents):
        return
    code = refused.pop() or 0
    name = next((e["codeName"] for e in errors if e.get("codeName")), "") or _CODE_NAMES.get(code, "")
    raise FatalError(
        f"the archive {archive.full_name} refused every one of {len(documents)} orders with code {code} {name}".rstrip()
        + ": the deployment refuses them (a validator, a permission, a full disk), not their data; "
        "nothing was listed as rejected, fix the archive collection and run again"
    )


def _say_why_revised(
    revised: int, changed: list[tuple[ArchiveDocument, Any]], held: dict[OrderId, Held]
) -> None:
    """A revision follows a correction at the source, or a change of ARCHIVE_PII (its mode, key
    or declared fields), which changes what the archive keeps of the same order: said apart."""
    policy = sum(
        1 for d, _ in changed if d["_id"] in held and held[d["_id"]].pii_policy not in (None, d["pii_policy"])
    )
    if policy:
        log.info(
            "%s archived again under ARCHIVE_PII %s (written under another mode, key or declared fields)",
            plural(policy, "order"),
            changed[0][0]["pii_policy"],
        )
    if revised > policy:
        log.info(
            "%s revised: corrected at the source since archived", plural(revised - policy, "archived order")
        )


def duplicate_key(error: WriteError) -> Mapping[str, object] | None:
    """The key of the unique index a duplicate-key write error (11000) met, as the server names
    it (``keyPattern``: ``{_id: 1}``, ``{numero_commande: 1}``); None when it is not one or the
    server did not say (a reply without MongoDB's ``DuplicateKeyErrorInfo``)."""
    key = error.get("keyPattern") if error.get("code") == DUPLICATE_KEY else None
    return key if isinstance(key, Mapping) and key else None


def _too_large_only(error: FatalError) -> list[WriteError] | None:
    """The write errors of a bulk whose every refusal is a document's size, or None."""
    cause = _pymongo_cause(error)
    if not isinstance(cause, pymongo_errors.BulkWriteError) or (cause.details or {}).get(
        "writeConcernErrors"
    ):
        return None
    refused = write_errors(cause.details or {})
    if not refused or not all(is_document_too_large(e.get("code"), e.get("errmsg")) for e in refused):
        return None
    return refused


def _refused_in_part(error: FatalError) -> pymongo_errors.BulkWriteError:
    """The bulk write error (per-statement refusals) under ``error``; any other failure goes on."""
    cause = _pymongo_cause(error)
    if isinstance(cause, pymongo_errors.BulkWriteError):
        return cause
    raise error


def _pymongo_cause(error: BaseException) -> BaseException | None:
    """The driver's error under an archiver error (under its side's name, if any)."""
    cause = error.__cause__
    while isinstance(cause, ArchiverError):
        cause = cause.__cause__
    return cause


def _revision(document: ArchiveDocument, *, revised: bool) -> dict[str, object]:
    """A revision's update: the new version's fields, but when and by what it was archived; an
    erasure's mark the new version does not carry is removed."""
    fields = {k: v for k, v in document.items() if k not in _KEPT_BY_A_REVISION}
    fields["revised_at"] = document["archived_at"] if revised else None
    update: dict[str, object] = {"$set": fields}
    unmarked = {mark: "" for mark in _MARKS if mark not in document}
    if unmarked:
        update["$unset"] = unmarked
    return update


class _WriteTooLarge(Exception):
    """A write refused whole for its size (see ``ArchiveWriter.upsert``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


TAKEN_NUMBER = "numero_commande already archived for another order"  # the unique index's refusal
# What MongoDB answers a write command refused whole for its size (nothing applied).
WHOLE_WRITE_TOO_LARGE = frozenset({10334})
# What it answers one document of an insert past 16 MB (``fixDocumentForInsert``,
# src/mongo/db/ops/insert.cpp, 4.4 to 8.0: 2 BadValue, "object to insert too large. size in
# bytes: N, max size: 16777216"), where an upsert gets 17420 DocumentTooLarge.
BAD_VALUE = 2

# Per-document refusals worth naming (the server sends codeName with most, not all, replies).
_CODE_NAMES = {
    2: "BadValue",
    52: "DollarPrefixedFieldName",
    121: "DocumentValidationFailure",
    10334: "BSONObjectTooLarge",
    17420: "DocumentTooLarge",
}


def _refusal_reason(error: WriteError) -> str:
    """Why the server refused one order's write (a ``writeErrors`` entry), as rejections list it."""
    code = error.get("code")
    key = duplicate_key(error)
    if code == DUPLICATE_KEY and (key is None or "numero_commande" in key or list(key) == ["_id"]):
        return TAKEN_NUMBER
    if code == DUPLICATE_KEY:  # a unique index of the deployment's own
        return f"archive write refused: code {code} duplicate key on {', '.join(map(str, key or {}))}"
    name = error.get("codeName") or _CODE_NAMES.get(code or 0, "")
    reason = f"archive write refused: code {code} {name}".rstrip()
    if code == BAD_VALUE and str(error.get("errmsg", "")).startswith(INSERT_TOO_LARGE):
        return f"{reason} ({INSERT_TOO_LARGE}: over 16 MB)"
    return reason
