"""What the product reads from MongoDB and writes to it, typed at the driver's edge.

pymongo hands every document as ``dict[str, Any]``: what a field holds is only known once it is
checked, so the product takes documents as ``dict[str, object]`` (``Document``) and narrows each
value it uses (the helpers below), and names the shapes it relies on:
``ChangeEvent`` (what a change stream yields), ``WriteError`` (a refused write),
``ArchiveDocument`` (the contract's archive document, as the product builds and writes it). An order's
``_id`` is any BSON value (``OrderId``): compared and hashed, never computed with.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TypeAlias, TypedDict, cast

from pymongo import MongoClient
from pymongo.collection import Collection

Document: TypeAlias = dict[str, object]  # a document as read: each value checked before use
OrderId: TypeAlias = object  # an order's _id: ObjectId, int, string... whatever the source uses
PersonId: TypeAlias = object  # a client's or courier's id, as the orders reference it
ResumeToken: TypeAlias = Mapping[str, object]  # a change stream's position ({_data: hex...})
MongoCollection: TypeAlias = Collection[Document]  # a simulation's mongomock ones stand in (untyped)
Client: TypeAlias = MongoClient[Document]


class ChangeEvent(TypedDict, total=False):
    """A change stream's event, the fields the watcher reads (MongoDB's change events page)."""

    _id: Mapping[str, object]  # the resume token
    operationType: str
    clusterTime: object  # a bson Timestamp
    documentKey: Mapping[str, object]
    fullDocument: Mapping[str, object] | None


class ArchiveItem(TypedDict):
    """One item of an archive document: the dish's name and price as they were (null: dangling)."""

    menu_id: object
    nom: object
    prix: float | None
    quantite: int
    sous_total: float | None


class ErasureMarks(TypedDict, total=False):
    """An erasure's marks on an archive document (``forget``, ARCHIVE_PII_RETENTION): absent
    until one erases it."""

    forgotten_at: datetime
    forgotten_by: str  # "forget" | "ARCHIVE_PII_RETENTION"


class ArchiveDocument(ErasureMarks, total=True):
    """The contract's archive document (``shared/contract.md`` section 2), as the product builds
    it (``orders.enrichment.finish_archive_document``) and writes it. Read back from a server, a
    document is a ``Document`` again: an older version of the archiver may have written it."""

    _id: OrderId
    numero_commande: str
    status: str
    date_commande: datetime
    date_livraison: datetime | None
    client: Document | None  # {id, nom, prenom, email}; null when the reference is dangling
    livreur: Document | None  # {id, nom, prenom}
    restaurant: Document | None  # {id, nom, type_cuisine}
    items: list[ArchiveItem]
    montant_total: float
    adresse_livraison: object  # as the source held it (ARCHIVE_PII may drop or key it)
    archived_at: datetime
    revised_at: datetime | None  # when a correction last replaced it; null: never
    archived_by: str  # "batch" | "watch"
    anomalies: list[str]
    source: Document  # the source order as it was, for restore; the purge compares it
    source_hash: str
    pii_policy: str  # what ARCHIVE_PII (and its key) it was written under


class WriteError(TypedDict, total=False):
    """One ``writeErrors`` entry of a refused bulk write (the driver's CRUD specification)."""

    index: int
    code: int
    codeName: str
    errmsg: str
    keyPattern: Mapping[str, object]  # of a duplicate key (MongoDB 4.4+)


def write_errors(details: Mapping[str, object] | None) -> list[WriteError]:
    """The ``writeErrors`` of a ``BulkWriteError``'s details, as the specification shapes them."""
    return cast(list[WriteError], list_or_empty((details or {}).get("writeErrors")))


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def int_or_none(value: object) -> int | None:
    """A whole number (an int32, an int64, or a double that is one, as servers list some)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def moment_or_none(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def mapping_or_empty(value: object) -> Mapping[str, object]:
    """A sub-document, or an empty one where the field is missing or holds something else."""
    return value if isinstance(value, Mapping) else {}


def list_or_empty(value: object) -> list[object]:
    """An array, or an empty one where the field is missing or holds something else."""
    return value if isinstance(value, list) else []
