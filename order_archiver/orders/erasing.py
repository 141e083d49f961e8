"""What an erasure does to one archive document (GDPR article 17): pure, shared by ``forget``,
ARCHIVE_PII_RETENTION and every path that writes the archive (``storage.ArchiveWriter`` writes a
forgotten person's orders erased; ``source.Finisher`` writes an order past the retention erased).

Two persons can be erased from an order, each on their own:

- the client (``forget --client``): their reference's name, e-mail and phone, the delivery
  address, and every field of the order's ``source`` copy not known to be non-personal
  (``pii.OrderFields``). The document is marked ``forgotten_at`` / ``forgotten_by``;
- the courier (``forget --courier``): their reference's name, marked ``livreur.forgotten_at``,
  and the source copy's undeclared fields (a courier's phone in a free-text note).

ARCHIVE_PII_RETENTION erases both. An erased document's ``source_hash`` is the fingerprint of
its erased copy: no digest of an erased value is left that anyone could recompute from a list
of candidates (a SHA-256 has no key); the purge and the revisions compare a source order erased
the same way (``erased_source``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from order_archiver.documents import OrderId
from order_archiver.orders.enrichment import source_hash
from order_archiver.orders.pii import (
    CONTRACT_FIELDS,
    COURIER_PII_FIELDS,
    ORDER_PII_FIELDS,
    PII_FIELDS,
    OrderFields,
)

BY_REQUEST = "forget"  # forgotten_by of a client's erasure on request
BY_AGE = "ARCHIVE_PII_RETENTION"  # forgotten_by of an erasure by age: the client and the courier
# An archive document as built (``ArchiveDocument``) or as read back (``Document``): erased, the same.
ErasedDocument = TypeVar("ErasedDocument", bound=Mapping[str, object])
CLIENT, COURIER = "client", "livreur"  # the persons: their kind in the record, their reference's name


def erased_source(source: Mapping[str, object], fields: OrderFields) -> dict[str, object]:
    """An order (the archive's copy, or the source's) without its personal data: every field
    not known to be non-personal is null."""
    return fields.personal_order(source, lambda _: None)


def _cleared(reference: Any, names: tuple[str, ...]) -> Any:
    if not isinstance(reference, Mapping):
        return reference
    return {k: (None if k in names else v) for k, v in reference.items()}


@dataclass(frozen=True)
class Erasure:
    """One erasure: of whom (``client``, ``courier``), by what (``by``), when (``at``), under
    which known non-personal fields."""

    client: bool
    courier: bool
    by: str
    at: datetime
    fields: OrderFields = CONTRACT_FIELDS

    def __call__(self, document: ErasedDocument, *, marked: bool = True) -> ErasedDocument:
        """``document`` erased, of the same type (every field kept, a personal value cleared).
        Idempotent; an earlier mark keeps its date. Not ``marked``: the personal values cleared
        alone, no mark added (``forgotten_at``, ``forgotten_by``, ``livreur.forgotten_at``): a
        document that cannot grow (each value made null, the fingerprint one of the same length),
        for one within bytes of 16 MB that cannot take the marks (``storage.ArchiveWriter.erase``)."""
        done = dict(document)
        source = done.get("source")
        if isinstance(source, Mapping):
            # An undeclared field may be anyone's (a courier's phone in a note): erased for each.
            erased = erased_source(source, self.fields)
            done["source"], done["source_hash"] = erased, source_hash(erased)
        if self.client:
            done["client"] = _cleared(done.get("client"), PII_FIELDS)
            done.update({name: None for name in ORDER_PII_FIELDS if name in done})
            if marked and done.get("forgotten_by") != BY_AGE:  # the widest erasure names itself
                done["forgotten_by"] = self.by
            if marked:
                done["forgotten_at"] = done.get("forgotten_at") or self.at
        if self.courier and isinstance(done.get(COURIER), Mapping):
            courier = _cleared(done[COURIER], COURIER_PII_FIELDS)
            if marked:
                courier["forgotten_at"] = courier.get("forgotten_at") or self.at
            done[COURIER] = courier
        return cast(ErasedDocument, done)  # the same fields, values cleared or marked: the same shape

    def holds(self, document: Mapping[str, object]) -> bool:
        """Whether ``document`` still holds some personal data this erasure would remove."""
        source = document.get("source")
        if isinstance(source, Mapping) and erased_source(source, self.fields) != dict(source):
            return True
        if self.client:
            client = document.get("client")
            if isinstance(client, Mapping) and any(client.get(n) is not None for n in PII_FIELDS):
                return True
            if any(document.get(n) is not None for n in ORDER_PII_FIELDS):
                return True
        courier = document.get(COURIER)
        return (
            self.courier
            and isinstance(courier, Mapping)
            and any(courier.get(n) is not None for n in COURIER_PII_FIELDS)
        )


def person_ids(document: Mapping[str, object], kind: str) -> list[OrderId]:
    """The ids an archive document names of its client or its courier: its reference's, and
    its source copy's (a dangling reference is null in the archive, named in the copy)."""
    reference = document.get(kind)
    source = document.get("source")
    found = [
        reference.get("id") if isinstance(reference, Mapping) else None,
        source.get(f"{kind}_id") if isinstance(source, Mapping) else None,
    ]
    return list(dict.fromkeys(i for i in found if i is not None and _hashable(i)))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@dataclass(frozen=True)
class Forgotten:
    """The forgotten persons among some orders' (from the record: ``erasure.ForgottenPersons``)."""

    clients: frozenset[OrderId] = frozenset()
    couriers: frozenset[OrderId] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.clients or self.couriers)

    def minus(self, other: Forgotten) -> Forgotten:
        return Forgotten(self.clients - other.clients, self.couriers - other.couriers)

    def named_by(self, documents: Sequence[Mapping[str, object]]) -> Forgotten:
        """Those of these persons that ``documents`` name (a read of the record for more)."""
        clients = {i for document in documents for i in person_ids(document, CLIENT)}
        couriers = {i for document in documents for i in person_ids(document, COURIER)}
        return Forgotten(self.clients & clients, self.couriers & couriers)

    def erasure(self, document: Mapping[str, object], at: datetime, fields: OrderFields) -> Erasure | None:
        """The erasure ``document`` is owed, if its client or its courier is forgotten."""
        client = any(i in self.clients for i in person_ids(document, CLIENT))
        courier = any(i in self.couriers for i in person_ids(document, COURIER))
        if not (client or courier):
            return None
        return Erasure(client, courier, BY_REQUEST, at, fields)

    def applied(
        self, documents: list[ErasedDocument], at: datetime, fields: OrderFields
    ) -> list[ErasedDocument]:
        """``documents``, those of a forgotten person erased."""
        if not self:
            return documents
        done = []
        for document in documents:
            erasure = self.erasure(document, at, fields)
            done.append(erasure(document) if erasure is not None else document)
        return done
