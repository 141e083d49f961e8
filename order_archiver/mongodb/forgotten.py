"""The record of forgotten persons: the clients and couriers ``forget --run`` erased (their
ids and when, nothing of their data), read before every write of the archive
(``storage.ArchiveWriter``): an erasure is a state, not a one-off update. ``forget`` records a
person *before* it erases their orders, and the writer looks again *after* it writes: a write
racing the erasure is caught by one or the other."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from bson import ObjectId
from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.cursor import Cursor

from order_archiver.context import RunContext
from order_archiver.documents import PersonId
from order_archiver.orders.erasing import (
    BY_AGE,
    BY_REQUEST,
    CLIENT,
    COURIER,
    ErasedDocument,
    Erasure,
    Forgotten,
    person_ids,
)
from order_archiver.orders.pii import (
    CONTRACT_FIELDS,
    COURIER_PII_FIELDS,
    ORDER_PII_FIELDS,
    PII_FIELDS,
    OrderFields,
)
from order_archiver.retry import Retry

CHUNK = 500  # ids per read of the record
# A person's record while their erasure is unfinished, one mark per place, each set when the
# person is recorded and cleared only after the writes it covers (as a checkpoint is):
# ARCHIVE_PENDING while archived orders may still hold their data (a forget a limit or a signal
# ended midway through the archive's erasure), COLD_PENDING while cold files may (a forget ended
# between two files, or that could not have the cold tier's lease). Two fields, not one mark of
# a wider meaning: a version before ARCHIVE_PENDING reads COLD_PENDING as "cold files only" and,
# finishing it, would clear it with the archive's documents unerased; it leaves a field it does
# not know alone, so ARCHIVE_PENDING outlives a rolling upgrade's older runs. And MongoDB 4.4's
# partial indexes take no $or: one index each, an equality filter (``indexes.FORGOTTEN_INDEXES``).
# A record an earlier version wrote carries neither for the archive: its COLD_PENDING persons
# have the archive's erasure made again before that mark is cleared (``tier.finish_forgotten``).
ARCHIVE_PENDING = "archive_pending"
COLD_PENDING = "cold_pending"
PENDING_MARKS = (ARCHIVE_PENDING, COLD_PENDING)
LATEST_CHECKED = 100  # the most recent forgotten persons whose archived orders status counts
# The unfinished erasures one read names at most (status, and each batch --run finishes): read
# on the record's partial index (``indexes.FORGOTTEN_INDEXES``), however long ago each person
# was forgotten; status says "at least" past it, and a batch --run leaves the rest to the next.
UNFINISHED_READ_AT_MOST = 1000
ErasureOf = Callable[[Mapping[str, object]], Erasure | None]  # the erasure an archive document is owed


class HeldErasure(Protocol):
    """What the archive's version of an order says of its erasure (``storage.Held``)."""

    @property
    def erased(self) -> bool: ...

    @property
    def forgotten_by(self) -> str | None: ...

    @property
    def courier_forgotten(self) -> bool: ...


def record_key(kind: str, person_id: PersonId) -> str | None:
    """A person's key in the record: ``client:<24 hex digits>``, ``livreur:<...>``. Only an
    ObjectId (the contract's ids, what ``forget`` takes) or its 24-digit text (dirty data naming
    the same person) has one. A text key, not an embedded document: ``{kind, id}`` as ``_id``
    would match only in that very field order."""
    if isinstance(person_id, ObjectId):
        return f"{kind}:{person_id}"
    if isinstance(person_id, str) and len(person_id) == 24 and ObjectId.is_valid(person_id):
        return f"{kind}:{person_id.lower()}"
    return None


class Recorded(NamedTuple):
    """One person of the record: its key (``record_key``, the record's ``_id``), kind and id."""

    key: str
    kind: str
    id: PersonId


