"""What a cold file holds: one row per archived order, typed columns for the analyst, and the
whole archive document as MongoDB Extended JSON for the program.

Nested fields are **structs and lists** (``client.nom``, ``items[].prix``): DuckDB, pandas and
Spark read them as columns, with no JSON parsing in every query, and Parquet compresses them
column by column. They are a *view*: real data is dirty (a price stored as text, an item that
is not an object), so a value of an unexpected type is null in its typed column, never a
failed move. The truth is the ``document`` column: the archive document exactly as MongoDB
held it (every field, every BSON type: canonical Extended JSON), from which ``find`` and
``restore`` rebuild it to the byte, the fields beyond the contract (``source``, the erasure's
marks) included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import bson
from bson import json_util
from bson.codec_options import DatetimeConversion
from bson.json_util import CANONICAL_JSON_OPTIONS

if TYPE_CHECKING:
    import pyarrow as pa

FORMAT_VERSION = "1"
# The key-value metadata of each file's footer: how many rows, and the checksums that the
# read-back compares (and anyone may recompute).
META_ROWS = b"order_archiver.rows"
META_DOCUMENTS_SHA256 = b"order_archiver.documents_sha256"
META_IDS_SHA256 = b"order_archiver.ids_sha256"
META_FORMAT = b"order_archiver.format"
# A rewrite for ARCHIVE_PII_RETENTION records the cutoff its file was erased to (cold/retention.py).
META_ERASED_BEFORE = b"order_archiver.pii_erased_before"
# The ``document`` column read back as the client decodes BSON (``connection.client_options``:
# DATETIME_AUTO): a date before year 1 or after 9999 (dirty data, archived as it is) comes back
# as the ``DatetimeMS`` it was, where pymongo's default (DATETIME) raises InvalidBSON.
READ_JSON_OPTIONS = CANONICAL_JSON_OPTIONS.with_options(datetime_conversion=DatetimeConversion.DATETIME_AUTO)

Row = dict[str, object]


def erased_before_of(metadata: Mapping[bytes, bytes] | None) -> datetime | None:
    """The ARCHIVE_PII_RETENTION cutoff a footer's metadata records (None: never erased by age)."""
    value = (metadata or {}).get(META_ERASED_BEFORE)
    return datetime.fromisoformat(value.decode()) if value else None


def arrow_schema() -> pa.Schema:
    """The columns, in order (documented in docs/operating.md, "The cold tier")."""
    import pyarrow as pa

    text, time, number = pa.string(), pa.timestamp("ms", tz="UTC"), pa.float64()

    def struct(*names: str) -> pa.DataType:
        return pa.struct([(name, text) for name in names])

    item = pa.struct(
        [
            ("menu_id", text),
            ("nom", text),
            ("prix", number),
            ("quantite", pa.int64()),
            ("sous_total", number),
        ]
    )
    return pa.schema(
        [
            ("_id", text),
            ("numero_commande", text),
            ("status", text),
            ("date_commande", time),
            ("date_livraison", time),
            ("client", struct("id", "nom", "prenom", "email")),
            ("livreur", struct("id", "nom", "prenom")),
            ("restaurant", struct("id", "nom", "type_cuisine")),
            ("items", pa.list_(item)),
            ("montant_total", number),
            ("archived_at", time),
            ("revised_at", time),
            ("archived_by", text),
            ("anomalies", pa.list_(text)),
            ("document", text),
        ]
    )


def _text(value: object) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


def _time(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _count(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _struct(value: object, *names: str) -> dict[str, str | None] | None:
    if not isinstance(value, Mapping):
        return None
    return {name: _text(value.get(name)) for name in names}


def _item(value: object) -> dict[str, object]:
    item = value if isinstance(value, Mapping) else {}
    return {
        "menu_id": _text(item.get("menu_id")),
        "nom": _text(item.get("nom")),
        "prix": _number(item.get("prix")),
        "quantite": _count(item.get("quantite")),
        "sous_total": _number(item.get("sous_total")),
    }


def document_text(document: Mapping[str, object]) -> str:
    """The archive document as canonical Extended JSON: every BSON type kept (Int64, a date,
    an ObjectId, a date stored as a string stay what they were)."""
    return json_util.dumps(document, json_options=CANONICAL_JSON_OPTIONS, sort_keys=False)


def document_of(text: str) -> dict[str, object]:
    """The archive document back from its ``document`` column, BSON-exact (a date out of
    Python's range included: ``READ_JSON_OPTIONS``)."""
    loaded: dict[str, object] = json_util.loads(text, json_options=READ_JSON_OPTIONS)
    return loaded


def round_trips(document: Mapping[str, object]) -> bool:
    """Whether ``document`` comes back from its column's text BSON-exact. Not when it holds a
    subdocument whose keys are Extended JSON's own (``{"$date": ...}``, ``{"$oid": ...}``: field
    names MongoDB 5.0+ stores, which an import of Extended JSON written as it was leaves): read
    back, it is a date, an ObjectId, or no document at all."""
    try:
        return bson.encode(document_of(document_text(document))) == bson.encode(document)
    except Exception:  # any failure to read it back (an invalid ObjectId, a bad wrapper) is a no
        return False


def row_of(document: Mapping[str, object]) -> Row:
    """One row: the typed view of the document, and the document itself."""
    items = document.get("items")
    anomalies = document.get("anomalies")
    return {
        "_id": _text(document.get("_id")),
        "numero_commande": _text(document.get("numero_commande")),
        "status": _text(document.get("status")),
        "date_commande": _time(document.get("date_commande")),
        "date_livraison": _time(document.get("date_livraison")),
        "client": _struct(document.get("client"), "id", "nom", "prenom", "email"),
        "livreur": _struct(document.get("livreur"), "id", "nom", "prenom"),
        "restaurant": _struct(document.get("restaurant"), "id", "nom", "type_cuisine"),
        "items": [_item(item) for item in items] if isinstance(items, list) else None,
        "montant_total": _number(document.get("montant_total")),
        "archived_at": _time(document.get("archived_at")),
        "revised_at": _time(document.get("revised_at")),
        "archived_by": _text(document.get("archived_by")),
        "anomalies": [_text(a) for a in anomalies] if isinstance(anomalies, list) else None,
        "document": document_text(document),
    }


class Digest:
    """What the read-back compares: the row count, a SHA-256 of the ``_id`` column and one of
    the ``document`` column, each in file order."""

    def __init__(self) -> None:
        self.rows = 0
        self._ids = hashlib.sha256()
        self._documents = hashlib.sha256()

    def add(self, ids: Iterable[str | None], documents: Iterable[str | None]) -> None:
        for order_id in ids:
            self._ids.update(f"{order_id}\n".encode())
            self.rows += 1
        for text in documents:
            self._documents.update(f"{text}\n".encode())

    def metadata(self) -> dict[bytes, bytes]:
        return {
            META_FORMAT: FORMAT_VERSION.encode(),
            META_ROWS: str(self.rows).encode(),
            META_IDS_SHA256: self._ids.hexdigest().encode(),
            META_DOCUMENTS_SHA256: self._documents.hexdigest().encode(),
        }