@dataclass(frozen=True)
class ForgottenPersons:
    """The record of forgotten persons: one document per person, ``{_id: "client:<id>", kind,
    id, forgotten_at}`` (``kind``: ``client`` or ``livreur``), in the archive's database."""

    collection: Collection[dict[str, object]]
    context: RunContext = field(default_factory=RunContext)

    def record(
        self, kind: str, person_id: ObjectId, at: datetime | None = None, *, cold_pending: bool = False
    ) -> None:
        """Remember that ``person_id`` was forgotten (idempotent: the first date stays), its
        erasure unfinished in the archive (``ARCHIVE_PENDING``) until ``archive_finished`` clears
        it and, with ``cold_pending`` (a cold tier: its files are rewritten after the archive is
        erased), in the cold tier (``COLD_PENDING``) until ``finished`` clears it: a forget a
        signal or a limit ended leaves them, ``status`` names the person and batch --run finishes."""
        fields = {"kind": kind, "id": person_id, "forgotten_at": at or datetime.now(UTC)}
        marks: dict[str, object] = {ARCHIVE_PENDING: True}
        if cold_pending:
            marks[COLD_PENDING] = True
        update: dict[str, object] = {"$setOnInsert": fields, "$set": marks}
        self.context.retrying(
            lambda: self.collection.update_one({"_id": record_key(kind, person_id)}, update, upsert=True),
            purpose=Retry.WRITE,
        )

    def finished(self, kind: str, person_id: ObjectId) -> None:
        """The person's erasure done in the cold tier (its files all rewritten, after the archive's)."""
        self._cleared(kind, person_id, COLD_PENDING)

    def archive_finished(self, kind: str, person_id: ObjectId) -> None:
        """The person's erasure done in the archive (a walk of all their orders to its end)."""
        self._cleared(kind, person_id, ARCHIVE_PENDING)

    def _cleared(self, kind: str, person_id: ObjectId, mark: str) -> None:
        self.context.retrying(
            lambda: self.collection.update_one({"_id": record_key(kind, person_id)}, {"$unset": {mark: ""}}),
            purpose=Retry.WRITE,
        )

    def noted(self, note: str) -> bool:
        """Whether the record holds ``note`` (a one-time step done: ``erasure.upgrade_erasures``)."""
        found = self.context.retrying(
            lambda: self.collection.find_one({"_id": note}, {"_id": 1}),
            purpose=Retry.READ,
        )
        return found is not None

    def note(self, note: str) -> None:
        self.context.retrying(
            lambda: self.collection.update_one(
                {"_id": note}, {"$setOnInsert": {"done_at": datetime.now(UTC)}}, upsert=True
            ),
            purpose=Retry.WRITE,
        )

    def among(self, documents: Iterable[Mapping[str, object]]) -> Forgotten:
        """The forgotten clients and couriers among those ``documents`` name: one read of the
        record per ``CHUNK`` keys."""
        named: dict[str, list[tuple[str, PersonId]]] = {}
        for document in documents:
            for kind in (CLIENT, COURIER):
                for person in person_ids(document, kind):
                    key = record_key(kind, person)
                    if key is not None:
                        named.setdefault(key, []).append((kind, person))
        keys = list(named)
        found: dict[str, set[PersonId]] = {CLIENT: set(), COURIER: set()}
        for start in range(0, len(keys), CHUNK):
            wanted = {"_id": {"$in": keys[start : start + CHUNK]}}
            records = self.context.retrying(
                lambda w=wanted: list(self.collection.find(w, {"_id": 1})),  # type: ignore[misc]
                purpose=Retry.READ,
            )
            for record in records:
                for kind, person in named.get(str(record["_id"]), []):
                    found[kind].add(person)
        return Forgotten(frozenset(found[CLIENT]), frozenset(found[COURIER]))

    def unfinished(self, limit: int, marks: Sequence[str] = PENDING_MARKS) -> list[tuple[str, PersonId]]:
        """The persons whose erasure is unfinished (``ARCHIVE_PENDING``: archived orders still
        to erase; ``COLD_PENDING``: cold files still to rewrite; those of ``marks``), however many
        were forgotten after them: at most ``limit`` (ask one more to tell "at least"), each once.
        One read per mark, ``{<mark>: true}``, which the record's partial index on it serves (it
        holds those persons alone: the cost grows with the unfinished erasures, not with the
        record); without it (a record an earlier version wrote, until the next batch --run
        builds it) the same read scans the record, and ``status`` names the index."""
        found: dict[str, tuple[str, PersonId]] = {}
        for mark in marks:
            left = limit - len(found)
            if left <= 0:
                break
            records = self.context.retrying(
                lambda m=mark, n=left: list(  # type: ignore[misc]
                    self.collection.find({m: True}, {"kind": 1, "id": 1}, limit=n + len(found))
                ),
                purpose=Retry.READ,
            )
            for r in records:
                if r.get("kind") in (CLIENT, COURIER) and "id" in r and len(found) < limit:
                    found.setdefault(str(r["_id"]), (str(r["kind"]), r["id"]))
        return list(found.values())

    def persons(self, limit: int) -> list[tuple[str, PersonId]]:
        """The ``limit`` most recently recorded persons, ``(kind, id)``, the most recent first
        (natural order, reversed: no index, and only ``limit`` documents read): the spot check of
        status's count of archived orders still holding personal data. Not for what must be found
        whatever its age: an unfinished erasure is ``unfinished``'s, a walk of all is ``after``'s."""
        records = self.context.retrying(
            lambda: list(
                self.collection.find({}, {"kind": 1, "id": 1}, sort=[("$natural", -1)], limit=limit)
            ),
            purpose=Retry.READ,
        )
        return [
            (str(r["kind"]), r["id"]) for r in records if r.get("kind") in (CLIENT, COURIER) and "id" in r
        ]

    def after(self, key: str | None, batch_size: int = CHUNK) -> Cursor[dict[str, object]]:
        """The recorded persons after ``key`` (None: from the first) in the order of their keys,
        on the ``_id`` index: a walk of the whole record (``verify``; resumed
        after a cut by ``source.scan_by_id``) holds one batch, however many persons were
        forgotten over the years (``persons`` reads them all in one list): a batch of ``batch_size``."""
        wanted: dict[str, object] = {"kind": {"$in": [CLIENT, COURIER]}}
        if key is not None:
            wanted["_id"] = {"$gt": key}  # every key is a string: no other type to bracket
        return self.collection.find(wanted, {"kind": 1, "id": 1}, batch_size=batch_size).sort(
            "_id", ASCENDING
        )


def recorded(document: Mapping[str, object]) -> Recorded | None:
    """A record document as a ``Recorded`` person (None: a note, or not a person's)."""
    if document.get("kind") not in (CLIENT, COURIER) or "id" not in document:
        return None
    return Recorded(str(document["_id"]), str(document["kind"]), document["id"])


def first_key(document: Mapping[str, object], forgotten: Forgotten) -> str | None:
    """The smallest record key among the forgotten persons ``document`` names in a form
    ``orders_of`` finds it by (an ObjectId, its text in lower or upper case): the first person,
    in a walk of the record in key order, whose orders hold it. A walk a chunk of persons at a
    time counts a document once, with that person's chunk, without a set of every id seen."""
    keys = [
        record_key(kind, person)
        for kind, among in ((CLIENT, forgotten.clients), (COURIER, forgotten.couriers))
        for person in person_ids(document, kind)
        if person in among and _found_by_orders_of(person)
    ]
    return min((key for key in keys if key is not None), default=None)


def _found_by_orders_of(person: PersonId) -> bool:
    # ``orders_of`` of a recorded ObjectId asks its ObjectId and its text in lower and upper case.
    return isinstance(person, ObjectId) or (
        isinstance(person, str) and person in (person.lower(), person.upper())
    )


def id_forms(person_id: PersonId) -> list[PersonId]:
    """The values that name one person in dirty data: an ObjectId and its 24-digit text (an
    import that lost the type) as given, in lower and in upper case, as ``record_key`` takes
    them; any other id as it is. Ids are compared as stored: a text id in another mix of cases
    is matched only as given (the case a person copied from the data). Four values at most: a
    bounded ``$in``."""
    text = str(person_id)
    if not (isinstance(person_id, ObjectId | str) and len(text) == 24 and ObjectId.is_valid(text)):
        return [person_id]
    return [ObjectId(text), *dict.fromkeys((text, text.lower(), text.upper()))]


def orders_of(kind: str, person_id: PersonId) -> dict[str, object]:
    """A person's archived orders, each branch on its index (``indexes.ARCHIVE_INDEXES``): by
    the reference (``client.id``, ``livreur.id``) or, a dangling one (a text id joins nothing, a
    record deleted), the source copy's (``source.client_id``, ``source.livreur_id``): its
    undeclared fields are erased for either person, as every later write and the cold tier
    do. Each by every form of the id (``id_forms``)."""
    forms = {"$in": id_forms(person_id)}
    reference = "livreur" if kind == COURIER else "client"
    return {"$or": [{f"{reference}.id": forms}, {f"source.{reference}_id": forms}]}


def still_holding(kind: str, person_id: PersonId) -> dict[str, object]:
    """A person's archived orders that still hold what their erasure removes, as far as a query
    can tell (the fields the contract names; ``Erasure.holds`` also sees the source copy's
    others): what status counts, on the person's index."""
    if kind == COURIER:
        paths = [f"livreur.{name}" for name in COURIER_PII_FIELDS]
    else:
        paths = [f"client.{name}" for name in PII_FIELDS]
        paths += [*ORDER_PII_FIELDS, *(f"source.{name}" for name in ORDER_PII_FIELDS)]
    return {"$and": [orders_of(kind, person_id), {"$or": [{path: {"$ne": None}} for path in paths]}]}


@dataclass(frozen=True)
class RespectedErasures:
    """What the archive's writer does with the record (none: ``NO_RECORD``): a forgotten
    person's orders written erased (``before_write``), and the persons recorded while they were
    written found after (``since``), so that their orders are erased then."""

    record: ForgottenPersons | None = None
    fields: OrderFields = CONTRACT_FIELDS  # the order fields known not to be personal

    def among(self, documents: Sequence[Mapping[str, object]]) -> Forgotten:
        return self.record.among(documents) if self.record is not None and documents else Forgotten()

    def before_write(
        self, documents: list[ErasedDocument], known: Forgotten | None = None
    ) -> tuple[list[ErasedDocument], Forgotten]:
        """``documents`` with a forgotten person's erased, and the forgotten persons found
        (``known``: as the record was read for them a moment ago; ``since`` then looks after
        the write for anyone recorded after that read)."""
        known = self.among(documents) if known is None else known
        return known.applied(documents, datetime.now(UTC), self.fields), known

    def as_held(self, document: ErasedDocument, held: HeldErasure | None) -> ErasedDocument:
        """``document`` erased as the version the archive holds was (``storage.Held``): an
        erasure is a state of the order, not of the settings of the process that writes (a
        watcher without ARCHIVE_PII_RETENTION revising an order erased by age), nor only of
        the record (an erasure older than it)."""
        if held is None or not held.erased:
            return document
        by = held.forgotten_by or BY_REQUEST
        client = held.forgotten_by is not None
        courier = held.courier_forgotten or by == BY_AGE
        return Erasure(client, courier, by, datetime.now(UTC), self.fields)(document)

    def since(
        self,
        written: Sequence[Mapping[str, object]],
        known: Forgotten,
        upcoming: Sequence[Mapping[str, object]] | None = None,
    ) -> tuple[ErasureOf | None, Forgotten | None]:
        """After a write: the erasure each written document is owed for a person recorded since
        ``known`` was read (a ``forget`` that ran meanwhile, whose walk may have read the
        archive before this write), None when there is none; and, when ``upcoming`` (the next
        write's documents) is given, the record as read for them by the same read: that
        write's ``known``, read before it."""
        found = self.among([*written, *(upcoming or [])])
        late = found.named_by(written).minus(known)
        if not late:
            return None, found if upcoming is not None else None
        now = datetime.now(UTC)
        return (
            lambda document: late.erasure(document, now, self.fields),
            found if upcoming is not None else None,
        )


NO_RECORD = RespectedErasures()


def erasure_updates(
    documents: Iterable[Mapping[str, object]], erasure_of: ErasureOf, *, marked: bool = True
) -> list[tuple[Mapping[str, object], UpdateOne]]:
    """The updates that erase archived ``documents`` as ``erasure_of`` says, each beside its
    document: each sets what its erasure changed, only if the archive still holds the version
    read (``source_hash`` in the filter: a document replaced meanwhile is neither overwritten
    with an old version nor marked). Not ``marked``: the personal values alone (``Erasure``)."""
    requests = []
    for document in documents:
        erasure = erasure_of(document)
        done = erasure(document, marked=marked) if erasure is not None else document
        changed = {k: v for k, v in done.items() if k not in document or document[k] != v}
        if changed:
            version = {"_id": document["_id"], "source_hash": document.get("source_hash")}
            requests.append((document, UpdateOne(version, {"$set": changed})))
    return requests
